"""ONNX function bodies of the custom ops, in standard opset-17 ops, reproducing the qops references.

Each FunctionProto takes its name, domain, inputs, outputs and attributes from the op's spec
(:mod:`edge_quamba.ops.specs`); ONNX Runtime inlines it at every call site, so the exported graph runs on stock ONNX
Runtime. TensorRT never sees these bodies (its flavour drops them and calls the plugins instead).

Numerics (what is exact, and why):
    * int8 inputs are read as :func:`edge_quamba.quant.primitives.read_codes` says: Clip(q, -127, 127) on the codes
      (:meth:`Body.read_codes`), so a -128 from TensorRT's saturating QuantizeLinear reads as -127.
    * int8 codes: every QuantizeLinear is preceded by Max(x, -127 s) (:meth:`Body.quantize`). ONNX QuantizeLinear
      divides (x / s) and rounds half to even like :func:`edge_quamba.quant.primitives.quantize`, but saturates to
      [-128, 127]; the Max keeps -128 out (exact: fl(-127 s) / s rounds to -127).
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

    * 4-bit linears (W4A8Linear, W4A8LinearQuantize, W4A16Linear; the TensorRT flavour's graph before its nodes
      become plugins): the packed weight (int8 bytes) is unpacked with float arithmetic that is exact on integers
      (high nibble = floor(v / 16), low nibble = v - 16 high, minus 16 when above 7: two's complement), codes
      interleaved low first as :func:`edge_quamba.quant.primitives.unpack_int4`. W4A8 is bit-identical to the
      reference: per group a MatMul of integer-valued floats (every partial sum an integer below 2**24, hence exact
      in any order) gives the exact int32 sums, times float32(x_scale * weight_scale[n, g]) rounded once, and a Scan
      over the groups adds them in ascending order onto zeros (0 + t = t). W4A16 dequantizes the weight in float32
      (one rounding, as the reference) and runs one float32 MatMul (the BLAS's order, like the reference's), rounded
      once to float16. ONNX Runtime folds the unpacking (it depends on initializers only) when the session loads.

Bodies are built per model: Conv's ``group`` is d_inner and the Hadamard stages depend on d_inner's factors.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import torch
from onnx import FunctionProto, TensorProto, helper, numpy_helper

from edge_quamba.onnx import OPSET
from edge_quamba.ops.specs import (GATED_RMS_NORM_HADAMARD_QUANTIZE, GATED_RMS_NORM_QUANTIZE, HADAMARD_QUANTIZE,
                                   HADAMARD_QUANTIZE_DYNAMIC, INT8_CAUSAL_CONV1D,
                                   INT8_CONV1D_CHANNEL_SCALES, INT8_SELECTIVE_SCAN, INT8_SSD_SCAN, SELECTIVE_SCAN_F16,
                                   W4A8_LINEAR, W4A8_LINEAR_QUANTIZE, W4A16_LINEAR, OpSpec)
from edge_quamba.quant.hadamard import hadamard_factors, hadamard_matrix
from edge_quamba.quant.primitives import AMAX_FLOOR, INT8_MAX

INT64_MAX = np.iinfo(np.int64).max


class Body:
    """Collects the nodes of a graph body; each method adds nodes and returns the output name(s)."""

    def __init__(self, prefix: str = ""):
        self.nodes: list[onnx.NodeProto] = []
        self.prefix = prefix
        self._count = 0

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}{hint}_{self._count}"

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs) -> str:
        output = out or self._name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], name=output, **attrs))
        return output

    def ops(self, op_type: str, inputs: list[str], outputs: list[str], **attrs) -> list[str]:
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=outputs[0], **attrs))
        return outputs

    def const(self, value: np.ndarray, hint: str = "const") -> str:
        output = self._name(hint)
        self.nodes.append(helper.make_node("Constant", [], [output], value=numpy_helper.from_array(value, output)))
        return output

    def ints(self, *values: int) -> str:
        return self.const(np.array(values, dtype=np.int64), "ints")

    def attr_float(self, attr: str) -> str:
        """A float32 scalar tensor holding the function attribute ``attr`` (Constant with ref_attr_name)."""
        output = self._name(attr)
        node = helper.make_node("Constant", [], [output])
        node.attribute.append(onnx.AttributeProto(name="value_float", ref_attr_name=attr,
                                                  type=onnx.AttributeProto.FLOAT))
        self.nodes.append(node)
        return output

    def attr_int(self, attr: str) -> str:
        """An int64 scalar tensor holding the function attribute ``attr``."""
        output = self._name(attr)
        node = helper.make_node("Constant", [], [output])
        node.attribute.append(onnx.AttributeProto(name="value_int", ref_attr_name=attr, type=onnx.AttributeProto.INT))
        self.nodes.append(node)
        return output

    def quantize(self, x: str, scale: str, out: str, low: str | None = None, zero_point: str | None = None) -> str:
        """int8 codes of x at scale: Max(x, -fl(127 s)), then QuantizeLinear (x / s, half to even).

        QuantizeLinear saturates to [-128, 127]; our range is [-127, 127]. The upper end needs nothing (x / s >= 127.5
        gives 127 either way), the lower end is raised by the Max: fl(-127 s) / s rounds to -127 exactly. A Max, not a
        Clip: ONNX Runtime's QDQ fusion of a MatMul looks one node past it for a Clip and, finding one that the int8
        range does not make redundant, refuses to fuse the MatMul. ``low`` names -fl(127 s) when the caller has it.
        (NaN is not mapped to 0 as the reference does: the graph is validated on finite data only.)
        """
        if low is None:
            low = self.op("Mul", scale, self.const(np.array(-INT8_MAX, np.float32)))
        zero_point = zero_point or self.const(np.array(0, np.int8), "zero_point")
        return self.op("QuantizeLinear", self.op("Max", x, low, out=f"{out}.max"), scale, zero_point, out=out)

    def read_codes(self, q: str) -> str:
        """int8 codes as every op reads them (:func:`edge_quamba.quant.primitives.read_codes`): Clip(q, -127, 127) on
        the int8 tensor, so -128 (which only TensorRT's saturating QuantizeLinear writes) reads as -127."""
        low = self.const(np.array(-INT8_MAX, np.int8), "code_low")
        return self.op("Clip", q, low, self.const(np.array(INT8_MAX, np.int8), "code_high"))

    def quantize_per_channel(self, x: str, scales: str, out: str) -> str:
        """int8 codes of x (..., c) at per-channel scales (c,): Cast(Clip(Round(x / s), -127, 127)), the reference's
        division, half-to-even rounding and symmetric range written out (a per-axis QuantizeLinear would need an
        int8 zero-point vector and saturates to -128)."""
        low, high = self.const(np.array(-INT8_MAX, np.float32)), self.const(np.array(INT8_MAX, np.float32))
        rounded = self.op("Clip", self.op("Round", self.op("Div", x, scales)), low, high)
        return self.op("Cast", rounded, to=TensorProto.INT8, out=out)

    def dequantize_per_channel(self, q: str, scales: str) -> str:
        """float32(q) * s, per channel (the last axis)."""
        return self.op("Mul", self.op("Cast", q, to=TensorProto.FLOAT), scales)

    def silu(self, x: str) -> str:
        """x / (1 + exp(-x)), the formula of torch's silu."""
        one = self.const(np.array(1.0, np.float32))
        return self.op("Div", x, self.op("Add", self.op("Exp", self.op("Neg", x)), one))


def _function(spec: OpSpec, body: Body, opset: int = OPSET) -> FunctionProto:
    return helper.make_function(
        spec.domain, spec.name,
        inputs=[t.name for t in spec.inputs], outputs=[t.name for t in spec.outputs],
        nodes=body.nodes, opset_imports=[helper.make_opsetid("", opset)],
        attributes=[a.name for a in spec.attributes], doc_string=spec.doc,
    )


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
    return _function(INT8_CAUSAL_CONV1D, b)


def _scan_step_body() -> onnx.GraphProto:
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
          body=_scan_step_body(), num_scan_inputs=3, scan_input_axes=[1, 1, 1], scan_output_axes=[1])
    gated = b.silu(deq["z"])
    b.op("Mul", b.op("Add", y_scan, b.op("Mul", deq["u"], "D")), gated, out="y")  # (C.h + D u) * silu(z)
    return _function(INT8_SELECTIVE_SCAN, b, opset)


