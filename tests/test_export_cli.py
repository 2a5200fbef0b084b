"""ONNX export from the command line: `export` on a random fp checkpoint end to end (one line per output, the export
config, ort against ref token for token, eval and bench on ort, targets), bad input (missing or damaged folders,
no onnxruntime, a failing export keeps the existing folder), and the demo model (64-token greedy continuation, ort
against ref). The graph-level checks on in-process lowered models: test_export.py."""

import json
import shutil
import sys
from pathlib import Path

import onnx
import pytest
import torch

from edge_quamba.errors import ValidationError
from edge_quamba.onnx import state_names
from edge_quamba.onnx.export import export_model
from edge_quamba.onnx.validate import validate_on_ort
from helpers import make_tokenizer, random_hf_model, run_cli, save_transformers_layout


# ------------------------------------------------------------------------------------------------------------
# The command line on a random fp checkpoint


@pytest.fixture(scope="module")
def fp_folder(tmp_path_factory):
    tokenizer = make_tokenizer(120)
    hf = random_hf_model(seed=21, vocab_size=tokenizer.get_vocab_size(), noise=0.2)
    return save_transformers_layout(hf, tmp_path_factory.mktemp("fp"), tokenizer)


@pytest.fixture(scope="module")
def exported(fp_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("exports") / "tiny-export"
    proc = run_cli("export", "--model", str(fp_folder), "--out", str(out), "--calib-samples", "4",
                   "--calib-seq-len", "32", "--validate-prompt-len", "24", "--validate-decode-steps", "4")
    print(proc.stdout, proc.stderr)
    assert proc.returncode == 0, proc.stderr
    return out, proc


def error_line(proc) -> str:
    """Exactly one 'edge-quamba: error:' line, last on stderr, and no traceback."""
    print(proc.stderr)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr
    assert [line for line in lines if line.startswith("edge-quamba: error:")] == [lines[-1]]
    return lines[-1]


def test_export_prints_one_line_per_output_and_every_path(exported):
    out, proc = exported
    config = json.loads((out / "export_config.json").read_text())
    n_layer = config["model_config"]["n_layer"]
    _, outputs = state_names(n_layer)
    lines = proc.stdout.splitlines()
    ort_block, trt_block = lines[lines.index("[ort]") + 1:lines.index("[tensorrt]")], lines[lines.index("[tensorrt]"):]
    for block, logits in ((ort_block, "logits"), (trt_block, "last_logits")):
        for name in [logits, *outputs, "int8 codes inside the graph", "optimized graph + codes"]:
            (line,) = [line for line in block if line.startswith(name + " ")]
            assert "max abs diff" in line and "tolerance" in line and " pass" in line and "FAIL" not in line
    assert "validation passed" in lines
    written = [Path(line.removeprefix("wrote ")) for line in lines if line.startswith("wrote ")]
    assert {p.name for p in written} == {"model.onnx", "model.trt.onnx", "export_config.json", "tokenizer.json",
                                         "quant_config.json", "model.safetensors"}
    assert all(p.is_file() for p in written) and len(written) == 7


def test_export_config_records_what_the_folder_is(exported):
    import hashlib

    out, _ = exported
    config = json.loads((out / "export_config.json").read_text())
    assert config["kind"] == "edge-quamba/export" and config["format_version"] == 2
    assert config["targets"] == ["ort", "tensorrt"]
    assert config["onnx"]["opset"] == 17 and config["onnx"]["tensorrt_tested"] is False
    assert config["validation"]["ort"]["passed"] is True and config["validation"]["tensorrt"]["passed"] is True
    assert config["validation"]["tensorrt"]["flavour"] == "tensorrt"
    assert config["quantization"]["calib_samples"] == 4
    for name, digest in config["files"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    assert not list(out.parent.glob(".tiny-export.tmp-*"))  # the temporary folder is gone


def greedy(folder, backend, prompt, tokens):
    proc = run_cli("run", "--model", str(folder), "--prompt", prompt, "--temperature", "0", "--max-new-tokens",
                   str(tokens), "--backend", backend, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["backend"] == backend
    return result


def test_run_ort_equals_ref_token_for_token(exported):
    out, _ = exported
    ort_run = greedy(out, "ort", "The quick brown fox", 24)
    ref_run = greedy(out, "ref", "The quick brown fox", 24)
    print(ort_run["tokens"])
    assert ort_run["prompt_tokens"] == ref_run["prompt_tokens"]
    assert ort_run["tokens"] == ref_run["tokens"] and len(ort_run["tokens"]) >= 1


def test_eval_and_bench_with_ort(exported, tmp_path):
    out, _ = exported
    text = tmp_path / "eval.txt"
    text.write_text("State space models scan a sequence once. Quantization maps real numbers to integers. " * 6)
    ppl = {}
    for backend in ("ort", "ref"):
        proc = run_cli("eval", "--model", str(out), "--data", str(text), "--seq-len", "32", "--backend", backend,
                       "--json")
        assert proc.returncode == 0, proc.stderr
        ppl[backend] = json.loads(proc.stdout)["perplexity"]
    print(ppl)
    assert abs(ppl["ort"] - ppl["ref"]) <= 1e-4 * ppl["ref"]
    proc = run_cli("bench", "--model", str(out), "--backend", "ort", "--prompt-len", "16", "--new-tokens", "4",
                   "--repeats", "1", "--threads", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["backend"] == "ort" and report["decode_tokens_per_s"] > 0
    assert report["model_bytes"] == (out / "model.onnx").stat().st_size


def test_export_targets_write_only_their_file(exported, tmp_path):
    out, _ = exported
    export_model(model=str(out), out=tmp_path / "trt", target="tensorrt", prompt_len=8, decode_steps=1,
                 progress=False, echo=lambda _: None)
    assert not (tmp_path / "trt" / "model.onnx").exists() and (tmp_path / "trt" / "model.trt.onnx").is_file()
    assert "no model.onnx" in error_line(run_cli("run", "--model", str(tmp_path / "trt"), "--prompt", "The",
                                                 "--backend", "ort"))
    export_model(model=str(out / "quantized"), out=tmp_path / "ort", target="ort", prompt_len=8, decode_steps=1,
                 progress=False, echo=lambda _: None)
    assert (tmp_path / "ort" / "model.onnx").is_file() and not (tmp_path / "ort" / "model.trt.onnx").exists()


# ------------------------------------------------------------------------------------------------------------
# Bad input


def test_export_of_a_missing_folder(tmp_path):
    line = error_line(run_cli("export", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "out")))
    assert "no such folder" in line and not (tmp_path / "out").exists()


def test_ort_backend_on_an_fp_folder(fp_folder):
    line = error_line(run_cli("run", "--model", str(fp_folder), "--prompt", "The", "--backend", "ort"))
    assert "edge-quamba export" in line


@pytest.mark.parametrize("damage", ["garbage", "garbage-with-hash", "missing"])
def test_damaged_model_onnx(exported, tmp_path, damage):
    import hashlib

    folder = tmp_path / "damaged"
    shutil.copytree(exported[0], folder)
    model = folder / "model.onnx"
    if damage == "missing":
        model.unlink()
    else:
        model.write_bytes(b"not an onnx model" * 100)
    if damage == "garbage-with-hash":  # past the hash check: ONNX Runtime itself must refuse it in one line
        from edge_quamba.integrity import seal

        config = json.loads((folder / "export_config.json").read_text())
        config["files"]["model.onnx"] = hashlib.sha256(model.read_bytes()).hexdigest()
        (folder / "export_config.json").write_text(json.dumps(seal(config)))
    line = error_line(run_cli("run", "--model", str(folder), "--prompt", "The", "--backend", "ort"))
    assert "model.onnx" in line


def test_missing_onnxruntime_is_one_line(exported):
    import subprocess

    code = ("import sys; sys.modules['onnxruntime'] = None; from edge_quamba.cli import main; "
            f"main(['run', '--model', {str(exported[0])!r}, '--prompt', 'The', '--backend', 'ort'])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "needs onnxruntime" in error_line(proc)


def _files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_failing_export_keeps_the_existing_folder(exported, tmp_path, monkeypatch):
    out = tmp_path / "keep"
    shutil.copytree(exported[0], out)  # an earlier export: the only kind of non-empty folder export may replace
    before = _files(out)
    monkeypatch.setattr("edge_quamba.onnx.validate.LOGITS_RTOL", 0.0)  # no float difference passes now
    with pytest.raises(ValidationError, match="nothing was written"):
        export_model(model=str(exported[0]), out=out, prompt_len=8, decode_steps=1, progress=False,
                     echo=print)
    assert _files(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep"]  # no temporary folder left behind


def test_failing_quantization_inside_export_keeps_the_existing_folder(exported, fp_folder, tmp_path):
    out = tmp_path / "keep"
    shutil.copytree(exported[0], out)
    before = _files(out)
    line = error_line(run_cli("export", "--model", str(fp_folder), "--out", str(out), "--calib-samples", "100000",
                              "--calib-seq-len", "512"))
    assert "calibration data" in line
    assert _files(out) == before and [p.name for p in tmp_path.iterdir()] == ["keep"]


# ------------------------------------------------------------------------------------------------------------
# The demo model


@pytest.fixture(scope="module")
def demo_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo-export"
    proc = run_cli("export", "--out", str(out), "--calib-samples", "4", "--calib-seq-len", "128")
    print(proc.stdout, proc.stderr)
    assert proc.returncode == 0, proc.stderr
    assert "validation passed" in proc.stdout
    return out


def test_demo_model_64_token_greedy_continuation_ort_equals_ref(demo_export):
    prompt = "The history of the city"
    ort_run = greedy(demo_export, "ort", prompt, 64)
    ref_run = greedy(demo_export, "ref", prompt, 64)
    print(ort_run["text"])
    assert len(ort_run["tokens"]) == 64
    assert ort_run["tokens"] == ref_run["tokens"]


def test_demo_model_64_decode_steps_on_evaluation_text(demo_export):
    """128 tokens of held-out text, then 64 greedy steps: every int8 code equal (after following any rounding tie),
    logits and states within tolerance at every step."""
    from edge_quamba.models.tokenizer import load_tokenizer
    from edge_quamba.folders import load_quantized_model
    from edge_quamba.runtime.bench import bench_prompt

    prompt = bench_prompt(load_tokenizer(demo_export), 128)
    report = validate_on_ort(onnx.load(str(demo_export / "model.onnx")), demo_export / "model.onnx",
                             load_quantized_model(demo_export / "quantized"), prompt, decode_steps=64)
    print("\n".join(report.lines()))
    assert report.passed


def test_demo_model_rounding_ties_cascade_unless_followed(demo_export):
    """Why validation follows ties: on windows of held-out text the graph now and then rounds a value within float32
    noise of .5 the other way (the reference's exp and sums differ in the last bit); the plain logits then differ far
    beyond tolerance, while the tie-following comparison finds every other code equal."""
    from edge_quamba.folders import load_quantized_model, open_model
    from edge_quamba.models.tokenizer import load_tokenizer
    from edge_quamba.resources import default_evaluation_file
    from edge_quamba.runtime.ort_backend import OrtBackend

    ids = load_tokenizer(demo_export).encode(default_evaluation_file().read_text(encoding="utf-8")[:80_000])
    graph, reference = onnx.load(str(demo_export / "model.onnx")), load_quantized_model(demo_export / "quantized")
    backend = OrtBackend(open_model(str(demo_export)))
    windows = []
    for w in range(12):
        prompt = ids[128 * w:128 * (w + 1)]
        report = validate_on_ort(graph, demo_export / "model.onnx", reference, prompt, decode_steps=0)
        with torch.inference_mode():
            plain = (backend.forward(torch.tensor([prompt]))[0] - reference(torch.tensor([prompt]))[0]).abs().max()
        (logits,) = [c for c in report.checks if c.name == "logits"]
        windows.append((report.ties, float(plain), logits.tolerance, report.passed))
        print(f"window {w}: {report.ties} ties followed, plain logits diff {float(plain):.2e} "
              f"(tolerance {logits.tolerance:.2e}), passed {report.passed}")
    assert all(passed for *_, passed in windows)
    assert any(ties for ties, *_ in windows), "no rounding tie in 12 windows: the premise of this test changed"
    assert all(plain <= tol for ties, plain, tol, _ in windows if ties == 0)
    assert max(plain for ties, plain, _, _ in windows if ties) > 10 * windows[0][2]
