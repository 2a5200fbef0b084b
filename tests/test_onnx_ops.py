"""Each custom op's ONNX function body, run alone on stock ONNX Runtime, against its qops reference on identical
int8 inputs: int8 outputs exact except counted rounding ties (each proven: the reference's quotient x / s lies within
TIE_TOLERANCE codes of .5), float outputs within a stated tolerance. The gated norms of the Mamba2 TensorRT graph
(GatedRMSNorm(Hadamard)Quantize) exact but at ties. The 4-bit linears of the TensorRT flavour:
W4A8Linear(Quantize) bit-identical, W4A16Linear within one float16 step plus float32 sums in another order;
SelectiveScanF16 within the scan's tolerance."""

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from edge_quamba.onnx import IR_VERSION, OPSET
from edge_quamba.models.mamba import selective_scan
from edge_quamba.onnx.functions import (hadamard_quantize_function, int8_causal_conv1d_function,
                                        int8_selective_scan_function, selective_scan_f16_function)
from edge_quamba.onnx.functions_int4 import w4a8_linear_function, w4a8_linear_quantize_function, w4a16_linear_function
from edge_quamba.onnx.functions_mamba2 import gated_rms_norm_quantize_function
from edge_quamba.onnx.nodes import Body
from edge_quamba.onnx.validate import TIE_TOLERANCE
from edge_quamba.ops.specs import (DOMAIN, GATED_RMS_NORM_HADAMARD_QUANTIZE, GATED_RMS_NORM_QUANTIZE,
                                   HADAMARD_QUANTIZE, INT8_CAUSAL_CONV1D, INT8_SELECTIVE_SCAN,
                                   SELECTIVE_SCAN_F16, W4A8_LINEAR, W4A8_LINEAR_QUANTIZE, W4A16_LINEAR)
from edge_quamba.quant import primitives, qops
from edge_quamba.quant.hadamard import hadamard_transform
from edge_quamba.quant.primitives import quantize, quantize_hook
from edge_quamba.quant.qops import hadamard_quantize, int8_causal_conv1d, int8_selective_scan
from edge_quamba.runtime.ort_backend import session_options
from helpers import report

ELEM = {"int8": TensorProto.INT8, "float16": TensorProto.FLOAT16, "float32": TensorProto.FLOAT}
SCAN_RTOL = 1e-5
"""Scan outputs: max |ort - ref| <= SCAN_RTOL * max(1, max |ref|) (float32 exp, softplus, sums in another order)."""


