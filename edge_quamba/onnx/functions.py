"""ONNX function bodies of the custom ops, in standard opset-17 ops, reproducing the qops references: the Mamba1
int8 ops (Int8CausalConv1d, Int8SelectiveScan, HadamardQuantize, HadamardQuantizeDynamic), W4A16's SelectiveScanF16,
and the bodies a Mamba1 model carries (:func:`custom_functions`). The Mamba2 ops' bodies are in
:mod:`edge_quamba.onnx.functions_mamba2`, the 4-bit linears' in :mod:`edge_quamba.onnx.functions_int4`; the node
writer they all use, and its int8 read / quantize numerics, is :mod:`edge_quamba.onnx.nodes`.

Each FunctionProto takes its name, domain, inputs, outputs and attributes from the op's spec
(:mod:`edge_quamba.ops.specs`); ONNX Runtime inlines it at every call site, so the exported graph runs on stock ONNX
Runtime. TensorRT never sees these bodies (its flavour drops them and calls the plugins instead).

Numerics (what is exact, and why):
    * conv: the int8 products and their k-term sums are integers below 2**24, so a float32 Conv computes the exact
      int32 accumulator in any order; then ``acc * (x_scale * weight_scale)`` (the scale product rounded to float32
      once, as the reference does) ``+ bias``. SiLU is written ``y / (1 + exp(-y))``, the formula closest to torch's
      (x * Sigmoid(x) is fused by ORT into a QuickGelu whose approximate logistic differs in far more last bits).
      exp differs from torch's in the last bit for a few percent of inputs, so u_q can differ by one code where
      silu(y) / out_scale lies within float32 rounding of a .5 tie (tests count these and check each is a tie).
    * Hadamard: the same Sylvester butterflies, in the same order, as :func:`edge_quamba.quant.hadamard
      .hadamard_transform` (a + b, a - b per stage), then the +-1 matrix H_m (exact products; sums of m terms), then
      one multiply by float32(1/sqrt(n)): bit-identical to the reference on ORT CPU, unlike a MatMul with normalized
      factor matrices (rounded entries, different summation order: about 1e-5 of codes off by one). It also needs no
      (p, p) constant (16 MiB for p = 2048) and costs n log2(p) adds instead of n p multiply-adds.
    * per-token scale (HadamardQuantizeDynamic): ReduceMax of |v| over channels (exact in any order), Max with the
      float32 AMAX_FLOOR, Div by 127 (one rounded division, as the reference), and the codes as
      QuantizeLinear(Max(v / s, -127), 1.0): opset 17's QuantizeLinear takes only a per-tensor or per-axis scale,
      so the division by the (b, l, 1) scale is its own Div (correctly rounded, the reference's x / s) and the unit
      scale leaves the quotient unchanged for QuantizeLinear's half-to-even rounding.
    * scan: float32 throughout. The decay exp(delta A) and the drive delta B u are computed for all l before the
      Scan, as the reference computes them, so the loop body is two ops and a readout. exp, softplus and the sum
      over n differ from torch's in the last bits: a stated tolerance on y and the state, and the codes quantized
      from y downstream can flip at .5 ties (:mod:`edge_quamba.onnx.validate` explains how validation handles that).

Bodies are built per model: Conv's ``group`` is d_inner and the Hadamard stages depend on d_inner's factors.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import torch
from onnx import FunctionProto, TensorProto, helper

from edge_quamba.onnx import OPSET
from edge_quamba.onnx.functions_int4 import w4a8_linear_function, w4a8_linear_quantize_function, w4a16_linear_function
from edge_quamba.onnx.nodes import INT64_MAX, Body, function
from edge_quamba.ops.specs import (HADAMARD_QUANTIZE, HADAMARD_QUANTIZE_DYNAMIC, INT8_CAUSAL_CONV1D,
                                   INT8_SELECTIVE_SCAN, SELECTIVE_SCAN_F16)
from edge_quamba.quant.hadamard import hadamard_factors, hadamard_matrix
from edge_quamba.quant.primitives import AMAX_FLOOR, INT8_MAX


def int8_causal_conv1d_function(d_inner: int) -> FunctionProto:
    """Int8CausalConv1d for a model of width d_inner (Conv's group). Layout as qops: x_q (b, l, d_in)."""
    b = Body()
    alpha = b.op("Mul", b.attr_float("x_scale"), b.attr_float("weight_scale"))  # rounded to float32 once
    inputs = b.op("Concat", "conv_state_q", b.op("Transpose", "x_q", perm=[0, 2, 1]), axis=2)  # (b, d_in, k+l)
    history = b.read_codes(inputs)
    k = b.op("Shape", "weight_q", start=1)  # (1,) = [k]
    b.op("Slice", history, b.op("Neg", k), b.ints(INT64_MAX), b.ints(2), out="conv_state_out")  # last k inputs
    window = b.op("Cast", b.op("Slice", history, b.ints(1), b.ints(INT64_MAX), b.ints(2)), to=TensorProto.FLOAT)
    weight = b.op("Unsqueeze", b.op("Cast", "weight_q", to=TensorProto.FLOAT), b.ints(1))  # (d_in, 1, k)
    acc = b.op("Conv", window, weight, group=d_inner)  # (b, d_in, l): exact integers (< 2**24)
    y = b.op("Add", b.op("Mul", b.op("Transpose", acc, perm=[0, 2, 1]), alpha), "bias")  # (b, l, d_in)
    b.quantize(b.silu(y), b.attr_float("out_scale"), out="u_q")
    return function(INT8_CAUSAL_CONV1D, b)


def scan_step_body() -> onnx.GraphProto:
    """One time step of the selective scan: the recurrence and the readout, nothing else.

    h_in (b, d_in, n), decay_t = exp(delta_t A) (b, d_in, n), drive_t = delta_t B_t u_t (b, d_in, n), C_t (b, 1, n)
    -> h_out = decay_t * h_in + drive_t (b, d_in, n), y_t = sum_n h_out * C_t (b, d_in).
    """
    b = Body("step_")
    b.op("Add", b.op("Mul", "decay_t", "h_in"), "drive_t", out="h_out")
    b.op("ReduceSum", b.op("Mul", "h_out", "C_t"), b.ints(-1), keepdims=0, out="y_t")
    value = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, None)  # noqa: E731
    return helper.make_graph(b.nodes, "selective_scan_step",
                             [value(n) for n in ("h_in", "decay_t", "drive_t", "C_t")],
                             [value("h_out"), value("y_t")])


