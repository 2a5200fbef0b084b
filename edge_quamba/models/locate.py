"""Finding a model: ``--model`` as a folder, a shipped demo model's name or a Hugging Face hub id, and an fp
checkpoint's config. No torch here: the TensorRT backend (which runs without PyTorch) opens folders through this
module; loading weights is :mod:`edge_quamba.models.loading`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from edge_quamba.errors import CheckpointError, ConfigError, named
from edge_quamba.models.config import ModelConfig, parse_model_config, read_json
from edge_quamba.resources import DEFAULT_DEMO, DEMO_MODELS, demo_model_dir

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
HUB_PATTERNS = ["*.json", "*.safetensors", "pytorch_model*.bin", "tokenizer*", "*.model", "*.txt"]


def resolve_model(model: str | None, option: str = "--model") -> Path:
    """Turn ``--model`` into a local folder: None -> the demo model; an existing folder; a shipped demo model's name
    (``demo``, ``demo-mamba2``, ``demo-hybrid``); else a hub id.

    A string that is not an existing folder and looks like ``owner/name`` is fetched with huggingface_hub (from its
    cache when offline); anything else is reported as a missing folder. ``option`` is the flag named in errors.
    """
    if model is not None and Path(model).expanduser().is_dir():
        return Path(model).expanduser()
    if model is None or model in DEMO_MODELS:
        path = demo_model_dir(model or DEFAULT_DEMO)
        if not (path / "config.json").is_file():
            raise CheckpointError(f"the demo model is not installed at {path} (reinstall edge-quamba)")
        return path
    path = Path(model).expanduser()
    if path.exists():
        raise CheckpointError(f"{named(option, model)}: is a file; pass the folder that holds config.json")
    if not looks_like_hub_id(model):
        raise CheckpointError(f"{named(option, model)}: no such folder")
    return download_from_hub(model, option)


def looks_like_hub_id(spec: str) -> bool:
    """``owner/name`` (what the hub accepts), not a path such as ./x, /x/y.json or ~/x."""
    return not spec.startswith((".", "/", "~")) and bool(HUB_ID.match(spec)) and spec.count("/") == 1


def download_from_hub(repo_id: str, option: str = "--model") -> Path:
    """Fetch a checkpoint's files from the Hugging Face hub (or its local cache); one-line errors when it cannot."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

    from edge_quamba.hub import DOWNLOAD_ERRORS, describe, proxy_setting

    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_PATTERNS))
    except RepositoryNotFoundError:
        raise CheckpointError(f"{named(option, repo_id)}: no such folder, and no such repository on the "
                              f"hub") from None
    except LocalEntryNotFoundError:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
        proxy = proxy_setting()
        why = "HF_HUB_OFFLINE is set" if offline else f"the hub cannot be reached{f' (with {proxy})' if proxy else ''}"
        raise CheckpointError(
            f"{named(option, repo_id)}: no such folder, and {why} and it is not in the local cache"
        ) from None
    except DOWNLOAD_ERRORS as exc:  # the hub's, its HTTP client's, a proxy's failures: one line (edge_quamba.hub)
        raise CheckpointError(f"{named(option, repo_id)}: hub download failed: {describe(exc)}") from None


def load_fp_config(path: Path) -> ModelConfig:
    """The model config of an fp checkpoint folder (config.json, either layout, Mamba1 or Mamba2)."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ConfigError(f"{path} holds no config.json")
    return parse_model_config(read_json(config_file), str(config_file))
