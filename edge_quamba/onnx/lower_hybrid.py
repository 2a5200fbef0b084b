"""Lowering: the quantized hybrid reference (:mod:`edge_quamba.quant.hybrid_qmodel`) -> one ONNX graph (ORT flavour).

As :mod:`edge_quamba.onnx.lower`, the graph is the model's own data flows run with ops that emit nodes: Mamba2 blocks
through :func:`mamba2_mixer_flow` with :class:`edge_quamba.onnx.lower_mamba2.Mamba2GraphOps` (the custom nodes
Int8CausalConv1dChannelScales, Int8SSDScan, HadamardQuantize), attention and MLP blocks through
:func:`attention_flow` / :func:`mlp_flow` with :class:`HybridGraphOps` (standard ops only):

    int8 linear      QuantizeLinear -> DequantizeLinear -> MatMul(DequantizeLinear(W_q (K, N))) (+ Add), fused by
                     ONNX Runtime into MatMulIntegerToFloat (:meth:`GraphBuilder.int8_linear`); W4A8 int4 weights
                     as :meth:`GraphBuilder.int4_linear`; a float linear is a float32 MatMul
    RoPE (Bamba)     positions Range(t, t + l) -> Cast -> * inv_freq (the reference's float32 constants) -> Cos / Sin;
                     x_rot * cos + rotate_half(x_rot) * sin on the first r dims of each head
    KV cache         past_key.{i} / past_value.{i} (b, kv, t, e) float16 (or int8 codes: --kv-cache int8) in,
                     Concat with this call's (b, kv, l, e) -> present_key.{i} / present_value.{i} (b, kv, t + l, e) out
    attention        Cast (or DequantizeLinear) to float32, kv heads repeated to h (Expand), MatMul(q, keyᵀ) * e^-1/2,
                     the causal mask u <= t + i as Where(-inf), Softmax, MatMul(p, value) -> (b, l, h e)
    MLP activation   Relu -> Mul (relu²) or x / (1 + exp(-x)) * up (SwiGLU: torch's silu written out)

A site read by several linears (q, k and v read qkv_input's codes; gate and up mlp_input's) gets one QuantizeLinear per
linear (the first named after the site, the others ``<site code>.<linear>``, identical codes): ONNX Runtime on x86
fuses a Q -> DQ -> MatMul group into MatMulIntegerToFloat only for a QuantizeLinear with one consumer (the reason
:meth:`GraphBuilder.give_linears_own_codes` exists).

Interface (b and l symbolic, t the symbolic past length, so one graph serves prefill (t = 0) and decode (l = 1)):
    input_ids (b, l) int64, per Mamba2 block i conv_state.{i} (b, conv_dim, k) int8 and ssm_state.{i} (b, h, p, n)
    float32, per attention block i past_key.{i} and past_value.{i} (b, kv, t, e)
    -> logits (b, l, v) float32, conv_state_out.{i}, ssm_state_out.{i}, present_key.{i}, present_value.{i};
MLP blocks have no state. The attention's float sums differ from the reference's (which computes a prefill row by
row, see hybrid_qmodel) in order only: validation compares floats within tolerance and follows rounding ties.

The RoPE and attention node groups and the state I/O are :mod:`edge_quamba.onnx.hybrid_nodes`', shared with the
W4A16 and fp32 graphs (:mod:`edge_quamba.onnx.lower_hybrid_float`, to which :func:`lower_hybrid_model` hands a float
model).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper
from torch import nn

from edge_quamba.errors import InputError
from edge_quamba.models.hybrid import HybridLM
from edge_quamba.models.mamba import LayerState
from edge_quamba.models.attention import KVState
from edge_quamba.onnx import INPUT_IDS, INT4_IR_VERSION, INT4_OPSET, IR_VERSION, LOGITS, OPSET
from edge_quamba.onnx.functions_mamba2 import mamba2_custom_functions
from edge_quamba.onnx.graph_builder import ZERO_POINT, GraphBuilder, Pending
from edge_quamba.onnx.hybrid_nodes import attention_nodes, hybrid_state_io, rope_nodes, split_heads
from edge_quamba.onnx.lower_hybrid_float import lower_hybrid_float
from edge_quamba.onnx.lower_mamba2 import Mamba2GraphOps
from edge_quamba.ops.specs import DOMAIN
from edge_quamba.quant.flow import mamba2_mixer_flow
from edge_quamba.quant.hybrid_flow import HYBRID_SITE_BY_NAME, attention_flow, mlp_flow
from edge_quamba.quant.hybrid_qmodel import QuantHybridMixer
from edge_quamba.quant.mamba2_qmodel import QuantMamba2Mixer
from edge_quamba.quant.qmodel import Int4Linear
from edge_quamba.quant.sites import tensor_name

KV_ELEM = {"float16": TensorProto.FLOAT16, "int8": TensorProto.INT8}


@dataclass(frozen=True)
class _Normalized:
    """A pre-norm's output before its weight (x / rms(x)), whose codes at ``site`` are still to be made."""

    x: str
    site: str


