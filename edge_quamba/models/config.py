"""Model configuration: one dataclass per architecture (Mamba1, Mamba2), parsed from either public config.json layout.

Longer than our ~400-line rule: both architectures' dataclasses, both public layouts' parsers and the checks of
every field are one config language (the hybrid's, models/hybrid_config.py, builds on its helpers); splitting it
would split each parser from the dataclass it fills. The dispatch over every architecture's parser, hybrids included,
is :mod:`edge_quamba.models.config_dispatch`, above this module and the hybrids' (so neither imports the other back).

Two layouts exist for each architecture:

* transformers (``model_type: "mamba"`` / ``"mamba2"``): ``hidden_size``, ``num_hidden_layers``, ``state_size``,
  ``conv_kernel``, ``use_bias``, ``use_conv_bias``, ``layer_norm_epsilon``, ``tie_word_embeddings``; Mamba1 adds
  ``time_step_rank``, Mamba2 ``num_heads``, ``head_dim``, ``n_groups``, ``chunk_size``, ``time_step_limit``;
  ``vocab_size`` already counts the padded embedding rows.
* mamba_ssm (no ``model_type``): ``d_model``, ``n_layer``, ``ssm_cfg`` (``layer``: "Mamba1" or "Mamba2",
  ``d_state``, ``d_conv``, ``expand``, ``conv_bias``, ``bias``; Mamba1 ``dt_rank``; Mamba2 ``headdim``, ``ngroups``,
  ``chunk_size``, ...), ``rms_norm``, ``pad_vocab_size_multiple``; the embedding has ``vocab_size`` rounded up to
  that multiple.

Parsing dispatches (config_dispatch.py) on ``model_type`` (or mamba_ssm's ``ssm_cfg.layer``) and never on file names. Options of the public
Mamba2 code that no released checkpoint uses (a gated-MLP share ``d_ssm``, ``D_has_hdim``, no gated norm,
``norm_before_gate``, a ``dt_limit``) are refused with a one-line ConfigError rather than half-supported.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

from edge_quamba.errors import ConfigError
from edge_quamba.paths import require_regular_file

NormKind = Literal["rmsnorm", "layernorm"]


def _check_fields(config, positive_ints: tuple[str, ...], epsilons: tuple[str, ...]) -> None:
    """The checks every model config shares: sizes are positive integers, flags are booleans, token ids are
    non-negative integers or None, the norm kind is known and every epsilon is a number in (0, 1)."""
    for name in positive_ints:
        value = getattr(config, name)
        if not _is_int(value) or value <= 0:
            raise ConfigError(f"config value {name}={value!r} must be a positive integer")
    for name in ("conv_bias", "proj_bias", "residual_in_fp32", "tie_embeddings"):
        if not isinstance(getattr(config, name), bool):
            raise ConfigError(f"config value {name}={getattr(config, name)!r} must be true or false")
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(config, name)
        if value is not None and (not _is_int(value) or value < 0):
            raise ConfigError(f"config value {name}={value!r} must be a non-negative integer token id")
    if config.norm not in ("rmsnorm", "layernorm"):
        raise ConfigError(f"config value norm={config.norm!r} must be 'rmsnorm' or 'layernorm'")
    for name in epsilons:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
            raise ConfigError(f"config value {name}={value!r} must be a number in (0, 1)")

@dataclass(frozen=True)
class MambaConfig:
    """Hyper-parameters of a Mamba1 language model (names follow the paper and mamba_ssm).

    d_model:   residual stream width (D in the paper).
    n_layer:   number of residual blocks.
    vocab_size: rows of the embedding matrix (after padding).
    d_state:   SSM state size per channel (N in the paper).
    d_conv:    causal depthwise convolution width.
    expand:    d_inner = expand * d_model (E in the paper).
    dt_rank:   rank of the Δ projection (R); "auto" resolves to ceil(d_model / 16) at parse time.
    """

    d_model: int
    n_layer: int
    vocab_size: int
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int = 0  # 0 means "auto": resolved in __post_init__
    conv_bias: bool = True
    proj_bias: bool = False  # bias on in_proj and out_proj
    norm: NormKind = "rmsnorm"
    norm_eps: float = 1e-5
    residual_in_fp32: bool = True
    tie_embeddings: bool = True
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    model_type: str = "mamba"

    def __post_init__(self) -> None:
        if self.dt_rank == 0:
            object.__setattr__(self, "dt_rank", math.ceil(self.d_model / 16) if _is_int(self.d_model) else 0)
        _check_fields(self, ("d_model", "n_layer", "vocab_size", "d_state", "d_conv", "expand", "dt_rank"),
                      ("norm_eps",))
        if not isinstance(self.model_type, str):
            raise ConfigError(f"config value model_type={self.model_type!r} must be a string")

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "model_config") -> "MambaConfig":
        """Inverse of :meth:`to_dict` (the form stored inside our own artifacts' JSON)."""
        return _from_dict(cls, data, source)


@dataclass(frozen=True)
class Mamba2Config:
    """Hyper-parameters of a Mamba2 (SSD) language model (names follow the Mamba2 paper and mamba_ssm).

    d_model:   residual stream width (D).
    n_layer:   number of residual blocks.
    vocab_size: rows of the embedding matrix (after padding).
    d_state:   SSM state size per head (N).
    d_conv:    causal depthwise convolution width, over x | B | C.
    expand:    d_inner = expand * d_model.
    headdim:   channels per head (P); nheads = d_inner / headdim (H), one scalar A, Δ bias and D per head.
    ngroups:   groups of heads sharing one B and one C (G, like grouped-query attention); also the number of
               groups of the gated RMSNorm before out_proj (group size d_inner / ngroups), as in mamba_ssm.
    chunk_size: chunk length of the chunked SSD forward (changes the float summation order, not the math).
    norm_eps:  epsilon of the block norms and norm_f. gate_norm_eps: epsilon of the gated RMSNorm (transformers
               uses layer_norm_epsilon for both; mamba_ssm fixes the gated one at 1e-5).
    """

    d_model: int
    n_layer: int
    vocab_size: int
    d_state: int = 128
    d_conv: int = 4
    expand: int = 2
    headdim: int = 64
    ngroups: int = 1
    chunk_size: int = 256
    conv_bias: bool = True
    proj_bias: bool = False  # bias on in_proj and out_proj
    norm: NormKind = "rmsnorm"
    norm_eps: float = 1e-5
    gate_norm_eps: float = 1e-5
    residual_in_fp32: bool = True
    tie_embeddings: bool = True
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    model_type: str = "mamba2"

    def __post_init__(self) -> None:
        _check_fields(self, ("d_model", "n_layer", "vocab_size", "d_state", "d_conv", "expand", "headdim", "ngroups",
                             "chunk_size"), ("norm_eps", "gate_norm_eps"))
        if self.model_type != "mamba2":
            raise ConfigError(f"config value model_type={self.model_type!r} must be 'mamba2'")
        if self.d_inner % self.headdim:
            raise ConfigError(f"d_inner = expand * d_model = {self.d_inner} is not a multiple of headdim "
                              f"{self.headdim}")
        if self.nheads % self.ngroups:
            raise ConfigError(f"nheads = {self.nheads} is not a multiple of ngroups {self.ngroups}")

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def nheads(self) -> int:
        return self.d_inner // self.headdim

    @property
    def conv_dim(self) -> int:
        """Channels of the causal conv: x (d_inner) | B (ngroups * d_state) | C (ngroups * d_state)."""
        return self.d_inner + 2 * self.ngroups * self.d_state

    @property
    def d_in_proj(self) -> int:
        """Rows of in_proj: z (d_inner) | xBC (conv_dim) | dt (nheads)."""
        return self.d_inner + self.conv_dim + self.nheads

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "model_config") -> "Mamba2Config":
        """Inverse of :meth:`to_dict` (the form stored inside our own artifacts' JSON)."""
        return _from_dict(cls, data, source)


