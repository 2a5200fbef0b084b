"""The opener: ``--model`` (a folder, a hub id, a shipped demo model's name, or None) -> one verified, typed
:class:`ModelFolder`. Every command opens its model here once; backends and loaders take the ModelFolder and read
none of its JSON again, nor hash anything again.

    open_model(model)
      resolve    a folder, a demo model's name or a hub id -> a local folder            (models/locate.py)
      classify   by the marker JSON it holds (kinds.py), never by its name
      parse      config.json / quant_config.json / export_config.json / engine_config.json -> typed values, once;
                 an export's reference (quantized/ or fp/) is parsed with it
      check      the caller's refusals that need only the kind and the configs (a backend that cannot run this
                 kind, options that do not apply): before anything is hashed
      verify     the cheap checks of everything first: each JSON's seal; every listed file present and a regular
                 file; every safetensors file's size against its header, and its tensors (names, shapes, dtypes)
                 against the config; then the sha256 of every listed file (and of an engine's plugin library)

So a damaged folder costs the time of its first failed check: a 40 GB weights file that is truncated, padded, or
whose header disagrees with the config is refused before any byte of it is hashed. The tensors-against-config check
builds the model tree on torch's meta device; where PyTorch is not installed (a Jetson's slim image, which runs
engine folders) nothing in the process could load those weights, so only their sizes and hashes are checked.

Layering: above ``models/``, ``quant/config.py`` and the kinds (plain data, :mod:`edge_quamba.kinds`), below the
commands (``runtime/run.py``, ``runtime/bench.py``, ``eval/``, ``quant/pipeline.py``, ``onnx/export.py``, ``serve/``,
``runtime/tensorrt_engine.py``) and the backends. The torch-heavy modules it calls (the weights' header checks, the
model loaders) are imported inside the functions that use them: ``--backend tensorrt`` runs without PyTorch.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from edge_quamba.errors import BackendUnavailableError, CheckpointError, ConfigError, InputError
from edge_quamba.integrity import check_listed_file, check_seal, check_sha256, file_sha256, listed_files
from edge_quamba.kinds import (ENGINE, ENGINE_FORMAT_VERSION, EXPORT, EXPORT_FORMAT_VERSION, FP,
                               FP32_GRAPH, FP_CONFIG, FP_DIR, OUTPUT_KINDS, QUANT_CONFIG, QUANTIZED, QUANTIZED_DIR,
                               QUANTIZED_GRAPH, TARGET_FILES, WEIGHTS, OutputKind)
from edge_quamba.models.config import ModelConfig, read_json
from edge_quamba.models.config_dispatch import model_config_from_dict
from edge_quamba.models.locate import FpCheckpoint, checkpoint_header, read_fp_checkpoint, resolve_model
from edge_quamba.models.tokenizer import TextTokenizer, load_tokenizer
from edge_quamba.paths import require_regular_file
from edge_quamba.quant.config import QuantConfig
from edge_quamba.safetensors_header import read_header

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class ExportRecord:
    """What export_config.json says beyond the model config that a reader of the folder needs: which graph
    (``FP32_GRAPH`` or ``QUANTIZED_GRAPH``) and the targets written (ort, tensorrt)."""

    graph: str
    targets: tuple[str, ...]


@dataclass(frozen=True)
class EngineRecord:
    """What engine_config.json says beyond the model config: the TensorRT version it was built with, and the plugin
    library (path, sha256 at build time, the creators it must register)."""

    tensorrt: str
    plugin_library: Path
    plugin_sha256: str
    plugin_creators: tuple[dict, ...]


@dataclass(frozen=True)
class ModelFolder:
    """An opened model folder: where it is, its kind ("fp", "quantized", "export", "engine"), its model config, and
    per kind what its JSON says, parsed:

    record       the marker JSON as read and verified (None for fp)
    checkpoint   fp: config.json parsed, with the layout its weight names follow
    quant        quantized: the quantization config (an export's is its reference's)
    reference    export: the folder its graph was validated against, opened with it: quantized/ (a quantized
                 ModelFolder) or, for an fp32 graph, fp/ (an fp one)
    export       export: which graph, the targets written
    engine       engine: TensorRT version, plugin library
    """

    path: Path
    kind: str
    config: ModelConfig
    record: dict | None = None
    checkpoint: FpCheckpoint | None = None
    quant: QuantConfig | None = None
    reference: ModelFolder | None = None
    export: ExportRecord | None = None
    engine: EngineRecord | None = None

    @property
    def fp32_export(self) -> bool:
        """An export folder of an fp32 graph (its reference is fp/, an fp checkpoint; no quantized model)."""
        return self.export is not None and self.export.graph == FP32_GRAPH

    def onnx_file(self, target: str) -> Path:
        """The ONNX file of ``target`` ("ort" or "tensorrt"); CheckpointError when this export did not write it."""
        name = TARGET_FILES[target]
        if self.export is None or name not in self.record["files"]:
            written = ",".join(self.export.targets) if self.export else "none"
            raise CheckpointError(f"{self.path} holds no {name}: it was exported with --target {written}; re-export "
                                  f"with --target {target} or all")
        return self.path / name


Check = Callable[[ModelFolder], None]
"""A caller's refusal, run on the parsed folder before its files are verified (it raises a one-line error)."""


