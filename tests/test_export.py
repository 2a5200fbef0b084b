"""ONNX export: graph structure, ONNX Runtime against the quantized reference, the ort backend, and bad input.

Random quantized models of several shapes are lowered and validated in-process (fast); the CLI is run end to end on
a random fp checkpoint and on the demo model (64-token greedy continuation, ort against ref)."""

import collections
import dataclasses
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from edge_quamba.errors import ValidationError
from edge_quamba.models.config_dispatch import parse_model_config
from edge_quamba.models.mamba import MambaLM
from edge_quamba.onnx import state_names
from edge_quamba.onnx.export import export_model
from edge_quamba.onnx.lower import lower_model
from edge_quamba.onnx.structure_check import check_graph
from edge_quamba.onnx.tensorrt import custom_nodes, to_tensorrt_flavour
from edge_quamba.onnx.validate import TieFollower, validate_on_ort
from edge_quamba.ops.plugins import plugin_node_attributes
from edge_quamba.ops.specs import DOMAIN, SPECS
from edge_quamba.quant.calibrate import CalibrationData, calibrate
from edge_quamba.quant.qmodel import QuantConfig, quantize_model
from edge_quamba.runtime.ort_backend import session_options
from helpers import make_tokenizer, random_hf_model, run_cli, save_transformers_layout

LINEARS = ("in_proj", "x_proj", "dt_proj", "out_proj")


@dataclasses.dataclass(frozen=True)
class Shape:
    """A random model: transformers config overrides plus what transformers cannot express (LayerNorm)."""

    name: str
    hf: dict
    norm: str = "rmsnorm"
    hadamard: bool = True


SHAPES = [
    Shape("rms-tied-bias-hadamard-12x8", dict(hidden_size=48, num_hidden_layers=2, state_size=8)),
    Shape("layernorm-untied-nobias-projbias-20x8", dict(hidden_size=80, num_hidden_layers=2, state_size=4,
          conv_kernel=3, use_conv_bias=False, use_bias=True, tie_word_embeddings=False), norm="layernorm"),
    Shape("rms-untied-no-hadamard-28x4", dict(hidden_size=56, num_hidden_layers=3, tie_word_embeddings=False),
          hadamard=False),
    Shape("rms-tied-hadamard-pow2", dict(hidden_size=32, num_hidden_layers=1, state_size=16, conv_kernel=2)),
]


def quantized_model(shape: Shape, seed: int = 0):
    """fp model from random transformers weights (LayerNorm: same weights plus random norm biases), calibrated on
    random tokens, quantized."""
    hf = random_hf_model(seed=seed, noise=0.1, **shape.hf)
    config = dataclasses.replace(parse_model_config(hf.config.to_dict(), "test"), norm=shape.norm)
    fp = MambaLM(config)
    missing, unexpected = fp.load_state_dict(hf.state_dict(), strict=False)
    assert not unexpected and all(key.endswith("norm.bias") or key.endswith("norm_f.bias") for key in missing)
    with torch.no_grad():
        for key in missing:
            fp.get_parameter(key).normal_(0, 0.1, generator=torch.Generator().manual_seed(len(key)))
    qconfig = QuantConfig(hadamard=shape.hadamard, calib_samples=4, calib_seq_len=32)
    data = CalibrationData(torch.randint(0, config.vocab_size, (4, 32), generator=torch.Generator().manual_seed(1)),
                           source="random.txt", sha256="0" * 64)
    return quantize_model(fp.eval(), calibrate(fp.eval(), data, qconfig, progress=False), qconfig), qconfig, data


@pytest.fixture(scope="module", params=SHAPES, ids=lambda s: s.name)
def lowered(request, tmp_path_factory):
    qmodel, _, _ = quantized_model(request.param)
    ort_graph = lower_model(qmodel)
    trt_graph = to_tensorrt_flavour(lower_model(qmodel, "tensorrt"))
    folder = tmp_path_factory.mktemp(request.param.name)
    onnx.save(ort_graph, str(folder / "model.onnx"))
    return request.param, qmodel, ort_graph, trt_graph, folder / "model.onnx"


def test_checker_and_structure(lowered):
    shape, qmodel, ort_graph, trt_graph, _ = lowered
    for flavour, graph in (("ort", ort_graph), ("tensorrt", trt_graph)):
        onnx.checker.check_model(graph, full_check=True)
        assert check_graph(graph, flavour) == []
    n_layer = qmodel.config.n_layer
    per_layer = 3 if shape.hadamard else 2
    assert collections.Counter(n.op_type for n in custom_nodes(ort_graph.graph)) == collections.Counter(
        {"Int8CausalConv1d": n_layer, "Int8SelectiveScan": n_layer, **({"HadamardQuantize": n_layer}
                                                                         if shape.hadamard else {})})
    assert len(custom_nodes(trt_graph.graph)) == per_layer * n_layer
    inputs, outputs = state_names(n_layer)
    assert [i.name for i in ort_graph.graph.input] == ["input_ids", *inputs]
    assert [o.name for o in ort_graph.graph.output] == ["logits", *outputs]


