"""The quantized reference: op semantics, decode == prefill, Hadamard invariance, determinism, bad calibration."""

import hashlib
import json
import math

import pytest
import torch

from edge_quamba.errors import ConfigError
from edge_quamba.models.config_dispatch import parse_model_config
from edge_quamba.models.mamba import MambaLM, causal_conv1d, selective_scan
from edge_quamba.folders import load_quantized_model
from edge_quamba.quant.calibrate import CalibrationData, calibrate
from edge_quamba.quant.hadamard import hadamard_transform, rotate_linear_input
from edge_quamba.quant.primitives import dequantize, quantize
from edge_quamba.quant.qmodel import QuantConfig, quantize_model
from edge_quamba.quant.sites import SITE_NAMES as ACTIVATIONS
from edge_quamba.quant.qops import hadamard_quantize, int8_causal_conv1d, int8_selective_scan
from helpers import TEXT, decode_stepwise, make_tokenizer, random_hf_model, report, run_cli, save_transformers_layout


def fp_model(dtype=torch.float64, **overrides):
    hf = random_hf_model(**overrides)
    model = MambaLM(parse_model_config(hf.config.to_dict(), "test"), dtype=dtype)
    model.load_state_dict(hf.state_dict())
    return model


def test_int8_conv_equals_fp_conv_on_dequantized_inputs():
    """The int8 conv is the fp conv evaluated on the dequantized int8 values, then SiLU and requantized."""
    g = torch.Generator().manual_seed(0)
    b, l, d_in, k = 2, 9, 16, 4
    x_q = torch.randint(-127, 128, (b, l, d_in), generator=g, dtype=torch.int8)
    state_q = torch.randint(-127, 128, (b, d_in, k), generator=g, dtype=torch.int8)
    w_q = torch.randint(-127, 128, (d_in, k), generator=g, dtype=torch.int8)
    bias = torch.randn(d_in, generator=g)
    sx, sw, su = 0.02, 0.01, 0.003
    u_q, new_state = int8_causal_conv1d(x_q, state_q, w_q, bias, sx, sw, su)
    y, ref_state = causal_conv1d(dequantize(x_q, sx).double(), dequantize(w_q, sw).double(), bias.double(),
                                 dequantize(state_q, sx).double())
    expected = torch.nn.functional.silu(y) / su
    print("max |u_q - exact|:", (u_q.double() - expected.clamp(-127, 127)).abs().max().item())
    assert (u_q.double() - expected.clamp(-127, 127)).abs().max() <= 0.5 + 1e-3  # only float32 rounding of ties
    assert torch.equal(dequantize(new_state, sx).double(), ref_state)  # the int8 state is the last k inputs


def test_int8_scan_equals_fp_scan_on_dequantized_inputs():
    g = torch.Generator().manual_seed(1)
    b, l, d_in, n = 2, 7, 8, 4
    ints = lambda *shape: torch.randint(-127, 128, shape, generator=g, dtype=torch.int8)
    u_q, dt_q, z_q, B_q, C_q = ints(b, l, d_in), ints(b, l, d_in), ints(b, l, d_in), ints(b, l, n), ints(b, l, n)
    A, D, dt_bias = -torch.rand(d_in, n, generator=g) * 2, torch.randn(d_in, generator=g), torch.randn(d_in, generator=g)
    h0 = torch.randn(b, d_in, n, generator=g)
    s = dict(u_scale=0.01, dt_scale=0.02, B_scale=0.03, C_scale=0.03, z_scale=0.05)
    y, h = int8_selective_scan(u_q, dt_q, B_q, C_q, z_q, h0, A, D, dt_bias, **s)
    deq = lambda q, sc: dequantize(q, sc).double()
    delta = torch.nn.functional.softplus(deq(dt_q, s["dt_scale"]) + dt_bias.double())
    y_ref, h_ref = selective_scan(deq(u_q, s["u_scale"]), delta, A.double(), deq(B_q, s["B_scale"]),
                                  deq(C_q, s["C_scale"]), D.double(), h0.double())
    y_ref = y_ref * torch.nn.functional.silu(deq(z_q, s["z_scale"]))
    assert report("int8 scan y (float32 vs float64)", y.double() - y_ref) <= 1e-4
    assert report("int8 scan state", h.double() - h_ref) <= 1e-4


def sqnr_db(ref, approx) -> float:
    return 10 * math.log10(float(ref.double().pow(2).sum() / (ref.double() - approx.double()).pow(2).sum()))


