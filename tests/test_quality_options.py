"""Options measured by benchmarks/quality.py: seeded calibration draws, per-channel weight scales (reference, ONNX,
artifact, the cuda backend's refusal), one shared calibration pass for several recipes, the reference ops
registered for CUDA tensors, the last-word task, and byte-identical artifacts across thread counts."""

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch

from edge_quamba.errors import BackendUnavailableError, ConfigError
from edge_quamba.eval.last_word import build_examples, write_task
from edge_quamba.models.loading import load_fp_model
from edge_quamba.models.tokenizer import load_tokenizer
from edge_quamba.onnx.lower import lower_model
from edge_quamba.onnx.structure_check import check_graph
from edge_quamba.onnx.validate import validate_on_ort
from edge_quamba.quant.calibrate import calibrate, calibrate_many, load_calibration_data
from edge_quamba.quant.primitives import INT8_MAX, int8_linear, quantize_weight_per_channel
from edge_quamba.quant.qmodel import QuantConfig, quantize_model
from helpers import TEXT, make_tokenizer, random_hf_model, report, save_transformers_layout

LINEARS = ("in_proj", "x_proj", "dt_proj", "out_proj")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny random fp checkpoint with a tokenizer, and a calibration text file."""
    folder = tmp_path_factory.mktemp("fp")
    tokenizer = make_tokenizer(120)
    save_transformers_layout(random_hf_model(seed=5, noise=0.2, vocab_size=tokenizer.get_vocab_size()),
                             folder / "model", tokenizer)
    text = folder / "calib.txt"
    text.write_text(TEXT * 3)
    return folder / "model", text


def test_calib_seed_draws_windows_of_the_text(checkpoint):
    model_dir, text = checkpoint
    tok = load_tokenizer(model_dir)
    ids = tok.encode(text.read_text())
    first = load_calibration_data(text, tok, 6, 16)
    a, again, b = (load_calibration_data(text, tok, 6, 16, seed) for seed in (0, 0, 1))
    assert "seed" not in first.manifest() and torch.equal(first.tokens.flatten(), torch.tensor(ids[:96]))
    assert a.offsets == again.offsets and torch.equal(a.tokens, again.tokens)
    assert a.offsets != b.offsets
    for data in (a, b):
        assert data.manifest()["seed"] == data.seed and data.manifest()["window_offsets"] == list(data.offsets)
        for row, offset in zip(data.tokens, data.offsets, strict=True):
            assert row.tolist() == ids[offset:offset + 16]
    with pytest.raises(ConfigError, match="--calib-seed"):
        QuantConfig(calib_seed=-1)


def test_per_channel_weight_convention():
    w = torch.randn(6, 40, generator=torch.Generator().manual_seed(0)) * torch.tensor([1, 10, 0.1, 3, 0, 1e-7])[:, None]
    q, scale = quantize_weight_per_channel(w)
    assert q.dtype == torch.int8 and scale.shape == (6,) and scale.dtype == torch.float32
    amax = w.abs().amax(1).clamp(min=1e-5)
    assert torch.equal(scale, amax / INT8_MAX)
    rows_at_full_range = q.abs().amax(1)
    assert torch.equal(rows_at_full_range[:4], torch.full((4,), INT8_MAX, dtype=torch.int8))  # each row uses its range
    assert torch.equal(q[4], torch.zeros(40, dtype=torch.int8))  # the all-zero row: floor scale, zeros
    err = (q.float() * scale[:, None] - w).abs()
    assert bool((err <= scale[:, None] / 2 * (1 + 1e-6)).all())
    # the linear: column o of the int32 accumulator times float32(s_x * s_w[o]), exactly
    x_q = torch.randint(-127, 128, (3, 40), dtype=torch.int8, generator=torch.Generator().manual_seed(1))
    y = int8_linear(x_q, 0.02, q, scale)
    acc = (x_q.double() @ q.double().T)
    expected = acc.float() * (torch.tensor(0.02, dtype=torch.float32) * scale)
    assert torch.equal(y, expected)
    y_op = torch.ops.edge_quamba.int8_linear_per_channel(x_q, q, None, 0.02, scale)
    assert torch.equal(y_op, y)


def test_sequence_quantiles_equal_torch_quantile_per_row():
    from edge_quamba.quant.observers import batch_quantiles, sequence_quantiles

    x = torch.randn(3, 50, 7, generator=torch.Generator().manual_seed(4)) ** 3
    percentiles = [0.5, 0.9, 0.999, 1.0]
    rows = sequence_quantiles(x, percentiles, "x")
    for i, quantiles in enumerate(rows):
        assert quantiles == batch_quantiles(x[i], percentiles, "x")
        expected = torch.quantile(x[i].abs().flatten().double(), torch.tensor(percentiles, dtype=torch.float64))
        assert quantiles == pytest.approx(expected.tolist(), rel=1e-12)


def _fp_and_calibration(checkpoint):
    model_dir, text = checkpoint
    fp = load_fp_model(model_dir)
    data = load_calibration_data(text, load_tokenizer(model_dir), 4, 32, seed=3)
    return fp, data


def test_calibrate_many_equals_separate_passes(checkpoint):
    fp, data = _fp_and_calibration(checkpoint)
    configs = [QuantConfig(calib_samples=4, calib_seq_len=32, **kw) for kw in (
        dict(), dict(percentile=0.999), dict(percentile=None), dict(percentile_activations=("in_proj_input", "u")),
        dict(percentile=0.9, percentile_momentum=0.5, percentile_activations=("u", "out_proj_input")))]
    shared = calibrate_many(fp, data, configs, batch_size=2, progress=False)
    for qconfig, amaxes in zip(configs, shared, strict=True):
        separate = calibrate(fp, data, qconfig, batch_size=2, progress=False)
        assert [{k: float(v) for k, v in layer.items()} for layer in amaxes] == \
            [{k: float(v) for k, v in layer.items()} for layer in separate]
    assert float(shared[0][0]["u"]) != float(shared[1][0]["u"])  # the percentiles were really different statistics
    with pytest.raises(ValueError, match="hadamard"):
        calibrate_many(fp, data, [QuantConfig(), QuantConfig(hadamard=False)])


@pytest.fixture(scope="module")
def per_channel(checkpoint):
    fp, data = _fp_and_calibration(checkpoint)
    qconfig = QuantConfig(calib_samples=4, calib_seq_len=32, calib_seed=3, weight_scales="channel")
    return fp, quantize_model(fp, calibrate(fp, data, qconfig, progress=False), qconfig), qconfig, data


def test_per_channel_model_is_closer_to_fp(checkpoint, per_channel):
    fp, qmodel, qconfig, data = per_channel
    tensor_config = dataclasses.replace(qconfig, weight_scales="tensor")
    per_tensor = quantize_model(fp, calibrate(fp, data, tensor_config, progress=False), tensor_config)
    for name in LINEARS:
        linear = getattr(qmodel.backbone.layers[0].mixer, name)
        assert linear.per_channel and linear.weight_scale.shape == (linear.weight.shape[0],)
    tokens = data.tokens[:2]
    with torch.no_grad():
        ref = fp(tokens)[0]
        errors = [report(kind, model(tokens)[0] - ref) for kind, model in
                  (("per-channel", qmodel), ("per-tensor", per_tensor))]
    assert errors[0] < errors[1]  # random rows of different magnitude: per-row scales lose less


def test_per_channel_artifact_and_onnx(tmp_path, checkpoint, per_channel):
    from edge_quamba.folders import load_quantized_model
    from edge_quamba.quant.artifact import write_artifact

    fp, qmodel, qconfig, data = per_channel
    model_dir, _ = checkpoint
    write_artifact(tmp_path, qmodel, qconfig, data.manifest(), {"model": "test"}, model_dir / "tokenizer.json")
    saved = json.loads((tmp_path / "quant_config.json").read_text())
    assert saved["quantization"]["weight_scales"] == "channel" and saved["quantization"]["calib_seed"] == 3
    assert saved["calibration"]["seed"] == 3
    loaded = load_quantized_model(tmp_path)
    tokens = data.tokens[:2]
    with torch.no_grad():
        assert torch.equal(loaded(tokens)[0], qmodel(tokens)[0])
    graph = lower_model(loaded)
    assert check_graph(graph, "ort") == []
    per_axis = [n for n in graph.graph.node if n.op_type == "DequantizeLinear" and n.name.endswith(".weight")]
    assert len(per_axis) == 4 * fp.config.n_layer
    assert all(onnx.helper.get_attribute_value(a) == 1 for n in per_axis for a in n.attribute if a.name == "axis")
    onnx.save(graph, str(tmp_path / "model.onnx"))
    result = validate_on_ort(graph, tmp_path / "model.onnx", loaded, tokens[0, :20].tolist(), decode_steps=4)
    print("\n".join(result.lines()))
    assert result.passed


def test_version_1_config_without_new_keys_loads():
    old = QuantConfig().to_dict()
    del old["calib_seed"], old["weight_scales"]
    assert QuantConfig.from_dict(old) == QuantConfig()


def test_cuda_backend_refuses_per_channel_in_one_line(per_channel):
    from edge_quamba.runtime.cuda_backend import refuse_options

    _, qmodel, _, _ = per_channel
    with pytest.raises(BackendUnavailableError, match="--weight-scales channel") as info:
        refuse_options(qmodel)
    assert "\n" not in str(info.value)


def test_reference_ops_register_for_cuda_tensors():
    """In a fresh process (registration is global): every edge_quamba op gets a CUDA kernel from REFERENCES, the
    functions the CPU dispatch runs. Running them on CUDA tensors is not done here (no GPU)."""
    code = (
        "import torch\n"
        "from edge_quamba.ops import reference_cuda, torch_ops\n"
        "from edge_quamba.runtime.cuda_backend import has_cuda_kernel, namespace_ops\n"
        "assert not any(has_cuda_kernel(n) for n in namespace_ops())\n"
        "names = reference_cuda.register_reference_for_cuda()\n"
        "assert sorted(names) == namespace_ops(), (names, namespace_ops())\n"
        "assert all(has_cuda_kernel(n) for n in namespace_ops())\n"
        "x = torch.randn(3, 5)\n"
        "assert torch.equal(torch_ops.REFERENCES['quantize'](x, 0.01), torch.ops.edge_quamba.quantize(x, 0.01))\n"
        "print('ok', len(names))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).parents[1])
    print(proc.stdout, proc.stderr[-2000:])
    assert proc.returncode == 0 and proc.stdout.startswith("ok")


def test_last_word_task_builder(tmp_path):
    text = ("Alpha beta gamma delta. " * 3 + "The model reads the context and predicts the word context. Short. "
            "Numbers like 42. Every passage needs its target in the context to count as one of ours.\n") * 4
    examples = build_examples(text, min_context_words=5, max_context_chars=200)
    assert examples == build_examples(text, min_context_words=5, max_context_chars=200)
    assert examples
    for e in examples:
        word = e["target"][1:]
        assert e["target"].startswith(" ") and word.isalpha() and len(word) >= 3
        assert text[e["offset"]:e["offset"] + len(word)] == word
        assert text[:e["offset"] - 1].endswith(e["context"]) and len(e["context"]) <= 200
        assert f" {word} " in f" {e['context']} ".replace(".", " ")
    assert "context" in [e["target"][1:] for e in examples] and "Short" not in [e["target"][1:] for e in examples]
    capped = build_examples(text, max_examples=3, min_context_words=5, max_context_chars=200)
    assert len(capped) == 3 and capped[0] == examples[0]
    source = tmp_path / "eval.txt"
    source.write_text(text)
    task = write_task(tmp_path / "tasks", examples, source)
    lines = task.data.read_text().splitlines()
    assert [json.loads(line) for line in lines] == examples
    assert task.manifest["examples"] == len(examples)
    assert task.manifest["jsonl_sha256"] == hashlib.sha256(task.data.read_bytes()).hexdigest()


def test_last_word_task_through_lm_eval_matches_greedy(tmp_path, checkpoint, monkeypatch):
    """The built task run by lm_eval.simple_evaluate through the adapter around an in-memory model: its accuracy is
    our own count of passages whose target tokens are all greedy."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from edge_quamba.eval.harness import EdgeQuambaLM

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model_dir, _ = checkpoint
    model, tok = load_fp_model(model_dir), load_tokenizer(model_dir)
    source = tmp_path / "eval.txt"
    source.write_text(TEXT)
    examples = build_examples(TEXT, max_examples=8, min_context_words=5)
    task = write_task(tmp_path / "tasks", examples, source)
    out = lm_eval.simple_evaluate(model=EdgeQuambaLM.from_model(model, tok), tasks=[task.name],
                                  task_manager=TaskManager(include_path=str(task.folder)), bootstrap_iters=0)
    acc = out["results"][task.name]["acc,none"]
    greedy = 0
    for e in examples:
        ctx, full = tok.encode(e["context"]), tok.encode(e["context"] + e["target"])
        with torch.no_grad():
            logits = model(torch.tensor([full[:-1]]))[0][0, len(ctx) - 1:]
        greedy += torch.equal(logits.argmax(-1), torch.tensor(full[len(ctx):]))
    print("lm_eval acc", acc, "ours", greedy / len(examples))
    assert acc == greedy / len(examples)


