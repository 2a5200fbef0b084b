"""Configuration of the hybrid Mamba2 + attention models (Nemotron-H, Bamba), parsed from their config.json.

Both architectures are written as one list of pre-norm residual *blocks*, each holding one mixer chosen by a
character of ``pattern`` (Nemotron-H's own ``hybrid_override_pattern`` alphabet):

    M   a Mamba2 mixer (:class:`edge_quamba.models.mamba2.Mamba2Mixer`: in_proj, conv1d, SSD, gated norm, out_proj)
    *   grouped-query attention with a KV cache (:class:`edge_quamba.models.attention.Attention`)
    -   an MLP (:class:`edge_quamba.models.attention.MLP`): Nemotron-H's relu² (up, down), Bamba's SwiGLU
        (gate, up, down)

Nemotron-H is this structure as it is (one mixer per layer). A Bamba decoder layer is a mixer (Mamba2 or attention)
and an MLP, each behind its own RMSNorm with its own residual add, so Bamba layer i becomes blocks 2i ("M" or "*") and
2i + 1 ("-"): the same arithmetic, one pattern for both (``bamba_pattern``). Checkpoint keys are renamed accordingly
(:mod:`edge_quamba.models.hybrid`).

Positions: Nemotron-H's attention has no positional encoding at all (its Mamba2 layers carry order); Bamba's rotates
the first half of each head (``rotary_dim = head_dim / 2``, transformers hard-codes ``partial_rotary_factor`` 0.5)
with rope_theta. Refused with one line: MoE layers (Nemotron-H "E", GraniteMoeHybrid experts), multi-token-prediction
heads, a sliding window, a Δ limit other than (0, inf), activations other than the published ones, any RoPE
scaling type.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from edge_quamba.errors import ConfigError
from edge_quamba.models.config import (Mamba2Config, _check_dt_limit, _check_fields, _first_id, _from_dict, _is_int,
                                       _json_float, _require)

BLOCK_KINDS = {"M": "Mamba2", "*": "attention", "-": "MLP"}
"""Pattern characters and what each block holds."""
HYBRID_ARCHS = ("nemotron_h", "bamba")
MLP_KINDS = ("relu2", "swiglu")
MAX_BLOCKS = 1024
"""A pattern longer than this is refused before anything is built (a config claiming a million layers)."""


@dataclass(frozen=True)
class Mamba2BlockConfig(Mamba2Config):
    """The Mamba2 mixers of a hybrid model: :class:`Mamba2Config` whose d_inner is nheads * headdim, given directly
    (Nemotron-H's need not be a whole multiple of d_model: Nemotron-H-4B has 112 heads of 64 over d_model 3072)."""

    inner: int = 0

    @property
    def d_inner(self) -> int:
        return self.inner


@dataclass(frozen=True)
class HybridConfig:
    """Hyper-parameters of a hybrid model (names follow the Mamba2 paper and the transformers configs).

    pattern:     one character per block (module docstring); n_layer = len(pattern) blocks.
    d_model:     residual width.  vocab_size: embedding rows.
    Mamba2 blocks: d_state (N), d_conv, mamba_heads (H), mamba_headdim (P), ngroups (G, heads sharing B and C; also
                 the gated norm's groups), chunk_size, conv_bias, proj_bias (in_proj / out_proj).
    attention:   n_heads query heads of head_dim, n_kv_heads key/value heads (grouped-query: query head j reads kv head
                 j // (n_heads / n_kv_heads)), attn_bias on q/k/v/o, rotary_dim leading dims of each head rotated by
                 RoPE with rope_theta (0: no positional encoding).
    MLP:         d_ff inner width, mlp "relu2" (down(relu(up x)²)) or "swiglu" (down(silu(gate x) * up x)), mlp_bias.
    norm_eps:    every RMSNorm (block norms, norm_f, the gated norm).
    ``norm`` and ``residual_in_fp32`` are fixed (RMSNorm; the residual stream in at least float32, as this project's
    Mamba models keep it) and exist for code shared with them.
    """

    d_model: int
    vocab_size: int
    pattern: str
    d_state: int = 128
    d_conv: int = 4
    mamba_heads: int = 128
    mamba_headdim: int = 64
    ngroups: int = 8
    chunk_size: int = 128
    conv_bias: bool = True
    proj_bias: bool = False
    n_heads: int = 32
    n_kv_heads: int = 8
    head_dim: int = 128
    attn_bias: bool = False
    rotary_dim: int = 0
    rope_theta: float = 10000.0
    d_ff: int = 1024
    mlp: str = "relu2"
    mlp_bias: bool = False
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    model_type: str = "nemotron_h"
    norm: str = "rmsnorm"
    residual_in_fp32: bool = True

    def __post_init__(self) -> None:
        if self.model_type not in HYBRID_ARCHS:
            raise ConfigError(f"config value model_type={self.model_type!r} must be one of {', '.join(HYBRID_ARCHS)}")
        if not isinstance(self.pattern, str) or not self.pattern:
            raise ConfigError(f"config value pattern={self.pattern!r} must be a non-empty string")
        check_pattern(self.pattern)
        _check_fields(self, ("d_model", "vocab_size", "d_state", "d_conv", "mamba_heads", "mamba_headdim", "ngroups",
                             "chunk_size", "n_heads", "n_kv_heads", "head_dim", "d_ff"), ("norm_eps",))
        for name in ("attn_bias", "mlp_bias"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"config value {name}={getattr(self, name)!r} must be true or false")
        if self.norm != "rmsnorm" or self.residual_in_fp32 is not True:
            raise ConfigError("hybrid models use RMSNorm and a float32 residual stream (norm, residual_in_fp32)")
        if self.mlp not in MLP_KINDS:
            raise ConfigError(f"config value mlp={self.mlp!r} must be one of {', '.join(MLP_KINDS)}")
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(f"num_attention_heads {self.n_heads} is not a multiple of num_key_value_heads "
                              f"{self.n_kv_heads}")
        if not _is_int(self.rotary_dim) or self.rotary_dim < 0 or self.rotary_dim % 2 or \
                self.rotary_dim > self.head_dim:
            raise ConfigError(f"config value rotary_dim={self.rotary_dim!r} must be an even integer in [0, head_dim]")
        if isinstance(self.rope_theta, bool) or not isinstance(self.rope_theta, (int, float)) or \
                not self.rope_theta > 1 or not math.isfinite(self.rope_theta):
            raise ConfigError(f"config value rope_theta={self.rope_theta!r} must be a finite number > 1")
        if self.mamba_heads % self.ngroups:
            raise ConfigError(f"mamba heads {self.mamba_heads} is not a multiple of n_groups {self.ngroups}")

    @property
    def n_layer(self) -> int:
        """Blocks (a Bamba layer is two)."""
        return len(self.pattern)

    def kind(self, block: int) -> str:
        """"M", "*" or "-"."""
        return self.pattern[block]

    def blocks_of(self, kind: str) -> list[int]:
        return [i for i, c in enumerate(self.pattern) if c == kind]

    def mamba2(self) -> Mamba2BlockConfig:
        """The config every Mamba2 block's mixer is built from (the gated norm's eps is norm_eps, as both archs)."""
        return Mamba2BlockConfig(
            d_model=self.d_model, n_layer=1, vocab_size=self.vocab_size, d_state=self.d_state, d_conv=self.d_conv,
            expand=1, headdim=self.mamba_headdim, ngroups=self.ngroups, chunk_size=self.chunk_size,
            conv_bias=self.conv_bias, proj_bias=self.proj_bias, norm_eps=self.norm_eps, gate_norm_eps=self.norm_eps,
            inner=self.mamba_heads * self.mamba_headdim)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "model_config") -> "HybridConfig":
        """Inverse of :meth:`to_dict` (the form stored inside our own artifacts' JSON)."""
        return _from_dict(cls, data, source)