def open_model(model: str | None, option: str = "--model", check: Check | None = None) -> ModelFolder:
    """Resolve ``--model`` (a folder, a demo model's name, a hub id, or None for the demo model) and open it
    (:func:`open_folder`). option: the flag the user typed, named in errors (the lm-eval adapter passes
    "--model_args path=")."""
    return open_folder(resolve_model(model, option), check)


def open_folder(path: Path, check: Check | None = None) -> ModelFolder:
    """Classify, parse, ``check`` and verify the model folder ``path`` (the module docstring's order)."""
    folder = parse_folder(path)
    if check is not None:
        check(folder)
    verify(folder)
    return folder


# -- classify and parse ------------------------------------------------------------------------------------------

def read_marker(path: Path) -> tuple[OutputKind, dict] | None:
    """(kind, its marker JSON) when ``path`` is an edge-quamba output, None when it holds no marker JSON. A marker
    JSON whose ``kind`` is not the one its name promises is a ConfigError (damaged or foreign)."""
    for kind in OUTPUT_KINDS.values():
        file = path / kind.config_file
        if file.exists() or file.is_symlink():  # read_json says what a FIFO or a broken link is
            raw = read_json(file)
            if raw.get("kind") != kind.kind:
                raise ConfigError(f"{file}: kind is {raw.get('kind')!r}, expected {kind.kind!r}")
            return kind, raw
    return None


def parse_folder(path: Path) -> ModelFolder:
    """The folder's kind and its JSON parsed into a ModelFolder: nothing verified yet (:func:`verify`)."""
    marker = read_marker(path)
    if marker is None:
        config_file = path / FP_CONFIG
        if not (config_file.exists() or config_file.is_symlink()):
            names = ", ".join(k.config_file for k in OUTPUT_KINDS.values())
            raise ConfigError(f"{path} holds no {FP_CONFIG} (nor {names})")
        require_regular_file(config_file, str(config_file), ConfigError)
        checkpoint = read_fp_checkpoint(path)
        return ModelFolder(path, FP, checkpoint.config, checkpoint=checkpoint)
    kind, raw = marker
    parse = {QUANTIZED.name: _parse_quantized, EXPORT.name: _parse_export, ENGINE.name: _parse_engine}[kind.name]
    return parse(path, raw)


def _require_keys(raw: dict, source: Path, *keys: str) -> None:
    for key in keys:
        if not isinstance(raw.get(key), dict):
            raise ConfigError(f"{source} is missing the required key {key!r}")