def run_single_node(spec, function, attrs: dict, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """A one-node model calling ``spec`` (its body: ``function``) with every input a graph input, run on ORT."""
    node = helper.make_node(spec.name, [t.name for t in spec.inputs], [t.name for t in spec.outputs], domain=DOMAIN)
    node.attribute.extend(helper.make_attribute(a.name, int(attrs[a.name]) if a.kind == "int" else
                                                float(attrs[a.name])) for a in spec.attributes)
    graph = helper.make_graph(
        [node], spec.name,
        [helper.make_tensor_value_info(t.name, ELEM[t.dtype], list(t.shape)) for t in spec.inputs],
        [helper.make_tensor_value_info(t.name, ELEM[t.dtype], list(t.shape)) for t in spec.outputs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(DOMAIN, 1)],
                              functions=[function])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(model.SerializeToString(), session_options(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def with_quotients(fn, *args):
    """Run a reference op, recording the float32 quotient x / s of every quantize call inside it."""
    quotients = []

    def hook(label, quotient, q):
        quotients.append(quotient)
        return q

    with quantize_hook(hook):
        out = fn(*args)
    return out, quotients


def assert_exact_but_ties(name: str, got: np.ndarray, want: torch.Tensor, quotient: torch.Tensor) -> int:
    """int8 codes equal except where |diff| == 1 at a proven tie; prints and returns the number of ties."""
    got_t = torch.from_numpy(got).to(torch.int32)
    want_t = want.to(torch.int32)
    differ = got_t != want_t
    distance = (quotient - torch.floor(quotient) - 0.5).abs()
    tie = differ & ((got_t - want_t).abs() == 1) & (distance <= TIE_TOLERANCE)
    far = distance[tie].max().item() if tie.any() else 0.0
    print(f"{name}: {int(differ.sum())} of {differ.numel()} codes differ, {int(tie.sum())} at proven ties "
          f"(max {far:.1e} codes from .5)")
    assert torch.equal(differ, tie), f"{name}: codes differ away from rounding ties"
    return int(tie.sum())


def ints(g, *shape) -> torch.Tensor:
    """Random int8 codes, -128 included: the bodies read it as -127 (primitives.read_codes), as the reference does."""
    return torch.randint(-128, 128, shape, generator=g, dtype=torch.int8)


@pytest.mark.parametrize("b,l,d_in,k,with_bias", [(1, 1, 768, 4, True), (4, 64, 768, 4, True), (2, 9, 160, 3, False),
                                                  (3, 33, 112, 4, True)])
def test_int8_causal_conv1d_body(b, l, d_in, k, with_bias):
    g = torch.Generator().manual_seed(b * 1000 + l)
    x_q, state_q, weight_q = ints(g, b, l, d_in), ints(g, b, d_in, k), ints(g, d_in, k)
    bias = torch.randn(d_in, generator=g) if with_bias else None
    scales = dict(x_scale=0.013, weight_scale=0.0071, out_scale=0.004)  # silu(y) / out_scale spans +-127
    (u_q, state_out), (quotient,) = with_quotients(int8_causal_conv1d, x_q, state_q, weight_q, bias, *scales.values())
    feeds = {"x_q": x_q.numpy(), "conv_state_q": state_q.numpy(), "weight_q": weight_q.numpy(),
             "bias": (bias if bias is not None else torch.zeros(d_in)).numpy()}
    got_u, got_state = run_single_node(INT8_CAUSAL_CONV1D, int8_causal_conv1d_function(d_in), scales, feeds)
    assert np.array_equal(got_state, state_out.numpy())  # the int8 state is the last k inputs: exact
    ties = assert_exact_but_ties("u_q", got_u, u_q, quotient)
    assert ties <= max(2, u_q.numel() // 10_000)  # ties are rare (exp differs from torch's in the last bit)
    assert np.abs(got_u.astype(int)).max() <= 127


@pytest.mark.parametrize("b,l,d_in,n", [(1, 1, 768, 16), (2, 37, 96, 16), (3, 8, 160, 4)])
def test_int8_selective_scan_body(b, l, d_in, n):
    g = torch.Generator().manual_seed(7 * l + n)
    u_q, dt_q, z_q, B_q, C_q = ints(g, b, l, d_in), ints(g, b, l, d_in), ints(g, b, l, d_in), ints(g, b, l, n), \
        ints(g, b, l, n)
    A = -torch.exp(torch.randn(d_in, n, generator=g))
    D, dt_bias = torch.randn(d_in, generator=g), torch.randn(d_in, generator=g) - 2
    h0 = torch.randn(b, d_in, n, generator=g)
    scales = dict(u_scale=0.02, dt_scale=0.03, B_scale=0.01, C_scale=0.01, z_scale=0.04)
    y, h = int8_selective_scan(u_q, dt_q, B_q, C_q, z_q, h0, A, D, dt_bias, *scales.values())
    feeds = {"u_q": u_q.numpy(), "dt_q": dt_q.numpy(), "B_q": B_q.numpy(), "C_q": C_q.numpy(), "z_q": z_q.numpy(),
             "ssm_state": h0.numpy(), "A": A.numpy(), "D": D.numpy(), "dt_bias": dt_bias.numpy()}
    got_y, got_h = run_single_node(INT8_SELECTIVE_SCAN, int8_selective_scan_function(), scales, feeds)
    for name, got, want in (("y", got_y, y), ("ssm_state_out", got_h, h)):
        assert got.shape == tuple(want.shape) and got.dtype == np.float32
        tolerance = SCAN_RTOL * max(1.0, want.abs().max().item())
        assert report(f"{name} (tolerance {tolerance:.1e})", torch.from_numpy(got) - want) <= tolerance


@pytest.mark.parametrize("d_in", [768, 160, 112, 256, 1536])  # 12*64, 20*8, 28*4, 2**8, 12*128
def test_hadamard_quantize_body(d_in):
    g = torch.Generator().manual_seed(d_in)
    y = torch.randn(3, 41, d_in, generator=g) * torch.exp(torch.randn(d_in, generator=g))  # uneven channels
    out_scale = float(hadamard_transform(y).abs().max()) / 127 * 0.8  # codes span +-127, the largest saturate
    y_q, (quotient,) = with_quotients(hadamard_quantize, y, out_scale)
    (got,) = run_single_node(HADAMARD_QUANTIZE, hadamard_quantize_function(d_in), {"out_scale": out_scale},
                             {"y": y.numpy()})
    ties = assert_exact_but_ties(f"y_q d_in={d_in}", got, y_q, quotient)
    assert ties == 0  # the butterflies run in the reference's order: bit-identical on ORT CPU
    assert np.abs(got.astype(int)).max() == 127


@pytest.mark.parametrize("hadamard", [False, True])
@pytest.mark.parametrize("b,l,d_in,groups", [(1, 1, 5120, 1), (2, 9, 768, 2), (3, 4, 96, 4)])
def test_gated_rms_norm_quantize_bodies(hadamard, b, l, d_in, groups):
    """GatedRMSNorm(Hadamard)Quantize (the TensorRT graph's gated norm before it becomes a plugin) against
    qops.gated_rms_norm_(hadamard_)quantize, z codes with -128 read as -127: codes exact but at proven ties (exp and
    the mean of squares differ from torch's in the last bits)."""
    g = torch.Generator().manual_seed(d_in + groups + 10 * hadamard)
    y = torch.randn(b, l, d_in, generator=g) * 2
    y[..., :: max(d_in // 8, 1)] *= 20.0  # outlier channels
    z_q, weight = ints(g, b, l, d_in), torch.rand(d_in, generator=g) + 0.5
    z_q.view(-1)[::7] = -128  # many: silu(-128 s) and silu(-127 s) differ by ~1% at s = 0.02, which moves codes
    attrs = dict(z_scale=0.02, eps=1e-5, group_size=d_in // groups)
    reference = qops.gated_rms_norm_hadamard_quantize if hadamard else qops.gated_rms_norm_quantize
    normed = qops.gated_rms_norm(y, z_q, weight, *attrs.values())
    attrs["out_scale"] = float((hadamard_transform(normed) if hadamard else normed).abs().max()) / 127 * 0.8
    y_q, (quotient,) = with_quotients(reference, y, z_q, weight, *attrs.values())
    spec = GATED_RMS_NORM_HADAMARD_QUANTIZE if hadamard else GATED_RMS_NORM_QUANTIZE
    (got,) = run_single_node(spec, gated_rms_norm_quantize_function(d_in, hadamard), attrs,
                             {"y": y.numpy(), "z_q": z_q.numpy(), "weight": weight.numpy()})
    ties = assert_exact_but_ties(f"{spec.name} y_q", got, y_q, quotient)
    assert ties <= max(2, y_q.numel() // 10_000)
    assert np.abs(got.astype(int)).max() == 127  # the largest values saturate, never to -128


def test_quantize_pattern_matches_primitives_at_ties_and_limits():
    """Max + QuantizeLinear (Body.quantize) equals primitives.quantize on exact .5 ties, the +-127.5 edges, values
    that ONNX would saturate to -128, and infinities."""
    scale = 0.25
    halves = np.arange(-130, 130, dtype=np.float32) + 0.5
    x = np.concatenate([halves, halves * 0.999999, [-1e9, 1e9, -np.inf, np.inf, 0.0, -0.0, -127.6, 127.6]])
    x = (x * scale).astype(np.float32)
    body = Body()
    scale_name = body.const(np.array(scale, np.float32), "scale")
    body.quantize("x", scale_name, out="q")
    graph = helper.make_graph(body.nodes, "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
                              [helper.make_tensor_value_info("q", TensorProto.INT8, ["n"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    session = ort.InferenceSession(model.SerializeToString(), session_options(), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"x": x})
    want = quantize(torch.from_numpy(x), scale).numpy()
    assert got.min() == -127 and got.max() == 127
    assert np.array_equal(got, want), x[got != want]
    assert math.isclose(float(want[list(halves).index(2.5)]), 2.0)  # half to even


# (b, l, K, N, group): 2.8b's dt_proj K (a partial last group), an odd K below the group, whole groups, a decode step
INT4_SHAPES = [(2, 5, 160, 96, 64), (1, 3, 39, 17, 13), (1, 33, 256, 64, 64), (1, 1, 5120, 48, 64)]


def int4_linear_inputs(b, l, k, n, group, seed, x):
    g = torch.Generator().manual_seed(seed)
    packed = primitives.pack_int4(torch.randint(-8, 8, (n, k), generator=g, dtype=torch.int8))  # every nibble
    scales = torch.rand(n, primitives.int4_group_count(k, group), generator=g) * 0.01 + 1e-4
    x = ints(g, b, l, k) if x == "int8" else torch.randn(b, l, k, generator=g).half()
    return x, packed, scales, torch.randn(n, generator=g)


@pytest.mark.parametrize("b,l,k,n,group", INT4_SHAPES)
def test_w4a8_linear_bodies_are_bit_identical(b, l, k, n, group):
    """The TensorRT flavour's W4A8Linear and W4A8LinearQuantize bodies (packed weight as int8 bytes) equal the
    reference bit for bit: exact per-group integer sums, groups added in ascending order."""
    x_q, packed, scales, bias = int4_linear_inputs(b, l, k, n, group, k + n, "int8")
    feeds = {"x_q": x_q.numpy(), "weight_packed": packed.view(torch.int8).numpy(), "weight_scale": scales.numpy(),
             "bias": bias.numpy()}
    (y,) = run_single_node(W4A8_LINEAR, w4a8_linear_function(), {"x_scale": 0.0173, "group_size": group}, feeds)
    want = qops.w4a8_linear(x_q, packed, scales, bias, 0.0173, group)
    report("w4a8_linear body", torch.from_numpy(y) - want)
    assert np.array_equal(y, want.numpy())
    out_scale = float(want.abs().max()) / 150  # the largest saturate at +-127
    (y_q,) = run_single_node(W4A8_LINEAR_QUANTIZE, w4a8_linear_quantize_function(),
                             {"x_scale": 0.0173, "group_size": group, "out_scale": out_scale}, feeds)
    assert np.array_equal(y_q, qops.w4a8_linear_quantize(x_q, packed, scales, bias, 0.0173, group, out_scale).numpy())
    assert (np.abs(y_q) == 127).any()


@pytest.mark.parametrize("b,l,k,n,group", INT4_SHAPES)
def test_w4a16_linear_body_tracks_the_reference(b, l, k, n, group):
    """float16 out: within one float16 step of the reference plus float32 sums in another order (the kernels'
    W4A16 tolerance: 2^-10 |ref| + 2^-15 (|x| @ |w|^T))."""
    x, packed, scales, bias = int4_linear_inputs(b, l, k, n, group, 3 * k + n, "float16")
    feeds = {"x": x.numpy(), "weight_packed": packed.view(torch.int8).numpy(), "weight_scale": scales.numpy(),
             "bias": bias.numpy()}
    (y,) = run_single_node(W4A16_LINEAR, w4a16_linear_function(), {"group_size": group}, feeds)
    want = qops.w4a16_linear(x, packed, scales, bias, group).float()
    w = primitives.dequantize_int4(primitives.unpack_int4(packed, k), scales, group)
    limit = 2.0**-10 * want.abs() + 2.0**-15 * (x.float().abs() @ w.abs().T)
    diff = (torch.from_numpy(y.astype(np.float32)) - want).abs()
    report("w4a16_linear body", diff)
    assert y.dtype == np.float16 and bool((diff <= limit).all())


@pytest.mark.parametrize("b,l,d_in,n", [(1, 1, 768, 16), (2, 37, 96, 16), (3, 8, 160, 4)])
def test_selective_scan_f16_body_tracks_the_reference(b, l, d_in, n):
    g = torch.Generator().manual_seed(b * l + d_in)
    args = {"u": torch.randn(b, l, d_in, generator=g).half(), "delta": torch.rand(b, l, d_in, generator=g) * 0.2,
            "A": -torch.rand(d_in, n, generator=g) * 4, "B": torch.randn(b, l, n, generator=g).half(),
            "C": torch.randn(b, l, n, generator=g).half(), "D": torch.randn(d_in, generator=g).half(),
            "ssm_state": torch.randn(b, d_in, n, generator=g)}
    y, state = run_single_node(SELECTIVE_SCAN_F16, selective_scan_f16_function(), {},
                               {k: v.numpy() for k, v in args.items()})
    want_y, want_state = selective_scan(*args.values())
    for name, got, want in (("y", y, want_y), ("ssm_state_out", state, want_state)):
        diff = torch.from_numpy(got) - want
        report(f"selective_scan_f16 {name}", diff)
        assert got.dtype == np.float32 and float(diff.abs().max()) <= SCAN_RTOL * max(1.0, float(want.abs().max()))
