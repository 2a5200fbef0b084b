"""Finding a model and loading an fp checkpoint: hub id or folder, transformers or mamba_ssm layout.

What a folder holds is read from its JSON files (``quant_config.json``, ``export_config.json``, ``config.json``),
never from its name. Weights are read with safetensors or ``torch.load(weights_only=True)``: no pickled code runs.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from edge_quamba.errors import CheckpointError, ConfigError
from edge_quamba.models.config import MambaConfig, checkpoint_layout, parse_model_config, read_json
from edge_quamba.models.mamba import MambaLM
from edge_quamba.resources import demo_model_dir

ModelKind = Literal["fp", "quantized", "export", "engine"]

# The JSON file that marks each kind of folder; checked in this order (an export folder also holds a config.json).
KIND_MARKERS: tuple[tuple[str, ModelKind], ...] = (
    ("engine_config.json", "engine"),
    ("export_config.json", "export"),
    ("quant_config.json", "quantized"),
    ("config.json", "fp"),
)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
HUB_PATTERNS = ["*.json", "*.safetensors", "pytorch_model*.bin", "tokenizer*", "*.model", "*.txt"]


def resolve_model(model: str | None) -> Path:
    """Turn ``--model`` into a local folder: None -> the demo model; an existing folder; else a hub id.

    A string that is not an existing folder and looks like ``owner/name`` is fetched with huggingface_hub (from its
    cache when offline); anything else is reported as a missing folder.
    """
    if model is None:
        path = demo_model_dir()
        if not (path / "config.json").is_file():
            raise CheckpointError(f"the demo model is not installed at {path} (reinstall edge-quamba)")
        return path
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"--model {model}: is a file; pass the folder that holds config.json")
    if model.startswith((".", "/", "~")) or not HUB_ID.match(model) or "/" not in model:
        raise CheckpointError(f"--model {model}: no such folder")
    return download_from_hub(model)


def download_from_hub(repo_id: str) -> Path:
    """Fetch a checkpoint's files from the Hugging Face hub (or its local cache); one-line errors when it cannot."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_PATTERNS))
    except RepositoryNotFoundError:
        raise CheckpointError(f"--model {repo_id}: no such folder, and no such repository on the hub") from None
    except LocalEntryNotFoundError:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
        why = "HF_HUB_OFFLINE is set" if offline else "the hub cannot be reached"
        raise CheckpointError(
            f"--model {repo_id}: no such folder, and {why} and it is not in the local cache"
        ) from None
    except (HfHubHTTPError, OSError) as exc:
        raise CheckpointError(f"--model {repo_id}: hub download failed: {exc}") from None


def model_kind(path: Path) -> ModelKind:
    """Which of our folder kinds ``path`` is, from the JSON it holds."""
    for marker, kind in KIND_MARKERS:
        if (path / marker).is_file():
            return kind
    raise ConfigError(f"{path} holds no config.json (nor quant_config.json / export_config.json / engine_config.json)")


def load_config(path: Path) -> MambaConfig:
    """The model config of any folder kind: an fp checkpoint's config.json (either layout), or the one recorded
    in a quantized artifact's quant_config.json or an export folder's export_config.json."""
    kind = model_kind(path)
    if kind == "quantized":
        from edge_quamba.quant.artifact import read_quant_config

        return read_quant_config(path)[0]
    if kind == "export":
        from edge_quamba.onnx.folder import read_export_config

        return read_export_config(path)[0]
    if kind == "engine":
        from edge_quamba.runtime.tensorrt_engine import read_engine_config

        return MambaConfig.from_dict(read_engine_config(path)["model_config"])
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ConfigError(f"{path} holds no config.json")
    return parse_model_config(read_json(config_file), str(config_file))


def _load_safetensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{file} is not a readable safetensors file: {exc}") from None


def _load_torch_bin(file: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many unrelated types (UnpicklingError, RuntimeError, EOFError, ...)
        raise CheckpointError(f"{file} is not a readable PyTorch weights file: {exc}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{file} does not hold a state dict")
    return state


def _load_sharded(index_file: Path, loader) -> dict[str, torch.Tensor]:
    index = read_json(index_file)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{index_file} has no weight_map")
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        shard_file = index_file.parent / shard
        if not shard_file.is_file():
            raise CheckpointError(f"{index_file} names the shard {shard}, which is missing")
        state.update(loader(shard_file))
    return state


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint folder, from the first weights format found (safetensors preferred)."""
    candidates = (
        ("model.safetensors", _load_safetensors),
        ("model.safetensors.index.json", lambda f: _load_sharded(f, _load_safetensors)),
        ("pytorch_model.bin", _load_torch_bin),
        ("pytorch_model.bin.index.json", lambda f: _load_sharded(f, _load_torch_bin)),
    )
    for name, loader in candidates:
        if (path / name).is_file():
            return loader(path / name)
    raise CheckpointError(
        f"{path} holds no weights (model.safetensors, sharded safetensors or pytorch_model.bin)"
    )


def to_reference_keys(state: dict[str, torch.Tensor], config: MambaConfig, layout: str) -> dict[str, torch.Tensor]:
    """Rename checkpoint keys to the reference module's names and drop a tied lm_head."""
    renamed = {}
    for key, tensor in state.items():
        if layout == "mamba_ssm":
            key = key.replace("backbone.embedding.", "backbone.embeddings.")
        renamed[key] = tensor
    if config.tie_embeddings:
        renamed.pop("lm_head.weight", None)
    return renamed


def check_finite(state: dict[str, torch.Tensor], source: Path) -> None:
    for key, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"{source}: weight {key} holds NaN or Inf values")


def load_fp_model(path: Path, dtype: torch.dtype = torch.float32) -> MambaLM:
    """Build the fp reference model from a checkpoint folder (either layout), in ``dtype``, in eval mode."""
    config = load_config(path)
    layout = checkpoint_layout(json.loads((path / "config.json").read_text(encoding="utf-8")))
    state = to_reference_keys(read_state_dict(path), config, layout)
    check_finite(state, path)
    model = MambaLM(config, dtype=dtype)
    expected = model.state_dict()
    if config.tie_embeddings:
        expected.pop("lm_head.weight")
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise CheckpointError(f"{path}: weights do not match config.json ({detail})")
    for key, tensor in state.items():
        if tensor.shape != expected[key].shape:
            raise CheckpointError(
                f"{path}: weight {key} has shape {tuple(tensor.shape)}, config.json implies {tuple(expected[key].shape)}"
            )
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=False)
    return model.eval()
