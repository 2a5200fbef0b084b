"""The quantized artifact folder: quant_config.json + model.safetensors + tokenizer.json.

quant_config.json says what the folder is (``kind``), its format version, the model config, every quantization
knob, the calibration data's hash and the package version. model.safetensors holds the quantized model's state
dict: int8 weights, float32 scales and small fp32 mixer tensors (A, D, dt_bias, biases), and the embeddings, norms
and lm_head in fp16. The same inputs give byte-identical files (sorted JSON, no timestamps, safetensors' fixed order).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from edge_quamba import __version__
from edge_quamba.errors import CheckpointError, ConfigError
from edge_quamba.models.config import MambaConfig, read_json
from edge_quamba.models.mamba import MambaLM
from edge_quamba.quant.qmodel import FLOAT_STORAGE_DTYPE, QuantConfig, QuantMambaMixer, empty_quantized_model

QUANT_KIND = "edge-quamba/quantized"
QUANT_CONFIG = "quant_config.json"
WEIGHTS = "model.safetensors"
TOKENIZER = "tokenizer.json"
ARTIFACT_FILES = (QUANT_CONFIG, WEIGHTS, TOKENIZER)
"""Every file of an artifact folder."""


def _storage_dtype(key: str, tensor: torch.Tensor) -> torch.Tensor:
    """Mixer tensors keep their dtype (int8 or float32); the float weights outside the mixers go to fp16."""
    return tensor if ".mixer." in key or not tensor.is_floating_point() else tensor.to(FLOAT_STORAGE_DTYPE)


def artifact_state_dict(model: MambaLM) -> dict[str, torch.Tensor]:
    state = {k: _storage_dtype(k, v).contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_embeddings:
        state.pop("lm_head.weight")  # the same tensor as the embeddings
    return state


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_artifact(folder: Path, model: MambaLM, qconfig: QuantConfig, calibration: dict, source: dict,
                   tokenizer_file: Path) -> None:
    """Write a complete artifact into ``folder`` (callers pass a temporary folder, see atomic_output_dir)."""
    # One metadata entry only: safetensors writes its metadata map in hash order, which varies between processes,
    # so a second key would make the file (and its sha256 in quant_config.json) differ from run to run.
    save_file(artifact_state_dict(model), str(folder / WEIGHTS), metadata={"format": "pt"})
    shutil.copyfile(tokenizer_file, folder / TOKENIZER)
    config = {
        "kind": QUANT_KIND,
        "format_version": qconfig.format_version,
        "package_version": __version__,
        "model_config": model.config.to_dict(),
        "quantization": qconfig.to_dict(),
        "calibration": calibration,
        "source": source,
        "files": {WEIGHTS: file_sha256(folder / WEIGHTS), TOKENIZER: file_sha256(folder / TOKENIZER)},
    }
    (folder / QUANT_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_quant_config(folder: Path) -> tuple[MambaConfig, QuantConfig, dict]:
    raw = read_json(folder / QUANT_CONFIG)
    if raw.get("kind") != QUANT_KIND:
        raise ConfigError(f"{folder / QUANT_CONFIG}: kind is {raw.get('kind')!r}, expected {QUANT_KIND!r}")
    for key in ("model_config", "quantization"):
        if not isinstance(raw.get(key), dict):
            raise ConfigError(f"{folder / QUANT_CONFIG} is missing the required key {key!r}")
    return MambaConfig.from_dict(raw["model_config"]), QuantConfig.from_dict(raw["quantization"]), raw


def load_quantized_model(folder: Path) -> MambaLM:
    """The quantized reference model stored in an artifact folder (float parts computed in float32)."""
    config, qconfig, _ = read_quant_config(folder)
    try:
        state = load_file(str(folder / WEIGHTS))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{folder / WEIGHTS} is not a readable safetensors file: {exc}") from None
    model = empty_quantized_model(config, qconfig)
    expected = artifact_state_dict(model)
    if set(state) != set(expected):
        diff = sorted(set(state) ^ set(expected))
        raise CheckpointError(f"{folder / WEIGHTS} does not match quant_config.json (tensors differ: {diff[:3]})")
    for key, tensor in state.items():
        want = expected[key]
        if tensor.shape != want.shape or tensor.dtype != want.dtype:
            raise CheckpointError(f"{folder / WEIGHTS}: {key} is {tensor.dtype}{tuple(tensor.shape)}, "
                                  f"expected {want.dtype}{tuple(want.shape)}")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"{folder / WEIGHTS}: {key} holds NaN or Inf values")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=False)
    return model


def mixers(model: MambaLM) -> list[QuantMambaMixer]:
    return [block.mixer for block in model.backbone.layers]