ModelConfig = MambaConfig | Mamba2Config  # or a hybrid's HybridConfig (models/hybrid_config.py)


def require_mamba1(config: ModelConfig, what: str) -> None:
    """One-line refusal for the paths that exist for Mamba1 only (quantization, export)."""
    if isinstance(config, Mamba2Config):
        raise ConfigError(f"{what} of a Mamba2 model is not supported yet (its fp reference runs: eval, run and "
                          f"bench with --backend ref)")


def _from_dict(cls, data: dict[str, Any], source: str):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown model config keys: {', '.join(unknown)}")
    missing = sorted(f.name for f in dataclasses.fields(cls)
                     if f.default is dataclasses.MISSING and f.name not in data)
    if missing:
        raise ConfigError(f"{source} is missing the model config keys {', '.join(missing)}")
    try:
        return cls(**data)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _require(raw: dict[str, Any], key: str, source: str) -> Any:
    if key not in raw:
        raise ConfigError(f"{source} is missing the required key {key!r}")
    return raw[key]


def _first_id(value: Any, key: str, source: str) -> int | None:
    """A token id (transformers allows a list of EOS ids; generation stops on the first one listed)."""
    if isinstance(value, list):
        value = value[0] if value else None
    if value is not None and (not _is_int(value) or value < 0):
        raise ConfigError(f"{source}: {key}={value!r} must be a non-negative integer token id (or a list of them)")
    return value


