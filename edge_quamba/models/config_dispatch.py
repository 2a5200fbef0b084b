"""Any architecture's model config from its JSON: the dispatch over the Mamba1 / Mamba2 parsers
(:mod:`edge_quamba.models.config`) and the hybrids' (:mod:`edge_quamba.models.hybrid_config`). It sits above both, so
that the hybrids build on config.py's helpers and config.py never imports them back.

    parse_model_config      a public config.json (transformers or mamba_ssm layout) -> its config
    model_config_from_dict  our own stored form (``to_dict``, as the output folders' JSON holds it) -> its config
"""

from __future__ import annotations

from typing import Any

from edge_quamba.errors import ConfigError
from edge_quamba.models.config import CONFIG_PARSERS, Mamba2Config, MambaConfig, ModelConfig, parse_mamba_ssm
from edge_quamba.models.hybrid_config import HYBRID_ARCHS, HYBRID_PARSERS, HybridConfig


def model_config_from_dict(data: dict[str, Any], source: str = "model_config") -> ModelConfig:
    """Our own stored form (``to_dict``) of any config, told apart by its ``model_type`` (Mamba1 when absent,
    as artifacts written before Mamba2 existed hold it; a hybrid's is its architecture)."""
    model_type = data.get("model_type")
    cls = Mamba2Config if model_type == "mamba2" else HybridConfig if model_type in HYBRID_ARCHS else MambaConfig
    return cls.from_dict(data, source)


def parse_model_config(raw: dict[str, Any], source: str) -> ModelConfig:
    """Dispatch on ``model_type`` (transformers layout) or on the mamba_ssm keys; every bad value is a one-line
    ConfigError that names ``source``."""
    try:
        return _parse(raw, source)
    except ConfigError as exc:
        message = str(exc)
        raise ConfigError(message if message.startswith(source) else f"{source}: {message}") from None


def _parse(raw: dict[str, Any], source: str) -> ModelConfig:
    model_type = raw.get("model_type")
    if model_type is not None and not isinstance(model_type, str):
        raise ConfigError(f"{source}: model_type={model_type!r} must be a string")
    if model_type is None:
        if "d_model" in raw and "n_layer" in raw:
            return parse_mamba_ssm(raw, source)
        raise ConfigError(f"{source} has no model_type and is not a mamba_ssm config (no d_model / n_layer)")
    parser = CONFIG_PARSERS.get(model_type) or HYBRID_PARSERS.get(model_type)
    if parser is None:
        supported = ", ".join([*sorted(CONFIG_PARSERS), *HYBRID_ARCHS])
        raise ConfigError(f"{source}: unknown model_type {model_type!r} (supported: {supported})")
    return parser(raw, source)
