"""Invariant 4 for the hybrid models: `export` of a tiny Nemotron-H / Bamba writes one ORT graph whose KV caches are
graph inputs and outputs with a symbolic past length beside the Mamba2 states, validated on ONNX Runtime against the
quantized reference (int8 codes exact, logits and float states within tolerance, prefill and decode); `run` and
`eval` on the ort backend equal the reference; what is not built is refused in one line. The W4A16 and fp32 graphs
(float graphs, no int8 codes): tests/test_hybrid_float_export.py."""

import json

import onnx
import pytest

from helpers import TEXT, cli_in_process, make_tokenizer, one_error_line
from hybrid_helpers import random_hf_bamba, random_hf_nemotron_h

EXPORTS = {  # name: (architecture, extra export options)
    "nemotron_h_w8a8": ("nemotron_h", ()),
    "bamba_kv_int8": ("bamba", ("--kv-cache", "int8")),
    "bamba_w4a8": ("bamba", ("--bits", "w4a8", "--group-size", "16")),
    "nemotron_h_float_attn_mlp": ("nemotron_h", ("--float-attn-mlp",)),
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hybrid_export")
    tokenizer = make_tokenizer(120)
    paths = {}
    for arch, make in (("nemotron_h", random_hf_nemotron_h), ("bamba", random_hf_bamba)):
        make(seed=13, vocab_size=tokenizer.get_vocab_size()).save_pretrained(tmp / arch)
        tokenizer.save(str(tmp / arch / "tokenizer.json"))
        paths[arch] = tmp / arch
    text = tmp / "text.txt"
    text.write_text(TEXT * 3)
    return tmp, paths, text


def export(folders, name):
    tmp, paths, text = folders
    arch, extra = EXPORTS[name]
    out = tmp / name
    if not out.exists():
        proc = cli_in_process("export", "--model", str(paths[arch]), "--out", str(out), "--method", "quamba2",
                              "--calib-data", str(text), "--calib-samples", "4", "--calib-seq-len", "16",
                              "--validate-prompt-len", "24", "--validate-decode-steps", "4", "--json", *extra)
        assert proc.returncode == 0, proc.stderr
        (out / "report.json").write_text(proc.stdout)
    return out, json.loads((out / "report.json").read_text())


@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_hybrid_exports_and_validates_on_ort(folders, name):
    out, report = export(folders, name)
    checks = {c["name"]: c for c in report["validation"]["ort"]["checks"]}
    print(json.dumps(checks, indent=1)[:2500])
    assert all(c["passed"] for c in checks.values())
    assert checks["int8 codes inside the graph"]["max_abs_diff"] == 0
    attention = 2  # block 2 is attention in both patterns (Nemotron-H M-*M-*, Bamba M-*-M-)
    assert {f"present_key.{attention}", f"present_value.{attention}", "conv_state_out.0", "ssm_state_out.0"} <= \
        set(checks)
    if name == "bamba_kv_int8":
        assert checks[f"present_key.{attention}"]["tolerance"] == 0.0  # int8 cache codes: exact
    graph = onnx.load(str(out / "model.onnx"))
    shapes = {i.name: (i.type.tensor_type.elem_type, [d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim])
              for i in graph.graph.input}
    kv_type = onnx.TensorProto.INT8 if name == "bamba_kv_int8" else onnx.TensorProto.FLOAT16
    assert shapes[f"past_key.{attention}"] == (kv_type, ["b", 2, "t", 8])  # (b, kv heads, past length, head_dim)
    assert shapes["conv_state.0"][0] == onnx.TensorProto.INT8 and "conv_state.1" not in shapes  # block 1: MLP
    assert not (out / "model.trt.onnx").exists()
    config = json.loads((out / "export_config.json").read_text())
    assert f"past_key.{attention}" in config["onnx"]["inputs"]
    if name == "bamba_w4a8":
        assert any(init.data_type == onnx.TensorProto.INT4 for init in graph.graph.initializer)


@pytest.mark.parametrize("name", ["nemotron_h_w8a8", "bamba_kv_int8"])
def test_ort_backend_equals_reference(folders, name):
    """Greedy tokens of `run --backend ort` (prefill, then the KV cache and states threaded through the graph) equal
    `--backend ref`'s, and `eval` scores alike."""
    out, _ = export(folders, name)
    _, _, text = folders
    tokens = {}
    for backend in ("ort", "ref"):
        run = cli_in_process("run", "--model", str(out), "--backend", backend, "--prompt", "The quick brown",
                             "--max-new-tokens", "10", "--temperature", "0", "--json")
        assert run.returncode == 0, run.stderr
        tokens[backend] = json.loads(run.stdout)["tokens"]
    print(tokens)
    assert tokens["ort"] == tokens["ref"]
    nll = {}
    for backend in ("ort", "ref"):
        ev = cli_in_process("eval", "--model", str(out), "--backend", backend, "--data", str(text), "--seq-len", "16",
                            "--max-tokens", "48", "--json")
        assert ev.returncode == 0, ev.stderr
        nll[backend] = json.loads(ev.stdout)["nll_per_token"]
    print(nll)
    assert abs(nll["ort"] - nll["ref"]) <= 1e-4


@pytest.mark.parametrize("bits", ["w8a8", "w4a16", "fp32"])
def test_hybrid_export_refuses_the_tensorrt_target(folders, bits):
    """The W4A16 and fp32 graphs are built (tests/test_hybrid_float_export.py); no TensorRT graph at any width."""
    tmp, paths, text = folders
    method = () if bits == "fp32" else ("--method", "quamba2")  # no recipe option applies at fp32 (refused)
    line = one_error_line(cli_in_process("export", "--model", str(paths["bamba"]), "--out", str(tmp / "refused"),
                                         *method, "--bits", bits, "--calib-data", str(text), "--target", "tensorrt"))
    assert "--target tensorrt is not built for" in line and not (tmp / "refused").exists()


@pytest.mark.parametrize("backend", ["cuda", "tensorrt"], ids=["backend-cuda", "backend-tensorrt"])  # (an id "cuda"
# would mark the test as needing a GPU, tests/conftest.py)
def test_gpu_backends_refuse_hybrid_models(folders, backend):
    _, paths, _ = folders
    line = one_error_line(cli_in_process("run", "--model", str(paths["nemotron_h"]), "--backend", backend,
                                         "--prompt", "The"))
    assert f"--backend {backend} cannot run" in line and "no GPU kernels for attention" in line
