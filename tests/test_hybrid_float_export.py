"""The float graphs of the hybrid models (edge_quamba/onnx/lower_hybrid_float.py): W4A16 (float16, int4 linears that
ONNX Runtime fuses into MatMulNBits) and fp32 (`export --bits fp32`, the CPU baseline), each against its reference on
ONNX Runtime (prefill, then decode steps continuing from the Mamba2 states and the KV caches); the export folders the
CLI writes, validated at export; `run` and `eval` on the ort backend against the reference. Tiny random Nemotron-H
and Bamba models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto

from helpers import TEXT, cli_in_process, make_tokenizer, report
from hybrid_helpers import random_hf_bamba, random_hf_nemotron_h, reference_from_hf

from edge_quamba.folders import open_model
from edge_quamba.onnx.lower_hybrid import lower_hybrid_model
from edge_quamba.onnx.structure_check import check_graph
from edge_quamba.onnx.validate import FP32_RTOL, W4A16_RTOL
from edge_quamba.quant.hybrid_qmodel import quantize_hybrid_model
from edge_quamba.quant.qmodel import Int4Linear, QuantConfig
from edge_quamba.runtime.ort_backend import OrtGraph

ARCHS = {"nemotron_h": random_hf_nemotron_h, "bamba": random_hf_bamba}
"""Nemotron-H (pattern M-*M-*: relu² MLPs, no RoPE) and Bamba (M- *- M-: SwiGLU MLPs, RoPE on half of each head)."""
GRAPHS = {  # name: (the reference's dtype, QuantConfig of the W4A16 reference or None for the fp32 model, rtol)
    "fp32": (torch.float32, None, FP32_RTOL),
    "w4a16": (torch.float16, QuantConfig(method="quamba2", bits="w4a16", group_size=16), W4A16_RTOL),
    "w4a16_float_attn_mlp": (torch.float16, QuantConfig(method="quamba2", bits="w4a16", group_size=16,
                                                        quantize_attn_mlp=False), W4A16_RTOL),
}


def float_reference(arch: str, graph: str):
    """The fp32 model, or its W4A16 reference (round-to-nearest int4 weights: no calibration needed)."""
    fp = reference_from_hf(ARCHS[arch](seed=3), torch.float32)
    qconfig = GRAPHS[graph][1]
    if qconfig is None:
        return fp
    n = fp.config.n_layer
    return quantize_hybrid_model(fp, [{}] * n, [None] * n, qconfig)


def io_types(graph: onnx.ModelProto) -> dict[str, tuple[int, list]]:
    return {v.name: (v.type.tensor_type.elem_type, [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim])
            for v in [*graph.graph.input, *graph.graph.output]}


@pytest.mark.parametrize("graph_name", list(GRAPHS))
@pytest.mark.parametrize("arch", list(ARCHS))
def test_float_graph_equals_its_reference_in_prefill_and_decode(arch, graph_name, tmp_path):
    model = float_reference(arch, graph_name)
    dtype, _, rtol = GRAPHS[graph_name]
    act = {torch.float16: TensorProto.FLOAT16, torch.float32: TensorProto.FLOAT}[dtype]
    c = model.config
    graph = lower_hybrid_model(model)
    onnx.checker.check_model(graph, full_check=True)
    assert check_graph(graph, "ort") == [] and not graph.functions
    assert {n.domain for n in graph.graph.node} == {""}  # standard ops only
    int4_linears = sum(isinstance(m, Int4Linear) for m in model.modules())
    assert int4_linears == {"fp32": 0, "w4a16": 17 if arch == "bamba" else 16, "w4a16_float_attn_mlp": 4}[graph_name]
    assert sum(t.data_type == TensorProto.INT4 for t in graph.graph.initializer) == 2 * int4_linears  # codes, zeros
    attention, mamba2 = c.blocks_of("*")[0], c.blocks_of("M")[0]
    types = io_types(graph)
    assert types[f"past_key.{attention}"] == (act, ["b", c.n_kv_heads, "t", c.head_dim])  # the reference's cache
    assert types[f"present_value.{attention}"] == (act, ["b", c.n_kv_heads, "t_plus_l", c.head_dim])
    assert types[f"conv_state.{mamba2}"][0] == act and types[f"ssm_state.{mamba2}"][0] == TensorProto.FLOAT
    file, optimized = tmp_path / "model.onnx", tmp_path / "optimized.onnx"
    onnx.save(graph, str(file))
    session = OrtGraph(file, c, threads=1, optimized_model_path=optimized)
    fused = sum(n.op_type == "MatMulNBits" for n in onnx.load(str(optimized)).graph.node)
    assert fused == int4_linears  # every int4 linear runs as ONNX Runtime's 4-bit GEMM

    tokens = torch.randint(0, c.vocab_size, (2, 11), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref_logits, ref_states = model(tokens)
        logits, states, _ = session.run(tokens.numpy())
        pairs = [("prefill logits", logits, ref_logits)]

        def state_pairs(when: str) -> list:
            named = [(f"{kind}.{i}", getattr(s, attr)) for i, s in enumerate(ref_states) if s is not None
                     for kind, attr in ((("conv_state", "conv_state"), ("ssm_state", "ssm_state")) if c.kind(i) == "M"
                                        else (("past_key", "key"), ("past_value", "value")))]
            return [(f"{when} {name}", states[name], ref) for name, ref in named]

        pairs += state_pairs("prefill")
        for step in range(3):  # decode continues from both sides' own states
            token = torch.tensor([[5 + step], [17 + step]])
            ref_logits, ref_states = model.step(token[:, 0], ref_states)
            logits, states, _ = session.run(token.numpy(), states)
            pairs += [(f"decode {step} logits", logits[:, 0], ref_logits), *state_pairs(f"decode {step}")]
    assert states[f"past_key.{attention}"].shape == (2, c.n_kv_heads, 14, c.head_dim)
    for what, got, ref in pairs:
        assert got.shape == tuple(ref.shape), what
        assert "logits" in what or got.dtype == ref.numpy().dtype, what  # states in the reference's types
        ref = ref.float()
        diff = report(what, torch.from_numpy(got.astype(np.float32)) - ref)
        assert diff <= rtol * max(1.0, float(ref.abs().max())), what


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hybrid_float_export")
    tokenizer = make_tokenizer(120)
    paths = {}
    for arch, make in ARCHS.items():
        make(seed=13, vocab_size=tokenizer.get_vocab_size()).save_pretrained(tmp / arch)
        tokenizer.save(str(tmp / arch / "tokenizer.json"))
        paths[arch] = tmp / arch
    text = tmp / "text.txt"
    text.write_text(TEXT * 3)
    return tmp, paths, text


BITS_OPTIONS = {"w4a16": ("--method", "quamba2", "--bits", "w4a16", "--group-size", "16", "--calib-samples", "4",
                          "--calib-seq-len", "16"),
                "fp32": ("--bits", "fp32")}


def export(folders, arch: str, bits: str) -> tuple[Path, dict]:
    tmp, paths, text = folders
    out = tmp / f"{arch}_{bits}"
    if not out.exists():
        proc = cli_in_process("export", "--model", str(paths[arch]), "--out", str(out), *BITS_OPTIONS[bits],
                              "--calib-data", str(text), "--validate-prompt-len", "24", "--validate-decode-steps", "4",
                              "--threads", "1", "--json")
        assert proc.returncode == 0, proc.stderr
        (out / "report.json").write_text(proc.stdout)
    return out, json.loads((out / "report.json").read_text())


@pytest.mark.parametrize("bits", list(BITS_OPTIONS))
@pytest.mark.parametrize("arch", list(ARCHS))
def test_export_writes_a_float_hybrid_graph_validated_on_ort(folders, arch, bits):
    out, result = export(folders, arch, bits)
    validation = result["validation"]["ort"]
    checks = {c["name"]: c for c in validation["checks"]}
    print(json.dumps(checks, indent=1)[:2500])
    rtol = W4A16_RTOL if bits == "w4a16" else FP32_RTOL
    assert validation["passed"] and validation["logits_rtol"] == rtol
    folder = open_model(str(out))  # the folder kind and every file's sha256
    c = folder.config
    states = [f"{kind}_out.{i}" for i in c.blocks_of("M") for kind in ("conv_state", "ssm_state")]
    states += [f"present_{kind}.{i}" for i in c.blocks_of("*") for kind in ("key", "value")]
    assert set(checks) == {"logits", *states}  # every state of every block compared
    assert all(0 < check["tolerance"] and check["max_abs_diff"] <= check["tolerance"] for check in checks.values())
    assert folder.record["graph"] == ("quantized" if bits == "w4a16" else "fp32")
    assert folder.record["targets"] == ["ort"] and not (out / "model.trt.onnx").exists()
    act = TensorProto.FLOAT16 if bits == "w4a16" else TensorProto.FLOAT
    assert io_types(onnx.load(str(out / "model.onnx")))[f"past_key.{c.blocks_of('*')[0]}"][0] == act


@pytest.mark.parametrize("bits", list(BITS_OPTIONS))
@pytest.mark.parametrize("arch", list(ARCHS))
def test_ort_backend_runs_the_float_hybrid_export_as_the_reference(folders, arch, bits):
    """Greedy tokens of `run --backend ort` (prefill, then the KV caches and states threaded through the graph) equal
    `--backend ref`'s (and, at fp32, the fp checkpoint's); `eval` scores alike on both backends."""
    out, _ = export(folders, arch, bits)
    _, paths, text = folders
    models = [("ort", out, "ort"), ("ref", out, "ref")] + ([("ref fp", paths[arch], "ref")] if bits == "fp32" else [])
    tokens = {}
    for name, model, backend in models:
        run = cli_in_process("run", "--model", str(model), "--backend", backend, "--prompt", "The quick brown",
                             "--max-new-tokens", "10", "--temperature", "0", "--threads", "1", "--json")
        assert run.returncode == 0, run.stderr
        tokens[name] = json.loads(run.stdout)["tokens"]
    print(tokens)
    assert all(t == tokens["ref"] for t in tokens.values())
    nll = {}
    for backend in ("ort", "ref"):
        ev = cli_in_process("eval", "--model", str(out), "--backend", backend, "--data", str(text), "--seq-len", "16",
                            "--max-tokens", "48", "--threads", "1", "--json")
        assert ev.returncode == 0, ev.stderr
        nll[backend] = json.loads(ev.stdout)["nll_per_token"]
    print(nll)
    assert abs(nll["ort"] - nll["ref"]) <= (1e-3 if bits == "w4a16" else 1e-5)