def _hadamard(b: Body, d_inner: int, y: str = "y") -> str:
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
    b.quantize(_hadamard(b, d_inner), b.attr_float("out_scale"), out="y_q")
    return _function(HADAMARD_QUANTIZE, b)


def hadamard_quantize_dynamic_function(d_inner: int) -> FunctionProto:
    """HadamardQuantizeDynamic for width n = d_inner: the same transform, then per token
    y_scale = max(amax |v|, AMAX_FLOOR) / 127 and y_q = quantize(v, y_scale) (see module docstring)."""
    b = Body()
    v = _hadamard(b, d_inner)  # (b, l, n)
    amax = b.op("ReduceMax", b.op("Abs", v), axes=[-1], keepdims=1)  # (b, l, 1): a max is exact in any order
    floor = b.const(np.array(AMAX_FLOOR, np.float32), "amax_floor")
    scale = b.op("Div", b.op("Max", amax, floor), b.const(np.array(INT8_MAX, np.float32), "int8_max"))
    b.op("Squeeze", scale, b.ints(-1), out="y_scale")  # (b, l)
    b.quantize(b.op("Div", v, scale), b.const(np.array(1.0, np.float32), "unit_scale"), out="y_q")
    return _function(HADAMARD_QUANTIZE_DYNAMIC, b)


