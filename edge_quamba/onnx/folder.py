"""The export folder: export_config.json, the ONNX files, the tokenizer, and the quantized artifact it came from.

    export_config.json   kind "edge-quamba/export", format version, package version, the model and quantization
                         configs, calibration and source records, ONNX opset / IR / custom-op versions, the targets
                         written, sha256 of every file (quantized/ included), the validation report (always passed:
                         an export whose validation fails is never moved into place, see
                         :mod:`edge_quamba.onnx.export`), and its own seal (:mod:`edge_quamba.integrity`)
    model.onnx           ORT flavour (custom ops carry function bodies)         when the target is ort or all
    model.trt.onnx       TensorRT flavour (plain plugin nodes)                   when the target is tensorrt or all
    tokenizer.json
    quantized/           the quantized artifact (quant_config.json, model.safetensors, tokenizer.json), so that
                         ``--backend ref`` and a later re-export rebuild the exact reference the graph was checked on

The fp32 graph of an fp checkpoint (``export --bits fp32``, :func:`edge_quamba.onnx.export.export_fp32_model`, the
CPU speed baseline) is an export folder too: export_config.json says ``"graph": "fp32"`` (``"quantization"`` null),
the target is ort only, and ``fp/`` replaces ``quantized/``: the float32 fp model the graph was validated against
(config.json as the checkpoint's, model.safetensors in float32 with the reference's tensor names, tokenizer.json),
itself an fp checkpoint folder. Exports of quantized models say ``"graph": "quantized"`` (folders written before
the key existed have none and are read as quantized).
"""

from __future__ import annotations

import json
from pathlib import Path

from edge_quamba.errors import CheckpointError, ConfigError
from edge_quamba.folders import EXPORT
from edge_quamba.integrity import missing_or_what, seal, verify_listed_files
from edge_quamba.models.config import ModelConfig, model_config_from_dict, read_json

EXPORT_KIND = EXPORT.kind
EXPORT_FORMAT_VERSION = 2
"""2: model.trt.onnx returns last_logits (b, v) float16; validation is recorded per flavour."""
EXPORT_CONFIG = EXPORT.config_file
ORT_MODEL = "model.onnx"
TRT_MODEL = "model.trt.onnx"
QUANTIZED_DIR = "quantized"
FP_DIR = "fp"
"""Where an fp32 export keeps its fp reference (an fp checkpoint folder)."""
FP32_GRAPH, QUANTIZED_GRAPH = "fp32", "quantized"
"""Values of export_config.json's ``graph``."""
TARGET_FILES = {"ort": ORT_MODEL, "tensorrt": TRT_MODEL}
"""ONNX file written for each --target."""


def write_export_config(folder: Path, config: dict) -> Path:
    """Write export_config.json, sealed (its config_sha256 covers everything else in it)."""
    path = folder / EXPORT_CONFIG
    path.write_text(json.dumps(seal(config), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def read_export_config(folder: Path) -> tuple[ModelConfig, dict]:
    """(model config, the whole export_config.json) of an export folder; ConfigError names what is wrong."""
    path = folder / EXPORT_CONFIG
    raw = read_json(path)
    if raw.get("kind") != EXPORT_KIND:
        raise ConfigError(f"{path}: kind is {raw.get('kind')!r}, expected {EXPORT_KIND!r}")
    if raw.get("format_version") != EXPORT_FORMAT_VERSION:
        raise ConfigError(f"{path}: export format {raw.get('format_version')!r} is not {EXPORT_FORMAT_VERSION} "
                          f"(re-export with this version of edge-quamba)")
    for key in ("model_config", "files"):
        if not isinstance(raw.get(key), dict):
            raise ConfigError(f"{path} is missing the required key {key!r}")
    return model_config_from_dict(raw["model_config"], str(path)), raw


def is_fp32_export(raw: dict) -> bool:
    """Whether export_config.json ``raw`` is that of an fp32 graph (its reference in fp/, not quantized/)."""
    return raw.get("graph", QUANTIZED_GRAPH) == FP32_GRAPH


def reference_dir(folder: Path, raw: dict) -> Path:
    """The folder holding the reference an export's graph was validated against: fp/ (an fp checkpoint) for an
    fp32 export, quantized/ (an artifact) otherwise."""
    return folder / (FP_DIR if is_fp32_export(raw) else QUANTIZED_DIR)


def verify_export(folder: Path) -> dict:
    """export_config.json's seal and the sha256 of every file it lists, quantized/ included (each file hashed once
    per process); returns export_config.json."""
    _, raw = read_export_config(folder)
    verify_listed_files(folder, raw, folder / EXPORT_CONFIG, EXPORT.remedy)
    return raw


def onnx_file(folder: Path, target: str) -> Path:
    """The ONNX file of ``target`` in an export folder; CheckpointError when this export did not write it."""
    _, raw = read_export_config(folder)
    name = TARGET_FILES[target]
    path = folder / name
    if name not in raw["files"]:
        raise CheckpointError(f"{folder} holds no {name}: it was exported with --target "
                              f"{','.join(raw.get('targets', []))}; re-export with --target {target} or all")
    if not path.is_file():
        raise CheckpointError(f"{path} {missing_or_what(path)} (export_config.json lists it); {EXPORT.remedy}")
    return path
