"""The fp reference of the hybrid Mamba2 + attention language models (Nemotron-H, Bamba), and their checkpoint names.

One model for both: embeddings -> n_layer pre-norm residual blocks, block i holding the mixer that ``pattern[i]``
names (:mod:`edge_quamba.models.hybrid_config`: "M" :class:`Mamba2Mixer`, "*" :class:`Attention`, "-" :class:`MLP`)
-> norm_f -> lm_head. Every block is ``resid + mixer(rmsnorm(resid))`` with the residual stream in at least float32
(transformers keeps it in the model dtype: the same numbers in float32 and float64). The per-block states are
explicit, one per block in a list: a Mamba2 block's :class:`LayerState` (conv_state (b, conv_dim, k), ssm_state
(b, h, p, n)), an attention block's :class:`KVState` (key, value (b, kv, t, e)), None for an MLP. ``forward`` is
prefill (any l, continuing from the states), ``step`` one token; both are :class:`MambaLM`'s.

Module tree and checkpoint names: ``backbone.embeddings``, ``backbone.layers.i.{norm,mixer}``, ``backbone.norm_f``,
``lm_head`` are Nemotron-H's own checkpoint names (what transformers writes for ``NemotronHForCausalLM``). Bamba's
(``model.embed_tokens``, ``model.layers.i.{input_layernorm, mamba | self_attn, pre_ff_layernorm, feed_forward}``,
``model.final_layernorm``) are renamed on load by :func:`hybrid_reference_keys`: Bamba layer i is blocks 2i and 2i+1.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from edge_quamba.models.attention import MLP, Attention
from edge_quamba.models.hybrid_config import HybridConfig
from edge_quamba.models.mamba import MambaLM, Norm, ResidualBlock
from edge_quamba.models.mamba2 import Mamba2Mixer


def make_mixer(kind: str, config: HybridConfig, dtype: torch.dtype) -> nn.Module:
    """The fp mixer of a pattern character."""
    if kind == "M":
        return Mamba2Mixer(config.mamba2(), dtype)
    return Attention(config, dtype) if kind == "*" else MLP(config, dtype)


class HybridLM(MambaLM):
    """Hybrid language model (module docstring). forward / step / empty_states / residual_stream are
    :class:`MambaLM`'s: they thread whatever state each block's mixer keeps."""

    def __init__(self, config: HybridConfig, dtype: torch.dtype = torch.float32):
        nn.Module.__init__(self)
        self.config, self.dtype = config, dtype
        self.backbone = nn.Module()
        self.backbone.embeddings = nn.Embedding(config.vocab_size, config.d_model, dtype=dtype)
        self.backbone.layers = nn.ModuleList(
            ResidualBlock(config, dtype, lambda c, d, kind=kind: make_mixer(kind, c, d)) for kind in config.pattern)
        self.backbone.norm_f = Norm(config.d_model, config.norm, config.norm_eps, dtype)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False, dtype=dtype)
        if config.tie_embeddings:
            self.lm_head.weight = self.backbone.embeddings.weight
        self.residual_storage: torch.dtype | None = None  # MambaLM's (the Mamba1 TensorRT graph's float parts)


BAMBA_LAYER = re.compile(r"^model\.layers\.(\d+)\.(input_layernorm|mamba|self_attn|pre_ff_layernorm|feed_forward)\.")
BAMBA_BLOCK = {"input_layernorm": (0, "norm"), "mamba": (0, "mixer"), "self_attn": (0, "mixer"),
               "pre_ff_layernorm": (1, "norm"), "feed_forward": (1, "mixer")}
"""Bamba layer part -> (block offset within the layer's two blocks, the block's module)."""
BAMBA_TOP = {"model.embed_tokens.": "backbone.embeddings.", "model.final_layernorm.": "backbone.norm_f."}


def hybrid_reference_keys(key: str, config: HybridConfig) -> str:
    """A checkpoint key -> the reference's name (unknown keys are left as they are, for the shape check to name).
    Nemotron-H: ``backbone.*`` as is (``model.*``, transformers' in-memory prefix, is accepted too)."""
    if config.model_type == "nemotron_h":
        return "backbone." + key[len("model."):] if key.startswith("model.") else key
    match = BAMBA_LAYER.match(key)
    if match:
        offset, part = BAMBA_BLOCK[match.group(2)]
        return f"backbone.layers.{2 * int(match.group(1)) + offset}.{part}." + key[match.end():]
    for old, new in BAMBA_TOP.items():
        if key.startswith(old):
            return new + key[len(old):]
    return key
