"""The quantized data flow exists once: the model calls only torch.ops.edge_quamba.*, decode runs the one-token ops,
the site table drives calibration and the graph, and the reference's float order is the stated one."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from edge_quamba.errors import ConfigError
from edge_quamba.onnx.lower import lower_model
from edge_quamba.quant import qops
from edge_quamba.quant.calibrate import calibrate
from edge_quamba.quant.hadamard import _small_hadamard, hadamard_factors, hadamard_transform
from edge_quamba.quant.qmodel import QuantConfig, QuantMambaMixer, quantize_model
from edge_quamba.quant.sites import SITE_NAMES, graph_code_tensors
from test_quantized_reference import calibration_tokens, fp_model

VIEWS = {"split", "slice", "view", "_unsafe_view", "alias", "unsqueeze", "squeeze", "select", "detach",
         "split_with_sizes", "t", "transpose", "expand"}


class OpRecorder(TorchDispatchMode):
    """Records the namespace::name of every op dispatched, and the aten ops that returned int8 tensors."""

    def __init__(self):
        super().__init__()
        self.edge_quamba: set[str] = set()
        self.int8_aten: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        namespace, name = func.namespace, func.__name__.split(".")[0]
        if namespace == "edge_quamba":
            self.edge_quamba.add(name)
        elif any(isinstance(t, torch.Tensor) and t.dtype == torch.int8 for t in torch.utils._pytree.tree_leaves(out)):
            self.int8_aten.add(name)
        return out


def record_prefill_and_decode(model, tokens):
    """Prefill on tokens (b, l), then one decode step of the last token from the prefill's states, each under its
    own :class:`OpRecorder` -> (prefill recorder, decode recorder, prefill logits)."""
    with torch.inference_mode():
        with OpRecorder() as prefill:
            logits, states = model(tokens)
        with OpRecorder() as decode:
            model.step(tokens[:, -1], states)
    return prefill, decode, logits


@pytest.fixture(scope="module")
def quantized():
    fp = fp_model(dtype=torch.float32, seed=3, hidden_size=48, noise=0.05)  # d_inner 96 = 12 * 8
    qconfig = QuantConfig(calib_samples=4, calib_seq_len=48)
    amaxes = calibrate(fp, calibration_tokens(), qconfig, batch_size=2, progress=False)
    return fp, quantize_model(fp, amaxes, qconfig), amaxes


def test_model_calls_only_the_edge_quamba_ops(quantized):
    _, q, _ = quantized
    tokens = torch.randint(0, 120, (2, 9), generator=torch.Generator().manual_seed(0))
    prefill, decode, _ = record_prefill_and_decode(q, tokens)
    print("prefill:", sorted(prefill.edge_quamba), "int8 aten:", sorted(prefill.int8_aten))
    print("decode:", sorted(decode.edge_quamba), "int8 aten:", sorted(decode.int8_aten))
    fused = {"rms_norm_quantize", "int8_linear_quantize", "int8_linear", "hadamard_quantize"}
    assert prefill.edge_quamba == fused | {"int8_causal_conv1d", "int8_selective_scan"}
    # decode: in_proj and the conv step are one op (the GEMV's epilogue runs the conv), dt_proj and the scan another,
    # and out_proj adds the block's residual in its epilogue (int8_linear_residual)
    assert decode.edge_quamba == {"rms_norm_quantize", "int8_linear_quantize", "int8_linear_residual",
                                  "hadamard_quantize", "int8_linear_quantize_conv_update",
                                  "int8_selective_scan_dt_update"}
    # no int8 arithmetic outside the ops: aten only makes views of int8 tensors (and the zero states)
    assert prefill.int8_aten <= VIEWS | {"zeros"} and decode.int8_aten <= VIEWS


def test_decode_fused_ops_are_labelled_and_equal_their_parts(quantized):
    """Decode runs in_proj and the conv step as one op (int8_linear_quantize_conv_update), dt_proj and the scan as
    another (int8_selective_scan_dt_update), out_proj and the block's residual add as a third; their quantize steps
    carry the labels of xz, u and dt (validation's tie rule finds each graph tensor by its label), and their outputs
    equal the ops apart."""
    from edge_quamba.quant.primitives import quantize_hook

    _, q, _ = quantized
    tokens = torch.randint(0, 120, (2, 5), generator=torch.Generator().manual_seed(4))
    seen = {}

    def hook(label, quotient, codes):
        seen.setdefault(label, codes.shape[-1])
        return codes

    with torch.no_grad():
        _, states = q(tokens[:, :4])
        with quantize_hook(hook):
            q.step(tokens[:, 4], states)
    d_in = q.config.d_inner
    assert seen["layers.0.mixer.xz_q"] == 2 * d_in and seen["layers.0.mixer.u_q"] == d_in
    assert seen["layers.0.mixer.dt_q"] == d_in
    mixer = q.backbone.layers[0].mixer
    s = mixer.scales()
    g = torch.Generator().manual_seed(5)
    x_q = torch.randint(-127, 128, (2, q.config.d_model), generator=g, dtype=torch.int8)
    state = torch.randint(-127, 128, (2, d_in, q.config.d_conv), generator=g, dtype=torch.int8)
    ops = torch.ops.edge_quamba
    codes, u_q, new_state = ops.int8_linear_quantize_conv_update(
        x_q, mixer.in_proj.weight, mixer.in_proj.bias, s["in_proj_input"], s["in_proj.weight"], [s["xz"]],
        [2 * d_in], 0, state, mixer.conv_weight, mixer.conv_bias, s["conv.weight"], s["u"], None)
    xz_q = ops.int8_linear_quantize(x_q, mixer.in_proj.weight, mixer.in_proj.bias, s["in_proj_input"],
                                    s["in_proj.weight"], s["xz"])
    u_apart, state_apart = ops.int8_causal_conv1d_update(xz_q[:, :d_in], state, mixer.conv_weight, mixer.conv_bias,
                                                         s["xz"], s["conv.weight"], s["u"])
    assert torch.equal(codes, xz_q) and torch.equal(u_q, u_apart) and torch.equal(new_state, state_apart)

    r, n = q.config.dt_rank, q.config.d_state
    dbc_q = torch.randint(-127, 128, (2, r + 2 * n), generator=g, dtype=torch.int8)
    dt_r_q, B_q, C_q = dbc_q.split([r, n, n], dim=-1)
    h = torch.randn(2, d_in, n, generator=g)
    consts = (mixer.A, mixer.D, mixer.dt_bias)
    y, h_new, dt_q = ops.int8_selective_scan_dt_update(u_q, dt_r_q, B_q, C_q, codes[:, d_in:], h, *consts,
                                                       mixer.dt_proj.weight, s["u"], s["dbc"], s["dt_proj.weight"],
                                                       s["dt"], s["dbc"], s["dbc"], s["xz"])
    dt_apart = ops.int8_linear_quantize(dt_r_q, mixer.dt_proj.weight, None, s["dbc"], s["dt_proj.weight"], s["dt"])
    y_apart, h_apart = ops.int8_selective_scan_update(u_q, dt_apart, B_q, C_q, codes[:, d_in:], h, *consts, s["u"],
                                                      s["dt"], s["dbc"], s["dbc"], s["xz"])
    assert torch.equal(dt_q, dt_apart) and torch.equal(y, y_apart) and torch.equal(h_new, h_apart)

    block = q.backbone.layers[0]  # decode's block output: out_proj adds the residual (int8_linear_residual)
    resid = torch.randn(2, q.config.d_model, generator=g)
    fused, _ = block(resid, block.mixer.empty_state(2), step=True)
    out, _ = block.mixer.step(resid, block.mixer.empty_state(2), block.norm)
    assert torch.equal(fused, resid + out) and not torch.equal(fused, out)


def test_fused_decode_off_runs_the_separate_ops_with_the_same_results(quantized, monkeypatch):
    """EDGE_QUAMBA_FUSED_DECODE=0 (for timing the fusions against what they replace): decode calls the separate ops
    and gives the same logits and states bit for bit; a value other than 0 or 1 is a one-line InputError."""
    from edge_quamba.errors import InputError
    from edge_quamba.quant.qmodel import FUSED_DECODE_ENV

    _, q, _ = quantized
    tokens = torch.randint(0, 120, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        _, states = q(tokens[:, :-1])
        fused = q.step(tokens[:, -1], states)
        monkeypatch.setenv(FUSED_DECODE_ENV, "0")
        _, decode, _ = record_prefill_and_decode(q, tokens)
        apart = q.step(tokens[:, -1], states)
    assert decode.edge_quamba == {"rms_norm_quantize", "int8_linear_quantize", "int8_linear", "hadamard_quantize",
                                  "int8_causal_conv1d_update", "int8_selective_scan_update"}
    assert torch.equal(fused[0], apart[0])
    for a, b in zip(fused[1], apart[1], strict=True):
        assert torch.equal(a.conv_state, b.conv_state) and torch.equal(a.ssm_state, b.ssm_state)
    monkeypatch.setenv(FUSED_DECODE_ENV, "yes")
    with pytest.raises(InputError, match="EDGE_QUAMBA_FUSED_DECODE must be 0 or 1"), torch.inference_mode():
        q.step(tokens[:, -1], states)


def test_update_ops_equal_prefill_ops_at_one_token():
    g = torch.Generator().manual_seed(1)
    b, d_in, n, k = 3, 96, 8, 4

    def i8(*shape):
        return torch.randint(-127, 128, shape, generator=g, dtype=torch.int8)

    x, state, weight, bias = i8(b, 1, d_in), i8(b, d_in, k), i8(d_in, k), torch.randn(d_in, generator=g)
    u_full, s_full = qops.int8_causal_conv1d(x, state, weight, bias, 0.05, 0.01, 0.02)
    u_step, s_step = qops.int8_causal_conv1d_update(x[:, 0], state, weight, bias, 0.05, 0.01, 0.02)
    assert torch.equal(u_full[:, 0], u_step) and torch.equal(s_full, s_step)

    u, dt, z, B, C = i8(b, 1, d_in), i8(b, 1, d_in), i8(b, 1, d_in), i8(b, 1, n), i8(b, 1, n)
    h = torch.randn(b, d_in, n, generator=g)
    A, D, dt_bias = -torch.rand(d_in, n, generator=g), torch.randn(d_in, generator=g), torch.randn(d_in, generator=g)
    scales = (0.03, 0.02, 0.04, 0.05, 0.01)
    y_full, h_full = qops.int8_selective_scan(u, dt, B, C, z, h, A, D, dt_bias, *scales)
    y_step, h_step = qops.int8_selective_scan_update(u[:, 0], dt[:, 0], B[:, 0], C[:, 0], z[:, 0], h, A, D, dt_bias,
                                                     *scales)
    print("scan update vs prefill: max |dy|", float((y_full[:, 0] - y_step).abs().max()),
          "max |dh|", float((h_full - h_step).abs().max()))
    assert torch.equal(h_full, h_step)  # the same elementwise float order
    assert torch.allclose(y_full[:, 0], y_step, rtol=0, atol=1e-6)  # the C.h dot product's order is the library's


def test_calibration_and_graph_cover_every_site(quantized):
    fp, q, amaxes = quantized
    assert all(set(layer) == set(SITE_NAMES) for layer in amaxes)
    graph = lower_model(q)
    made = {out for node in graph.graph.node for out in node.output}
    expected = graph_code_tensors(fp.config.n_layer)
    missing = [t for tensors in expected.values() for t in tensors if t not in made]
    assert not missing, missing
    scales = {init.name for init in graph.graph.initializer if init.name.endswith("_scale")}
    for i in range(fp.config.n_layer):
        assert {f"layers.{i}.mixer.{site}_scale" for site in SITE_NAMES} <= scales


def test_missing_or_partial_amaxes_are_errors(quantized):
    fp, _, amaxes = quantized
    partial = [dict(layer) for layer in amaxes]
    del partial[1]["dt"]
    with pytest.raises(ConfigError, match="layer 1: no calibrated amax for dt"):
        quantize_model(fp, partial, QuantConfig())
    with pytest.raises(ConfigError, match="amaxes for 1 layers"):
        quantize_model(fp, amaxes[:1], QuantConfig())


def test_scales_are_cached_floats_and_follow_a_reload(quantized):
    _, q, _ = quantized
    mixer: QuantMambaMixer = q.backbone.layers[0].mixer
    assert mixer.scales()["u"] == float(mixer.u_scale)
    state = mixer.state_dict()
    state["u_scale"] = state["u_scale"] * 2
    clone = QuantMambaMixer(mixer.config, mixer.hadamard, layer=0)
    clone.load_state_dict(mixer.state_dict())
    assert clone.scales()["u"] == float(mixer.u_scale)
    clone.load_state_dict(state)
    assert clone.scales()["u"] == float(state["u_scale"])


@pytest.mark.parametrize("n", [12 * 4, 20 * 2, 28])
def test_hadamard_sums_in_the_stated_order(n):
    """hadamard_transform in float32 equals a plain loop doing exactly the documented operations, bit for bit."""
    m, p = hadamard_factors(n)
    x = np.random.default_rng(n).standard_normal((3, n)).astype(np.float32) * 10
    rows = x.reshape(3, m, p).copy()
    h = 1
    while h < p:  # Sylvester stages h = 1, 2, 4, ...
        for start in range(0, p, 2 * h):
            a, b = rows[:, :, start:start + h].copy(), rows[:, :, start + h:start + 2 * h].copy()
            rows[:, :, start:start + h], rows[:, :, start + h:start + 2 * h] = a + b, a - b
        h *= 2
    signs = _small_hadamard(m).numpy()
    out = np.empty_like(rows)
    for i in range(m):  # H_m rows summed r = 0, 1, ... as signed adds
        acc = rows[:, 0] if signs[i, 0] > 0 else -rows[:, 0]
        for r in range(1, m):
            acc = acc + rows[:, r] if signs[i, r] > 0 else acc - rows[:, r]
        out[:, i] = acc
    expected = out.reshape(3, n) * np.float32(1 / math.sqrt(n))
    got = hadamard_transform(torch.from_numpy(x)).numpy()
    print("max |diff|", np.abs(got - expected).max())
    assert np.array_equal(got, expected)


def test_layer_sqnr_reports_every_site_from_both_flows(quantized):
    from edge_quamba.eval.sqnr import TENSORS, layer_sqnr

    fp, q, _ = quantized
    tokens = torch.randint(0, 120, (2, 16), generator=torch.Generator().manual_seed(2))
    table = layer_sqnr(fp, q, tokens)
    for i, layer in enumerate(table):
        print(i, {k: round(v, 1) for k, v in layer.items()})
    assert len(table) == fp.config.n_layer and all(tuple(layer) == TENSORS for layer in table)
    # int8 with a per-tensor scale: every site well above 10 dB and below the ~50 dB ceiling of 8 bits
    assert all(10 < layer[site] < 60 for layer in table for site in SITE_NAMES)
