"""The quantized artifact folder: quant_config.json + model.safetensors + tokenizer.json (file names:
:mod:`edge_quamba.kinds`). Written here (:func:`write_artifact`); opened, parsed and verified by the opener
(:mod:`edge_quamba.folders`), which calls :func:`check_artifact_header` before it hashes anything and
:func:`load_artifact_model` to build the model.

quant_config.json says what the folder is (``kind``), its format version, the model config, every quantization
knob, the calibration data's hash, the package version, the sha256 of every other file (``files``) and its own seal
(``config_sha256``, :mod:`edge_quamba.integrity`). model.safetensors holds the quantized model's state dict: int8
weights, float32 scales and small fp32 mixer tensors (A, D, dt_bias, biases), and the embeddings, norms and lm_head in
fp16. The same inputs give byte-identical files (sorted JSON, no timestamps, safetensors' fixed order).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from edge_quamba import __version__
from edge_quamba.errors import CheckpointError
from edge_quamba.integrity import file_sha256, seal
from edge_quamba.kinds import QUANT_CONFIG, QUANTIZED, TOKENIZER, WEIGHTS
from edge_quamba.models.config import Mamba2Config, ModelConfig
from edge_quamba.models.hybrid_config import HybridConfig
from edge_quamba.models.loading import check_tensors
from edge_quamba.models.mamba import MambaLM
from edge_quamba.quant.config import QuantConfig
from edge_quamba.quant.hybrid_qmodel import empty_quantized_hybrid_model
from edge_quamba.quant.mamba2_qmodel import empty_quantized_mamba2_model
from edge_quamba.quant.qmodel import FLOAT_STORAGE_DTYPE, QuantMambaMixer, empty_quantized_model
from edge_quamba.safetensors_header import TensorInfo


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
    if isinstance(config, HybridConfig):
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
        "kind": QUANTIZED.kind,
        "format_version": qconfig.format_version,
        "package_version": __version__,
        "model_config": model.config.to_dict(),
        "quantization": qconfig.to_dict(),
        "calibration": calibration,
        "source": source,
        "files": {WEIGHTS: file_sha256(folder / WEIGHTS), TOKENIZER: file_sha256(folder / TOKENIZER)},
    }
    (folder / QUANT_CONFIG).write_text(json.dumps(seal(config), indent=2, sort_keys=True) + "\n", encoding="utf-8")


def check_artifact_header(header: dict[str, TensorInfo], config: ModelConfig, qconfig: QuantConfig,
                          weights: Path) -> None:
    """The artifact's weights header (names, shapes, dtypes) against what quant_config.json's model and quantization
    configs imply, built on the meta device (nothing allocated)."""
    check_tensors(header, lambda c: artifact_state_dict(empty_model(c, qconfig)), config, weights, QUANT_CONFIG,
                  check_dtypes=True)


def load_artifact_model(weights: Path, config: ModelConfig, qconfig: QuantConfig) -> MambaLM:
    """The quantized reference model of an opened artifact (float parts computed in float32): its weights read,
    checked finite, and loaded into :func:`empty_model`. The opener has verified the folder and checked the weights'
    header against the configs (:func:`edge_quamba.folders.load_reference_model` calls this)."""
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
