"""Finding a model: ``--model`` as a folder, a shipped demo model's name or a Hugging Face hub id; an fp checkpoint's
config.json (read here only: :func:`read_fp_checkpoint`) and its weight files and their headers. No torch here: the
TensorRT backend (which runs without PyTorch) opens folders through this module; loading weights is
:mod:`edge_quamba.models.loading`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edge_quamba.errors import CheckpointError, ConfigError, named
from edge_quamba.kinds import FP_CONFIG
from edge_quamba.models.config import ModelConfig, checkpoint_layout, read_json
from edge_quamba.models.config_dispatch import parse_model_config
from edge_quamba.resources import DEFAULT_DEMO, DEMO_MODELS, demo_model_dir
from edge_quamba.safetensors_header import TensorInfo, read_header

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
        if not (path / FP_CONFIG).is_file():
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


@dataclass(frozen=True)
class FpCheckpoint:
    """An fp checkpoint folder as read once: its config.json parsed, and the layout its weight names follow."""

    path: Path
    config: ModelConfig
    layout: Literal["transformers", "mamba_ssm"]


def read_fp_checkpoint(path: Path) -> FpCheckpoint:
    """config.json of an fp checkpoint folder (either layout; Mamba1, Mamba2 or hybrid), parsed: the one reader of
    config.json."""
    config_file = path / FP_CONFIG
    if not config_file.is_file():
        raise ConfigError(f"{path} holds no {FP_CONFIG}")
    raw = read_json(config_file)
    return FpCheckpoint(path, parse_model_config(raw, str(config_file)), checkpoint_layout(raw))


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
"""The weight formats read, in order of preference (safetensors first: its header gives shapes without reading data)."""


def weights_file(path: Path) -> Path:
    """The first of :data:`WEIGHT_FILES` that ``path`` holds; CheckpointError when it holds none."""
    for name in WEIGHT_FILES:
        if (path / name).is_file():
            return path / name
    raise CheckpointError(
        f"{path} holds no weights (model.safetensors, sharded safetensors or pytorch_model.bin)"
    )


def shard_files(index_file: Path) -> list[Path]:
    """The shard files a sharded checkpoint's index names (each checked to exist), in sorted order."""
    weight_map = read_json(index_file).get("weight_map")
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{index_file} has no weight_map")
    shards = []
    for shard in sorted(set(map(str, weight_map.values()))):
        if not (index_file.parent / shard).is_file():
            raise CheckpointError(f"{index_file} names the shard {shard}, which is missing")
        shards.append(index_file.parent / shard)
    return shards


def checkpoint_header(path: Path) -> dict[str, TensorInfo] | None:
    """Tensor infos of an fp checkpoint's safetensors weights (sharded too), each file's size checked against its
    header; None for pytorch_model.bin, which has no header (its shapes are checked after it is read, still before
    the model is built)."""
    file = weights_file(path)
    if file.name == "model.safetensors":
        return read_header(file)
    if file.name == "model.safetensors.index.json":
        infos: dict[str, TensorInfo] = {}
        for shard in shard_files(file):
            infos.update(read_header(shard))
        return infos
    return None
