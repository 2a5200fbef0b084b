"""The export folder's format, and its writer (the opener, :mod:`edge_quamba.folders`, reads it; names of its files:
:mod:`edge_quamba.kinds`).

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

from edge_quamba.integrity import seal
from edge_quamba.kinds import EXPORT_CONFIG


def write_export_config(folder: Path, config: dict) -> Path:
    """Write export_config.json, sealed (its config_sha256 covers everything else in it)."""
    path = folder / EXPORT_CONFIG
    path.write_text(json.dumps(seal(config), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path
