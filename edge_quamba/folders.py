"""What a model folder is, read from its own JSON (never from its name), and the loading dispatch on it.

    kind       marker JSON          its "kind"               what the folder holds
    fp         config.json          (none of ours)           an fp checkpoint (Mamba1 or Mamba2), transformers or
                                                             mamba_ssm layout
    quantized  quant_config.json    "edge-quamba/quantized"  the int8 artifact (edge_quamba.quant.artifact)
    export     export_config.json   "edge-quamba/export"     ONNX files + the artifact in quantized/ (onnx.folder)
    engine     engine_config.json   "edge-quamba/engine"     a TensorRT engine (reserved for `build-engine`)

The three output kinds share one convention (:mod:`edge_quamba.integrity`): the marker JSON has ``kind``,
``format_version``, ``model_config``, ``files`` (every file written, relative path -> sha256) and ``config_sha256``
(its own seal). :func:`open_model` verifies all of it before anything is allocated, so a changed, swapped or missing
file is a one-line error. :mod:`edge_quamba.atomic` replaces a folder only when it is one of these outputs.

Layering: this module sits above ``models/`` and the folder readers in ``quant/artifact.py``, ``onnx/folder.py`` and
``runtime/`` (they import only the table below, plain data; the loaders here import them lazily), and below the
commands (``runtime/run.py``, ``runtime/bench.py``, ``eval/``, ``quant/pipeline.py``, ``onnx/export.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edge_quamba.errors import BackendUnavailableError, ConfigError
from edge_quamba.integrity import verify_listed_files
from edge_quamba.models.config import ModelConfig, model_config_from_dict, read_json
from edge_quamba.models.locate import load_fp_config, resolve_model
from edge_quamba.models.tokenizer import TextTokenizer, load_tokenizer
from edge_quamba.paths import require_regular_file

if TYPE_CHECKING:
    import torch


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
"""By name, in the order :func:`output_record` looks for them (an export folder also holds a quantized/ folder,
an engine folder may hold an export)."""
KINDS = (FP, *OUTPUT_KINDS)


def output_record(path: Path) -> tuple[OutputKind, dict] | None:
    """(kind, its marker JSON) when ``path`` is an edge-quamba output, None when it holds no marker JSON.

    A marker JSON whose ``kind`` is not the one its name promises is a ConfigError (damaged or foreign)."""
    for kind in OUTPUT_KINDS.values():
        file = path / kind.config_file
        if file.exists() or file.is_symlink():  # read_json says what a FIFO or a broken link is
            raw = read_json(file)
            if raw.get("kind") != kind.kind:
                raise ConfigError(f"{file}: kind is {raw.get('kind')!r}, expected {kind.kind!r}")
            return kind, raw
    return None


def folder_kind(path: Path) -> str:
    """"fp", "quantized", "export" or "engine", from the JSON ``path`` holds."""
    record = output_record(path)
    if record is not None:
        return record[0].name
    if (path / FP_CONFIG).exists() or (path / FP_CONFIG).is_symlink():
        require_regular_file(path / FP_CONFIG, str(path / FP_CONFIG), ConfigError)
        return FP
    names = ", ".join(k.config_file for k in OUTPUT_KINDS.values())
    raise ConfigError(f"{path} holds no {FP_CONFIG} (nor {names})")


def verify_output(path: Path, kind: OutputKind, raw: dict) -> None:
    """The seal of ``raw`` and the sha256 of every file it lists (an export's quantized/ included)."""
    verify_listed_files(path, raw, path / kind.config_file, kind.remedy)


def output_model_config(path: Path, kind: OutputKind, raw: dict) -> ModelConfig:
    """The model config recorded in an output's marker JSON (each reader validates its own keys)."""
    if kind is QUANTIZED:
        from edge_quamba.quant.artifact import read_quant_config

        return read_quant_config(path)[0]
    if kind is EXPORT:
        from edge_quamba.onnx.folder import read_export_config

        return read_export_config(path)[0]
    if not isinstance(raw.get("model_config"), dict):
        raise ConfigError(f"{path / kind.config_file} is missing the required key 'model_config'")
    return model_config_from_dict(raw["model_config"], str(path / kind.config_file))


def load_config(path: Path) -> ModelConfig:
    """The model config of any folder kind (no file hashes checked: use :func:`open_model` to load a model)."""
    record = output_record(path)
    if record is None:
        return load_fp_config(path)
    return output_model_config(path, *record)


@dataclass(frozen=True)
class ModelFolder:
    """A verified model folder: where it is, its kind, its model config and its marker JSON (None for fp)."""

    path: Path
    kind: str
    config: ModelConfig
    record: dict | None = None


def open_model(model: str | None, option: str = "--model") -> ModelFolder:
    """Resolve ``--model`` (folder, hub id or None for the demo model), read its kind and config, and verify an
    output folder's files against their recorded sha256 (each file hashed once per process).

    option: the flag the user typed, named in errors (the lm-eval adapter passes "--model_args path").
    """
    path = resolve_model(model, option)
    record = output_record(path)
    if record is None:
        if not (path / FP_CONFIG).is_file():
            folder_kind(path)  # raises the one-line "holds no config.json" (or "is a FIFO ...") error
        return ModelFolder(path, FP, load_fp_config(path))
    kind, raw = record
    verify_output(path, kind, raw)
    return ModelFolder(path, kind.name, output_model_config(path, kind, raw), raw)


def load_model_tokenizer(folder: ModelFolder, override: str | None = None,
                         option: str = "--tokenizer") -> TextTokenizer:
    """The folder's tokenizer (or ``--tokenizer``, named ``option`` in errors), checked against the model's
    vocabulary."""
    return load_tokenizer(folder.path, override, eos_token_id=folder.config.eos_token_id,
                          model_vocab_size=folder.config.vocab_size, option=option)


def load_reference_model(path: Path, kind: str, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """The PyTorch reference for any folder kind: the fp model (``dtype``, float32 when None), or the quantized
    artifact (an export folder: the one in its quantized/, or an fp32 export's fp model in fp/: the exact model its
    graph was validated against)."""
    import torch

    if kind == EXPORT.name:
        from edge_quamba.onnx.folder import FP_DIR, is_fp32_export, read_export_config

        if is_fp32_export(read_export_config(path)[1]):
            path, kind = path / FP_DIR, FP
    if kind == FP:
        from edge_quamba.models.loading import load_fp_model

        return load_fp_model(path, dtype=torch.float32 if dtype is None else dtype)
    if kind in (QUANTIZED.name, EXPORT.name):
        from edge_quamba.onnx.folder import QUANTIZED_DIR
        from edge_quamba.quant.artifact import load_quantized_model

        return load_quantized_model(path if kind == QUANTIZED.name else path / QUANTIZED_DIR)
    raise BackendUnavailableError(f"--backend ref cannot run a {kind} folder ({path})")