def check_pattern(pattern: str) -> None:
    """One-line refusals: MoE blocks, unknown characters, too many blocks."""
    for position, char in enumerate(pattern):
        if char == "E":
            raise ConfigError(f"MoE layers are not supported (pattern character 'E' at block {position}): dense "
                              f"Nemotron-H variants only")
        if char not in BLOCK_KINDS:
            raise ConfigError(f"pattern character {char!r} at block {position} is not one of "
                              + ", ".join(f"{c} ({what})" for c, what in BLOCK_KINDS.items()))
    if len(pattern) > MAX_BLOCKS:
        raise ConfigError(f"the layer pattern has {len(pattern)} blocks, more than {MAX_BLOCKS}")


def _pick(raw: dict[str, Any], names: tuple[str, ...], default: Any) -> Any:
    """The first of ``names`` present in ``raw`` (transformers reads legacy ``mamba_*`` names before the new ones)."""
    for name in names:
        if name in raw:
            return raw[name]
    return default


def _refuse(raw: dict[str, Any], key: str, allowed: Any, default: Any, why: str = "") -> None:
    value = raw.get(key, default)
    if value != allowed:
        raise ConfigError(f"{key}={value!r} is not supported (only {allowed!r}{why})")


NEMOTRON_H_LAYER_TYPES = {"linear_attention": "M", "full_attention": "*", "mlp": "-", "moe": "E"}
"""transformers' ``layers_block_type`` names -> pattern characters ("linear_attention" is Nemotron-H's Mamba2)."""