def test_artifact_bytes_do_not_depend_on_thread_count(tmp_path, checkpoint):
    """`edge-quamba quantize` with OMP_NUM_THREADS=1 and 2 (and torch's intra-op threads likewise) writes
    byte-identical model.safetensors and quant_config.json, for file-order and seeded calibration."""
    model_dir, text = checkpoint
    for seed in ([], ["--calib-seed", "7"]):
        digests = []
        for threads in ("1", "2"):
            out = tmp_path / f"q{threads}{'s' if seed else ''}"
            proc = subprocess.run(
                [sys.executable, "-c", "import torch, sys; torch.set_num_threads(int(sys.argv[1])); "
                 "from edge_quamba.cli import main; main(sys.argv[2:])", threads, "quantize", "--model",
                 str(model_dir), "--out", str(out), "--calib-data", str(text), "--calib-samples", "6",
                 "--calib-seq-len", "32", *seed],
                capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[1],
                env={**os.environ, "OMP_NUM_THREADS": threads, "HF_HUB_OFFLINE": "1"})
            assert proc.returncode == 0, proc.stderr[-2000:]
            digests.append([hashlib.sha256((out / f).read_bytes()).hexdigest()
                            for f in ("model.safetensors", "quant_config.json")])
        print(seed, digests)
        assert digests[0] == digests[1]


