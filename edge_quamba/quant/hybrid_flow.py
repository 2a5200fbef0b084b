"""The attention and MLP blocks' quantized data flows (hybrid models), written once, and their sites.

A hybrid model's Mamba2 blocks run Quamba2's :func:`edge_quamba.quant.flow.mamba2_mixer_flow` unchanged; its
attention and MLP blocks run :func:`attention_flow` and :func:`mlp_flow` below, with the same three kinds of ops
object: ``HybridQuantOps`` (the quantized reference, :mod:`edge_quamba.quant.hybrid_qmodel`), :class:`HybridFloatOps`
(the fp block observing its sites: calibration, per-layer SQNR, activation statistics) and the ONNX lowering's ops
(:mod:`edge_quamba.onnx.lower_hybrid`).

Sites (one static per-tensor int8 scale each, the project's convention; names ``layers.<i>.mixer.<code>``):

    block      site             codes               made by                       read by
    attention  qkv_input        qkv.input_q         rms_norm_quantize (pre-norm)  q_proj, k_proj, v_proj
               k_cache          k_q                 quantize (--kv-cache int8)    the attention (the int8 cache)
               v_cache          v_q                 quantize (--kv-cache int8)    the attention
               o_proj_input     o_proj.input_q      quantize                      o_proj
    MLP        mlp_input        mlp.input_q         rms_norm_quantize (pre-norm)  up_proj (and gate_proj)
               down_proj_input  down_proj.input_q   quantize                      down_proj

Linears whose model keeps them float (``QuantConfig.quantize_attn_mlp = False``) have no input site: the block
holds no scale for it, ``quantize`` passes the float value on and ``linear`` is a float GEMM, so one flow serves both.
The KV cache is float16 by default (the new keys and values rounded to float16 once, when appended); with
``kv_cache = "int8"`` it holds int8 codes at the static scales of k_cache / v_cache. The attention itself (scores,
softmax, weighted sum) is float32 from the cached values.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from edge_quamba.models.attention import KVState, MLP, Attention, attend, merge_heads, positions, split_heads
from edge_quamba.models.hybrid import HybridLM
from edge_quamba.models.hybrid_config import HybridConfig
from edge_quamba.quant.flow import FloatFlowBlock, FloatOps, Tap
from edge_quamba.quant.sites import Site

ATTENTION_SITES: tuple[Site, ...] = (
    Site("qkv_input", "the norm output entering q_proj, k_proj and v_proj (one scale)", "qkv.input_q"),
    Site("k_cache", "the keys after RoPE, as the int8 KV cache holds them (--kv-cache int8 only)", "k_q"),
    Site("v_cache", "the values, as the int8 KV cache holds them (--kv-cache int8 only)", "v_q"),
    Site("o_proj_input", "the attention output, o_proj's input", "o_proj.input_q"),
)
MLP_SITES: tuple[Site, ...] = (
    Site("mlp_input", "the norm output entering up_proj (and gate_proj)", "mlp.input_q"),
    Site("down_proj_input", "relu(up x)² or silu(gate x) * up x, down_proj's input", "down_proj.input_q"),
)
HYBRID_SITE_BY_NAME: dict[str, Site] = {site.name: site for site in ATTENTION_SITES + MLP_SITES}
KV_SITES = ("k_cache", "v_cache")
LINEAR_INPUTS = {"qkv_input": ("q_proj", "k_proj", "v_proj"), "o_proj_input": ("o_proj",),
                 "mlp_input": ("gate_proj", "up_proj"), "down_proj_input": ("down_proj",)}
"""The sites whose float value is each attention / MLP linear's input (GPTQ's Hessians are taken there)."""


def block_sites(kind: str, kv_int8: bool, linears: bool) -> tuple[str, ...]:
    """The static sites an attention ("*") or MLP ("-") block holds: the linears' input sites when they are
    quantized (``linears``), the KV cache's when it is int8."""
    sites = ATTENTION_SITES if kind == "*" else MLP_SITES
    return tuple(s.name for s in sites if (s.name in KV_SITES and kv_int8) or (s.name not in KV_SITES and linears))


class AttentionOps(Protocol):
    def norm_quantize(self, resid: Any, site: str) -> Any: ...
    def quantize(self, x: Any, site: str) -> Any: ...
    def linear(self, name: str, x_q: Any, in_site: str) -> Any: ...
    def rope(self, q: Any, k: Any, state: KVState) -> tuple[Any, Any]: ...
    def kv_append(self, k: Any, v: Any, state: KVState) -> tuple[Any, Any]: ...
    def attend(self, q: Any, key: Any, value: Any, state: KVState) -> Any: ...


def attention_flow(ops: AttentionOps, resid: Any, state: KVState) -> tuple[Any, KVState]:
    """One attention block with its pre-norm: resid (b, l, d) float -> the block's output (b, l, d) float (the caller
    adds it to the residual stream) and the KV cache after these l tokens.

    The norm writes int8 (one scale shared by the three projections); q, k, v from int8 linears, float out; RoPE on
    q and k at positions t .. t+l-1 (Bamba; none for Nemotron-H); k and v appended to the cache (float16, or int8
    codes); the attention in float32; its output quantized; int8 o_proj, float out.
    """
    x_q = ops.norm_quantize(resid, "qkv_input")  # (b, l, d) int8
    q = ops.linear("q_proj", x_q, "qkv_input")  # (b, l, h e) float32
    k = ops.linear("k_proj", x_q, "qkv_input")  # (b, l, kv e)
    v = ops.linear("v_proj", x_q, "qkv_input")
    q, k = ops.rope(q, k, state)
    key, value = ops.kv_append(k, v, state)  # (b, kv, t + l, e) the cache after this call
    o = ops.attend(q, key, value, state)  # (b, l, h e) float32
    o_q = ops.quantize(o, "o_proj_input")
    return ops.linear("o_proj", o_q, "o_proj_input"), KVState(key, value)


