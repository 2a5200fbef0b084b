"""Lowering of a float hybrid model to one ONNX graph (opset 21) in standard ops, the hybrid sibling of
:mod:`edge_quamba.onnx.lower_mamba2_w4a16`: the W4A16 model (float16; its Mamba2 blocks
:class:`edge_quamba.quant.mamba2_qmodel.W4A16Mamba2Mixer`, its attention and MLP linears int4 or, with
``--float-attn-mlp``, float16) and the fp model itself (float32, the CPU baseline; :mod:`edge_quamba.onnx.lower_w4a16`
says why float32).

The fp hybrid reference (:class:`edge_quamba.models.hybrid.HybridLM`, prefill ``forward``) written in standard ops,
no custom op: the language model, norms, linears (int4: INT4 + blocked DequantizeLinear -> MatMul, fused by ONNX
Runtime into MatMulNBits at float32 accuracy) and Mamba2 mixers are :mod:`edge_quamba.onnx.lower_w4a16`'s and
:mod:`edge_quamba.onnx.lower_mamba2_w4a16`'s; the attention and MLP blocks follow
:class:`edge_quamba.models.attention.Attention` / ``MLP`` with the reference's dtypes (``act`` = the model dtype):

    attention  q, k, v = linears(hidden) in act (float32 sums, one rounding to act)
               RoPE (Bamba): cos, sin from float32 angles, cast to act; x_rot * cos + rotate_half(x_rot) * sin in act
               key, value = Concat(past_key.{i}, k) (b, kv, t + l, e) in act -> present_key.{i} (the cache holds act)
               softmax(q keyᵀ e^-1/2, causal) value in float32 (:func:`edge_quamba.onnx.hybrid_nodes.attention_nodes`,
               the int8 graph's nodes), rounded to act -> o_proj
    MLP        relu²: Relu(up) then its square, in act;  SwiGLU: silu(gate) in float32 rounded to act, times up in act
               -> down_proj

Float16 arithmetic inside an op (torch's CPU kernels, ONNX Runtime's float16 nodes or the float32 nodes it wraps in
Casts) is float32 rounded once to float16, so the graph rounds where the reference rounds; the sum orders of MatMul,
Conv, the norms and the SSD readout differ (and the reference's prefill runs the chunked SSD, the graph the
recurrence). Validation therefore compares every output within a float tolerance:
:data:`edge_quamba.onnx.validate.W4A16_RTOL` (W4A16) or :data:`edge_quamba.onnx.validate.FP32_RTOL` (fp32)
(:func:`edge_quamba.onnx.validate_hybrid.validate_hybrid_float_on_ort`).

Interface: as the hybrid int8 graph (:mod:`edge_quamba.onnx.hybrid_io`), with the reference's state types: conv states
and the KV caches in act (float16 at W4A16, float32 in the fp32 graph), ssm states float32.
"""

from __future__ import annotations

import onnx
import torch
from onnx import TensorProto, helper

from edge_quamba.models.attention import MLP, Attention
from edge_quamba.models.hybrid import HybridLM
from edge_quamba.models.mamba2 import Mamba2Mixer
from edge_quamba.onnx import INPUT_IDS, INT4_IR_VERSION, INT4_OPSET
from edge_quamba.onnx.hybrid_nodes import attention_nodes, hybrid_state_io, rope_nodes, split_heads
from edge_quamba.onnx.lower_mamba2_w4a16 import Mamba2FloatGraph
from edge_quamba.onnx.lower_w4a16 import FLOAT, FLOAT16, float_lm_nodes

ACT_TYPES = {torch.float16: FLOAT16, torch.float32: FLOAT}
"""The reference's dtype -> the graph's activation type (W4A16: float16; the fp32 baseline: float32)."""


class HybridFloatGraph(Mamba2FloatGraph):
    """The float graph's node groups with the hybrid's three block kinds (module docstring)."""

    def mixer(self, m: Mamba2Mixer | Attention | MLP, hidden: str, i: int) -> str:
        """Block i's mixer on hidden (b, l, d) act -> (b, l, d) act, reading and writing its states."""
        if isinstance(m, Attention):
            return self.attention(m, hidden, i)
        if isinstance(m, MLP):
            return self.mlp(m, hidden, i)
        return super().mixer(m, hidden, i)

    def attention(self, m: Attention, hidden: str, i: int) -> str:
        """Attention.forward: reads past_key.{i} / past_value.{i} (b, kv, t, e) act, writes present_key.{i} /
        present_value.{i} (b, kv, t + l, e) act."""
        c, p = m.config, f"layers.{i}.mixer."
        q, k, v = (self.linear(hidden, getattr(m, f"{x}_proj"), f"{p}{x}_proj") for x in "qkv")  # (b, l, heads e)
        q, k = rope_nodes(self, q, k, c, i, self.act)
        key, value = (self.op("Concat", f"past_{x}.{i}", split_heads(self, new, c.n_kv_heads, c.head_dim,
                                                                     f"{p}{x}.new"), axis=2, out=f"present_{x}.{i}")
                      for x, new in (("key", k), ("value", v)))
        out = attention_nodes(self, self.to_float32(q), self.to_float32(key), self.to_float32(value), c, i)
        return self.linear(self.to_act(out, f"{p}attention.act"), m.o_proj, f"{p}o_proj")

    def mlp(self, m: MLP, hidden: str, i: int) -> str:
        """MLP.forward: relu(up x)² or silu(gate x) * up x, then down_proj."""
        p = f"layers.{i}.mixer."
        up = self.linear(hidden, m.up_proj, f"{p}up_proj")  # (b, l, d_ff) act
        if m.config.mlp == "swiglu":
            gate = self.linear(hidden, m.gate_proj, f"{p}gate_proj")
            activation = self.op("Mul", self.to_act(self.silu32(self.to_float32(gate))), up, out=f"{p}act")
        else:
            relu = self.op("Relu", up)
            activation = self.op("Mul", relu, relu, out=f"{p}act")
        return self.linear(activation, m.down_proj, f"{p}down_proj")


def lower_hybrid_float(model: HybridLM) -> onnx.ModelProto:
    """The graph of a float hybrid model, ORT flavour: a W4A16 reference (``load_quantized_model`` of a w4a16
    artifact, float16) or an fp model in float32 (``load_fp_model(path, torch.float32)``)."""
    if model.dtype not in ACT_TYPES:
        raise TypeError(f"lower_hybrid_float takes a float16 (W4A16) or float32 model, not {model.dtype}")
    c, g = model.config, HybridFloatGraph(INT4_OPSET, act=ACT_TYPES[model.dtype])
    logits = float_lm_nodes(model, g)
    state_in, state_out = hybrid_state_io(c, g.act, g.act)
    inputs = [helper.make_tensor_value_info(INPUT_IDS, TensorProto.INT64, ["b", "l"]), *state_in]
    outputs = [logits, *state_out]
    name = "edge_quamba_hybrid_" + ("w4a16" if g.act == FLOAT16 else "fp32")
    graph = helper.make_graph(g.nodes, name, inputs, outputs, initializer=g.initializers)
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", INT4_OPSET)],
                                   producer_name="edge-quamba")
    onnx_model.ir_version = INT4_IR_VERSION
    return onnx_model