def test_quality_script_end_to_end(tmp_path, checkpoint):
    """benchmarks/quality.py on a tiny model: every selected variant with both seeds, both window lengths, the
    last-word task through lm-eval, and the JSON's summaries agreeing with its runs; an unknown variant is one error."""
    model_dir, text = checkpoint
    script = Path(__file__).parents[1] / "benchmarks" / "quality.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    args = [sys.executable, str(script), "--model", str(model_dir), "--eval-data", str(text), "--calib-data", str(text),
            "--calib-samples", "2", "--calib-seq-len", "32", "--seq-lens", "32,64", "--max-eval-tokens", "256",
            "--sqnr-windows", "1", "--last-word-examples", "5", "--out-prefix", str(tmp_path / "q")]
    proc = subprocess.run([*args, "--variants", "fp16,w8a8 naive,quamba per-channel w",
                           "--last-word-variants", "quamba per-channel w"],
                          capture_output=True, text=True, timeout=900, env=env)
    print(proc.stdout, proc.stderr[-3000:])
    assert proc.returncode == 0
    data = json.loads((tmp_path / "q.json").read_text())
    assert data["complete"] and list(data["variants"]) == ["fp16", "w8a8 naive", "quamba per-channel w"]
    assert (tmp_path / "q.png").stat().st_size > 0
    entry = data["variants"]["quamba per-channel w"]
    assert sorted(entry["runs"]) == ["0", "1"] and entry["last_word_acc"]["n"] == 2
    fp16 = data["variants"]["fp16"]["runs"]["-"]["perplexity"]["64"]
    values = [run["perplexity"]["64"] for run in entry["runs"].values()]
    assert entry["vs_fp16_percent"]["64"]["mean"] == pytest.approx(sum(100 * (v / fp16 - 1) for v in values) / 2)
    windows = data["calibration"]["windows"]
    assert windows["0"]["window_offsets"] != windows["1"]["window_offsets"]
    assert len(data["sqnr_db"]["w8a8 naive"]) == 2
    bad = subprocess.run([*args, "--variants", "fp16,no such variant"], capture_output=True, text=True, timeout=300,
                         env=env)
    assert bad.returncode == 2 and "unknown variant" in bad.stderr.splitlines()[-1]


