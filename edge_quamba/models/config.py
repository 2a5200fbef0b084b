"""Model configuration: one dataclass for Mamba1, parsed from either public config.json layout.

Two layouts exist for the same architecture:

* transformers (``model_type: "mamba"``): ``hidden_size``, ``num_hidden_layers``, ``state_size``, ``conv_kernel``,
  ``time_step_rank``, ``use_bias``, ``use_conv_bias``, ``layer_norm_epsilon``, ``tie_word_embeddings``; ``vocab_size``
  already counts the padded embedding rows.
* mamba_ssm (no ``model_type``): ``d_model``, ``n_layer``, ``ssm_cfg`` (``d_state``, ``d_conv``, ``expand``,
  ``dt_rank``, ``conv_bias``, ``bias``), ``rms_norm``, ``pad_vocab_size_multiple``; the embedding has
  ``vocab_size`` rounded up to that multiple.

Parsing dispatches on ``model_type`` (a registry, so Mamba2 can join) and never on file names.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

from edge_quamba.errors import ConfigError

NormKind = Literal["rmsnorm", "layernorm"]


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
        for name in ("d_model", "n_layer", "vocab_size", "d_state", "d_conv", "expand", "dt_rank"):
            value = getattr(self, name)
            if not _is_int(value) or value <= 0:
                raise ConfigError(f"config value {name}={value!r} must be a positive integer")
        for name in ("conv_bias", "proj_bias", "residual_in_fp32", "tie_embeddings"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"config value {name}={getattr(self, name)!r} must be true or false")
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 0):
                raise ConfigError(f"config value {name}={value!r} must be a non-negative integer token id")
        if self.norm not in ("rmsnorm", "layernorm"):
            raise ConfigError(f"config value norm={self.norm!r} must be 'rmsnorm' or 'layernorm'")
        if isinstance(self.norm_eps, bool) or not isinstance(self.norm_eps, (int, float)) or \
                not 0 < self.norm_eps < 1:
            raise ConfigError(f"config value norm_eps={self.norm_eps!r} must be a number in (0, 1)")
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


def parse_mamba_ssm(raw: dict[str, Any], source: str) -> MambaConfig:
    """config.json of a mamba_ssm ``MambaLMHeadModel`` checkpoint (defaults are mamba_ssm's own)."""
    d_model = _require(raw, "d_model", source)
    ssm_cfg = _section(raw, "ssm_cfg", source)
    layer = ssm_cfg.get("layer", "Mamba1")
    if layer != "Mamba1":
        raise ConfigError(f"{source}: ssm_cfg.layer={layer!r} is not supported yet (supported: Mamba1)")
    if raw.get("d_intermediate", 0) or raw.get("attn_layer_idx"):
        raise ConfigError(f"{source}: hybrid checkpoints (d_intermediate / attn_layer_idx) are not supported")
    vocab = _require(raw, "vocab_size", source)
    multiple = raw.get("pad_vocab_size_multiple", 8)
    for key, value in (("vocab_size", vocab), ("pad_vocab_size_multiple", multiple)):
        if not _is_int(value) or value <= 0:
            raise ConfigError(f"{source}: {key}={value!r} must be a positive integer")
    padded_vocab = vocab + (-vocab) % multiple
    dt_rank = ssm_cfg.get("dt_rank", "auto")
    return MambaConfig(
        d_model=d_model,
        n_layer=_require(raw, "n_layer", source),
        vocab_size=padded_vocab,
        d_state=ssm_cfg.get("d_state", 16),
        d_conv=ssm_cfg.get("d_conv", 4),
        expand=ssm_cfg.get("expand", 2),
        dt_rank=0 if dt_rank == "auto" else dt_rank,
        conv_bias=ssm_cfg.get("conv_bias", True),
        proj_bias=ssm_cfg.get("bias", False),
        norm="rmsnorm" if raw.get("rms_norm", True) else "layernorm",
        norm_eps=raw.get("norm_epsilon", 1e-5),
        residual_in_fp32=raw.get("residual_in_fp32", True),
        tie_embeddings=raw.get("tie_embeddings", True),
    )


# model_type -> parser. mamba_ssm configs carry no model_type; they are recognised by their keys below.
CONFIG_PARSERS: dict[str, Callable[[dict[str, Any], str], MambaConfig]] = {"mamba": parse_transformers_mamba}
NOT_YET_SUPPORTED = {"mamba2": "Mamba2 support is planned (Quamba2) but not implemented yet"}


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object, turning every failure into a one-line ConfigError that names the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not readable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    return data


def parse_model_config(raw: dict[str, Any], source: str) -> MambaConfig:
    """Dispatch on ``model_type`` (transformers layout) or on the mamba_ssm keys; every bad value is a one-line
    ConfigError that names ``source``."""
    try:
        return _parse(raw, source)
    except ConfigError as exc:
        message = str(exc)
        raise ConfigError(message if message.startswith(source) else f"{source}: {message}") from None


def _parse(raw: dict[str, Any], source: str) -> MambaConfig:
    model_type = raw.get("model_type")
    if model_type is not None and not isinstance(model_type, str):
        raise ConfigError(f"{source}: model_type={model_type!r} must be a string")
    if model_type is None:
        if "d_model" in raw and "n_layer" in raw:
            return parse_mamba_ssm(raw, source)
        raise ConfigError(f"{source} has no model_type and is not a mamba_ssm config (no d_model / n_layer)")
    if model_type in NOT_YET_SUPPORTED:
        raise ConfigError(f"{source}: model_type {model_type!r}: {NOT_YET_SUPPORTED[model_type]}")
    parser = CONFIG_PARSERS.get(model_type)
    if parser is None:
        raise ConfigError(
            f"{source}: unknown model_type {model_type!r} (supported: {', '.join(sorted(CONFIG_PARSERS))})"
        )
    return parser(raw, source)


def checkpoint_layout(raw: dict[str, Any]) -> Literal["transformers", "mamba_ssm"]:
    return "transformers" if "model_type" in raw else "mamba_ssm"