def int8_conv1d_channel_scales_function(conv_dim: int) -> FunctionProto:
    """Int8CausalConv1dChannelScales for a Mamba2 model (Conv's group = conv_dim): Int8CausalConv1d's body with the
    output quantized per channel at the ``out_scales`` input."""
    b = Body()
    alpha = b.op("Mul", b.attr_float("x_scale"), b.attr_float("weight_scale"))  # rounded to float32 once
    inputs = b.op("Concat", "conv_state_q", b.op("Transpose", "x_q", perm=[0, 2, 1]), axis=2)  # (b, c, k+l)
    history = b.read_codes(inputs)
    k = b.op("Shape", "weight_q", start=1)
    b.op("Slice", history, b.op("Neg", k), b.ints(INT64_MAX), b.ints(2), out="conv_state_out")
    window = b.op("Cast", b.op("Slice", history, b.ints(1), b.ints(INT64_MAX), b.ints(2)), to=TensorProto.FLOAT)
    weight = b.op("Unsqueeze", b.op("Cast", "weight_q", to=TensorProto.FLOAT), b.ints(1))  # (c, 1, k)
    acc = b.op("Conv", window, weight, group=conv_dim)  # (b, c, l): exact integers
    y = b.op("Add", b.op("Mul", b.op("Transpose", acc, perm=[0, 2, 1]), alpha), "bias")  # (b, l, c)
    b.quantize_per_channel(b.silu(y), "out_scales", out="out_q")
    return _function(INT8_CONV1D_CHANNEL_SCALES, b)