def _section(raw: dict[str, Any], key: str, source: str) -> dict[str, Any]:
    """A nested JSON object such as mamba_ssm's ``ssm_cfg`` (absent or null: empty)."""
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: {key} must be a JSON object, not {type(value).__name__}")
    return value


def parse_transformers_mamba(raw: dict[str, Any], source: str) -> MambaConfig:
    """config.json of ``transformers.MambaForCausalLM`` (defaults are transformers' own)."""
    act = raw.get("hidden_act", "silu")
    if act != "silu":
        raise ConfigError(f"{source}: hidden_act={act!r} is not supported (Mamba uses 'silu')")
    dt_rank = raw.get("time_step_rank", "auto")
    return MambaConfig(
        d_model=_require(raw, "hidden_size", source),
        n_layer=_require(raw, "num_hidden_layers", source),
        vocab_size=_require(raw, "vocab_size", source),
        d_state=raw.get("state_size", 16),
        d_conv=raw.get("conv_kernel", 4),
        expand=raw.get("expand", 2),
        dt_rank=0 if dt_rank == "auto" else dt_rank,
        conv_bias=raw.get("use_conv_bias", True),
        proj_bias=raw.get("use_bias", False),
        norm="rmsnorm",
        norm_eps=raw.get("layer_norm_epsilon", 1e-5),
        residual_in_fp32=raw.get("residual_in_fp32", True),
        tie_embeddings=raw.get("tie_word_embeddings", True),
        bos_token_id=_first_id(raw.get("bos_token_id"), "bos_token_id", source),
        eos_token_id=_first_id(raw.get("eos_token_id"), "eos_token_id", source),
        pad_token_id=_first_id(raw.get("pad_token_id"), "pad_token_id", source),
    )


def parse_transformers_mamba2(raw: dict[str, Any], source: str) -> Mamba2Config:
    """config.json of ``transformers.Mamba2ForCausalLM`` (defaults are transformers' own: n_groups 8, untied)."""
    act = raw.get("hidden_act", "silu")
    if act != "silu":
        raise ConfigError(f"{source}: hidden_act={act!r} is not supported (Mamba2 uses 'silu')")
    if raw.get("rms_norm", True) is not True:
        raise ConfigError(f"{source}: rms_norm={raw['rms_norm']!r} is not supported (Mamba2 uses the gated RMSNorm)")
    _check_dt_limit(raw.get("time_step_limit", [0.0, math.inf]), "time_step_limit", source)
    d_model, expand = _require(raw, "hidden_size", source), raw.get("expand", 2)
    heads, headdim = raw.get("num_heads", 128), raw.get("head_dim", 64)
    if all(_is_int(v) for v in (d_model, expand, heads, headdim)) and heads * headdim != expand * d_model:
        raise ConfigError(f"{source}: num_heads * head_dim = {heads} * {headdim} must equal expand * hidden_size = "
                          f"{expand} * {d_model}")
    eps = raw.get("layer_norm_epsilon", 1e-5)
    return Mamba2Config(
        d_model=d_model,
        n_layer=_require(raw, "num_hidden_layers", source),
        vocab_size=_require(raw, "vocab_size", source),
        d_state=raw.get("state_size", 128),
        d_conv=raw.get("conv_kernel", 4),
        expand=expand,
        headdim=headdim,
        ngroups=raw.get("n_groups", 8),
        chunk_size=raw.get("chunk_size", 256),
        conv_bias=raw.get("use_conv_bias", True),
        proj_bias=raw.get("use_bias", False),
        norm="rmsnorm",
        norm_eps=eps,
        gate_norm_eps=eps,
        residual_in_fp32=raw.get("residual_in_fp32", True),
        tie_embeddings=raw.get("tie_word_embeddings", False),
        bos_token_id=_first_id(raw.get("bos_token_id"), "bos_token_id", source),
        eos_token_id=_first_id(raw.get("eos_token_id"), "eos_token_id", source),
        pad_token_id=_first_id(raw.get("pad_token_id"), "pad_token_id", source),
    )


def _check_dt_limit(value: Any, key: str, source: str) -> None:
    """Only the default Δ limit (0, inf), a no-op: the public step paths ignore a limit that their chunked forward
    applies, so a checkpoint trained with one has no single meaning."""
    if isinstance(value, (list, tuple)):
        value = [_json_float(v) for v in value]
    if value != [0.0, math.inf]:
        raise ConfigError(f"{source}: {key}={value!r} is not supported (only the default (0.0, inf))")


def _json_float(value: Any) -> Any:
    """A float as JSON configs spell it: a number, Python's ``Infinity`` literal, or transformers' encoding of
    non-finite floats ``{"__float__": "Infinity"}``."""
    if isinstance(value, dict) and set(value) == {"__float__"} and value["__float__"] in ("Infinity", "-Infinity",
                                                                                        "NaN"):
        return float(value["__float__"])
    return value


