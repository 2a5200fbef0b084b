"""4-bit group-wise weights: the int4 convention, GPTQ, the W4A8/W4A16 reference ops against literal loops, the
configs end to end (quantize -> artifact -> reference, decode = prefill; W4A8 -> ONNX -> ONNX Runtime validation),
format-1 artifacts, and the one-line errors of what is not built."""

import collections
import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, numpy_helper

from edge_quamba.errors import ConfigError, InputError
from edge_quamba.models.config_dispatch import parse_model_config
from edge_quamba.models.mamba import MambaLM
from edge_quamba.onnx.export import export_model
from edge_quamba.onnx.structure_check import check_graph
from edge_quamba.onnx.validate import TIE_TOLERANCE, W4A16_RTOL
from edge_quamba.ops import torch_ops  # noqa: F401  (registers torch.ops.edge_quamba.*)
from edge_quamba.folders import load_quantized_model
from edge_quamba.quant.artifact import QUANT_CONFIG
from edge_quamba.quant.calibrate import CalibrationData, LinearHessians, calibrate
from edge_quamba.quant.gptq import HessianAccumulator, gptq_quantize
from edge_quamba.quant.pipeline import quantize_checkpoint
from edge_quamba.quant.primitives import (AMAX_FLOOR, dequantize_int4, int4_group_count, int4_group_linear,
                                          int4_group_scales, pack_int4, quantize, quantize_int4,
                                          quantize_weight_int4, unpack_int4)
from edge_quamba.quant.qmodel import FOUR_BIT_LINEARS, Int4Linear, QuantConfig, QuantMambaMixer, quantize_model
from helpers import (cli_in_process, decode_stepwise, make_tokenizer, one_error_line, random_hf_model, report,
                     save_transformers_layout)

eq = torch.ops.edge_quamba


# ----------------------------------------------------------------------------------------------------------------
# The convention