class MLPOps(Protocol):
    def norm_quantize(self, resid: Any, site: str) -> Any: ...
    def quantize(self, x: Any, site: str) -> Any: ...
    def linear(self, name: str, x_q: Any, in_site: str) -> Any: ...
    def mlp_activation(self, up: Any, gate: Any | None) -> Any: ...


def mlp_flow(ops: MLPOps, resid: Any, gated: bool) -> Any:
    """One MLP block with its pre-norm: resid (b, l, d) float -> (b, l, d) float. int8 up_proj (and gate_proj for
    SwiGLU), float out; the activation in float32; quantized; int8 down_proj, float out."""
    x_q = ops.norm_quantize(resid, "mlp_input")  # (b, l, d) int8
    up = ops.linear("up_proj", x_q, "mlp_input")  # (b, l, d_ff) float32
    gate = ops.linear("gate_proj", x_q, "mlp_input") if gated else None
    a_q = ops.quantize(ops.mlp_activation(up, gate), "down_proj_input")
    return ops.linear("down_proj", a_q, "down_proj_input")


def mlp_activation(up: Tensor, gate: Tensor | None) -> Tensor:
    """relu(up)² (gate None) or silu(gate) * up, elementwise in the inputs' dtype."""
    return F.relu(up).square() if gate is None else F.silu(gate) * up


def rope_flat(config: HybridConfig, q: Tensor, k: Tensor, state: KVState) -> tuple[Tensor, Tensor]:
    """:func:`edge_quamba.models.attention.positions` on (b, l, heads * e) tensors."""
    e = config.head_dim
    q, k = positions(split_heads(q, e), split_heads(k, e), state.length, config)
    return merge_heads(q), merge_heads(k)


class HybridFloatOps(FloatOps):
    """The attention and MLP flows in floating point over an fp block (:class:`FloatOps`: ``quantize`` observes and
    passes the value on). The tap also sees every linear's output under the linear's name (the SQNR table's linear
    columns). The arithmetic is the fp reference's: the KV cache in the model dtype, the attention vectorized."""

    def linear(self, name: str, x: Tensor, in_site: str, bias: bool = True, out_site: str | None = None) -> Tensor:
        y = super().linear(name, x, in_site)
        self._observe(name, y)
        return y

    def rope(self, q: Tensor, k: Tensor, state: KVState) -> tuple[Tensor, Tensor]:
        return rope_flat(self.mixer.config, q, k, state)

    def kv_append(self, k: Tensor, v: Tensor, state: KVState) -> tuple[Tensor, Tensor]:
        e = self.mixer.config.head_dim
        k, v = split_heads(k, e), split_heads(v, e)
        self._observe("k_cache", k)
        self._observe("v_cache", v)
        return torch.cat([state.key, k.to(state.key.dtype)], 2), torch.cat([state.value, v.to(state.value.dtype)], 2)

    def attend(self, q: Tensor, key: Tensor, value: Tensor, state: KVState) -> Tensor:
        return merge_heads(attend(split_heads(q, self.mixer.config.head_dim), key, value, state.length))

    def mlp_activation(self, up: Tensor, gate: Tensor | None) -> Tensor:
        return mlp_activation(up, gate)


class HybridFloatFlowBlock(torch.nn.Module):
    """An fp attention or MLP block run through its flow with :class:`HybridFloatOps` (prefill only)."""

    def __init__(self, block, tap: Tap | None):
        super().__init__()
        self.norm, self.mixer, self.tap = block.norm, block.mixer, tap  # the fp block's (empty_state: the mixer's)

    def forward(self, resid: Tensor, state, step: bool = False):
        if step:
            raise NotImplementedError("the float flow observes prefill only")
        mixer = self.mixer
        ops = HybridFloatOps(mixer, self.norm, False, self.tap)
        if isinstance(mixer, Attention):
            out, state = attention_flow(ops, resid, state)
        else:
            out = mlp_flow(ops, resid, mixer.config.mlp == "swiglu")
        return resid + out.to(resid.dtype), state


@contextlib.contextmanager
def hybrid_float_flow(model: HybridLM, hadamard: bool, tap: Callable[[int, str, Tensor], None] | None):
    """Within this block the fp hybrid ``model`` runs every block through its flow with float ops (Mamba2 blocks
    through :func:`mamba2_mixer_flow`, the others through theirs), calling ``tap(block, site, value)`` at every site
    and linear output (prefill only). The model is restored afterwards."""
    layers = model.backbone.layers
    originals = list(layers)
    try:
        for i, block in enumerate(originals):
            block_tap = None if tap is None else (lambda site, value, i=i: tap(i, site, value))
            plain = isinstance(block.mixer, (Attention, MLP))
            layers[i] = HybridFloatFlowBlock(block, block_tap) if plain else FloatFlowBlock(block, hadamard, block_tap)
        yield model
    finally:
        for i, block in enumerate(originals):
            layers[i] = block
