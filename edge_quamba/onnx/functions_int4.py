"""ONNX function bodies of the 4-bit linears (W4A8Linear, W4A8LinearQuantize, W4A16Linear): the TensorRT flavour's
graph before its nodes become plugins, in standard opset-17 ops (the ORT flavour lowers these linears to
DequantizeLinear -> MatMul instead). Which bodies a model carries:
:data:`edge_quamba.onnx.functions.INT4_LINEAR_FUNCTIONS`.

Numerics: the packed weight (int8 bytes) is unpacked with float arithmetic that is exact on integers (high nibble =
floor(v / 16), low nibble = v - 16 high, minus 16 when above 7: two's complement), codes interleaved low first as
:func:`edge_quamba.quant.primitives.unpack_int4`. W4A8 is bit-identical to the reference: per group a MatMul of
integer-valued floats (every partial sum an integer below 2**24, hence exact in any order) gives the exact int32 sums,
times float32(x_scale * weight_scale[n, g]) rounded once, and a Scan over the groups adds them in ascending order onto
zeros (0 + t = t). W4A16 dequantizes the weight in float32 (one rounding, as the reference) and runs one float32
MatMul (the BLAS's order, like the reference's), rounded once to float16. ONNX Runtime folds the unpacking (it
depends on initializers only) when the session loads.
"""

from __future__ import annotations

import numpy as np
from onnx import FunctionProto, TensorProto, helper, numpy_helper

from edge_quamba.onnx.nodes import Body, function
from edge_quamba.ops.specs import W4A8_LINEAR, W4A8_LINEAR_QUANTIZE, W4A16_LINEAR


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
    return function(W4A8_LINEAR, b)


def w4a8_linear_quantize_function() -> FunctionProto:
    """W4A8LinearQuantize: the W4A8Linear value quantized at out_scale (Max + QuantizeLinear), bit-identical to
    :func:`edge_quamba.quant.qops.w4a8_linear_quantize`."""
    b = Body()
    b.quantize(_w4a8_linear_nodes(b), b.attr_float("out_scale"), out="y_q")
    return function(W4A8_LINEAR_QUANTIZE, b)


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
    return function(W4A16_LINEAR, b)