def _parse_quantized(path: Path, raw: dict) -> ModelFolder:
    source = path / QUANT_CONFIG
    _require_keys(raw, source, "model_config", "quantization")
    config = model_config_from_dict(raw["model_config"], str(source))
    try:
        qconfig = QuantConfig.from_dict(raw["quantization"])
    except (TypeError, ValueError) as exc:  # a value of the wrong JSON type reached the dataclass
        raise ConfigError(f"{source}: bad quantization config: {exc}") from None
    return ModelFolder(path, QUANTIZED.name, config, raw, quant=qconfig)


def _parse_export(path: Path, raw: dict) -> ModelFolder:
    source = path / EXPORT.config_file
    if raw.get("format_version") != EXPORT_FORMAT_VERSION:
        raise ConfigError(f"{source}: export format {raw.get('format_version')!r} is not {EXPORT_FORMAT_VERSION} "
                          f"(re-export with this version of edge-quamba)")
    _require_keys(raw, source, "model_config", "files")
    graph = raw.get("graph", QUANTIZED_GRAPH)
    targets = raw.get("targets", [])
    if graph not in (FP32_GRAPH, QUANTIZED_GRAPH) or not isinstance(targets, list) or \
            not all(isinstance(t, str) and t in TARGET_FILES for t in targets):
        raise ConfigError(f"{source} names a graph or targets edge-quamba does not write; {EXPORT.remedy}")
    if graph == FP32_GRAPH:  # the fp checkpoint in fp/
        checkpoint = read_fp_checkpoint(path / FP_DIR)
        reference = ModelFolder(checkpoint.path, FP, checkpoint.config, checkpoint=checkpoint)
    else:
        marker = read_marker(path / QUANTIZED_DIR)
        if marker is None or marker[0] is not QUANTIZED:
            raise ConfigError(f"{path / QUANTIZED_DIR} holds no quantized artifact ({QUANT_CONFIG}); {EXPORT.remedy}")
        reference = _parse_quantized(path / QUANTIZED_DIR, marker[1])
    config = model_config_from_dict(raw["model_config"], str(source))
    return ModelFolder(path, EXPORT.name, config, raw, reference=reference,
                       export=ExportRecord(graph, tuple(targets)))


def _parse_engine(path: Path, raw: dict) -> ModelFolder:
    source = path / ENGINE.config_file
    if raw.get("format_version") != ENGINE_FORMAT_VERSION:
        raise ConfigError(f"{source}: engine format {raw.get('format_version')!r} is not {ENGINE_FORMAT_VERSION}")
    plugins = raw.get("plugins")
    if not (isinstance(raw.get("model_config"), dict) and isinstance(raw.get("tensorrt"), str)
            and isinstance(plugins, dict) and isinstance(plugins.get("library"), str)
            and isinstance(plugins.get("sha256"), str) and isinstance(plugins.get("creators"), list)
            and all(isinstance(c, dict) for c in plugins["creators"])):
        raise ConfigError(f"{source} lacks the model config, the TensorRT version or the plugin library record; "
                          f"{ENGINE.remedy}")
    engine = EngineRecord(raw["tensorrt"], Path(plugins["library"]), plugins["sha256"], tuple(plugins["creators"]))
    return ModelFolder(path, ENGINE.name, model_config_from_dict(raw["model_config"], str(source)), raw,
                       engine=engine)


# -- verify: cheap checks of everything, then hashes ---------------------------------------------------------------