def test_tensorrt_flavour_keeps_float16_tables_and_returns_the_last_logits(lowered):
    """The TensorRT graph stores the embedding / lm_head in float16 (as the artifact does) and runs the lm_head on
    the last position only; the ORT graph keeps float32 logits for every position (evaluation needs them)."""
    _, qmodel, ort_graph, trt_graph, _ = lowered
    initializers = {init.name: init for init in trt_graph.graph.initializer}
    assert initializers["embeddings.weight"].data_type == TensorProto.FLOAT16
    if not qmodel.config.tie_embeddings:
        assert initializers["lm_head.weight"].data_type == TensorProto.FLOAT16
    out = trt_graph.graph.output[0]
    dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert (out.name, out.type.tensor_type.elem_type, dims) == ("last_logits", TensorProto.FLOAT16,
                                                               ["b", qmodel.config.vocab_size])
    assert not any(n.output[0].endswith(".copy") for n in trt_graph.graph.node)  # the ORT-only copies
    assert any(n.output[0].endswith("u_q.copy") for n in ort_graph.graph.node)


def test_every_qdq_is_symmetric_int8_with_positive_scale_and_no_clip(lowered):
    """The checks of check_graph, spelled out on the main graph and every function body."""
    _, _, ort_graph, _, _ = lowered
    inits = {i.name: numpy_helper.to_array(i) for i in ort_graph.graph.initializer}
    bodies = [("graph", list(ort_graph.graph.node))] + [(f.name, list(f.node)) for f in ort_graph.functions]
    counted = 0
    for where, nodes in bodies:
        consts = {n.output[0]: n for n in nodes if n.op_type == "Constant"}
        producers = {o: n for n in nodes for o in n.output}
        for node in nodes:
            assert node.op_type != "Clip" or producers.get(node.input[0], node).op_type != "QuantizeLinear", where
            if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
                continue
            counted += 1
            assert len(node.input) == 3, f"{where}: {node.name} has an implicit zero point"
            if node.input[2] in inits:
                zero_point = inits[node.input[2]]
            else:
                zero_point = numpy_helper.to_array(consts[node.input[2]].attribute[0].t)
            assert zero_point.dtype == np.int8 and int(zero_point) == 0
            if node.input[1] in inits:
                assert inits[node.input[1]].dtype == np.float32 and float(inits[node.input[1]]) > 0
            else:  # a scale attribute of the custom op
                assert consts[node.input[1]].attribute[0].ref_attr_name.endswith("_scale")
    for node in custom_nodes(ort_graph.graph):
        assert all(a.f > 0 for a in node.attribute)
    print(f"{counted} QuantizeLinear/DequantizeLinear nodes checked")
    assert counted > 0


def test_custom_nodes_follow_specs_in_both_flavours(lowered):
    _, _, ort_graph, trt_graph, _ = lowered
    assert {f.name for f in ort_graph.functions} == {n.op_type for n in custom_nodes(ort_graph.graph)}
    assert len(trt_graph.functions) == 0
    inferred = onnx.shape_inference.infer_shapes(ort_graph)
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.value_info, *inferred.graph.input,
                                                           *inferred.graph.output, ]}
    types.update({i.name: i.data_type for i in ort_graph.graph.initializer})
    elem = {"int8": onnx.TensorProto.INT8, "float32": onnx.TensorProto.FLOAT}
    for node in custom_nodes(ort_graph.graph):
        spec = SPECS[node.op_type]
        assert node.domain == DOMAIN
        assert [types[i] for i in node.input] == [elem[t.dtype] for t in spec.inputs]
        assert [types[o] for o in node.output] == [elem[t.dtype] for t in spec.outputs]
        assert [a.name for a in node.attribute] == [a.name for a in spec.attributes]
    trt_nodes = {n.name: n for n in custom_nodes(trt_graph.graph)}
    for node in custom_nodes(ort_graph.graph):
        twin = trt_nodes[node.name]
        assert (twin.op_type, list(twin.input), list(twin.output)) == (node.op_type, list(node.input),
                                                                       list(node.output))
        strings = {a.name: a.s.decode() for a in twin.attribute if a.type == onnx.AttributeProto.STRING}
        assert strings == plugin_node_attributes(SPECS[node.op_type])
        assert [(a.name, a.f) for a in twin.attribute if a.type == onnx.AttributeProto.FLOAT] == \
            [(a.name, a.f) for a in node.attribute]


def test_ort_matches_quantized_reference(lowered):
    _, qmodel, ort_graph, _, model_file = lowered
    prompt = torch.randint(0, qmodel.config.vocab_size, (24,), generator=torch.Generator().manual_seed(2)).tolist()
    report = validate_on_ort(ort_graph, model_file, qmodel, prompt, decode_steps=6)
    print("\n".join(report.lines()))
    assert report.passed
    assert len(report.checks) == 3 + 2 * qmodel.config.n_layer
    assert all(c.max_abs_diff == 0 for c in report.checks if c.name.startswith("conv_state_out"))


