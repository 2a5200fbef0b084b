"""The per-token (dynamic) out_proj input scale (``QuantConfig(out_proj_scale="dynamic")``, ``--out-proj-scale``):
the convention (scale = row amax / 127 with the floor), the reference ops against literal loops, the ONNX function
body and out_proj's integer MatMul on stock ONNX Runtime against the reference, the model without a static
out_proj_input scale (calibration, artifact, SQNR tap, decode == prefill), an exported graph validated end to end,
and the refusals (no Hadamard, TensorRT target, bad values)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from edge_quamba.errors import ConfigError
from edge_quamba.integrity import seal
from edge_quamba.onnx import IR_VERSION, OPSET
from edge_quamba.onnx.functions import hadamard_quantize_dynamic_function
from edge_quamba.onnx.graph_builder import GraphBuilder
from edge_quamba.onnx.lower import lower_model
from edge_quamba.ops.specs import HADAMARD_QUANTIZE_DYNAMIC
from edge_quamba.folders import load_quantized_model
from edge_quamba.quant.artifact import QUANT_CONFIG, write_artifact
from edge_quamba.quant.calibrate import calibrate
from edge_quamba.quant.hadamard import hadamard_transform
from edge_quamba.quant.primitives import AMAX_FLOOR, int8_linear_per_token, per_token_scale
from edge_quamba.quant.qmodel import QuantConfig, QuantLinear, quantize_model
from edge_quamba.quant.qops import hadamard_quantize_dynamic
from edge_quamba.quant.sites import SITE_NAMES
from edge_quamba.runtime.ort_backend import session_options
from helpers import cli_in_process, decode_stepwise, make_tokenizer, one_error_line, report
from test_data_flow import OpRecorder, record_prefill_and_decode
from test_onnx_ops import run_single_node
from test_quantized_reference import calibration_tokens, fp_model


def uneven(g: torch.Generator, *shape: int) -> torch.Tensor:
    """Random values whose channels and tokens differ in size by orders of magnitude (what a per-token scale is for)."""
    *lead, d = shape
    return torch.randn(*shape, generator=g) * torch.exp(torch.randn(d, generator=g)) * \
        torch.exp(2 * torch.randn(*lead, 1, generator=g))


# ------------------------------------------------------------------------------------------------ the convention


def test_per_token_scale_is_the_row_amax_over_127_with_the_floor():
    g = torch.Generator().manual_seed(0)
    x = uneven(g, 3, 5, 96)
    x[1, 2] = 0.0  # an all-zero token: the floor, not a zero scale
    x[2, 4] = 1e-7  # a token below the floor
    got = per_token_scale(x)
    amax = np.abs(x.numpy()).max(-1)
    expected = np.maximum(amax, np.float32(AMAX_FLOOR)) / np.float32(127)  # float32 throughout
    print("scales", got.flatten()[:6].tolist())
    assert got.dtype == torch.float32 and got.shape == (3, 5)
    assert np.array_equal(got.numpy(), expected)
    assert float(got[1, 2]) == float(got[2, 4]) == np.float32(AMAX_FLOOR) / np.float32(127)
    with pytest.raises(ValueError, match="amax must be finite"):
        per_token_scale(torch.tensor([[1.0, float("nan")]]))


@pytest.mark.parametrize("d_in", [96, 160, 256])  # 12 * 8, 20 * 8, 2**8
def test_hadamard_quantize_dynamic_equals_a_literal_loop(d_in):
    """Per token: rotate, amax of the rotated row, scale = max(amax, 1e-5) / 127, codes = round half to even of
    v / scale, written as a plain loop over tokens (float32 numpy)."""
    g = torch.Generator().manual_seed(d_in)
    y = uneven(g, 2, 7, d_in)
    y[0, 3] = 0.0
    y_q, y_scale = hadamard_quantize_dynamic(y)
    rotated = hadamard_transform(y.float()).numpy()  # the rotation's own float order is tested in test_data_flow
    for b in range(2):
        for t in range(7):
            v = rotated[b, t]
            amax = np.float32(0)
            for value in v:
                amax = max(amax, abs(value))
            scale = np.float32(max(amax, np.float32(AMAX_FLOOR))) / np.float32(127)
            codes = np.clip(np.rint(v / scale), -127, 127).astype(np.int8)  # np.rint: half to even
            assert y_scale[b, t].item() == scale
            assert np.array_equal(y_q[b, t].numpy(), codes), (b, t)
            if amax > 0:
                assert np.abs(codes.astype(int)).max() == 127  # the token's largest value is +-127: no saturation
    assert not y_q[0, 3].any()


def test_int8_linear_per_token_equals_a_literal_loop():
    g = torch.Generator().manual_seed(5)
    x_q = torch.randint(-127, 128, (2, 3, 64), generator=g, dtype=torch.int8)
    w_q = torch.randint(-127, 128, (24, 64), generator=g, dtype=torch.int8)
    x_scale = torch.rand(2, 3, generator=g) * 0.1 + 1e-3
    w_scale = 0.0071
    got = int8_linear_per_token(x_q, x_scale, w_q, w_scale)
    x, w = x_q.numpy().astype(np.int64), w_q.numpy().astype(np.int64)
    for b in range(2):
        for t in range(3):
            alpha = np.float32(x_scale[b, t].item()) * np.float32(w_scale)  # rounded once per row
            expected = (x[b, t] @ w.T).astype(np.float32) * alpha
            assert np.array_equal(got[b, t].numpy(), expected)
    with pytest.raises(ValueError, match="leading shape"):
        int8_linear_per_token(x_q, x_scale[:, :2], w_q, w_scale)


# ------------------------------------------------------------------------------------------------ ONNX Runtime


@pytest.mark.parametrize("d_in", [768, 160, 112, 256, 1536])
def test_hadamard_quantize_dynamic_body_on_ort_equals_reference(d_in):
    g = torch.Generator().manual_seed(d_in + 1)
    y = uneven(g, 3, 41, d_in)
    y[1, 5] = 0.0
    y_q, y_scale = hadamard_quantize_dynamic(y)
    got_q, got_scale = run_single_node(HADAMARD_QUANTIZE_DYNAMIC, hadamard_quantize_dynamic_function(d_in), {},
                                       {"y": y.numpy()})
    differ = int((got_q != y_q.numpy()).sum())
    print(f"d_in={d_in}: {differ} of {y_q.numel()} codes differ; max |scale diff| "
          f"{np.abs(got_scale - y_scale.numpy()).max():.1e}")
    assert got_scale.shape == (3, 41) and got_scale.dtype == np.float32
    assert np.array_equal(got_scale, y_scale.numpy())  # same rotation bits, exact max, one rounded division
    assert differ == 0 and np.abs(got_q.astype(int)).max() == 127


def test_out_proj_per_token_on_ort_is_bit_identical():
    """The lowering's MatMulInteger (uint8 shift) -> Cast -> Mul(x_scale * w_scale) (+ bias) == the reference op."""
    g = torch.Generator().manual_seed(9)
    weight = torch.randn(48, 96, generator=g)
    linear = QuantLinear.from_weight(weight, torch.randn(48, generator=g))
    x_q = torch.randint(-127, 128, (2, 9, 96), generator=g, dtype=torch.int8)
    x_q[0, 0, :8] = -127  # both ends of the range through the uint8 shift
    x_q[0, 1, :8] = 127
    x_scale = torch.rand(2, 9, generator=g) * 0.05 + 1e-4
    builder = GraphBuilder()
    out = builder.int8_linear_per_token("x_q", "x_scale", linear, "out_proj")
    graph = helper.make_graph(builder.nodes, "out_proj",
                              [helper.make_tensor_value_info("x_q", TensorProto.INT8, ["b", "l", 96]),
                               helper.make_tensor_value_info("x_scale", TensorProto.FLOAT, ["b", "l"])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["b", "l", 48])],
                              initializer=builder.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(model.SerializeToString(), session_options(), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"x_q": x_q.numpy(), "x_scale": x_scale.numpy()})
    want = torch.ops.edge_quamba.int8_linear_per_token(x_q, linear.weight, linear.bias, x_scale,
                                                       float(linear.weight_scale))
    report("out_proj per token, ORT vs reference", torch.from_numpy(got) - want)
    assert np.array_equal(got, want.numpy())