def verify(folder: ModelFolder) -> None:
    """Seals, listed files, weights' sizes and tensors (cheap), then every sha256 (see the module docstring)."""
    sealed = [f for f in (folder, folder.reference) if f is not None and f.record is not None]
    digests: dict[tuple[Path, str], tuple[Path, str]] = {}  # (file, recorded sha256) -> (the JSON recording it, remedy)
    for part in sealed:  # an export's quantized/ files are listed twice, with the same sha256: hashed once
        kind = OUTPUT_KINDS[part.kind]
        source = part.path / kind.config_file
        check_seal(part.record, source)
        for name, digest in listed_files(part.record, source).items():
            check_listed_file(part.path / name, source, kind.remedy)
            digests.setdefault((part.path / name, digest), (source, kind.remedy))
    if folder.engine is not None:
        _check_plugin_library(folder.engine)
    for part in (folder, folder.reference):
        if part is not None and part.kind in (FP, QUANTIZED.name):
            _check_weights(part)
    for (file, digest), (source, remedy) in digests.items():
        check_sha256(file, digest, source, remedy)
    if folder.engine is not None:
        _check_plugin_sha256(folder.engine)


def _check_weights(folder: ModelFolder) -> None:
    """The weights' sizes against their headers (no torch), then their tensors against the config (on torch's meta
    device, where PyTorch is installed)."""
    header = read_header(folder.path / WEIGHTS) if folder.kind == QUANTIZED.name else checkpoint_header(folder.path)
    if header is None or not _torch_installed():  # pytorch_model.bin: its shapes are checked when it is read
        return
    if folder.kind == QUANTIZED.name:
        from edge_quamba.quant.artifact import check_artifact_header

        check_artifact_header(header, folder.config, folder.quant, folder.path / WEIGHTS)
    else:
        from edge_quamba.models.loading import check_fp_header

        check_fp_header(folder.checkpoint, header)


def _torch_installed() -> bool:
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):  # a finder that refuses torch outright
        return False


def _check_plugin_library(engine: EngineRecord) -> None:
    if not engine.plugin_library.is_file():
        raise InputError(f"the TensorRT plugin library {engine.plugin_library} is not a file (build it: "
                         f"plugins/tensorrt/README.md)")


def _check_plugin_sha256(engine: EngineRecord) -> None:
    """The library an engine was built with, unchanged (other kernels than the engine was validated with are
    refused before TensorRT loads them)."""
    if file_sha256(engine.plugin_library) != engine.plugin_sha256:
        raise CheckpointError(f"the TensorRT plugin library {engine.plugin_library} does not match the sha256 "
                              f"recorded in {ENGINE.config_file} (rebuilt or swapped since the engine was built); "
                              f"rebuild the engine with `edge-quamba build-engine`")


# -- what commands build from an opened folder -------------------------------------------------------------------

def load_model_tokenizer(folder: ModelFolder, override: str | None = None,
                         option: str = "--tokenizer") -> TextTokenizer:
    """The folder's tokenizer (or ``--tokenizer``, named ``option`` in errors), checked against the model's
    vocabulary."""
    return load_tokenizer(folder.path, override, eos_token_id=folder.config.eos_token_id,
                          model_vocab_size=folder.config.vocab_size, option=option)


def load_reference_model(folder: ModelFolder, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """The PyTorch reference of an opened folder: the fp model (``dtype``, float32 when None), or the quantized
    reference (an export folder: its reference, the exact model its graph was validated against)."""
    import torch

    part = folder.reference if folder.kind == EXPORT.name else folder
    if part.kind == FP:
        from edge_quamba.models.loading import load_fp_model

        return load_fp_model(part.checkpoint, dtype=torch.float32 if dtype is None else dtype)
    if part.kind == QUANTIZED.name:
        from edge_quamba.quant.artifact import load_artifact_model

        return load_artifact_model(part.path / WEIGHTS, part.config, part.quant)
    raise BackendUnavailableError(f"--backend ref cannot run a {folder.kind} folder ({folder.path})")


def load_quantized_model(path: Path) -> torch.nn.Module:
    """Open the artifact folder ``path`` and build its quantized reference (scripts and tests; a command opens its
    folder once with :func:`open_model` and calls :func:`load_reference_model`)."""
    folder = open_folder(Path(path))
    if folder.kind != QUANTIZED.name:
        raise ConfigError(f"{path} is a {folder.kind} folder, not a quantized artifact")
    return load_reference_model(folder)
