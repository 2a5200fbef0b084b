"""TensorRT engine folders: ``edge-quamba build-engine``, the engine folder's JSON, and the plugin library.

NEVER RUN WITH TENSORRT: no machine this package is developed or tested on has TensorRT (no Jetson, no TensorRT
wheel). This follows the TensorRT 10.3 Python API (names checked against NVIDIA/TensorRT v10.3.0
python/src/infer/pyCore.cpp and the 10.3 headers) and is tested on CPU with a fake ``tensorrt`` module
(tests/fakes/tensorrt) that keeps those names: what the tests show is the order of the calls, the checks before
TensorRT is touched and the files written, not that TensorRT accepts the graph. The plugins it loads are tested
separately, without TensorRT's libraries, by plugins/tensorrt/tests (see plugins/tensorrt/README.md).

The engine folder:

    engine_config.json   kind "edge-quamba/engine", format version, TensorRT version, the model config, the export
                         folder it came from (and the sha256 of its model.trt.onnx), the plugin library (path,
                         sha256, the creators it must register), the optimization profiles, ``files`` (sha256 of
                         engine.plan and tokenizer.json) and its own seal (:mod:`edge_quamba.integrity`)
    engine.plan          the serialized engine: one engine, two optimization profiles
                         (0: decode, l = 1; 1: prefill, 1 <= l <= max_prompt_len), batch 1
    tokenizer.json       copied from the export folder

build-engine checks everything it can before TensorRT is imported: that TensorRT is installed at all (a module
lookup, no import), the export folder (opened once: export_config.json's seal and the sha256 of every file it lists,
model.trt.onnx included: :func:`edge_quamba.folders.open_model`), the plugin library's path, and ``--out``
(:func:`edge_quamba.atomic.atomic_output_dir`: not the model folder nor inside it, not a foreign non-empty folder,
writable: its temporary sibling is made before the build starts). A damaged export or an unusable ``--out`` is a
one-line error without a TensorRT builder ever being made.

Network: ``model.trt.onnx`` of an export folder (custom ops as IPluginV3 plugin nodes; float16 embedding table and
lm_head, whose output ``last_logits`` (b, v) float16 covers the last position only), parsed into a strongly typed
network (kSTRONGLY_TYPED: the graph's own int8/fp16/fp32 types decide precision; it is required for int8 tensors at the
plugin boundaries, and always on in TensorRT 11). States go in and out as separate tensors (conv_state.i ->
conv_state_out.i, ...). The plugins the library must register are the op specs with a TensorRT plugin
(:data:`edge_quamba.ops.specs.PLUGIN_SPECS`), recorded in engine_config.json; the runtime is
:mod:`edge_quamba.runtime.tensorrt_backend`.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

from edge_quamba.atomic import atomic_output_dir
from edge_quamba.errors import BackendUnavailableError, CheckpointError, InputError
from edge_quamba.folders import ModelFolder, open_model
from edge_quamba.integrity import file_sha256, seal
from edge_quamba.kinds import ENGINE, ENGINE_CONFIG, ENGINE_FILE, ENGINE_FORMAT_VERSION, EXPORT, TOKENIZER, TRT_MODEL

MIN_TENSORRT = (10, 1)
"""int8 constants feeding an IPluginV3 failed to build in TensorRT 10.0, and the runtime uses 10.1's
set_device_memory(memory, size) / device_memory_size_v2; JetPack 6.1 ships 10.3."""
DECODE_PROFILE, PREFILL_PROFILE = 0, 1
NOT_INSTALLED = ("TensorRT is not installed here (Python package `tensorrt`, >= 10.1): build-engine and --backend "
                 "tensorrt run on a Jetson with JetPack 6.1+ or a machine with TensorRT (jetson/README.md)")


def require_tensorrt_installed() -> None:
    """The one-line error where the ``tensorrt`` package is absent, found without importing it."""
    if importlib.util.find_spec("tensorrt") is None:
        raise BackendUnavailableError(NOT_INSTALLED)


def import_tensorrt():
    """The ``tensorrt`` module, or a one-line BackendUnavailableError saying where it is needed."""
    try:
        import tensorrt
    except ImportError:
        raise BackendUnavailableError(NOT_INSTALLED) from None
    version = tuple(int(v) for v in tensorrt.__version__.split(".")[:2])
    if version < MIN_TENSORRT:
        raise BackendUnavailableError(f"TensorRT {tensorrt.__version__} is too old: edge-quamba needs >= "
                                      f"{'.'.join(map(str, MIN_TENSORRT))} (JetPack 6.1+)")
    return tensorrt


class Logger:
    """Collects TensorRT's warnings and errors so a failure can name the first error in one line."""

    def __init__(self, trt):
        class _Logger(trt.ILogger):
            def __init__(inner):
                trt.ILogger.__init__(inner)
                inner.errors = []

            def log(inner, severity, msg):
                if severity <= trt.ILogger.Severity.ERROR:
                    inner.errors.append(" ".join(str(msg).split()))

        self.logger = _Logger()

    def first_error(self) -> str:
        return self.logger.errors[0] if self.logger.errors else "no error message from TensorRT"


def required_creators() -> list[dict[str, str]]:
    """The plugin creators an edge-quamba engine needs: one per op spec with a TensorRT plugin (name, version,
    namespace as the graph's plugin nodes name them: :mod:`edge_quamba.ops.plugins`)."""
    from edge_quamba.ops.plugins import plugin_info
    from edge_quamba.ops.specs import PLUGIN_SPECS

    return [{"name": i.name, "version": i.version, "namespace": i.namespace}
            for i in map(plugin_info, PLUGIN_SPECS.values())]