def int8_selective_scan_function(opset: int = OPSET) -> FunctionProto:
    """Int8SelectiveScan: dequantize; delta = softplus(dt + dt_bias); the discretized decay exp(delta A) and drive
    delta B u for all l at once (as the reference computes them); a Scan over l (axis 1) carries the fp32 state
    through the two-op recurrence; then y = (C.h + D u) * silu(z).

    opset >= 21 (graphs with int4 weights): B and C are unsqueezed as int8 codes, then dequantized (the same
    values). ONNX Runtime 1.32's QDQ propagation, which moves a DequantizeLinear past an Unsqueeze, writes a
    QuantizeLinear whose output_dtype contradicts its uint8 zero point at opset 21 and the session fails to load."""
    b = Body()
    zero_point = b.const(np.array(0, np.int8), "zero_point")
    last, inner = b.ints(-1), b.ints(2)
    codes = {name: b.read_codes(f"{name}_q") for name in ("u", "dt", "B", "C", "z")}
    if opset >= 21:
        codes["B"], codes["C"] = b.op("Unsqueeze", codes["B"], inner), b.op("Unsqueeze", codes["C"], inner)
    deq = {name: b.op("DequantizeLinear", codes[name], b.attr_float(f"{name}_scale"), zero_point)
           for name in ("u", "dt", "B", "C", "z")}
    delta = b.op("Softplus", b.op("Add", deq["dt"], "dt_bias"))  # (b, l, d_in)
    decay = b.op("Exp", b.op("Mul", b.op("Unsqueeze", delta, last), "A"))  # (b, l, d_in, n)
    B = deq["B"] if opset >= 21 else b.op("Unsqueeze", deq["B"], inner)  # (b, l, 1, n)
    drive = b.op("Mul", b.op("Unsqueeze", b.op("Mul", delta, deq["u"]), last), B)  # (b, l, d_in, n)
    c = deq["C"] if opset >= 21 else b.op("Unsqueeze", deq["C"], inner)  # (b, l, 1, n)
    y_scan = "y_scan"
    b.ops("Scan", ["ssm_state", decay, drive, c], ["ssm_state_out", y_scan],
          body=scan_step_body(), num_scan_inputs=3, scan_input_axes=[1, 1, 1], scan_output_axes=[1])
    gated = b.silu(deq["z"])
    b.op("Mul", b.op("Add", y_scan, b.op("Mul", deq["u"], "D")), gated, out="y")  # (C.h + D u) * silu(z)
    return function(INT8_SELECTIVE_SCAN, b, opset)