# mamba_ssm Mamba2 options that change the computation, and the only value supported (the default of every release).
MAMBA_SSM_MAMBA2_FIXED = {"d_ssm": None, "D_has_hdim": False, "rmsnorm": True, "norm_before_gate": False}
MAMBA_SSM_GATE_NORM_EPS = 1e-5
"""mamba_ssm's Mamba2 builds its gated RMSNorm with eps=1e-5 whatever the config says."""


def parse_mamba_ssm(raw: dict[str, Any], source: str) -> ModelConfig:
    """config.json of a mamba_ssm ``MambaLMHeadModel`` checkpoint, Mamba1 or Mamba2 blocks (``ssm_cfg.layer``);
    defaults are mamba_ssm's own."""
    d_model = _require(raw, "d_model", source)
    ssm_cfg = _section(raw, "ssm_cfg", source)
    layer = ssm_cfg.get("layer", "Mamba1")
    if layer not in ("Mamba1", "Mamba2"):
        raise ConfigError(f"{source}: ssm_cfg.layer={layer!r} is not supported (supported: Mamba1, Mamba2)")
    if raw.get("d_intermediate", 0) or raw.get("attn_layer_idx"):
        raise ConfigError(f"{source}: hybrid checkpoints (d_intermediate / attn_layer_idx) are not supported")
    vocab = _require(raw, "vocab_size", source)
    multiple = raw.get("pad_vocab_size_multiple", 8)
    for key, value in (("vocab_size", vocab), ("pad_vocab_size_multiple", multiple)):
        if not _is_int(value) or value <= 0:
            raise ConfigError(f"{source}: {key}={value!r} must be a positive integer")
    common = dict(
        d_model=d_model,
        n_layer=_require(raw, "n_layer", source),
        vocab_size=vocab + (-vocab) % multiple,
        d_conv=ssm_cfg.get("d_conv", 4),
        expand=ssm_cfg.get("expand", 2),
        conv_bias=ssm_cfg.get("conv_bias", True),
        proj_bias=ssm_cfg.get("bias", False),
        norm="rmsnorm" if raw.get("rms_norm", True) else "layernorm",
        norm_eps=raw.get("norm_epsilon", 1e-5),
        residual_in_fp32=raw.get("residual_in_fp32", True),
        tie_embeddings=raw.get("tie_embeddings", True),
    )
    if layer == "Mamba1":
        dt_rank = ssm_cfg.get("dt_rank", "auto")
        return MambaConfig(d_state=ssm_cfg.get("d_state", 16), dt_rank=0 if dt_rank == "auto" else dt_rank,
                           **common)
    for key, supported in MAMBA_SSM_MAMBA2_FIXED.items():
        if ssm_cfg.get(key, supported) != supported:
            raise ConfigError(f"{source}: ssm_cfg.{key}={ssm_cfg[key]!r} is not supported (only {supported!r})")
    _check_dt_limit(ssm_cfg.get("dt_limit", [0.0, math.inf]), "ssm_cfg.dt_limit", source)
    return Mamba2Config(d_state=ssm_cfg.get("d_state", 128), headdim=ssm_cfg.get("headdim", 64),
                        ngroups=ssm_cfg.get("ngroups", 1), chunk_size=ssm_cfg.get("chunk_size", 256),
                        gate_norm_eps=MAMBA_SSM_GATE_NORM_EPS, **common)


# model_type -> parser. mamba_ssm configs carry no model_type; they are recognised by their keys below.
CONFIG_PARSERS: dict[str, Callable[[dict[str, Any], str], ModelConfig]] = {
    "mamba": parse_transformers_mamba,
    "mamba2": parse_transformers_mamba2,
}


MAX_JSON_BYTES = 64 << 20
"""Largest JSON file read (64 MiB). Ours are a few kB; a sharded checkpoint's index of a large model is under 1 MiB."""


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object, turning every failure into a one-line ConfigError that names the file. The project's one
    reader of JSON files: only a regular file (a FIFO would block, a device read forever) of at most
    :data:`MAX_JSON_BYTES`, and nesting too deep for the parser (RecursionError) is an error like any other."""
    path = require_regular_file(path, str(path), ConfigError)
    try:
        with open(path, "rb") as file:
            raw = file.read(MAX_JSON_BYTES + 1)
        if len(raw) > MAX_JSON_BYTES:
            raise ConfigError(f"{path} is larger than {MAX_JSON_BYTES >> 20} MiB; not a config file")
        data = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ConfigError(f"{path} is not readable JSON: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path} is not readable JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    return data


def checkpoint_layout(raw: dict[str, Any]) -> Literal["transformers", "mamba_ssm"]:
    return "transformers" if "model_type" in raw else "mamba_ssm"
