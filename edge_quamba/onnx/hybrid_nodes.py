"""The node groups both hybrid graphs write, the int8 one (:mod:`edge_quamba.onnx.lower_hybrid`) and the float ones
(W4A16, fp32: :mod:`edge_quamba.onnx.lower_hybrid_float`): heads split, RoPE, the float32 attention core with the KV
cache's past length, and the state inputs and outputs as value infos (their names: :mod:`edge_quamba.onnx.hybrid_io`).
What each computes, and the graphs' interface: :mod:`edge_quamba.onnx.lower_hybrid`'s docstring.
"""

from __future__ import annotations

import numpy as np
import torch
from onnx import TensorProto, helper

from edge_quamba.models.hybrid_config import HybridConfig
from edge_quamba.onnx.graph_builder import GraphBuilder


def split_heads(g: GraphBuilder, x: str, heads: int, e: int, name: str) -> str:
    """(b, l, heads e) -> (b, heads, l, e)."""
    return g.op("Transpose", g.op("Reshape", x, g.ints(0, 0, heads, e)), perm=[0, 2, 1, 3], out=name)


def past_length(g: GraphBuilder, layer: int) -> str:
    """t, the tokens cached before this call, as a (1,) int64 tensor from ``past_key.{layer}``'s shape."""
    return g.op("Slice", g.op("Shape", f"past_key.{layer}"), g.ints(2), g.ints(3))