def hadamard_nodes(b: Body, d_inner: int, y: str = "y") -> str:
    """Nodes of the orthonormal Hadamard transform of ``y`` (..., n), n = d_inner = m * p, in the reference's
    operation order (see module docstring); returns the name of the rotated (..., n) float32 tensor."""
    m, p = hadamard_factors(d_inner)
    x = y
    h = 1
    while h < p:  # Sylvester stage: pairs (i, i + h) inside blocks of 2h -> (a + b, a - b)
        blocks = b.op("Reshape", x, b.ints(-1, p // (2 * h), 2, h))
        first, second = b.ops("Split", [blocks], [f"a_{h}", f"b_{h}"], axis=2)
        x = b.op("Concat", b.op("Add", first, second), b.op("Sub", first, second), axis=2)
        h *= 2
    x = b.op("Reshape", x, b.ints(-1, m, p))
    if m > 1:  # H_m from the left: entries +-1, so each product is exact
        x = b.op("MatMul", b.const(hadamard_matrix(m, torch.float32).numpy(), "hadamard_m"), x)
    scale = np.array(1.0 / math.sqrt(d_inner), dtype=np.float32)  # rounded once, as the reference's float32 multiply
    return b.op("Mul", b.op("Reshape", x, b.op("Shape", y)), b.const(scale, "inv_sqrt_n"))


def hadamard_quantize_function(d_inner: int) -> FunctionProto:
    """HadamardQuantize for width n = d_inner = m * p, the reference's operation order (see module docstring)."""
    b = Body()
    b.quantize(hadamard_nodes(b, d_inner), b.attr_float("out_scale"), out="y_q")
    return function(HADAMARD_QUANTIZE, b)


def hadamard_quantize_dynamic_function(d_inner: int) -> FunctionProto:
    """HadamardQuantizeDynamic for width n = d_inner: the same transform, then per token
    y_scale = max(amax |v|, AMAX_FLOOR) / 127 and y_q = quantize(v, y_scale) (see module docstring)."""
    b = Body()
    v = hadamard_nodes(b, d_inner)  # (b, l, n)
    amax = b.op("ReduceMax", b.op("Abs", v), axes=[-1], keepdims=1)  # (b, l, 1): a max is exact in any order
    floor = b.const(np.array(AMAX_FLOOR, np.float32), "amax_floor")
    scale = b.op("Div", b.op("Max", amax, floor), b.const(np.array(INT8_MAX, np.float32), "int8_max"))
    b.op("Squeeze", scale, b.ints(-1), out="y_scale")  # (b, l)
    b.quantize(b.op("Div", v, scale), b.const(np.array(1.0, np.float32), "unit_scale"), out="y_q")
    return function(HADAMARD_QUANTIZE_DYNAMIC, b)


def selective_scan_nodes(b: Body, u: str, delta: str, A: str, B: str, C: str, D: str, ssm_state: str,
                        ssm_state_out: str, y: str) -> str:
    """The fp reference's scan (:func:`edge_quamba.models.mamba.selective_scan`) in float32 nodes: u, delta (b, l,
    d_in), A (d_in, n), B, C (b, l, n), D (d_in,), ssm_state (b, d_in, n), all float32 -> ``y`` = C.h + u D
    (b, l, d_in); the final state is named ``ssm_state_out``. The decay exp(delta A) and the drive (delta u) B for all
    l at once (the reference's order), then the two-op Scan step over l (axis 1)."""
    last, inner = b.ints(-1), b.ints(2)
    decay = b.op("Exp", b.op("Mul", b.op("Unsqueeze", delta, last), A))  # (b, l, d_in, n)
    drive = b.op("Mul", b.op("Unsqueeze", b.op("Mul", delta, u), last), b.op("Unsqueeze", B, inner))
    y_scan = b._name("y_scan")
    b.ops("Scan", [ssm_state, decay, drive, b.op("Unsqueeze", C, inner)], [ssm_state_out, y_scan],
          body=scan_step_body(), num_scan_inputs=3, scan_input_axes=[1, 1, 1], scan_output_axes=[1])
    return b.op("Add", y_scan, b.op("Mul", u, D), out=y)


def selective_scan_f16_function() -> FunctionProto:
    """SelectiveScanF16: the float16 inputs as float32 (exact), then :func:`selective_scan_nodes`."""
    b = Body()
    f32 = {name: b.op("Cast", name, to=TensorProto.FLOAT) for name in ("u", "B", "C", "D")}
    selective_scan_nodes(b, f32["u"], "delta", "A", f32["B"], f32["C"], f32["D"], "ssm_state", "ssm_state_out", "y")
    return function(SELECTIVE_SCAN_F16, b)


INT4_LINEAR_FUNCTIONS = {"w4a8": (w4a8_linear_function, w4a8_linear_quantize_function),
                         "w4a16": (w4a16_linear_function, selective_scan_f16_function)}
"""The custom ops' bodies a TensorRT-flavour graph of each 4-bit width adds (the ORT flavour lowers the linears to
DequantizeLinear -> MatMul and the W4A16 scan to standard nodes instead): W4A16's graph has no int8 op, so its
functions are these alone."""


def custom_functions(d_inner: int, hadamard: bool, out_proj_scale: str = "static", opset: int = OPSET,
                     int4_linears: str | None = None) -> list[FunctionProto]:
    """The FunctionProtos a Mamba1 model of width d_inner uses: the Hadamard op only when its out_proj input is
    rotated, HadamardQuantize for a static out_proj input scale, HadamardQuantizeDynamic for a per-token one (opset 17
    only: its ReduceMax takes ``axes`` as an attribute; QuantConfig refuses the per-token scale with 4-bit weights);
    ``int4_linears`` "w4a8" or "w4a16": also the 4-bit linears of that bit width (:data:`INT4_LINEAR_FUNCTIONS`).
    opset: the model's default-domain opset (the static bodies use no op whose meaning changed between 17 and 21)."""
    functions = [int8_causal_conv1d_function(d_inner), int8_selective_scan_function(opset)]
    functions += [make() for make in INT4_LINEAR_FUNCTIONS.get(int4_linears, ())]
    if hadamard:
        dynamic = out_proj_scale == "dynamic"
        if dynamic and opset != OPSET:
            raise ValueError(f"HadamardQuantizeDynamic is built for opset {OPSET}, not {opset}")
        functions.append((hadamard_quantize_dynamic_function if dynamic else hadamard_quantize_function)(d_inner))
    return at_opset(functions, opset)


def at_opset(functions: list[FunctionProto], opset: int) -> list[FunctionProto]:
    """Bodies written at opset 17, moved to ``opset`` (no op they use changed meaning between 17 and 21)."""
    if opset != OPSET:
        for proto in functions:
            proto.opset_import[0].version = opset
            for node in proto.node:  # from opset 18 an even Split names its number of outputs
                if node.op_type == "Split" and len(node.input) == 1:
                    node.attribute.append(helper.make_attribute("num_outputs", len(node.output)))
    return functions