class HybridGraphOps:
    """:func:`attention_flow` / :func:`mlp_flow`'s ops emitting the nodes of block ``layer`` (module docstring)."""

    def __init__(self, g: GraphBuilder, mixer: QuantHybridMixer, norm: nn.Module, layer: int):
        self.g, self.m, self.norm, self.layer = g, mixer, norm, layer
        self.prefix = f"layers.{layer}.mixer."
        self.scales = {site: g.scale(f"{self.prefix}{site}_scale", getattr(mixer, f"{site}_scale"))
                       for site in mixer.sites}
        self._uses: dict[str, int] = {}

    def _codes(self, value: Pending | _Normalized, consumer: str) -> str:
        """Codes of a pending site for one consumer. A site read by several linears: the first QuantizeLinear is named
        after the site's code, each later consumer gets its own identical copy, made from its own copy of the norm
        weight (module docstring: the copies differ in an input, or ONNX Runtime would merge them again)."""
        name = tensor_name(self.layer, HYBRID_SITE_BY_NAME[value.site].code)
        uses = self._uses.get(name, 0)
        self._uses[name] = uses + 1
        x = value.x
        if isinstance(value, _Normalized):  # RMSNorm's last step, x̂ * w, per consumer
            weight = f"layers.{self.layer}.norm.weight" + (f".{consumer}" if uses else "")
            x = self.g.op("Mul", x, self.g.init(weight, self.norm.weight.float()), out=f"{weight}.scaled")
        return self.g.quantize(x, self.scales[value.site], out=f"{name}.{consumer}" if uses else name)

    def norm_quantize(self, resid: str, site: str) -> str | _Normalized:
        """RMSNorm (GraphBuilder.norm's nodes and order); when the site is quantized, the product by the weight is left
        to each consumer's codes."""
        if site not in self.scales:
            return self.g.norm(resid, self.norm, f"layers.{self.layer}.norm")
        g = self.g
        square = g.op("Mul", resid, resid)
        mean_square = g.op("ReduceMean", square, g.ints(-1), keepdims=1) if g.opset >= 18 else \
            g.op("ReduceMean", square, axes=[-1], keepdims=1)  # the axes became an input in opset 18
        eps = g.init(f"layers.{self.layer}.norm.eps", np.array(self.norm.eps, np.float32))
        rstd = g.op("Reciprocal", g.op("Sqrt", g.op("Add", mean_square, eps)))
        return _Normalized(g.op("Mul", resid, rstd, out=f"layers.{self.layer}.norm.normalized"), site)

    def quantize(self, x: str, site: str) -> str | Pending:
        return Pending(x, site) if site in self.scales else x

    def linear(self, name: str, x: str | Pending, in_site: str) -> str:
        module, g, out = getattr(self.m, name), self.g, f"{self.prefix}{name}"
        if isinstance(module, nn.Linear):  # a float linear: (K, N) float32 weight
            y = g.op("MatMul", x, g.init(f"{out}.weight", module.weight.detach().float().T.contiguous()),
                     out=f"{out}.matmul")
            return y if module.bias is None else g.op("Add", y, g.init(f"{out}.bias", module.bias.float()),
                                                      out=f"{out}.out")
        lower = g.int4_linear if isinstance(module, Int4Linear) else g.int8_linear
        return lower(self._codes(x, name), self.scales[in_site], module, out)

    def _heads(self, x: str, heads: int, name: str) -> str:
        return split_heads(self.g, x, heads, self.m.config.head_dim, name)

    def rope(self, q: str, k: str, state: KVState) -> tuple[str, str]:
        """Flat (b, l, heads e) q and k, rotated on the first r dims of each head in float32 (no-op without RoPE)."""
        return rope_nodes(self.g, q, k, self.m.config, self.layer, TensorProto.FLOAT)

    def kv_append(self, k: str, v: str, state: KVState) -> tuple[str, str]:
        """this call's k, v (b, l, kv e) float32 -> present_key / present_value (b, kv, t + l, e)."""
        g, c = self.g, self.m.config
        outs = []
        for x, site, past, present in ((k, "k_cache", "past_key", "present_key"),
                                       (v, "v_cache", "past_value", "present_value")):
            heads = self._heads(x, c.n_kv_heads, f"{self.prefix}{site}.new")
            if site in self.scales:
                new = g.quantize(heads, self.scales[site], out=tensor_name(self.layer, HYBRID_SITE_BY_NAME[site].code))
            else:
                new = g.op("Cast", heads, to=TensorProto.FLOAT16)
            outs.append(g.op("Concat", f"{past}.{self.layer}", new, axis=2, out=f"{present}.{self.layer}"))
        return outs[0], outs[1]

    def attend(self, q: str, key: str, value: str, state: KVState) -> str:
        """q (b, l, h e) float32 against the cache (b, kv, s, e) -> (b, l, h e) float32."""
        def floats(cache: str, site: str) -> str:
            if site in self.scales:
                return self.g.op("DequantizeLinear", cache, self.scales[site], ZERO_POINT)
            return self.g.op("Cast", cache, to=TensorProto.FLOAT)

        return attention_nodes(self.g, q, floats(key, "k_cache"), floats(value, "v_cache"), self.m.config,
                               self.layer)

    def mlp_activation(self, up: str, gate: str | None) -> str:
        g = self.g
        if gate is None:
            relu = g.op("Relu", up)
            return g.op("Mul", relu, relu, out=f"{self.prefix}act")
        return g.op("Mul", g.silu(gate), up, out=f"{self.prefix}act")