def ssd_scan_nodes(b: Body, x: str, delta: str, A: str, B: str, C: str, D: str, ssm_state: str,
                   ssm_state_out: str, y_scan: str, nheads: int, ngroups: int, d_state: int) -> str:
    """The SSD recurrence in float32 nodes (:func:`edge_quamba.models.mamba2.ssd_step` over l), shared by the
    Int8SSDScan body and the float16 W4A16 graph: x (b, l, h, p), Δ (b, l, h), A and D (h,), B and C (b, l, g n), ssm_state
    (b, h, p, n), all float32 -> y = h C + D x (b, l, h, p); the final state is named ``ssm_state_out``.

    The decay exp(Δ A) (b, l, h, 1, 1) and the drive (Δ x) Bᵀ (b, l, h, p, n) for all l at once, as the reference
    computes them (its order: Δ x first, then times B); the same two-op Scan step as the Mamba1 scan over l with the
    (b, h, p, n) state. B and C reach the heads of their group by Expand (head i reads group i // (h / g))."""
    h, g, n = nheads, ngroups, d_state
    decay = b.op("Unsqueeze", b.op("Exp", b.op("Mul", delta, A)), b.ints(3, 4))  # (b, l, h, 1, 1)
    dtx = b.op("Mul", b.op("Unsqueeze", delta, b.ints(3)), x)  # (b, l, h, p)

    def per_head(t: str) -> str:  # (b, l, g n) -> (b, l, h, 1, n)
        groups = b.op("Reshape", t, b.ints(0, 0, g, 1, n))
        heads = b.op("Reshape", b.op("Expand", groups, b.ints(1, 1, 1, h // g, 1)), b.ints(0, 0, h, n))
        return b.op("Unsqueeze", heads, b.ints(3))

    drive = b.op("Mul", b.op("Unsqueeze", dtx, b.ints(4)), per_head(B))  # (b, l, h, p, n)
    b.ops("Scan", [ssm_state, decay, drive, per_head(C)], [ssm_state_out, y_scan],
          body=_scan_step_body(), num_scan_inputs=3, scan_input_axes=[1, 1, 1], scan_output_axes=[1])
    return b.op("Add", y_scan, b.op("Mul", b.op("Unsqueeze", D, b.ints(1)), x))  # (b, l, h, p)


def int8_ssd_scan_function(nheads: int, headdim: int, ngroups: int, d_state: int) -> FunctionProto:
    """Int8SSDScan for one Mamba2 shape: dequantize (x and B, C per channel); Δ = softplus(dt + dt_bias); then the
    float32 recurrence :func:`ssd_scan_nodes`."""
    h, p = nheads, headdim
    b = Body()
    zero_point = b.const(np.array(0, np.int8), "zero_point")
    x = b.dequantize_per_channel(b.read_codes("x_q"), "x_scales")
    x = b.op("Reshape", x, b.ints(0, 0, h, p))  # (b, l, h, p)
    dt = b.op("DequantizeLinear", b.read_codes("dt_q"), b.attr_float("dt_scale"), zero_point)
    delta = b.op("Softplus", b.op("Add", dt, "dt_bias"))  # (b, l, h)
    B = b.dequantize_per_channel(b.read_codes("B_q"), "B_scales")  # (b, l, g n)
    C = b.dequantize_per_channel(b.read_codes("C_q"), "C_scales")
    y = ssd_scan_nodes(b, x, delta, "A", B, C, "D", "ssm_state", "ssm_state_out", "y_scan", nheads, ngroups, d_state)
    b.op("Reshape", y, b.ints(0, 0, h * p), out="y")
    return _function(INT8_SSD_SCAN, b)


def gated_rms_norm_nodes(b: Body, y: str, z: str, weight: str, group_size: str, eps: str, opset: int = OPSET) -> str:
    """Mamba2's gated RMSNorm in float32 nodes, :func:`edge_quamba.quant.qops.gated_rms_norm`'s order: y (b, l, d_in)
    and the dequantized gate z (b, l, d_in) float32, weight (d_in,), ``group_size`` a (1,) int64 tensor, ``eps`` a
    float32 scalar -> weight * (g / sqrt(mean(g^2) + eps)) per group of group_size channels, g = y * silu(z). Shared by
    the int8 ORT graph (:class:`edge_quamba.onnx.lower_mamba2.Mamba2GraphOps`, constants) and the GatedRMSNorm*Quantize
    bodies (attributes). ``opset``: ReduceMean takes its axes as an input from opset 18."""
    gated = b.op("Mul", y, b.silu(z))
    groups = b.op("Reshape", gated, b.op("Concat", b.ints(0, 0, -1), group_size, axis=0))  # (b, l, g, group_size)
    square = b.op("Mul", groups, groups)
    mean_square = b.op("ReduceMean", square, b.ints(-1), keepdims=1) if opset >= 18 else \
        b.op("ReduceMean", square, axes=[-1], keepdims=1)
    rstd = b.op("Reciprocal", b.op("Sqrt", b.op("Add", mean_square, eps)))
    normed = b.op("Reshape", b.op("Mul", groups, rstd), b.op("Shape", y))
    return b.op("Mul", weight, normed)


def gated_rms_norm_quantize_function(d_inner: int, hadamard: bool, opset: int = OPSET) -> FunctionProto:
    """GatedRMSNormQuantize, or GatedRMSNormHadamardQuantize for width d_inner (the Hadamard stages depend on its
    factors): z = DequantizeLinear(read_codes(z_q), z_scale) (float32(q) * s, the reference's dequantize), the norm
    (:func:`gated_rms_norm_nodes`), then the Hadamard nodes of HadamardQuantize when ``hadamard``, then Max +
    QuantizeLinear at out_scale: the nodes the int8 ORT graph writes for the same step, so the reference's float order
    up to the last-bit differences of exp and of the sums (ties: :mod:`edge_quamba.onnx.validate`)."""
    b = Body()
    zero_point = b.const(np.array(0, np.int8), "zero_point")
    z = b.op("DequantizeLinear", b.read_codes("z_q"), b.attr_float("z_scale"), zero_point)
    group_size = b.op("Reshape", b.attr_int("group_size"), b.ints(1))
    v = gated_rms_norm_nodes(b, "y", z, "weight", group_size, b.attr_float("eps"), opset)
    if hadamard:
        v = _hadamard(b, d_inner, v)
    b.quantize(v, b.attr_float("out_scale"), out="y_q")
    return _function(GATED_RMS_NORM_HADAMARD_QUANTIZE if hadamard else GATED_RMS_NORM_QUANTIZE, b, opset)


def _int4_codes(b: Body, packed: str, k: str) -> str:
    """The int4 codes of ``packed`` (N, ceil(K / 2)) int8 bytes as float32 (N, K), K the (1,) int64 tensor ``k``
    (see the module docstring: exact float arithmetic on integers; low nibble first)."""
    v = b.op("Cast", packed, to=TensorProto.FLOAT)  # (N, P) in [-128, 127]
    sixteen = b.const(np.array(16.0, np.float32), "sixteen")
    high = b.op("Floor", b.op("Div", v, sixteen))  # the arithmetic shift v >> 4: the signed high nibble
    low = b.op("Sub", v, b.op("Mul", high, sixteen))  # the low four bits, 0..15
    negative = b.op("Cast", b.op("Greater", low, b.const(np.array(7.5, np.float32), "seven")), to=TensorProto.FLOAT)
    low = b.op("Sub", low, b.op("Mul", negative, sixteen))  # two's complement nibble, -8..7
    pairs = b.op("Concat", b.op("Unsqueeze", low, b.ints(-1)), b.op("Unsqueeze", high, b.ints(-1)), axis=-1)
    codes = b.op("Reshape", pairs, b.ints(0, -1))  # (N, 2P): low nibble first
    return b.op("Slice", codes, b.ints(0), k, b.ints(1))  # (N, K): drops the pad nibble of an odd K


def _w4a8_linear_nodes(b: Body) -> str:
    """W4A8Linear's value in float32 nodes (see the module docstring): x_q (b, l, K) -> (b, l, N)."""
    k = b.op("Shape", "x_q", start=-1)  # (1,) [K]
    groups = b.op("Shape", "weight_scale", start=1)  # (1,) [G]
    group = b.op("Reshape", b.attr_int("group_size"), b.ints(1))  # (1,) [gs]
    padded = b.op("Mul", groups, group)  # G gs >= K
    pad = b.op("Sub", padded, k)  # the zero columns that complete the last group (they add exact zeros)
    pads = b.op("Concat", b.ints(0, 0, 0), pad, axis=0)  # a 2-d tensor's last axis, at its end
    w = b.op("Pad", _int4_codes(b, "weight_packed", k), pads)  # (N, G gs)
    w = b.op("Transpose", b.op("Reshape", w, b.op("Concat", b.ints(0), groups, group, axis=0)), perm=[1, 2, 0])
    x = b.op("Cast", "x_q", to=TensorProto.FLOAT)  # raw codes, as the reference's GEMM reads them
    x = b.op("Pad", b.op("Reshape", x, b.op("Concat", b.ints(-1), k, axis=0)), pads)  # (M, G gs)
    x = b.op("Transpose", b.op("Reshape", x, b.op("Concat", b.ints(-1), groups, group, axis=0)), perm=[1, 0, 2])
    acc = b.op("MatMul", x, w)  # (G, M, N): each group's exact integer sums
    alpha = b.op("Mul", b.attr_float("x_scale"), b.op("Transpose", "weight_scale", perm=[1, 0]))  # (G, N), rounded once
    terms = b.op("Mul", acc, b.op("Unsqueeze", alpha, b.ints(1)))  # (G, M, N)
    zeros = b.op("ConstantOfShape", b.op("Shape", terms, start=1),
                 value=numpy_helper.from_array(np.zeros(1, np.float32)))  # (M, N)
    step = Body("group_")
    step.op("Add", "y_in", "term", out="y_out")
    value = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, None)  # noqa: E731
    body = helper.make_graph(step.nodes, "w4a8_group_sum", [value("y_in"), value("term")], [value("y_out")])
    (y,) = b.ops("Scan", [zeros, terms], [b._name("group_sum")], body=body, num_scan_inputs=1)  # ascending groups
    out_shape = b.op("Concat", b.op("Shape", "x_q", end=-1), b.op("Shape", "weight_scale", end=1), axis=0)
    return b.op("Add", b.op("Reshape", y, out_shape), "bias")  # (b, l, N)


def w4a8_linear_function() -> FunctionProto:
    """W4A8Linear (float32 out), bit-identical to :func:`edge_quamba.quant.qops.w4a8_linear`."""
    b = Body()
    b.op("Identity", _w4a8_linear_nodes(b), out="y")
    return _function(W4A8_LINEAR, b)


def w4a8_linear_quantize_function() -> FunctionProto:
    """W4A8LinearQuantize: the W4A8Linear value quantized at out_scale (Max + QuantizeLinear), bit-identical to
    :func:`edge_quamba.quant.qops.w4a8_linear_quantize`."""
    b = Body()
    b.quantize(_w4a8_linear_nodes(b), b.attr_float("out_scale"), out="y_q")
    return _function(W4A8_LINEAR_QUANTIZE, b)


def w4a16_linear_function() -> FunctionProto:
    """W4A16Linear: float16 x times the weight dequantized in float32, one float32 MatMul (+ bias), rounded once to
    float16 (:func:`edge_quamba.quant.qops.w4a16_linear`; the sum order is the MatMul's)."""
    b = Body()
    k = b.op("Shape", "x", start=-1)
    group = b.op("Reshape", b.attr_int("group_size"), b.ints(1))
    per_group = b.op("Expand", b.op("Unsqueeze", "weight_scale", b.ints(-1)),
                     b.op("Concat", b.ints(1, 1), group, axis=0))  # (N, G, gs)
    scales = b.op("Slice", b.op("Reshape", per_group, b.ints(0, -1)), b.ints(0), k, b.ints(1))  # (N, K)
    w = b.op("Mul", _int4_codes(b, "weight_packed", k), scales)  # float32(q) * s, one rounding
    y = b.op("MatMul", b.op("Cast", "x", to=TensorProto.FLOAT), b.op("Transpose", w, perm=[1, 0]))
    b.op("Cast", b.op("Add", y, "bias"), to=TensorProto.FLOAT16, out="y")
    return _function(W4A16_LINEAR, b)


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
          body=_scan_step_body(), num_scan_inputs=3, scan_input_axes=[1, 1, 1], scan_output_axes=[1])
    return b.op("Add", y_scan, b.op("Mul", u, D), out=y)


def selective_scan_f16_function() -> FunctionProto:
    """SelectiveScanF16: the float16 inputs as float32 (exact), then :func:`selective_scan_nodes`."""
    b = Body()
    f32 = {name: b.op("Cast", name, to=TensorProto.FLOAT) for name in ("u", "B", "C", "D")}
    selective_scan_nodes(b, f32["u"], "delta", "A", f32["B"], f32["C"], f32["D"], "ssm_state", "ssm_state_out", "y")
    return _function(SELECTIVE_SCAN_F16, b)


INT4_LINEAR_FUNCTIONS = {"w4a8": (w4a8_linear_function, w4a8_linear_quantize_function),
                         "w4a16": (w4a16_linear_function, selective_scan_f16_function)}
"""The custom ops' bodies a TensorRT-flavour graph of each 4-bit width adds (the ORT flavour lowers the linears to
DequantizeLinear -> MatMul and the W4A16 scan to standard nodes instead): W4A16's graph has no int8 op, so its
functions are these alone."""


def mamba2_custom_functions(config, hadamard: bool, opset: int = OPSET, flavour: str = "ort",
                            int4_linears: str | None = None) -> list[FunctionProto]:
    """The FunctionProtos of a Mamba2 model (``config``: its Mamba2Config), at the model's opset. flavour "ort": the
    gated norm is standard nodes, then HadamardQuantize when ``hadamard``; "tensorrt": the fused
    GatedRMSNorm(Hadamard)Quantize instead, and ``int4_linears`` "w4a8" adds the W4A8 linears' bodies."""
    functions = [int8_conv1d_channel_scales_function(config.conv_dim),
                 int8_ssd_scan_function(config.nheads, config.headdim, config.ngroups, config.d_state)]
    functions += [make() for make in INT4_LINEAR_FUNCTIONS.get(int4_linears, ())]
    if flavour == "tensorrt":
        functions.append(gated_rms_norm_quantize_function(config.d_inner, hadamard, opset))
    elif hadamard:
        functions.append(hadamard_quantize_function(config.d_inner))
    return _at_opset(functions, opset)


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
    return _at_opset(functions, opset)


def _at_opset(functions: list[FunctionProto], opset: int) -> list[FunctionProto]:
    """Bodies written at opset 17, moved to ``opset`` (no op they use changed meaning between 17 and 21)."""
    if opset != OPSET:
        for function in functions:
            function.opset_import[0].version = opset
            for node in function.node:  # from opset 18 an even Split names its number of outputs
                if node.op_type == "Split" and len(node.input) == 1:
                    node.attribute.append(helper.make_attribute("num_outputs", len(node.output)))
    return functions