def nemotron_h_pattern(raw: dict[str, Any]) -> str:
    """``hybrid_override_pattern`` (the checkpoints' key) or ``layers_block_type`` (transformers 5's)."""
    if "hybrid_override_pattern" in raw:
        pattern = raw["hybrid_override_pattern"]
        if not isinstance(pattern, str):
            raise ConfigError(f"hybrid_override_pattern={pattern!r} must be a string")
        return pattern
    types = _pick(raw, ("layers_block_type", "layer_types"), None)
    if not isinstance(types, list) or not types:
        raise ConfigError("has neither hybrid_override_pattern nor a layers_block_type list")
    unknown = [t for t in types if t not in NEMOTRON_H_LAYER_TYPES]
    if unknown:
        raise ConfigError(f"layers_block_type {unknown[0]!r} is not one of {', '.join(NEMOTRON_H_LAYER_TYPES)}")
    return "".join(NEMOTRON_H_LAYER_TYPES[t] for t in types)


def parse_nemotron_h(raw: dict[str, Any], source: str) -> HybridConfig:
    """config.json of ``NemotronHForCausalLM`` (defaults are transformers' own)."""
    pattern = nemotron_h_pattern(raw)
    check_pattern(pattern)
    _refuse(raw, "mlp_hidden_act", "relu2", "relu2")
    _refuse(raw, "mamba_hidden_act", "silu", "silu")
    _refuse(raw, "sliding_window", None, None)
    _refuse(raw, "num_nextn_predict_layers", 0, 0, ": multi-token-prediction layers")
    _refuse(raw, "attention_bias", False, False, ": transformers' Nemotron-H attention has no bias")
    _refuse(raw, "tie_word_embeddings", False, False, ": transformers' Nemotron-H keeps lm_head apart")
    _check_dt_limit(_pick(raw, ("mamba_dt_limit", "time_step_limit"), [0.0, math.inf]), "time_step_limit", source)
    hidden, heads = _require(raw, "hidden_size", source), raw.get("num_attention_heads", 32)
    return HybridConfig(
        model_type="nemotron_h", pattern=pattern, d_model=hidden, vocab_size=_require(raw, "vocab_size", source),
        d_state=raw.get("ssm_state_size", 128), d_conv=_pick(raw, ("mamba_d_conv", "conv_kernel"), 4),
        mamba_heads=raw.get("mamba_num_heads", 128), mamba_headdim=raw.get("mamba_head_dim", 64),
        ngroups=_pick(raw, ("mamba_n_groups", "n_groups"), 8),
        chunk_size=_pick(raw, ("mamba_chunk_size", "chunk_size"), 128),
        conv_bias=_pick(raw, ("mamba_conv_bias", "use_conv_bias"), True), proj_bias=raw.get("use_bias", False),
        n_heads=heads, n_kv_heads=raw.get("num_key_value_heads") or heads, head_dim=raw.get("head_dim", 128),
        attn_bias=False, rotary_dim=0, d_ff=raw.get("intermediate_size", 21504), mlp="relu2",
        mlp_bias=raw.get("mlp_bias", False), norm_eps=raw.get("layer_norm_epsilon", 1e-5), tie_embeddings=False,
        bos_token_id=_first_id(raw.get("bos_token_id", 1), "bos_token_id", source),
        eos_token_id=_first_id(raw.get("eos_token_id", 2), "eos_token_id", source),
        pad_token_id=_first_id(raw.get("pad_token_id", 0), "pad_token_id", source),
    )


def bamba_pattern(num_layers: int, attn_layers: list[int]) -> str:
    """Bamba layer i = its mixer block ("*" when i is an attention layer, else "M") then its MLP block ("-")."""
    return "".join(("*" if i in attn_layers else "M") + "-" for i in range(num_layers))


def _rope(raw: dict[str, Any]) -> float:
    """rope_theta from ``rope_parameters`` (transformers 5) or the top-level key; only the default RoPE type."""
    params = raw.get("rope_parameters") or {}
    scaling = raw.get("rope_scaling") or {}
    if not isinstance(params, dict) or not isinstance(scaling, dict):
        raise ConfigError("rope_parameters / rope_scaling must be JSON objects")
    kind = params.get("rope_type", scaling.get("rope_type", scaling.get("type", "default")))
    if kind != "default":
        raise ConfigError(f"RoPE type {kind!r} is not supported (only 'default')")
    return _json_float(params.get("rope_theta", raw.get("rope_theta", 10000.0)))