def test_hadamard_quantize_spreads_outliers():
    """An outlier channel dominates a per-tensor scale; after the transform the int8 error is much lower."""
    y = torch.randn(1, 64, 768, generator=torch.Generator().manual_seed(2))
    y[..., 5] *= 60.0
    plain_scale = y.abs().max() / 127
    plain = sqnr_db(y, dequantize(quantize(y, plain_scale), plain_scale))
    yh = hadamard_transform(y)
    rot_scale = yh.abs().max() / 127
    rotated = sqnr_db(yh, dequantize(hadamard_quantize(y, rot_scale), rot_scale))
    print(f"SQNR plain {plain:.1f} dB, Hadamard {rotated:.1f} dB")
    assert rotated > plain + 6


class RotatedLinear(torch.nn.Module):
    """out_proj with the rotated weight W Hᵀ applied to H y: the fp form of what the quantized model does."""

    def __init__(self, linear):
        super().__init__()
        self.weight = torch.nn.Parameter(rotate_linear_input(linear.weight.detach()))
        self.bias = linear.bias

    def forward(self, y):
        return torch.nn.functional.linear(hadamard_transform(y), self.weight, self.bias)


@pytest.mark.parametrize("hidden_size", [32, 48, 384])  # d_inner 64, 96 (=12*8), 768 (=12*64)
def test_hadamard_rotated_fp_model_equals_unrotated_float64(hidden_size):
    model = fp_model(seed=3, hidden_size=hidden_size, use_bias=True)
    tokens = torch.randint(0, 120, (2, 10), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected, _ = model(tokens)
        for block in model.backbone.layers:
            block.mixer.out_proj = RotatedLinear(block.mixer.out_proj)
        rotated, _ = model(tokens)
    assert report(f"rotated vs unrotated (d_inner {2 * hidden_size})", rotated - expected) <= 1e-10


def calibration_tokens(samples=4, seq_len=48, vocab=120):
    g = torch.Generator().manual_seed(5)
    return CalibrationData(tokens=torch.randint(0, vocab, (samples, seq_len), generator=g), source="rand", sha256="0")


@pytest.fixture(scope="module")
def quantized_pair():
    fp = fp_model(dtype=torch.float32, seed=6, hidden_size=64, noise=0.05)
    qconfig = QuantConfig(calib_samples=4, calib_seq_len=48)
    amaxes = calibrate(fp, calibration_tokens(), qconfig, batch_size=2, progress=False)
    return fp, quantize_model(fp, amaxes, qconfig), amaxes


def test_calibration_observes_six_activations_per_layer(quantized_pair):
    fp, _, amaxes = quantized_pair
    assert len(amaxes) == fp.config.n_layer
    for layer in amaxes:
        assert set(layer) == set(ACTIVATIONS)
        assert all(float(v) > 0 for v in layer.values())


def test_percentile_scale_is_below_absmax_for_u():
    fp = fp_model(dtype=torch.float32, seed=6, hidden_size=64, noise=0.05)
    data = calibration_tokens()
    clipped = calibrate(fp, data, QuantConfig(percentile=0.99), progress=False)
    absmax = calibrate(fp, data, QuantConfig(percentile=None), progress=False)
    for c, a in zip(clipped, absmax, strict=True):
        print("u amax percentile / absmax:", float(c["u"]), float(a["u"]))
        assert float(c["u"]) < float(a["u"])
        assert float(c["xz"]) == float(a["xz"])  # only the scan input is clipped



def test_percentile_activations_choose_which_inputs_are_clipped():
    fp = fp_model(dtype=torch.float32, seed=6, hidden_size=64, noise=0.05)
    data = calibration_tokens()
    chosen = ("in_proj_input", "out_proj_input")
    clipped = calibrate(fp, data, QuantConfig(percentile=0.99, percentile_activations=chosen), progress=False)
    absmax = calibrate(fp, data, QuantConfig(percentile=None), progress=False)
    for c, a in zip(clipped, absmax, strict=True):
        for act in ACTIVATIONS:
            if act in chosen:
                assert float(c[act]) < float(a[act]), act
            else:
                assert float(c[act]) == float(a[act]), act
    # a JSON round trip (quant_config.json) keeps the knob; unknown names are refused
    config = QuantConfig(percentile_activations=chosen)
    assert QuantConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ConfigError, match="percentile activations"):
        QuantConfig(percentile_activations=("u", "residual"))

