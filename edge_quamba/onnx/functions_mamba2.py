"""ONNX function bodies of the Mamba2 (Quamba2) ops, in standard ops, reproducing the qops references:
Int8CausalConv1dChannelScales, Int8SSDScan, GatedRMSNormQuantize and GatedRMSNormHadamardQuantize, the SSD recurrence
and the gated norm as node groups the float Mamba2 graphs share (:func:`ssd_scan_nodes`, :func:`gated_rms_norm_nodes`),
and the bodies a Mamba2 model carries (:func:`mamba2_custom_functions`).

Numerics: the Mamba1 bodies' (:mod:`edge_quamba.onnx.functions`), with per-channel scales: the conv's output codes are
``Cast(Clip(Round(x / s), -127, 127))`` per channel (:meth:`edge_quamba.onnx.nodes.Body.quantize_per_channel`), x, B
and C are dequantized per channel; the SSD recurrence is float32 throughout, the Mamba1 scan's two-op Scan step with
the (b, h, p, n) state.
"""

from __future__ import annotations

import numpy as np
from onnx import FunctionProto, TensorProto

from edge_quamba.onnx import OPSET
from edge_quamba.onnx.functions import (INT4_LINEAR_FUNCTIONS, at_opset, hadamard_nodes, hadamard_quantize_function,
                                        scan_step_body)
from edge_quamba.onnx.nodes import INT64_MAX, Body, function
from edge_quamba.ops.specs import (GATED_RMS_NORM_HADAMARD_QUANTIZE, GATED_RMS_NORM_QUANTIZE,
                                   INT8_CONV1D_CHANNEL_SCALES, INT8_SSD_SCAN)


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
    return function(INT8_CONV1D_CHANNEL_SCALES, b)


def ssd_scan_nodes(b: Body, x: str, delta: str, A: str, B: str, C: str, D: str, ssm_state: str,
                   ssm_state_out: str, y_scan: str, nheads: int, ngroups: int, d_state: int) -> str:
    """The SSD recurrence in float32 nodes (:func:`edge_quamba.models.mamba2.ssd_step` over l), shared by the
    Int8SSDScan body and the float16 W4A16 graph: x (b, l, h, p), Δ (b, l, h), A and D (h,), B and C (b, l, g n),
    ssm_state (b, h, p, n), all float32 -> y = h C + D x (b, l, h, p); the final state is named ``ssm_state_out``.

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
          body=scan_step_body(), num_scan_inputs=3, scan_input_axes=[1, 1, 1], scan_output_axes=[1])
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
    return function(INT8_SSD_SCAN, b)


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
        v = hadamard_nodes(b, d_inner, v)
    b.quantize(v, b.attr_float("out_scale"), out="y_q")
    return function(GATED_RMS_NORM_HADAMARD_QUANTIZE if hadamard else GATED_RMS_NORM_QUANTIZE, b, opset)


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
    return at_opset(functions, opset)
