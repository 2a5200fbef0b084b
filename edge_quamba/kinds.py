"""The four kinds of model folder and the names of the files in them: plain data, the lowest module of the package
(it imports nothing of ours), so that every writer (quant/artifact.py, onnx/export.py, runtime/tensorrt_engine.py),
the opener (:mod:`edge_quamba.folders`) and the output guard (:mod:`edge_quamba.atomic`) name files alike.

    kind       marker JSON          its "kind"               what the folder holds
    fp         config.json          (none of ours)           an fp checkpoint (Mamba1, Mamba2 or hybrid), transformers
                                                             or mamba_ssm layout
    quantized  quant_config.json    "edge-quamba/quantized"  the artifact: model.safetensors, tokenizer.json
    export     export_config.json   "edge-quamba/export"     model.onnx and/or model.trt.onnx, tokenizer.json, and the
                                                             reference its graph was validated against: quantized/ (an
                                                             artifact) or, for an fp32 graph, fp/ (an fp checkpoint)
    engine     engine_config.json   "edge-quamba/engine"     engine.plan, tokenizer.json (and the path of the TensorRT
                                                             plugin library it was built with)

A folder says what it is in its marker JSON, never in its name; the output kinds share one convention
(:mod:`edge_quamba.integrity`): ``kind``, ``format_version``, ``model_config``, ``files`` (every file written, relative
path -> sha256) and ``config_sha256`` (the seal of the JSON itself).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OutputKind:
    """A kind of folder that edge-quamba writes.

    name: the short name commands print ("quantized"); config_file: the marker JSON; kind: its ``kind`` value;
    remedy: what a user does when the folder is damaged.
    """

    name: str
    config_file: str
    kind: str
    remedy: str


FP = "fp"
FP_CONFIG = "config.json"
QUANTIZED = OutputKind("quantized", "quant_config.json", "edge-quamba/quantized",
                       "re-create it with `edge-quamba quantize`")
EXPORT = OutputKind("export", "export_config.json", "edge-quamba/export", "re-export it with `edge-quamba export`")
ENGINE = OutputKind("engine", "engine_config.json", "edge-quamba/engine",
                    "rebuild it with `edge-quamba build-engine`")
OUTPUT_KINDS: dict[str, OutputKind] = {k.name: k for k in (ENGINE, EXPORT, QUANTIZED)}
"""By name, in the order a folder is classified (an export folder also holds a quantized/ folder, an engine folder
may sit beside an export)."""
KINDS = (FP, *OUTPUT_KINDS)

# -- files shared by the kinds ----------------------------------------------------------------------------------------
WEIGHTS = "model.safetensors"
TOKENIZER = "tokenizer.json"

# -- the quantized artifact -------------------------------------------------------------------------------------------
QUANT_CONFIG = QUANTIZED.config_file
ARTIFACT_FILES = (QUANT_CONFIG, WEIGHTS, TOKENIZER)
"""Every file of an artifact folder."""

# -- the export folder ------------------------------------------------------------------------------------------------
EXPORT_CONFIG = EXPORT.config_file
EXPORT_FORMAT_VERSION = 2
"""2: model.trt.onnx returns last_logits (b, v) float16; validation is recorded per flavour."""
ORT_MODEL = "model.onnx"
TRT_MODEL = "model.trt.onnx"
TARGET_FILES = {"ort": ORT_MODEL, "tensorrt": TRT_MODEL}
"""ONNX file written for each --target."""
QUANTIZED_DIR = "quantized"
"""Where an export keeps the quantized artifact its graph was validated against."""
FP_DIR = "fp"
"""Where an fp32 export keeps its fp reference (an fp checkpoint folder)."""
FP_REFERENCE_FILES = (FP_CONFIG, WEIGHTS, TOKENIZER)
"""Every file of an fp32 export's fp/ folder."""
FP32_GRAPH, QUANTIZED_GRAPH = "fp32", "quantized"
"""Values of export_config.json's ``graph`` (folders written before the key existed have none: quantized)."""

# -- the engine folder ------------------------------------------------------------------------------------------------
ENGINE_CONFIG = ENGINE.config_file
ENGINE_FORMAT_VERSION = 1
ENGINE_FILE = "engine.plan"
