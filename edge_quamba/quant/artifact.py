"""The quantized artifact folder: quant_config.json + model.safetensors + tokenizer.json.

quant_config.json says what the folder is (``kind``), its format version, the model config, every quantization
knob, the calibration data's hash, the package version, the sha256 of every other file (``files``) and its own seal
(``config_sha256``, :mod:`edge_quamba.integrity`); :func:`load_quantized_model` checks them all. model.safetensors
holds the quantized model's state dict: int8 weights, float32 scales and small fp32 mixer tensors (A, D, dt_bias,
biases), and the embeddings, norms and lm_head in fp16. The same inputs give byte-identical files (sorted JSON, no timestamps, safetensors' fixed order).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from edge_quamba import __version__
from edge_quamba.errors import CheckpointError, ConfigError
from edge_quamba.folders import QUANTIZED
from edge_quamba.integrity import file_sha256, seal, verify_listed_files
from edge_quamba.models.config import Mamba2Config, ModelConfig, model_config_from_dict, read_json
from edge_quamba.models.loading import check_tensors, safetensors_header
from edge_quamba.models.mamba import MambaLM
from edge_quamba.quant.mamba2_qmodel import empty_quantized_mamba2_model
from edge_quamba.quant.qmodel import FLOAT_STORAGE_DTYPE, QuantConfig, QuantMambaMixer, empty_quantized_model

QUANT_KIND = QUANTIZED.kind
QUANT_CONFIG = QUANTIZED.config_file
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


def empty_model(config: ModelConfig, qconfig: QuantConfig) -> MambaLM:
    """The quantized module tree (placeholder values) for a model config and its quantization config."""
    from edge_quamba.models.hybrid_config import HybridConfig

    if isinstance(config, HybridConfig):
        from edge_quamba.quant.hybrid_qmodel import empty_quantized_hybrid_model

        return empty_quantized_hybrid_model(config, qconfig)
    if isinstance(config, Mamba2Config):
        return empty_quantized_mamba2_model(config, qconfig)
    return empty_quantized_model(config, qconfig)


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
    (folder / QUANT_CONFIG).write_text(json.dumps(seal(config), indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_quant_config(folder: Path) -> tuple[ModelConfig, QuantConfig, dict]:
    """(model config, quantization config, the whole quant_config.json); ConfigError names what is wrong. File
    hashes are not checked here (:func:`verify_artifact`)."""
    path = folder / QUANT_CONFIG
    raw = read_json(path)
    if raw.get("kind") != QUANT_KIND:
        raise ConfigError(f"{path}: kind is {raw.get('kind')!r}, expected {QUANT_KIND!r}")
    for key in ("model_config", "quantization"):
        if not isinstance(raw.get(key), dict):
            raise ConfigError(f"{path} is missing the required key {key!r}")
    config = model_config_from_dict(raw["model_config"], str(path))
    try:
        qconfig = QuantConfig.from_dict(raw["quantization"])
    except (TypeError, ValueError) as exc:  # a value of the wrong JSON type reached the dataclass
        raise ConfigError(f"{path}: bad quantization config: {exc}") from None
    return config, qconfig, raw


def verify_artifact(folder: Path, raw: dict) -> None:
    """quant_config.json's seal and the sha256 of every file it lists (hashed once per process)."""
    verify_listed_files(folder, raw, folder / QUANT_CONFIG, QUANTIZED.remedy)


def load_quantized_model(folder: Path) -> MambaLM:
    """The quantized reference model stored in an artifact folder (float parts computed in float32).

    Order: quant_config.json's seal and file hashes, then the weights' header against the config (names, shapes,
    dtypes), and only then the model is allocated and the tensors read."""
    config, qconfig, raw = read_quant_config(folder)
    verify_artifact(folder, raw)
    weights = folder / WEIGHTS
    check_tensors(safetensors_header(weights), lambda c: artifact_state_dict(empty_model(c, qconfig)),
                  config, weights, QUANT_CONFIG, check_dtypes=True)
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights} is not a readable safetensors file: {exc}") from None
    for key, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"{weights}: {key} holds NaN or Inf values")
    model = empty_model(config, qconfig)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=False)
    return model


def mixers(model: MambaLM) -> list[QuantMambaMixer]:
    return [block.mixer for block in model.backbone.layers]