# ------------------------------------------------------------------------------------------------ the model


@pytest.fixture(scope="module")
def models():
    """(fp model, static quantized, dynamic quantized, dynamic amaxes); d_inner 96 = 12 * 8."""
    fp = fp_model(dtype=torch.float32, seed=3, hidden_size=48, noise=0.05)
    out = [fp]
    for mode in ("static", "dynamic"):
        qconfig = QuantConfig(calib_samples=4, calib_seq_len=48, out_proj_scale=mode)
        amaxes = calibrate(fp, calibration_tokens(), qconfig, batch_size=2, progress=False)
        out.append(quantize_model(fp, amaxes, qconfig))
    return (*out, amaxes)


def test_dynamic_model_has_no_static_out_proj_input_scale(models):
    _, static, dynamic, amaxes = models
    assert all(set(layer) == set(SITE_NAMES) - {"out_proj_input"} for layer in amaxes)  # not calibrated
    keys = set(dynamic.state_dict())
    assert not any(k.endswith("out_proj_input_scale") for k in keys)  # not stored
    assert keys == set(static.state_dict()) - {f"backbone.layers.{i}.mixer.out_proj_input_scale" for i in range(2)}
    graph = lower_model(dynamic)
    assert not any(init.name.endswith("out_proj_input_scale") for init in graph.graph.initializer)
    assert "out_proj_input" not in dynamic.backbone.layers[0].mixer.scales()


