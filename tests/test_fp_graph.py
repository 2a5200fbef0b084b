"""The fp32 ONNX graph of an fp checkpoint (``export --bits fp32``), the CPU speed baseline of the quantized graphs:
the graph against the float32 reference (prefill logits and states, then decode steps continuing from the states),
the export folder the CLI writes, and the refused combinations. Tiny random models, Mamba1 and Mamba2."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto

from helpers import TEXT, cli_in_process, make_tokenizer, one_error_line, random_hf_mamba2, random_hf_model, report
from helpers import save_transformers_layout

from edge_quamba.folders import open_model
from edge_quamba.models.config import Mamba2Config, MambaConfig
from edge_quamba.models.mamba import MambaLM
from edge_quamba.models.mamba2 import Mamba2LM
from edge_quamba.onnx.lower import lower_model
from edge_quamba.onnx.structure_check import check_graph
from edge_quamba.onnx.validate import FP32_RTOL
from edge_quamba.runtime.ort_backend import OrtGraph

CONFIGS = {
    "mamba1": MambaConfig(d_model=32, n_layer=2, vocab_size=96, d_state=8),
    # the other Mamba1 branches: LayerNorm with a bias, linear biases, an untied lm_head, a float32-less residual
    "mamba1-layernorm": MambaConfig(d_model=32, n_layer=2, vocab_size=96, d_state=8, norm="layernorm",
                                    proj_bias=True, tie_embeddings=False, residual_in_fp32=False),
    "mamba2": Mamba2Config(d_model=32, n_layer=2, vocab_size=96, d_state=8, headdim=8, ngroups=2, chunk_size=5),
}


def random_fp_model(config) -> MambaLM:
    """The reference in float32 with random weights (init + noise, so that every parameter matters)."""
    torch.manual_seed(0)
    model = (Mamba2LM if isinstance(config, Mamba2Config) else MambaLM)(config, dtype=torch.float32).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model


@pytest.mark.parametrize("name", list(CONFIGS))
def test_fp32_graph_equals_the_fp32_reference_in_prefill_and_decode(name, tmp_path):
    model = random_fp_model(CONFIGS[name])
    graph = lower_model(model, "ort")
    onnx.checker.check_model(graph, full_check=True)
    assert check_graph(graph, "ort") == [] and not graph.functions
    ops = {n.op_type for n in graph.graph.node}
    assert {n.domain for n in graph.graph.node} == {""} and not ops & {"Cast", "DequantizeLinear"}  # float32 only
    assert all(t.data_type in (TensorProto.FLOAT, TensorProto.INT64) for t in graph.graph.initializer
               if t.name != "zero_point_int8")
    types = {i.name: i.type.tensor_type.elem_type for i in graph.graph.input}
    assert types["conv_state.0"] == TensorProto.FLOAT and types["ssm_state.0"] == TensorProto.FLOAT
    file = tmp_path / "model.onnx"
    onnx.save(graph, str(file))
    session = OrtGraph(file, model.config, threads=1)

    tokens = torch.randint(0, model.config.vocab_size, (2, 11), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref_logits, ref_states = model(tokens)  # prefill: every position
        logits, states, _ = session.run(tokens.numpy())
        pairs = [("prefill logits", logits, ref_logits)]
        pairs += [(f"prefill {kind} {i}", states[f"{kind}.{i}"], getattr(s, kind))
                  for i, s in enumerate(ref_states) for kind in ("conv_state", "ssm_state")]
        for step in range(3):  # decode continues from both sides' own states
            token = torch.tensor([[5 + step], [17 + step]])
            ref_logits, ref_states = model.step(token[:, 0], ref_states)
            logits, states, _ = session.run(token.numpy(), states)
            pairs.append((f"decode {step} logits", logits[:, 0], ref_logits))
            pairs += [(f"decode {step} {kind} {i}", states[f"{kind}.{i}"], getattr(s, kind))
                      for i, s in enumerate(ref_states) for kind in ("conv_state", "ssm_state")]
    for what, got, ref in pairs:
        assert got.dtype == np.float32 and got.shape == tuple(ref.shape), what
        diff = report(what, torch.from_numpy(got) - ref)
        assert diff <= FP32_RTOL * max(1.0, float(ref.abs().max())), what


@pytest.fixture(scope="module")
def fp_folders(tmp_path_factory):
    tokenizer = make_tokenizer(120)
    vocab = tokenizer.get_vocab_size()
    return {"mamba1": save_transformers_layout(random_hf_model(seed=3, vocab_size=vocab, noise=0.2),
                                               tmp_path_factory.mktemp("fp1"), tokenizer),
            "mamba2": save_transformers_layout(random_hf_mamba2(seed=4, vocab_size=vocab, noise=0.2),
                                               tmp_path_factory.mktemp("fp2"), tokenizer)}


@pytest.mark.parametrize("arch", ["mamba1", "mamba2"])
def test_export_bits_fp32_writes_a_valid_fp32_export_folder(arch, fp_folders, tmp_path):
    fp_folder, out = fp_folders[arch], tmp_path / "fp32"
    calib = tmp_path / "calib.txt"
    calib.write_text(TEXT)
    proc = cli_in_process("export", "--model", str(fp_folder), "--out", str(out), "--bits", "fp32",
                          "--calib-data", str(calib), "--validate-prompt-len", "24", "--validate-decode-steps", "4",
                          "--threads", "1", "--json")
    print(proc.stderr)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    checks = result["validation"]["ort"]["checks"]
    assert result["validation"]["ort"]["passed"] and len(checks) == 1 + 2 * 2
    assert result["validation"]["ort"]["logits_rtol"] == result["validation"]["ort"]["ssm_state_rtol"] == FP32_RTOL
    assert sorted(Path(p).relative_to(out).as_posix() for p in result["files"]) == sorted(
        ["model.onnx", "tokenizer.json", "export_config.json", "fp/config.json", "fp/model.safetensors",
         "fp/tokenizer.json"])
    folder = open_model(str(out))  # the folder kind and every file's sha256
    assert folder.kind == "export" and folder.record["graph"] == "fp32" and folder.record["quantization"] is None
    assert folder.record["targets"] == ["ort"] and not (out / "model.trt.onnx").exists()
    assert folder.record["source"]["model"] == str(fp_folder)
    (out / "fp" / "model.safetensors").write_bytes((out / "fp" / "model.safetensors").read_bytes()[:-4] + b"0000")
    line = one_error_line(cli_in_process("run", "--model", str(out), "--prompt", "x"))  # integrity applies
    assert "model.safetensors" in line


@pytest.mark.parametrize("arch", ["mamba1", "mamba2"])
def test_fp32_export_runs_on_ort_with_the_fp_checkpoints_tokens(arch, fp_folders, tmp_path):
    fp_folder, out = fp_folders[arch], tmp_path / "fp32"
    assert cli_in_process("export", "--model", str(fp_folder), "--out", str(out), "--bits", "fp32",
                          "--validate-prompt-len", "16", "--validate-decode-steps", "2").returncode == 0
    runs = {}
    for name, model, backend in (("ort", out, "ort"), ("ref export", out, "ref"), ("ref fp", fp_folder, "ref")):
        proc = cli_in_process("run", "--model", str(model), "--backend", backend, "--prompt", "The quick brown",
                              "--max-new-tokens", "6", "--temperature", "0", "--threads", "1", "--json")
        assert proc.returncode == 0, proc.stderr
        runs[name] = json.loads(proc.stdout)["tokens"]
    print(runs)
    assert runs["ort"] == runs["ref export"] == runs["ref fp"]
    bench = cli_in_process("bench", "--model", str(out), "--backend", "ort", "--prompt-len", "8", "--new-tokens",
                           "3", "--repeats", "1", "--threads", "1", "--json")
    assert bench.returncode == 0, bench.stderr
    assert json.loads(bench.stdout)["model_bytes"] == (out / "model.onnx").stat().st_size


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="a statement about x86 CPUs")
def test_ort_cpu_runs_a_float16_matmul_as_float32_between_casts(tmp_path):
    """Why the CPU baseline is float32 (edge_quamba/onnx/lower_w4a16.py): ONNX Runtime's CPU execution provider has
    no float16 MatMul kernel; it inserts Cast -> float32 MatMul -> Cast. When this fails, ORT gained one: revisit."""
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    from edge_quamba.runtime.ort_backend import session_options

    weight = numpy_helper.from_array(np.ones((8, 16), np.float16), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1, 16])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    optimized = tmp_path / "optimized.onnx"
    ort.InferenceSession(model.SerializeToString(), session_options(1, optimized), providers=["CPUExecutionProvider"])
    ops = [(n.op_type, {a.name: a.i for a in n.attribute}.get("to")) for n in onnx.load(str(optimized)).graph.node]
    print(ops)
    assert ops == [("Cast", TensorProto.FLOAT), ("MatMul", None), ("Cast", TensorProto.FLOAT16)]


def test_refused_combinations_of_bits_fp32_error_in_one_line(fp_folders, tmp_path):
    fp_folder = fp_folders["mamba1"]
    line = one_error_line(cli_in_process("export", "--model", str(fp_folder), "--out", str(tmp_path / "e"),
                                         "--bits", "fp32", "--target", "tensorrt"))
    assert "--target tensorrt" in line and "fp32" in line
    line = one_error_line(cli_in_process("quantize", "--model", str(fp_folder), "--out", str(tmp_path / "q"),
                                         "--bits", "fp32"))
    assert "export --bits fp32" in line
    assert not (tmp_path / "e").exists() and not (tmp_path / "q").exists()