def parse_bamba(raw: dict[str, Any], source: str) -> HybridConfig:
    """config.json of ``BambaForCausalLM`` (defaults are transformers' own)."""
    _refuse(raw, "hidden_act", "silu", "silu")
    _check_dt_limit(raw.get("time_step_limit", [0.0, math.inf]), "time_step_limit", source)
    hidden, layers = _require(raw, "hidden_size", source), raw.get("num_hidden_layers", 32)
    attn = raw.get("attn_layer_indices") or []
    if not _is_int(layers) or layers <= 0 or not isinstance(attn, list) or \
            any(not _is_int(i) or not 0 <= i < layers for i in attn):
        raise ConfigError(f"attn_layer_indices={attn!r} must list layers in [0, num_hidden_layers={layers!r})")
    if layers > MAX_BLOCKS:
        raise ConfigError(f"num_hidden_layers={layers} is more than {MAX_BLOCKS // 2}")
    heads, expand, mamba_heads = raw.get("num_attention_heads", 32), raw.get("mamba_expand", 2), \
        raw.get("mamba_n_heads", 128)
    head_dim = raw.get("head_dim") or (hidden // heads if _is_int(hidden) and _is_int(heads) and heads else 0)
    mamba_headdim = raw.get("mamba_d_head", "auto")
    if mamba_headdim == "auto" and all(_is_int(v) and v > 0 for v in (hidden, expand, mamba_heads)):
        mamba_headdim = expand * hidden // mamba_heads
    if all(_is_int(v) for v in (hidden, expand, mamba_heads, mamba_headdim)) and \
            mamba_heads * mamba_headdim != expand * hidden:
        raise ConfigError(f"mamba_n_heads * mamba_d_head = {mamba_heads} * {mamba_headdim} must equal mamba_expand * "
                          f"hidden_size = {expand} * {hidden}")
    return HybridConfig(
        model_type="bamba", pattern=bamba_pattern(layers, attn), d_model=hidden,
        vocab_size=_require(raw, "vocab_size", source), d_state=raw.get("mamba_d_state", 256),
        d_conv=raw.get("mamba_d_conv", 4), mamba_heads=mamba_heads, mamba_headdim=mamba_headdim,
        ngroups=raw.get("mamba_n_groups", 1), chunk_size=raw.get("mamba_chunk_size", 256),
        conv_bias=raw.get("mamba_conv_bias", True), proj_bias=raw.get("mamba_proj_bias", False),
        n_heads=heads, n_kv_heads=raw.get("num_key_value_heads") or heads, head_dim=head_dim,
        attn_bias=raw.get("attention_bias", False), rotary_dim=int(head_dim * 0.5) if _is_int(head_dim) else 0,
        rope_theta=_rope(raw), d_ff=raw.get("intermediate_size", 14336), mlp="swiglu",
        mlp_bias=raw.get("mlp_bias", False), norm_eps=raw.get("rms_norm_eps", 1e-5),
        tie_embeddings=raw.get("tie_word_embeddings", False),
        bos_token_id=_first_id(raw.get("bos_token_id", 1), "bos_token_id", source),
        eos_token_id=_first_id(raw.get("eos_token_id", 2), "eos_token_id", source),
        pad_token_id=_first_id(raw.get("pad_token_id", 0), "pad_token_id", source),
    )


def refuse_granite_hybrid(raw: dict[str, Any], source: str) -> HybridConfig:
    """GraniteMoeHybrid: MoE refused first (the common case), the dense variant named as not built."""
    if raw.get("num_local_experts", 8):
        raise ConfigError("MoE layers are not supported (GraniteMoeHybrid with num_local_experts "
                          f"{raw.get('num_local_experts', 8)}): dense hybrids only (nemotron_h, bamba)")
    raise ConfigError("GraniteMoeHybrid is not supported (its multipliers are not built); the supported hybrids are "
                      "nemotron_h and bamba")


HYBRID_PARSERS = {"nemotron_h": parse_nemotron_h, "bamba": parse_bamba, "granitemoehybrid": refuse_granite_hybrid}
"""model_type -> parser; :mod:`edge_quamba.models.config_dispatch` looks here after
:data:`edge_quamba.models.config.CONFIG_PARSERS`."""