def test_group_scales_and_codes_follow_the_convention_exactly():
    # K = 5, group 2: groups [0, 2), [2, 4) and the partial [4, 5)
    w = torch.tensor([[0.7, -0.35, 0.0, 0.0, -1.4],
                      [0.05, 0.1, 3.5, -7.0, 0.25]])
    scales = int4_group_scales(w, 2)
    expected = torch.tensor([[0.7, AMAX_FLOOR, 1.4], [0.1, 7.0, 0.25]], dtype=torch.float32) / 7
    assert scales.dtype == torch.float32 and torch.equal(scales, expected)
    q, s = quantize_weight_int4(w, 2)
    assert torch.equal(s, scales)
    # 0.7 / 0.1 = 7; -0.35 / 0.1 = -3.5 -> -4 (half to even); 0 -> 0; -1.4 / 0.2 = -7
    # 0.05 / (0.1/7) = 3.5 -> 4; 0.1 -> 7; 3.5 / 1 -> 4 (half to even), -7 / 1 -> -7; 0.25 -> 7
    assert q.tolist() == [[7, -4, 0, 0, -7], [4, 7, 4, -7, 7]]
    w_hat = dequantize_int4(q, s, 2)
    literal = torch.tensor([[q[n, k].item() * s[n, k // 2].item() for k in range(5)] for n in range(2)],
                           dtype=torch.float32)  # float32(q) * float32(scale): one rounding, as Python's product
    assert torch.equal(w_hat, literal)


def test_codes_never_leave_minus_seven_to_seven():
    w = torch.randn(64, 300, generator=torch.Generator().manual_seed(0)) * 3
    q, s = quantize_weight_int4(w, 128)
    assert s.shape == (64, int4_group_count(300, 128)) == (64, 3)
    assert int(q.min()) >= -7 and int(q.max()) <= 7
    assert int((q.abs() == 7).sum()) >= 64 * 3  # each (row, group) reaches its amax
    saturated = quantize_int4(torch.tensor([100.0, -100.0, float("inf"), float("nan")]), torch.tensor(1.0))
    assert saturated.tolist() == [7, -7, 7, 0]


def test_k_below_the_group_size_is_one_partial_group():
    w = torch.randn(8, 24)
    q, s = quantize_weight_int4(w, 128)
    assert s.shape == (8, 1)
    assert torch.equal(s[:, 0], w.abs().amax(1) / 7)


def test_packing_is_low_nibble_first_twos_complement():
    q = torch.tensor([[1, -1, 7, -8, -7], [0, 2, -2, 3, 0]], dtype=torch.int8)
    packed = pack_int4(q)
    # row 0: (1, -1) -> 0xF1; (7, -8) -> 0x87; (-7, pad 0) -> 0x09
    assert packed.dtype == torch.uint8 and packed.tolist() == [[0xF1, 0x87, 0x09], [0x20, 0x3E, 0x00]]
    assert torch.equal(unpack_int4(packed, 5), q)
    big = torch.randint(-8, 8, (33, 257), dtype=torch.int8, generator=torch.Generator().manual_seed(3))
    assert torch.equal(unpack_int4(pack_int4(big), 257), big)
    with pytest.raises(ValueError):
        pack_int4(torch.tensor([[8]], dtype=torch.int8))


def test_packing_matches_onnx_int4():
    q = torch.randint(-7, 8, (6, 9), dtype=torch.int8, generator=torch.Generator().manual_seed(4))
    tensor = onnx.helper.make_tensor("w", TensorProto.INT4, [6, 9], q.flatten().tolist())
    assert torch.equal(torch.from_numpy(numpy_helper.to_array(tensor).astype(np.int8)), q)
    # ONNX packs the flattened tensor; ours packs per row: the same bytes whenever K is even
    q_even = q[:, :8].contiguous()
    onnx_bytes = onnx.helper.make_tensor("w", TensorProto.INT4, [6, 8], q_even.flatten().tolist()).int32_data
    assert list(onnx_bytes) == pack_int4(q_even).flatten().tolist()  # one packed byte per int32_data entry


# ----------------------------------------------------------------------------------------------------------------
# W4A8 / W4A16 ops against literal loops


def test_w4a8_linear_is_the_stated_float_order():
    gen = torch.Generator().manual_seed(5)
    k, n, group = 40, 6, 16  # groups of 16, 16, 8
    x_q = torch.randint(-127, 128, (3, k), dtype=torch.int8, generator=gen)
    w_q = torch.randint(-7, 8, (n, k), dtype=torch.int8, generator=gen)
    w_s = torch.rand(n, 3, generator=gen) * 0.01 + 1e-4
    x_s = 0.0371
    y = int4_group_linear(x_q, x_s, w_q, w_s, group)
    expected = np.zeros((3, n), np.float32)
    for b in range(3):
        for j in range(n):
            acc_y = None
            for g, start in enumerate(range(0, k, group)):
                acc = sum(int(x_q[b, i]) * int(w_q[j, i]) for i in range(start, min(start + group, k)))
                alpha = np.float32(x_s) * np.float32(w_s[j, g])
                term = np.float32(np.float32(acc) * alpha)
                acc_y = term if acc_y is None else np.float32(acc_y + term)
            expected[b, j] = acc_y
    assert np.array_equal(y.numpy(), expected)
    bias = torch.randn(n)
    out_scale = 0.05
    packed = pack_int4(w_q)  # the ops take the packed weight, as the artifact stores it
    fused = eq.w4a8_linear_quantize(x_q, packed, w_s, bias, x_s, group, out_scale)
    assert torch.equal(fused, quantize(eq.w4a8_linear(x_q, packed, w_s, bias, x_s, group), out_scale))
    assert torch.equal(eq.w4a8_linear(x_q, packed, w_s, bias, x_s, group), y + bias)


def test_w4a16_linear_accumulates_in_float32_and_rounds_once():
    gen = torch.Generator().manual_seed(6)
    w = torch.randn(5, 20, generator=gen)
    q, s = quantize_weight_int4(w, 8)
    x = torch.randn(2, 20, generator=gen).half()
    bias = torch.randn(5, generator=gen)
    y = eq.w4a16_linear(x, pack_int4(q), s, bias, 8)
    w_hat = dequantize_int4(q, s, 8).double()
    exact = (x.double() @ w_hat.T + bias.float().double())
    assert y.dtype == torch.float16
    report("w4a16 vs float64", y.double() - exact)
    assert torch.allclose(y.double(), exact.half().double(), atol=0, rtol=1e-3)


# ----------------------------------------------------------------------------------------------------------------
# GPTQ


def correlated_inputs(k: int, tokens: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    mix = torch.randn(k, k, generator=gen) / k ** 0.5 + torch.eye(k)
    scales = torch.rand(k, generator=gen) * 3 + 0.1  # channels of different magnitude, as activations have
    return (torch.randn(tokens, k, generator=gen) @ mix) * scales


def test_gptq_output_error_is_below_round_to_nearest():
    x = correlated_inputs(160, 4096, seed=7)
    w = torch.randn(48, 160, generator=torch.Generator().manual_seed(8))
    acc = HessianAccumulator(160)
    for chunk in x.split(1000):
        acc.add(chunk)
    assert torch.allclose(acc.H, 2 * x.double().T @ x.double() / x.shape[0], rtol=1e-10, atol=1e-9)

    def output_error(q, s):
        return float(((x.double() @ (w.double() - dequantize_int4(q, s, 64).double()).T) ** 2).mean())

    gptq = output_error(*gptq_quantize(w, acc.H, 64))
    rtn = output_error(*quantize_weight_int4(w, 64))
    print(f"output MSE: GPTQ {gptq:.4e}, round-to-nearest {rtn:.4e}")
    assert gptq < 0.8 * rtn


def test_gptq_with_identity_hessian_is_round_to_nearest():
    w = torch.randn(32, 100, generator=torch.Generator().manual_seed(9))
    q, s = gptq_quantize(w, torch.eye(100, dtype=torch.float64), 32)
    q_rtn, s_rtn = quantize_weight_int4(w, 32)
    assert torch.equal(s, s_rtn) and torch.equal(q, q_rtn)


def test_gptq_is_deterministic_and_handles_dead_inputs():
    x = correlated_inputs(64, 512, seed=10)
    x[:, 5] = 0  # an input channel that is always zero
    w = torch.randn(16, 64, generator=torch.Generator().manual_seed(11))
    acc = HessianAccumulator(64)
    acc.add(x)
    first, second = gptq_quantize(w, acc.H, 32), gptq_quantize(w, acc.H, 32)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert int(first[0][:, 5].abs().sum()) == 0


# ----------------------------------------------------------------------------------------------------------------
# Configs end to end on a tiny model

HF = dict(hidden_size=64, num_hidden_layers=2, state_size=8)  # d_inner 128, dt_rank 4
GROUP = 32  # in_proj K=64: 2 groups; x_proj/out_proj K=128: 4; dt_proj K=4: one partial group


def tiny_fp_model():
    hf = random_hf_model(seed=12, noise=0.1, **HF)
    fp = MambaLM(parse_model_config(hf.config.to_dict(), "test"))
    fp.load_state_dict(hf.state_dict())
    return fp.eval()


def calibration(config):
    return CalibrationData(torch.randint(0, config.vocab_size, (4, 48), generator=torch.Generator().manual_seed(13)),
                           source="random.txt", sha256="0" * 64)


def quantized(bits: str, gptq: bool = True):
    fp = tiny_fp_model()
    qconfig = QuantConfig(bits=bits, group_size=GROUP, gptq=gptq, calib_samples=4, calib_seq_len=48)
    hessians = LinearHessians(fp.config.n_layer, fp.config.dt_rank) if gptq else None
    amaxes = calibrate(fp, calibration(fp.config), qconfig, progress=False, hessians=hessians)
    return fp, quantize_model(fp, amaxes, qconfig, None if hessians is None else hessians.hessians())


@pytest.mark.parametrize("bits", ["w4a8", "w4a16"])
def test_four_bit_models_decode_equals_prefill_and_track_fp(bits):
    fp, model = quantized(bits)
    linears = [getattr(block.mixer, name) for block in model.backbone.layers for name in FOUR_BIT_LINEARS]
    assert all(isinstance(linear, Int4Linear) for linear in linears)
    assert isinstance(model.backbone.layers[0].mixer, QuantMambaMixer) == (bits == "w4a8")
    tokens = torch.randint(0, fp.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(14))
    with torch.inference_mode():
        logits, _ = model(tokens)
        stepped, _ = decode_stepwise(model, tokens)
        ref, _ = fp(tokens)
    # w4a8: the scan's C·h sums in another order in step (as w8a8); w4a16: float16 rounding in another order
    tolerance = 1e-5 if bits == "w4a8" else 1e-2
    assert report(f"{bits} decode vs prefill", stepped.float() - logits.float()) <= tolerance * logits.abs().max()
    rel = report(f"{bits} vs fp32", logits.float() - ref) / float(ref.abs().max())
    assert rel < 0.2


def test_w4a8_mixer_calls_only_the_int4_ops_for_its_linears(monkeypatch):
    _, model = quantized("w4a8")
    block = model.backbone.layers[0]
    called = []
    from edge_quamba.quant import qmodel as qmodel_module

    class Recorder:  # torch.ops.edge_quamba, recording which op each call reaches
        def __getattr__(self, name):
            op = getattr(torch.ops.edge_quamba, name)

            def call(*args):
                called.append(name)
                return op(*args)
            return call

    monkeypatch.setattr(qmodel_module, "eq", Recorder())
    with torch.inference_mode():
        block.mixer(torch.randn(1, 5, 64), block.mixer.empty_state(1), block.norm)
    print(called)
    assert called.count("w4a8_linear_quantize") == 3 and called.count("w4a8_linear") == 1
    assert "int8_linear" not in called and "int8_linear_quantize" not in called


def test_w4a8_decode_runs_the_fused_ops_with_the_separate_ops_results(monkeypatch):
    """W4A8 decode: in_proj + the conv step and out_proj + the residual add are one op each (the W4A8 GEMV's
    epilogue); with EDGE_QUAMBA_FUSED_DECODE=0 the separate ops give the same logits and states bit for bit."""
    from test_data_flow import record_prefill_and_decode

    _, model = quantized("w4a8")
    tokens = torch.randint(0, 120, (2, 7), generator=torch.Generator().manual_seed(3))
    _, decode, _ = record_prefill_and_decode(model, tokens)
    assert {"w4a8_linear_quantize_conv_update", "w4a8_linear_residual"} <= decode.edge_quamba
    assert not {"int8_causal_conv1d_update", "w4a8_linear"} & decode.edge_quamba
    with torch.inference_mode():
        _, states = model(tokens[:, :-1])
        fused = model.step(tokens[:, -1], states)
        monkeypatch.setenv("EDGE_QUAMBA_FUSED_DECODE", "0")
        apart = model.step(tokens[:, -1], states)
    assert torch.equal(fused[0], apart[0])
    for a, b in zip(fused[1], apart[1], strict=True):
        assert torch.equal(a.conv_state, b.conv_state) and torch.equal(a.ssm_state, b.ssm_state)


def test_gptq_lowers_the_models_output_error_against_rtn():
    fp, gptq_model = quantized("w4a16", gptq=True)
    _, rtn_model = quantized("w4a16", gptq=False)
    tokens = calibration(fp.config).tokens  # the calibration windows: GPTQ's objective
    with torch.inference_mode():
        ref = fp(tokens)[0]
        errors = {name: float(((m(tokens)[0].float() - ref) ** 2).mean())
                  for name, m in (("gptq", gptq_model), ("rtn", rtn_model))}
    print(errors)
    assert errors["gptq"] < errors["rtn"]


@pytest.fixture(scope="module")
def fp_folder(tmp_path_factory):
    tokenizer = make_tokenizer(120)
    hf = random_hf_model(seed=21, vocab_size=tokenizer.get_vocab_size(), noise=0.2, **HF)
    return save_transformers_layout(hf, tmp_path_factory.mktemp("fp"), tokenizer)


@pytest.fixture(scope="module")
def calib_file(tmp_path_factory):
    from helpers import TEXT

    path = tmp_path_factory.mktemp("calib") / "calib.txt"
    path.write_text(TEXT * 4)
    return path


@pytest.mark.parametrize("bits", ["w8a8", "w4a8", "w4a16"])
def test_artifact_round_trip_records_the_config(bits, fp_folder, calib_file, tmp_path):
    out = tmp_path / bits
    group = [] if bits == "w8a8" else ["--group-size", str(GROUP)]  # refused at w8a8 (tests/test_hostile.py)
    proc = cli_in_process("quantize", "--model", str(fp_folder), "--out", str(out), "--bits", bits, *group,
                          "--calib-data", str(calib_file), "--calib-samples", "2", "--calib-seq-len", "32")
    assert proc.returncode == 0, proc.stderr
    recorded = json.loads((out / QUANT_CONFIG).read_text())
    assert recorded["format_version"] == 2
    assert recorded["quantization"]["bits"] == bits and recorded["quantization"]["method"] == "quamba"
    assert recorded["quantization"]["group_size"] == (GROUP if group else QuantConfig().group_size)
    model = load_quantized_model(out)
    tokens = torch.tensor([[3, 17, 42, 5, 9]])
    with torch.inference_mode():
        logits, _ = model(tokens)
    assert torch.isfinite(logits).all()
    run = cli_in_process("run", "--model", str(out), "--prompt", "The quick", "--max-new-tokens", "3",
                         "--temperature", "0", "--json")
    assert run.returncode == 0, run.stderr
    assert len(json.loads(run.stdout)["tokens"]) == 3
    ev = cli_in_process("eval", "--model", str(out), "--data", str(calib_file), "--seq-len", "16", "--max-tokens",
                        "64", "--json")
    assert ev.returncode == 0, ev.stderr
    assert 1 < json.loads(ev.stdout)["perplexity"] < 1e4
    bench = cli_in_process("bench", "--model", str(out), "--prompt-len", "4", "--new-tokens", "2", "--repeats", "1",
                           "--json")
    assert bench.returncode == 0, bench.stderr
    assert json.loads(bench.stdout)["model_bytes"] == (out / "model.safetensors").stat().st_size


def test_format_1_artifacts_still_load(fp_folder, calib_file, tmp_path):
    """A version-1 quant_config.json (method "quamba-w8a8", no bits) is read as Quamba W8A8."""
    out = tmp_path / "v2"
    quantize_checkpoint(model=str(fp_folder), out=out, calib_data=calib_file,
                        qconfig=QuantConfig(calib_samples=2, calib_seq_len=32), progress=False)
    raw = json.loads((out / QUANT_CONFIG).read_text())
    old = {k: v for k, v in raw["quantization"].items() if k not in ("bits", "group_size", "gptq", "gptq_damp")}
    old.update(method="quamba-w8a8", format_version=1)
    qconfig = QuantConfig.from_dict(old)
    assert (qconfig.method, qconfig.bits, qconfig.format_version) == ("quamba", "w8a8", 1)
    with pytest.raises(ConfigError):
        QuantConfig.from_dict({**old, "bits": "w4a8"})
    with pytest.raises(ConfigError):
        QuantConfig(bits="w3a8")


def test_w4a16_records_no_hadamard():
    assert QuantConfig(bits="w4a16").hadamard is False
    assert QuantConfig(bits="w4a8").hadamard is True


def test_w4a8_export_validates_on_onnx_runtime(fp_folder, calib_file, tmp_path):
    out = tmp_path / "export"
    proc = cli_in_process("export", "--model", str(fp_folder), "--out", str(out), "--bits", "w4a8",
                          "--group-size", str(GROUP), "--calib-data", str(calib_file), "--calib-samples", "2",
                          "--calib-seq-len", "32", "--validate-prompt-len", "24", "--validate-decode-steps", "4",
                          "--json")
    print(proc.stderr)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert list(result["validation"]) == ["ort", "tensorrt"]
    assert result["validation"]["ort"]["passed"] and result["validation"]["tensorrt"]["passed"]
    # the TensorRT flavour's W4A8 bodies are bit-identical to the reference: the W8A8 tie rule, not MatMulNBits'
    assert result["validation"]["tensorrt"]["tie_tolerance_codes"] == TIE_TOLERANCE
    assert_tensorrt_4bit_graph(out, {"W4A8LinearQuantize": 3, "W4A8Linear": 1, "Int8CausalConv1d": 1,
                                     "Int8SelectiveScan": 1, "HadamardQuantize": 1})
    graph = onnx.load(str(out / "model.onnx"))
    assert [o.version for o in graph.opset_import if o.domain == ""] == [21]
    assert check_graph(graph, "ort") == []
    int4 = [t for t in graph.graph.initializer if t.data_type == TensorProto.INT4]
    assert len(int4) == 2 * 4 * 2  # weight and zero point of 4 linears in 2 layers
    blocked = [n for n in graph.graph.node if n.op_type == "DequantizeLinear"
               and any(a.name == "block_size" for a in n.attribute)]
    assert len(blocked) == 8 and all({a.name: a.i for a in n.attribute} == {"axis": 0, "block_size": GROUP}
                                     for n in blocked)
    config = json.loads((out / "export_config.json").read_text())
    assert config["onnx"]["opset"] == 21 and config["quantization"]["bits"] == "w4a8"
    run_ort = cli_in_process("run", "--model", str(out), "--backend", "ort", "--prompt", "The quick",
                             "--max-new-tokens", "4", "--temperature", "0", "--json")
    run_ref = cli_in_process("run", "--model", str(out), "--backend", "ref", "--prompt", "The quick",
                             "--max-new-tokens", "4", "--temperature", "0", "--json")
    assert json.loads(run_ort.stdout)["tokens"] == json.loads(run_ref.stdout)["tokens"]


def test_w4a16_export_validates_on_onnx_runtime(fp_folder, calib_file, tmp_path):
    out = tmp_path / "export16"
    proc = cli_in_process("export", "--model", str(fp_folder), "--out", str(out), "--bits", "w4a16",
                          "--group-size", str(GROUP), "--calib-data", str(calib_file), "--calib-samples", "2",
                          "--calib-seq-len", "32", "--validate-prompt-len", "24", "--validate-decode-steps", "4",
                          "--json")
    print(proc.stderr)
    assert proc.returncode == 0, proc.stderr
    validations = json.loads(proc.stdout)["validation"]
    assert list(validations) == ["ort", "tensorrt"]
    for flavour, logits in (("ort", "logits"), ("tensorrt", "last_logits")):
        checks = validations[flavour]["checks"]
        assert [c["name"] for c in checks][:2] == [logits, "conv_state_out.0"] and all(c["passed"] for c in checks)
        assert validations[flavour]["logits_rtol"] == validations[flavour]["ssm_state_rtol"] == W4A16_RTOL
    trt = assert_tensorrt_4bit_graph(out, {"W4A16Linear": 4, "SelectiveScanF16": 1})
    trt_inputs = {i.name: i.type.tensor_type.elem_type for i in trt.graph.input}
    assert trt_inputs["conv_state.0"] == TensorProto.FLOAT16 and trt_inputs["ssm_state.0"] == TensorProto.FLOAT
    graph = onnx.load(str(out / "model.onnx"))
    assert check_graph(graph, "ort") == [] and not graph.functions
    assert {n.domain for n in graph.graph.node} == {""}  # no custom op: standard ops only
    assert sum(t.data_type == TensorProto.INT4 for t in graph.graph.initializer) == 2 * 4 * 2
    inputs = {i.name: i.type.tensor_type.elem_type for i in graph.graph.input}
    assert inputs["conv_state.0"] == TensorProto.FLOAT16 and inputs["ssm_state.0"] == TensorProto.FLOAT
    run_ort = cli_in_process("run", "--model", str(out), "--backend", "ort", "--prompt", "The quick",
                             "--max-new-tokens", "4", "--temperature", "0", "--json")
    run_ref = cli_in_process("run", "--model", str(out), "--backend", "ref", "--prompt", "The quick",
                             "--max-new-tokens", "4", "--temperature", "0", "--json")
    assert run_ort.returncode == 0, run_ort.stderr
    print(run_ort.stdout, run_ref.stdout)
    assert json.loads(run_ort.stdout)["tokens"][0] == json.loads(run_ref.stdout)["tokens"][0]


def assert_tensorrt_4bit_graph(out, per_layer: dict[str, int]) -> onnx.ModelProto:
    """model.trt.onnx of a 4-bit export: the custom nodes ``per_layer`` times per layer, every linear a plugin node
    over its packed weight as an int8 (N, ceil(K / 2)) initializer (no INT4 left), opset 17, no function bodies, and
    no violation of the TensorRT 10.3 rules."""
    from edge_quamba.onnx.tensorrt_check import check_tensorrt_graph

    trt = onnx.load(str(out / "model.trt.onnx"))
    n_layer = HF["num_hidden_layers"]
    ops = collections.Counter(n.op_type for n in trt.graph.node if n.domain == "edge_quamba")
    assert dict(ops) == {op: count * n_layer for op, count in per_layer.items()}
    assert [o.version for o in trt.opset_import if o.domain == ""] == [17] and not trt.functions
    inits = {t.name: t for t in trt.graph.initializer}
    packed = [inits[n.input[1]] for n in trt.graph.node if n.op_type.startswith(("W4A8", "W4A16"))]
    assert len(packed) == 4 * n_layer and all(t.data_type == TensorProto.INT8 for t in packed)
    assert {tuple(t.dims) for t in packed} == {(256, 32), (4 + 8 + 8, 64), (128, 2), (64, 64)}  # (N, ceil(K / 2))
    assert not any(t.data_type == TensorProto.INT4 for t in trt.graph.initializer)
    assert check_graph(trt, "tensorrt") == [] and check_tensorrt_graph(trt) == []
    return trt


def test_ort_runs_int4_weights_at_float32_accuracy():
    """ONNX Runtime fuses an INT4 DequantizeLinear -> MatMul into MatMulNBits, whose default accuracy level
    re-quantizes the float input to int8: our session options keep float32 (printed: both errors)."""
    import onnxruntime as ort
    from onnx import helper

    from edge_quamba.runtime.ort_backend import session_options

    gen = torch.Generator().manual_seed(15)
    k, n = 256, 64
    w = torch.randn(n, k, generator=gen)
    q, s = quantize_weight_int4(w, 128)
    inits = [helper.make_tensor("w", TensorProto.INT4, [k, n], q.T.flatten().tolist()),
             numpy_helper.from_array(s.T.contiguous().numpy(), "s"),
             helper.make_tensor("z", TensorProto.INT4, [2, n], [0] * (2 * n))]
    nodes = [helper.make_node("DequantizeLinear", ["w", "s", "z"], ["wd"], axis=0, block_size=128),
             helper.make_node("MatMul", ["x", "wd"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, n])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    x = torch.randn(4, k, generator=gen)
    exact = (x.double() @ dequantize_int4(q, s, 128).double().T).numpy()
    errors = {}
    for name, options in (("ours", session_options(threads=1)), ("ort default", ort.SessionOptions())):
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        errors[name] = float(np.abs(session.run(None, {"x": x.numpy()})[0] - exact).max())
    print(errors, float(np.abs(exact).max()))
    assert errors["ours"] < 1e-4 * np.abs(exact).max() < errors["ort default"]


def test_errors_for_what_is_not_built(fp_folder, calib_file, tmp_path):
    line = one_error_line(cli_in_process("quantize", "--model", str(fp_folder), "--out", str(tmp_path / "q2"),
                                         "--method", "quamba2"))
    assert "Mamba2-only" in line
    line = one_error_line(cli_in_process("quantize", "--model", str(fp_folder), "--out", str(tmp_path / "b"),
                                         "--bits", "w2a8"))
    assert "w2a8" in line
    assert not (tmp_path / "q2").exists()
    for bits in ("w4a8", "w4a16"):  # the 4-bit TensorRT graphs are built, but without float16 float parts
        out = tmp_path / f"fp16-{bits}"
        line = one_error_line(cli_in_process("export", "--model", str(fp_folder), "--out", str(out), "--bits", bits,
                                             "--calib-data", str(calib_file), "--target", "tensorrt",
                                             "--float-parts", "float16"))
        assert "--float-parts does not apply" in line and "W8A8" in line and f"--bits {bits}" in line
        with pytest.raises(InputError, match=f"W8A8 Mamba1 or Mamba2 model.*{bits}"):  # the library refuses it too
            export_model(model=str(fp_folder), out=out, target="tensorrt", calib_data=calib_file,
                         qconfig=QuantConfig(bits=bits), float_parts="float16", progress=False)
        assert not out.exists()


def test_int4_linear_state_dict_is_packed():
    w = torch.randn(10, 7)
    linear = Int4Linear.from_weight(w, None, 4, None)
    state = linear.state_dict()
    assert state["weight_packed"].shape == (10, 4) and state["weight_packed"].dtype == torch.uint8
    assert state["weight_scale"].shape == (10, 2) and state["weight_scale"].dtype == torch.float32
    fresh = Int4Linear(7, 10, False, 4)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.codes(), quantize_weight_int4(w, 4)[0])


def test_int4_torch_ops_pass_opcheck():
    """Schemas, fake (meta) implementations and the CPU kernels agree (torch.library.opcheck)."""
    gen = torch.Generator().manual_seed(16)
    x_q = torch.randint(-127, 128, (2, 3, 39), dtype=torch.int8, generator=gen)  # odd K: a half-filled last byte
    w_q = pack_int4(torch.randint(-7, 8, (6, 39), dtype=torch.int8, generator=gen))
    w_s = torch.rand(6, 3, generator=gen) + 0.01
    bias = torch.randn(6, generator=gen)
    torch.library.opcheck(eq.w4a8_linear, (x_q, w_q, w_s, bias, 0.02, 16))
    torch.library.opcheck(eq.w4a8_linear_quantize, (x_q, w_q, w_s, None, 0.02, 16, 0.1))
    torch.library.opcheck(eq.w4a16_linear, (torch.randn(2, 39, generator=gen).half(), w_q, w_s, bias, 16))


def test_w4a16_scan_op_is_the_reference_scan():
    """W4A16's mixer scans through the op selective_scan: on the CPU it is models.mamba.selective_scan, bit for bit
    (so a GPU kernel can take its place); schema and fake implementation pass opcheck."""
    from edge_quamba.models.mamba import selective_scan
    from edge_quamba.quant.qmodel import W4A16Mixer

    assert W4A16Mixer.scan is not MambaLM.mixer_class.scan
    gen = torch.Generator().manual_seed(17)
    b, l, d, n = 2, 7, 12, 8
    xp = torch.randn(b, l, 3 + 2 * n, generator=gen).half()  # B, C: views of x_proj's output, as the mixer has them
    args = (torch.randn(b, l, d, generator=gen).half(), torch.rand(b, l, d, generator=gen) * 0.2,
            -torch.rand(d, n, generator=gen), xp[..., 3:3 + n], xp[..., 3 + n:], torch.randn(d, generator=gen).half(),
            torch.randn(b, d, n, generator=gen))
    y, h = eq.selective_scan(*args)
    y_ref, h_ref = selective_scan(*args)
    assert y.dtype == torch.float32 and torch.equal(y, y_ref) and torch.equal(h, h_ref)
    torch.library.opcheck(eq.selective_scan, args)