def rope_nodes(g: GraphBuilder, q: str, k: str, c: HybridConfig, layer: int, act: int) -> tuple[str, str]:
    """Flat (b, l, heads e) q and k of element type ``act``, rotated on the first r dims of each head at positions
    t .. t + l - 1 (unchanged without RoPE). The angles, cos and sin are float32 (the reference's constants and
    order); cos and sin are cast to ``act`` and the rotation is computed in ``act``, as the reference computes it in
    its dtype (float32 in the int8 reference, float16 at W4A16)."""
    if not c.rotary_dim:
        return q, k
    r, p = c.rotary_dim, f"layers.{layer}.mixer."
    inv_freq = 1.0 / (c.rope_theta ** (torch.arange(0, r, 2, dtype=torch.float32) / r))  # the reference's
    past = past_length(g, layer)
    l = g.op("Slice", g.op("Shape", q), g.ints(1), g.ints(2))
    positions = g.op("Range", g.op("Squeeze", past), g.op("Squeeze", g.op("Add", past, l)),
                     g.const(np.array(1, np.int64)))  # (l,) t .. t + l - 1
    freqs = g.op("Mul", g.op("Unsqueeze", g.op("Cast", positions, to=TensorProto.FLOAT), g.ints(1)),
                 g.init(f"{p}rope.inv_freq", inv_freq))  # (l, r/2)
    angles = g.op("Concat", freqs, freqs, axis=-1)
    cos, sin = g.op("Cos", angles, out=f"{p}rope.cos"), g.op("Sin", angles, out=f"{p}rope.sin")
    if act != TensorProto.FLOAT:
        cos, sin = g.op("Cast", cos, to=act), g.op("Cast", sin, to=act)
    cos4, sin4 = (g.op("Unsqueeze", t, g.ints(1)) for t in (cos, sin))  # (l, 1, r)

    def rotate(x: str, heads: int, name: str) -> str:
        x = g.op("Reshape", x, g.ints(0, 0, heads, c.head_dim))  # (b, l, heads, e)
        x_rot, x_pass = g.ops("Split", [x, g.ints(r, c.head_dim - r)], [f"{name}.rot", f"{name}.pass"], axis=-1) \
            if r < c.head_dim else (x, None)
        first, second = g.ops("Split", [x_rot, g.ints(r // 2, r // 2)], [f"{name}.first", f"{name}.second"],
                              axis=-1)
        half = g.op("Concat", g.op("Neg", second), first, axis=-1)
        rotated = g.op("Add", g.op("Mul", x_rot, cos4), g.op("Mul", half, sin4))
        whole = rotated if x_pass is None else g.op("Concat", rotated, x_pass, axis=-1)
        return g.op("Reshape", whole, g.ints(0, 0, heads * c.head_dim), out=name)

    return rotate(q, c.n_heads, f"{p}q_rope"), rotate(k, c.n_kv_heads, f"{p}k_rope")


def attention_nodes(g: GraphBuilder, q: str, keys: str, values: str, c: HybridConfig, layer: int) -> str:
    """Causal grouped-query attention in float32: q (b, l, h e) against the whole cache keys, values (b, kv, s, e),
    s = t + l -> (b, l, h e): kv heads repeated to h (Expand), MatMul(q, keyᵀ) * e^-1/2, positions u > t + i masked
    by Where(-inf), Softmax, MatMul with the values."""
    h, kv, e, p = c.n_heads, c.n_kv_heads, c.head_dim, f"layers.{layer}.mixer."

    def repeat(x: str) -> str:  # (b, kv, s, e) -> (b, h, s, e): query head j reads kv head j // (h / kv)
        if h == kv:
            return x
        shape = g.op("Shape", x)
        b_, s_ = (g.op("Slice", shape, g.ints(a), g.ints(a + 1)) for a in (0, 2))
        big = g.op("Concat", b_, g.ints(kv, h // kv), s_, g.ints(e), axis=0)
        expanded = g.op("Expand", g.op("Unsqueeze", x, g.ints(2)), big)
        return g.op("Reshape", expanded, g.op("Concat", b_, g.ints(h), s_, g.ints(e), axis=0))

    qh = split_heads(g, q, h, e, f"{p}q_heads")  # (b, h, l, e)
    scores = g.op("Mul", g.op("MatMul", qh, g.op("Transpose", repeat(keys), perm=[0, 1, 3, 2])),
                  g.const(np.array(e ** -0.5, np.float32)), out=f"{p}scores")  # (b, h, l, s)
    past = past_length(g, layer)
    l = g.op("Slice", g.op("Shape", q), g.ints(1), g.ints(2))
    s = g.op("Add", past, l)
    rows = g.op("Add", g.op("Range", g.const(np.array(0, np.int64)), g.op("Squeeze", l),
                            g.const(np.array(1, np.int64))), past)  # (l,) t + i
    cols = g.op("Range", g.const(np.array(0, np.int64)), g.op("Squeeze", s), g.const(np.array(1, np.int64)))
    allowed = g.op("LessOrEqual", g.op("Unsqueeze", cols, g.ints(0)), g.op("Unsqueeze", rows, g.ints(1)))
    masked = g.op("Where", allowed, scores, g.const(np.array(-np.inf, np.float32)))
    out = g.op("MatMul", g.op("Softmax", masked, axis=-1), repeat(values))  # (b, h, l, e)
    return g.op("Reshape", g.op("Transpose", out, perm=[0, 2, 1, 3]), g.ints(0, 0, h * e), out=f"{p}attention")


def hybrid_state_io(c: HybridConfig, conv_type: int, kv_type: int) -> tuple[list, list]:
    """(state inputs, state outputs) value infos, block by block (:mod:`edge_quamba.onnx.hybrid_io`'s names): conv
    states (b, conv_dim, k) of ``conv_type``, ssm states (b, h, p, n) float32, KV caches (b, kv, t, e) of
    ``kv_type`` with the symbolic past length t."""
    m2, info = c.mamba2(), helper.make_tensor_value_info
    inputs, outputs = [], []
    for i, kind in enumerate(c.pattern):
        if kind == "M":
            conv, ssm = ["b", m2.conv_dim, m2.d_conv], ["b", m2.nheads, m2.headdim, m2.d_state]
            inputs += [info(f"conv_state.{i}", conv_type, conv), info(f"ssm_state.{i}", TensorProto.FLOAT, ssm)]
            outputs += [info(f"conv_state_out.{i}", conv_type, conv),
                        info(f"ssm_state_out.{i}", TensorProto.FLOAT, ssm)]
        elif kind == "*":
            past, present = ["b", c.n_kv_heads, "t", c.head_dim], ["b", c.n_kv_heads, "t_plus_l", c.head_dim]
            inputs += [info(f"past_{x}.{i}", kv_type, past) for x in ("key", "value")]
            outputs += [info(f"present_{x}.{i}", kv_type, present) for x in ("key", "value")]
    return inputs, outputs