def test_quantized_step_decode_equals_prefill(quantized_pair):
    _, q, _ = quantized_pair
    tokens = torch.randint(0, 120, (2, 12), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        full, final = q(tokens)
    stepped, states = decode_stepwise(q, tokens)
    assert report("quantized step vs prefill logits", stepped - full) <= 1e-4
    for a, b in zip(final, states, strict=True):
        assert a.conv_state.dtype == torch.int8 and torch.equal(a.conv_state, b.conv_state)
        assert report("quantized ssm_state", a.ssm_state - b.ssm_state) <= 1e-5


def test_quantized_model_tracks_fp(quantized_pair):
    """A sanity floor, not a quality claim (benchmarks/quality.py measures quality on the trained demo model)."""
    fp, q, _ = quantized_pair
    tokens = torch.randint(0, 120, (2, 32), generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        db = sqnr_db(fp(tokens)[0], q(tokens)[0])
    print(f"logit SQNR quantized vs fp: {db:.1f} dB")
    assert db > 15


def test_calibration_stops_on_non_finite_activation():
    from edge_quamba.errors import InputError

    fp = fp_model(dtype=torch.float32, seed=6, hidden_size=64)
    with torch.no_grad():
        fp.backbone.layers[1].mixer.in_proj.weight.fill_(3e38)  # finite weights whose products overflow
    with pytest.raises(InputError, match=r"layers\.1\.mixer\.xz"):
        calibrate(fp, calibration_tokens(), QuantConfig(), progress=False)


@pytest.fixture(scope="module")
def fp_folder(tmp_path_factory):
    tokenizer = make_tokenizer(120)
    hf = random_hf_model(seed=9, vocab_size=tokenizer.get_vocab_size(), hidden_size=64, noise=0.05)
    folder = save_transformers_layout(hf, tmp_path_factory.mktemp("fp"), tokenizer)
    (folder.parent / "calib.txt").write_text(TEXT * 6)
    return folder


def quantize_cli(fp_folder, out, *extra):
    return run_cli("quantize", "--model", str(fp_folder), "--out", str(out),
                   "--calib-data", str(fp_folder.parent / "calib.txt"), "--calib-samples", "4",
                   "--calib-seq-len", "64", *extra)


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_quantize_is_deterministic_and_runs(fp_folder, tmp_path):
    first, second = quantize_cli(fp_folder, tmp_path / "a"), quantize_cli(fp_folder, tmp_path / "b")
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert digest(tmp_path / "a") == digest(tmp_path / "b")  # byte-identical artifacts
    config = json.loads((tmp_path / "a" / "quant_config.json").read_text())
    assert config["kind"] == "edge-quamba/quantized" and config["quantization"]["hadamard"] is True
    assert config["calibration"]["sha256"] == hashlib.sha256((fp_folder.parent / "calib.txt").read_bytes()).hexdigest()
    proc = run_cli("run", "--model", str(tmp_path / "a"), "--prompt", "The quick", "--temperature", "0",
                   "--max-new-tokens", "8", "--json")
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["tokens"]) >= 1
    model = load_quantized_model(tmp_path / "a")
    assert model.backbone.layers[0].mixer.in_proj.weight.dtype == torch.int8


def test_ablation_flags_reach_the_artifact(fp_folder, tmp_path):
    proc = quantize_cli(fp_folder, tmp_path / "naive", "--no-hadamard", "--no-percentile")
    assert proc.returncode == 0, proc.stderr
    quant = json.loads((tmp_path / "naive" / "quant_config.json").read_text())["quantization"]
    assert quant["hadamard"] is False and quant["percentile"] is None
    proc = quantize_cli(fp_folder, tmp_path / "clip", "--percentile-on", "in_proj_input, u,out_proj_input")
    assert proc.returncode == 0, proc.stderr
    quant = json.loads((tmp_path / "clip" / "quant_config.json").read_text())["quantization"]
    assert quant["percentile_activations"] == ["in_proj_input", "u", "out_proj_input"]


@pytest.mark.parametrize("case", ["too short", "bad jsonl", "missing file", "quantized input", "unknown activation"])
def test_quantize_bad_input_keeps_existing_output(fp_folder, tmp_path, case):
    out = tmp_path / "out"
    assert quantize_cli(fp_folder, out).returncode == 0  # an earlier output: the kind of folder quantize may replace
    before = digest(out)
    calib = tmp_path / "calib.jsonl"
    args = {"too short": ["--calib-samples", "1000"], "bad jsonl": ["--calib-data", str(calib)],
            "missing file": ["--calib-data", str(tmp_path / "nope.txt")], "quantized input": [],
            "unknown activation": ["--percentile-on", "u,residual"]}[case]
    words = {"too short": "calibration data", "bad jsonl": "calib.jsonl:2", "missing file": "nope.txt",
             "quantized input": "quantize takes an fp checkpoint", "unknown activation": "residual"}[case]
    calib.write_text('{"text": "fine"}\n{"txt": 3}\n')
    if case == "quantized input":
        assert quantize_cli(fp_folder, tmp_path / "q").returncode == 0
        args = ["--model", str(tmp_path / "q")]  # the last --model given wins
    proc = quantize_cli(fp_folder, out, *args)
    lines = proc.stderr.strip().splitlines()
    print(proc.stderr)
    assert proc.returncode != 0 and lines[-1].startswith("edge-quamba: error:") and words in lines[-1]
    assert digest(out) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp")]


def test_every_code_reading_op_reads_minus_128_as_minus_127():
    """primitives.read_codes: an input code of -128 (TensorRT's saturating QuantizeLinear can write one) gives exactly
    the outputs of -127, in every reference op that reads int8 activations, and no conv state holds -128."""
    from edge_quamba.quant import qops

    g = torch.Generator().manual_seed(5)
    b, l, d_in, n, k, h, gn = 2, 6, 8, 4, 4, 2, 8

    def codes(*shape):  # about a quarter of the entries -128
        q = torch.randint(-127, 128, shape, generator=g, dtype=torch.int8)
        return torch.where(torch.rand(shape, generator=g) < 0.25, torch.tensor(-128, dtype=torch.int8), q)

    def clamped(t):
        return t.clamp(min=-127) if isinstance(t, torch.Tensor) and t.dtype == torch.int8 and t is not weight else t

    weight, bias = torch.randint(-127, 128, (d_in, k), generator=g, dtype=torch.int8), torch.randn(d_in, generator=g)
    scan_consts = (-torch.rand(d_in, n, generator=g), torch.randn(d_in, generator=g), torch.randn(d_in, generator=g))
    ssd_consts = (-torch.rand(h, generator=g), torch.randn(h, generator=g), torch.randn(h, generator=g),
                  torch.rand(d_in, generator=g) * 0.02 + 1e-3, torch.rand(gn, generator=g) * 0.02 + 1e-3,
                  torch.rand(gn, generator=g) * 0.02 + 1e-3)
    cases = {
        "int8_causal_conv1d": (codes(b, l, d_in), codes(b, d_in, k), weight, bias, 0.02, 0.01, 0.004),
        "int8_causal_conv1d_update": (codes(b, d_in), codes(b, d_in, k), weight, bias, 0.02, 0.01, 0.004),
        "int8_selective_scan": (*[codes(b, l, c) for c in (d_in, d_in, n, n, d_in)], torch.randn(b, d_in, n),
                                *scan_consts, 0.01, 0.02, 0.03, 0.03, 0.05),
        "int8_selective_scan_update": (*[codes(b, c) for c in (d_in, d_in, n, n, d_in)], torch.randn(b, d_in, n),
                                       *scan_consts, 0.01, 0.02, 0.03, 0.03, 0.05),
        "int8_ssd_scan": (codes(b, l, d_in), codes(b, l, h), codes(b, l, gn), codes(b, l, gn),
                          torch.randn(b, h, d_in // h, n), *ssd_consts, 0.02),
        "gated_rms_norm": (torch.randn(b, l, d_in), codes(b, l, d_in), torch.randn(d_in), 0.05, 1e-5, 4),
    }
    for name, args in cases.items():
        op = getattr(qops, name)
        got, want = op(*args), op(*[clamped(a) for a in args])
        got, want = (got,) if isinstance(got, torch.Tensor) else got, (want,) if isinstance(want, torch.Tensor) else want
        for i, (a, e) in enumerate(zip(got, want, strict=True)):
            print(f"{name} output {i}: equal {torch.equal(a, e)}")
            assert torch.equal(a, e), f"{name} output {i} depends on -128 vs -127"
            if a.dtype == torch.int8:
                assert int(a.min()) >= -127, f"{name} output {i} holds -128"