def test_cli_weight_scales_and_calib_seed(tmp_path, checkpoint):
    from helpers import cli_in_process, one_error_line

    model_dir, text = checkpoint
    out = tmp_path / "q"
    proc = cli_in_process("quantize", "--model", str(model_dir), "--out", str(out), "--calib-data", str(text),
                          "--calib-samples", "2", "--calib-seq-len", "32", "--calib-seed", "5",
                          "--weight-scales", "channel")
    print(proc.stdout, proc.stderr[-1000:])
    assert proc.returncode == 0
    config = json.loads((out / "quant_config.json").read_text())
    assert config["quantization"]["weight_scales"] == "channel" and config["quantization"]["calib_seed"] == 5
    assert config["calibration"]["seed"] == 5 and len(config["calibration"]["window_offsets"]) == 2
    bad = cli_in_process("quantize", "--model", str(model_dir), "--out", str(tmp_path / "r"), "--weight-scales", "row")
    assert "--weight-scales" in one_error_line(bad)


def test_quality_script_resume_and_four_bit(tmp_path, checkpoint):
    """--resume keeps a JSON's runs and measures only what it lacks (a second seed, a new 4-bit variant); GPTQ's
    Hessians come from the same calibration pass; a JSON of another model (its bytes) is refused in one line."""
    model_dir, text = checkpoint
    script = Path(__file__).parents[1] / "benchmarks" / "quality.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    args = [sys.executable, str(script), "--model", str(model_dir), "--eval-data", str(text), "--calib-data", str(text),
            "--calib-samples", "2", "--calib-seq-len", "32", "--seq-lens", "32", "--max-eval-tokens", "256",
            "--sqnr-windows", "1", "--last-word-variants", ""]
    first = subprocess.run([*args, "--seeds", "0", "--variants", "fp16,w8a8 quamba", "--out-prefix",
                            str(tmp_path / "a")], capture_output=True, text=True, timeout=600, env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    before = json.loads((tmp_path / "a.json").read_text())
    second = subprocess.run([*args, "--seeds", "0,1", "--variants", "fp16,w8a8 quamba,w4a8 g64,w4a16 g64", "--resume",
                             str(tmp_path / "a.json"), "--out-prefix", str(tmp_path / "b")],
                            capture_output=True, text=True, timeout=600, env=env)
    assert second.returncode == 0, second.stderr[-2000:]
    after = json.loads((tmp_path / "b.json").read_text())
    log = second.stderr
    assert "fp16:" not in log and "w8a8 quamba seed 0" not in log and "w8a8 quamba seed 1" in log  # kept, not re-run
    assert after["variants"]["fp16"] == before["variants"]["fp16"]
    assert after["variants"]["w8a8 quamba"]["runs"]["0"] == before["variants"]["w8a8 quamba"]["runs"]["0"]
    assert all(sorted(after["variants"][v]["runs"]) == ["0", "1"] for v in ("w8a8 quamba", "w4a8 g64", "w4a16 g64"))
    assert after["complete"] and after["calibration"]["seeds"] == [0, 1]
    assert after["resumed"]["commands"][0]["command"] == before["command"]
    assert "w4a8 g64" in after["sqnr_db"] and "w4a16 g64" not in after["sqnr_db"]  # W4A16 has no int8 site
    other = shutil.copytree(model_dir, tmp_path / "other")  # the same model with other bytes (a retrained one)
    (other / "config.json").write_text((other / "config.json").read_text() + "\n")
    bad = subprocess.run([*args, "--seeds", "0", "--variants", "fp16", "--resume", str(tmp_path / "a.json"),
                          "--model", str(other), "--out-prefix", str(tmp_path / "c")],
                         capture_output=True, text=True, timeout=600, env=env)
    assert bad.returncode == 1 and "model_sha256 differs" in bad.stderr.splitlines()[-1]