def load_plugins(trt, log: Logger, library: Path, creators: list[dict[str, str]]):
    """Load the plugin library into TensorRT's registry and check that it registers every creator in ``creators``.
    An engine folder's library was verified against its recorded sha256 when the folder was opened
    (:func:`edge_quamba.folders.open_model`), so a rebuilt or swapped library never gets here."""
    if not library.is_file():
        raise InputError(f"the TensorRT plugin library {library} is not a file (build it: plugins/tensorrt/README.md)")
    trt.init_libnvinfer_plugins(log.logger, "")
    registry = trt.get_plugin_registry()
    if registry.load_library(str(library)) is None:
        raise BackendUnavailableError(f"TensorRT cannot load the plugin library {library}: {log.first_error()}")
    missing = [c["name"] for c in creators if registry.get_creator(c["name"], c["version"], c["namespace"]) is None]
    if missing:
        raise BackendUnavailableError(f"{library} does not register the plugins {missing}")
    return registry


def build_engine(*, model: str | None, out: str, plugins: str | None, max_prompt_len: int = 2048,
                 workspace_mib: int = 1024) -> Path:
    """Build ``out`` (an engine folder) from the export folder ``model``; see the module docstring."""
    def export_only(folder: ModelFolder) -> None:
        if folder.kind != EXPORT.name:
            raise InputError(f"--model {folder.path} is not an export folder: make one with "
                             f"`edge-quamba export --model {folder.path} --out DIR --target tensorrt`")
        folder.onnx_file("tensorrt")  # one line when this export wrote no TensorRT graph

    require_tensorrt_installed()
    source = open_model(model, check=export_only)  # every listed file's sha256, model.trt.onnx's too
    graph = source.onnx_file("tensorrt")
    if plugins is None:
        raise InputError("--plugins LIB is required: the path of libedge_quamba_trt_plugins.so "
                         "(plugins/tensorrt/README.md)")
    library = Path(plugins)
    if not library.is_file():
        raise InputError(f"--plugins {plugins} is not a file (build it: plugins/tensorrt/README.md)")
    creators = required_creators()
    prefill_lengths = [1, min(128, max_prompt_len), max_prompt_len]
    # --out is checked and its temporary sibling made here, before TensorRT is imported.
    with atomic_output_dir(out, [("--model", source.path), ("--plugins", library)]) as tmp:
        trt = import_tensorrt()
        log = Logger(trt)
        load_plugins(trt, log, library, creators)
        plan = _build_plan(trt, log, graph, source.config.n_layer, prefill_lengths, workspace_mib)
        (tmp / ENGINE_FILE).write_bytes(plan)
        shutil.copyfile(source.path / TOKENIZER, tmp / TOKENIZER)
        engine_config = {
            "kind": ENGINE.kind, "format_version": ENGINE_FORMAT_VERSION, "tensorrt": trt.__version__,
            "model_config": source.record["model_config"],
            "source": {"export_folder": str(source.path.resolve()),
                       "model.trt.onnx_sha256": source.record["files"][TRT_MODEL]},
            "plugins": {"library": str(library.resolve()), "sha256": file_sha256(library), "creators": creators},
            "profiles": {"decode": {"index": DECODE_PROFILE, "seq_len": [1, 1, 1]},
                         "prefill": {"index": PREFILL_PROFILE, "seq_len": prefill_lengths}},
            "strongly_typed": True, "batch": 1,
            "files": {ENGINE_FILE: file_sha256(tmp / ENGINE_FILE), TOKENIZER: file_sha256(tmp / TOKENIZER)},
        }
        (tmp / ENGINE_CONFIG).write_text(json.dumps(seal(engine_config), indent=2, sort_keys=True) + "\n",
                                         encoding="utf-8")
    return Path(out)


def _build_plan(trt, log: Logger, graph: Path, n_layer: int, prefill_lengths: list[int], workspace_mib: int) -> bytes:
    """Parse ``graph`` into a strongly typed network and build the serialized engine (decode profile, then
    prefill: input_ids (1, l); every state input fixed at batch 1)."""
    from edge_quamba.onnx import INPUT_IDS, state_names

    builder = trt.Builder(log.logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, log.logger)
    if not parser.parse_from_file(str(graph)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise CheckpointError(f"TensorRT cannot parse {graph}: {errors[0] if errors else log.first_error()}")
    builder_config = builder.create_builder_config()
    builder_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    inputs = {network.get_input(i).name: tuple(network.get_input(i).shape) for i in range(network.num_inputs)}
    state_in, _ = state_names(n_layer)
    for lengths in ([1, 1, 1], prefill_lengths):  # DECODE_PROFILE, then PREFILL_PROFILE
        profile = builder.create_optimization_profile()
        profile.set_shape(INPUT_IDS, *[(1, n) for n in lengths])
        for name in state_in:  # batch 1; the other dims are static
            fixed = (1, *inputs[name][1:])
            profile.set_shape(name, fixed, fixed, fixed)
        builder_config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, builder_config)
    if plan is None:
        raise CheckpointError(f"TensorRT could not build an engine from {graph}: {log.first_error()}")
    return bytes(plan)