def test_greedy_continuation_ort_equals_reference(lowered):
    """24 greedy tokens after a random prompt, each side threading its own states (no tie following here)."""
    from edge_quamba.runtime.backends import TorchReferenceBackend
    from edge_quamba.runtime.ort_backend import OrtGraph

    _, qmodel, _, _, model_file = lowered
    graph, reference = OrtGraph(model_file, qmodel.config), TorchReferenceBackend(qmodel)
    prompt = torch.randint(0, qmodel.config.vocab_size, (16,), generator=torch.Generator().manual_seed(3)).tolist()
    logits, states = graph.run(np.array([prompt]))[:2]
    ref_logits, ref_states = reference.prefill(prompt)
    ort_tokens, ref_tokens = [int(logits[0, -1].argmax())], [int(ref_logits.argmax())]
    for _ in range(23):
        logits, states = graph.run(np.array([[ort_tokens[-1]]]), states)[:2]
        ref_logits, ref_states = reference.decode(ref_tokens[-1], ref_states)
        ort_tokens.append(int(logits[0, -1].argmax()))
        ref_tokens.append(int(ref_logits.argmax()))
    print(ort_tokens)
    assert ort_tokens == ref_tokens


def test_ort_fuses_every_int8_linear(lowered, tmp_path):
    _, qmodel, _, _, model_file = lowered
    import onnxruntime as ort

    optimized = tmp_path / "optimized.onnx"
    ort.InferenceSession(str(model_file), session_options(optimized_model_path=optimized),
                         providers=["CPUExecutionProvider"])
    graph = onnx.load(str(optimized)).graph
    fused = sorted(n.name for n in graph.node if n.op_type == "MatMulIntegerToFloat")
    print(collections.Counter(n.op_type for n in graph.node))
    expected = sorted(f"layers.{i}.mixer.{lin}.matmul" for i in range(qmodel.config.n_layer) for lin in LINEARS)
    assert fused == expected
    producers = {o: n for n in graph.node for o in n.output}
    for node in graph.node:  # what is left as MatMul is float: Hadamard's +-1 matrix, never a dequantized weight
        if node.op_type in ("MatMul", "Gemm"):
            assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in node.input)


def test_tie_follower_adopts_only_proven_ties():
    follower = TieFollower(tolerance=1e-4)
    quotient = torch.tensor([2.5 + 2e-6, 3.2, 4.51, -7.5 - 1e-6])
    reference = torch.tensor([3, 3, 5, -8], dtype=torch.int8)
    follower.expect({"site": np.array([2, 3, 4, -7], np.int8), "other": np.array([1], np.int8)})
    out = follower("site", quotient, reference)
    assert out.tolist() == [2, 3, 5, -7]  # ties adopted; 4.51 -> 4 is not a tie and is kept and counted
    assert (follower.ties, follower.other_differences, follower.first_other) == (2, 1, "site")
    with pytest.raises(AssertionError, match="other"):
        follower.finish()  # the graph made "other", the reference did not
    with pytest.raises(AssertionError, match="site"):
        follower("site", quotient, reference)  # the same codes twice in one step
    with pytest.raises(AssertionError):
        follower(None, quotient, reference)  # an unlabelled quantize call


def mutated(graph: onnx.ModelProto, change) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(graph)
    change(copy.graph)
    return copy


def test_check_graph_catches_broken_graphs(lowered):
    _, _, ort_graph, trt_graph, _ = lowered

    def nonzero_zero_point(g):
        (init,) = [i for i in g.initializer if i.name == "zero_point_int8"]
        init.CopyFrom(numpy_helper.from_array(np.array(3, np.int8), init.name))

    def zero_scale(g):
        (init,) = [i for i in g.initializer if i.name == "layers.0.mixer.xz_scale"]
        init.CopyFrom(numpy_helper.from_array(np.array(0.0, np.float32), init.name))

    def clip_between_q_and_dq(g):
        q = next(n for n in g.node if n.op_type == "QuantizeLinear")
        consumer = next(n for n in g.node if q.output[0] in n.input)
        consumer.input[list(consumer.input).index(q.output[0])] = "clipped_codes"
        g.node.append(helper.make_node("Clip", [q.output[0]], ["clipped_codes"], name="bad_clip"))

    def wrong_attribute(g):
        node = next(n for n in g.node if n.domain == DOMAIN)
        node.attribute[0].name = "scale"

    for change, words in ((nonzero_zero_point, "zero point"), (zero_scale, "scale"),
                          (clip_between_q_and_dq, "Clip"), (wrong_attribute, "attributes")):
        problems = check_graph(mutated(ort_graph, change), "ort")
        print(change.__name__, problems[:1])
        assert problems and any(words in p for p in problems)
    trt_with_function = onnx.ModelProto()
    trt_with_function.CopyFrom(trt_graph)
    trt_with_function.functions.extend(ort_graph.functions)
    assert any("no function bodies" in p for p in check_graph(trt_with_function, "tensorrt"))
    assert check_graph(ort_graph, "tensorrt")  # no plugin attributes on the ORT flavour's nodes


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