NO_HYBRID_TENSORRT = ("--target tensorrt is not built for hybrid Mamba2 + attention models (no TensorRT plugins for "
                      "their Mamba2 ops, no GPU attention kernels); export with --target ort")


def refuse_hybrid_export(target: str) -> None:
    """One line for what a hybrid model's export does not build: the TensorRT graph."""
    if target == "tensorrt":
        raise InputError(NO_HYBRID_TENSORRT)


def lower_hybrid_model(model: HybridLM) -> onnx.ModelProto:
    """The ORT graph of a hybrid reference model: quantized W8A8 or W4A8 (attention / MLP linears int8, int4 or
    float; KV cache float16 or int8), or a float model, W4A16 or fp32
    (:func:`edge_quamba.onnx.lower_hybrid_float.lower_hybrid_float`)."""
    c = model.config
    blocks = list(model.backbone.layers)
    if not any(isinstance(b.mixer, (QuantMamba2Mixer, QuantHybridMixer)) for b in blocks):  # W4A16 or fp32
        return lower_hybrid_float(model)
    mamba = [b.mixer for b in blocks if isinstance(b.mixer, QuantMamba2Mixer)]
    others = [b.mixer for b in blocks if isinstance(b.mixer, QuantHybridMixer)]
    if len(mamba) + len(others) != len(blocks):
        raise TypeError("lower_hybrid_model needs the quantized hybrid reference (load_quantized_model)")
    four_bit = any(isinstance(m, Int4Linear) for m in model.modules())
    opset, ir_version = (INT4_OPSET, INT4_IR_VERSION) if four_bit else (OPSET, IR_VERSION)
    g = GraphBuilder(opset)
    embeddings = g.init("embeddings.weight", model.backbone.embeddings.weight.float())
    resid = g.op("Gather", embeddings, INPUT_IDS, axis=0, out="embeddings.out")  # (b, l, d) float32
    m2 = c.mamba2()
    for i, block in enumerate(blocks):
        if c.kind(i) == "M":
            out, _ = mamba2_mixer_flow(Mamba2GraphOps(g, block.mixer, block.norm, i), resid,
                                       LayerState(f"conv_state.{i}", f"ssm_state.{i}"), m2.d_inner,
                                       m2.ngroups * m2.d_state, m2.nheads, block.mixer.hadamard)
        elif c.kind(i) == "*":
            out, _ = attention_flow(HybridGraphOps(g, block.mixer, block.norm, i), resid,
                                    KVState(f"past_key.{i}", f"past_value.{i}"))
        else:
            out = mlp_flow(HybridGraphOps(g, block.mixer, block.norm, i), resid, c.mlp == "swiglu")
        resid = g.op("Add", resid, out, out=f"layers.{i}.residual")
    normed = g.norm(resid, model.backbone.norm_f, "norm_f")
    g.give_linears_own_codes()
    head = embeddings if c.tie_embeddings else g.init("lm_head.weight", model.lm_head.weight.float())
    flat = g.op("Gemm", g.op("Reshape", normed, g.ints(-1, c.d_model)), head, transB=1, out="lm_head.out")
    g.op("Reshape", flat, g.op("Concat", g.op("Shape", INPUT_IDS), g.ints(c.vocab_size), axis=0), out=LOGITS)

    kv_elem = KV_ELEM["int8" if any(m.kv_int8 for m in others) else "float16"]
    state_in, state_out = hybrid_state_io(c, TensorProto.INT8, kv_elem)
    inputs = [helper.make_tensor_value_info(INPUT_IDS, TensorProto.INT64, ["b", "l"]), *state_in]
    outputs = [helper.make_tensor_value_info(LOGITS, TensorProto.FLOAT, ["b", "l", c.vocab_size]), *state_out]
    graph = helper.make_graph(g.nodes, "edge_quamba_hybrid", inputs, outputs, initializer=g.initializers)
    functions = mamba2_custom_functions(m2, any(m.hadamard for m in mamba), opset) if mamba else []
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                         helper.make_opsetid(DOMAIN, 1)],
                                   functions=functions, producer_name="edge-quamba")
    onnx_model.ir_version = ir_version
    return onnx_model