def test_static_model_keeps_the_static_ops_and_graph(models):
    """The default stays the paper's static scale: the static ops run, its graph has no per-token node, and the
    two models share every tensor but the static scale (same calibration of every other site)."""
    _, static, dynamic, _ = models
    tokens = torch.randint(0, 120, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode(), OpRecorder() as ops:
        static(tokens)
    assert {"hadamard_quantize", "int8_linear"} <= ops.edge_quamba
    assert not {"hadamard_quantize_dynamic", "int8_linear_per_token"} & ops.edge_quamba
    graph = lower_model(static)
    assert [f.name for f in graph.functions] == ["Int8CausalConv1d", "Int8SelectiveScan", "HadamardQuantize"]
    assert not {"HadamardQuantizeDynamic", "MatMulInteger"} & {node.op_type for node in graph.graph.node}
    dynamic_state = dynamic.state_dict()
    for key, value in dynamic_state.items():
        assert torch.equal(value, static.state_dict()[key]), key


def test_dynamic_model_calls_the_dynamic_ops_and_decode_equals_prefill(models):
    _, _, dynamic, _ = models
    tokens = torch.randint(0, 120, (2, 9), generator=torch.Generator().manual_seed(0))
    prefill, decode, logits = record_prefill_and_decode(dynamic, tokens)
    print("prefill:", sorted(prefill.edge_quamba), "decode:", sorted(decode.edge_quamba))
    fused = {"rms_norm_quantize", "int8_linear_quantize", "hadamard_quantize_dynamic", "int8_linear_per_token"}
    assert prefill.edge_quamba == fused | {"int8_causal_conv1d", "int8_selective_scan"}
    assert decode.edge_quamba == fused | {"int8_linear_quantize_conv_update", "int8_selective_scan_dt_update"}
    stepped, _ = decode_stepwise(dynamic, tokens)
    assert report("dynamic: step-by-step decode vs prefill", stepped - logits) <= 1e-4 * logits.abs().max()


def test_sqnr_tap_reports_the_dynamic_out_proj_input(models):
    from edge_quamba.eval.sqnr import layer_sqnr

    fp, static, dynamic, _ = models
    tokens = torch.randint(0, 120, (2, 16), generator=torch.Generator().manual_seed(2))
    rows = {name: layer_sqnr(fp, q, tokens) for name, q in (("static", static), ("dynamic", dynamic))}
    for name, table in rows.items():
        print(name, [round(layer["out_proj_input"], 1) for layer in table])
    assert all(10 < layer["out_proj_input"] < 60 for layer in rows["dynamic"])


def test_config_refuses_what_a_dynamic_scale_cannot_do():
    with pytest.raises(ConfigError, match="needs the Hadamard rotation"):
        QuantConfig(out_proj_scale="dynamic", hadamard=False)
    with pytest.raises(ConfigError, match="no static scale to clip"):
        QuantConfig(out_proj_scale="dynamic", percentile_activations=("u", "out_proj_input"))
    with pytest.raises(ConfigError, match="'per-channel' is not one of static, dynamic"):
        QuantConfig(out_proj_scale="per-channel")
    assert QuantConfig.from_dict({k: v for k, v in QuantConfig().to_dict().items() if k != "out_proj_scale"}) \
        == QuantConfig()  # a config written before the option existed is static


def test_artifact_without_the_key_loads_as_static_with_the_same_numbers(models, tmp_path):
    """An artifact written before out_proj_scale existed (no key in quant_config.json) loads as the static model."""
    _, static, dynamic, _ = models
    tokenizer_file = tmp_path / "tokenizer.json"
    make_tokenizer(120).save(str(tokenizer_file))
    tokens = torch.randint(0, 120, (1, 12), generator=torch.Generator().manual_seed(4))
    for name, model, qconfig in (("static", static, QuantConfig(calib_samples=4, calib_seq_len=48)),
                                 ("dynamic", dynamic, QuantConfig(calib_samples=4, calib_seq_len=48,
                                                                  out_proj_scale="dynamic"))):
        folder = tmp_path / name
        folder.mkdir()
        write_artifact(folder, model, qconfig, {"file": "x"}, {"model": "test"}, tokenizer_file)
        raw = json.loads((folder / QUANT_CONFIG).read_text())
        assert raw["quantization"]["out_proj_scale"] == name
        loaded = load_quantized_model(folder)
        with torch.inference_mode():
            assert torch.equal(loaded(tokens)[0], model(tokens)[0])
    raw = json.loads((tmp_path / "static" / QUANT_CONFIG).read_text())
    del raw["quantization"]["out_proj_scale"], raw["config_sha256"]
    (tmp_path / "static" / QUANT_CONFIG).write_text(json.dumps(seal(raw)))
    old = load_quantized_model(tmp_path / "static")
    assert old.backbone.layers[0].mixer.out_proj_scale == "static"
    with torch.inference_mode():
        assert torch.equal(old(tokens)[0], static(tokens)[0])


# ------------------------------------------------------------------------------------------------ export and CLI


def test_export_dynamic_validates_on_ort_and_records_the_option(tmp_path):
    from edge_quamba.onnx.export import export_model
    from helpers import TEXT, random_hf_model, save_transformers_layout

    tokenizer = make_tokenizer(120)
    fp = save_transformers_layout(random_hf_model(seed=8, vocab_size=tokenizer.get_vocab_size(), hidden_size=48,
                                                  noise=0.05), tmp_path / "fp", tokenizer)
    calib = tmp_path / "calib.txt"
    calib.write_text(TEXT * 6)
    lines = []
    result = export_model(model=str(fp), out=tmp_path / "export", target="ort", calib_data=calib,
                          qconfig=QuantConfig(calib_samples=4, calib_seq_len=48, out_proj_scale="dynamic"),
                          prompt_len=40, decode_steps=4, progress=False, echo=lines.append)
    print("\n".join(lines))
    report_ = result.validation["ort"]
    assert report_.passed and report_.to_dict()["checks"][0]["name"] == "int8 codes inside the graph"
    config = json.loads((tmp_path / "export" / "export_config.json").read_text())
    assert config["quantization"]["out_proj_scale"] == "dynamic" and config["targets"] == ["ort"]
    graph = onnx.load(str(tmp_path / "export" / "model.onnx"))
    ops = {node.op_type for node in graph.graph.node}
    assert {"HadamardQuantizeDynamic", "MatMulInteger"} <= ops and "HadamardQuantize" not in ops
    assert not (tmp_path / "export" / "model.trt.onnx").exists()


@pytest.mark.parametrize("target", ["tensorrt", "all"])
def test_tensorrt_target_refuses_a_dynamic_scale_in_one_line(tmp_path, target):
    proc = cli_in_process("export", "--out", str(tmp_path / "x"), "--out-proj-scale", "dynamic", "--target", target)
    line = one_error_line(proc)
    assert f"--target {target}: a per-token (dynamic) out_proj input scale has no TensorRT graph" in line
    assert not (tmp_path / "x").exists()


def test_cli_rejects_a_bad_value_and_the_ablation_combination(tmp_path):
    line = one_error_line(cli_in_process("quantize", "--out", str(tmp_path / "q"), "--out-proj-scale", "tensor"))
    assert "Invalid value for '--out-proj-scale'" in line
    line = one_error_line(cli_in_process("quantize", "--out", str(tmp_path / "q"), "--out-proj-scale", "dynamic",
                                         "--no-hadamard"))
    assert "--out-proj-scale dynamic needs the Hadamard rotation" in line
    help_text = cli_in_process("export", "--help").stdout
    assert "--out-proj-scale [static|dynamic]" in help_text


class _Prefill:
    """A reference model as a backend with ``prefill(tokens) -> (logits, states)``; ``scan_ulps``: the scan output
    is scaled by (1 + scan_ulps * 2**-23), i.e. moved by a few units in the last place, as another backend's scan
    (another exp, another summation order) moves it."""

    def __init__(self, model, monkeypatch, scan_ulps: int = 0):
        self.model, self.monkeypatch, self.scan_ulps = model, monkeypatch, scan_ulps

    def prefill(self, tokens):
        import edge_quamba.quant.qmodel as qmodel

        ops, factor = torch.ops.edge_quamba, 1 + self.scan_ulps * 2.0 ** -23

        class Moved:
            def __getattr__(self, name):
                if name != "int8_selective_scan":
                    return getattr(ops, name)
                return lambda *args: (lambda y, h: (y * factor, h))(*ops.int8_selective_scan(*args))

        with self.monkeypatch.context() as patch:
            if self.scan_ulps:
                patch.setattr(qmodel, "eq", Moved())
            with torch.inference_mode():
                return self.model(torch.tensor([tokens]))


def test_comparison_following_ties_matches_a_backend_that_differs_in_the_last_bits(models, monkeypatch):
    """The comparison of the GPU test (test_cuda_dynamic_scale.prefill_following_ties), checked here without a GPU:
    a 'backend' whose scan output differs from the reference's by a few ulps flips some codes at ties (and moves
    the per-token scales by ulps); following the ties, nothing else differs and the logits agree to float rounding,
    where without the rule they part by orders of magnitude more."""
    from test_cuda_dynamic_scale import prefill_following_ties

    _, _, dynamic, _ = models
    tokens = torch.randint(0, 120, (1000,), generator=torch.Generator().manual_seed(7)).tolist()
    plain, _ = _Prefill(dynamic, monkeypatch, scan_ulps=6).prefill(tokens)
    reference, _ = _Prefill(dynamic, monkeypatch).prefill(tokens)
    without_rule = report("without the tie rule", plain - reference)
    got, expected, follower = prefill_following_ties(_Prefill(dynamic, monkeypatch, scan_ulps=6),
                                                     _Prefill(dynamic, monkeypatch), tokens)
    with_rule = report("ties followed", got - expected)
    assert follower.ties >= 1 and follower.other_differences == 0
    assert with_rule <= 1e-5 * max(1.0, expected.abs().max().item()) and with_rule < without_rule / 100


def test_dynamic_out_proj_with_per_channel_weights_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="--weight-scales channel with --out-proj-scale dynamic"):
        QuantConfig(weight_scales="channel", out_proj_scale="dynamic")


@pytest.mark.parametrize("options, bits, method", [
    (dict(out_proj_scale="dynamic"), "w4a8", "quamba"),
    (dict(weight_scales="channel"), "w4a16", "quamba"),
    (dict(weight_scales="channel"), "w8a8", "quamba2"),
])
def test_quamba_w8a8_options_are_refused_elsewhere_in_one_line(options, bits, method):
    with pytest.raises(ConfigError, match="is a Quamba W8A8 option; it is not built for"):
        QuantConfig(bits=bits, method=method, **options)
