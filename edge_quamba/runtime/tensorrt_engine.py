"""TensorRT engine folders: ``edge-quamba build-engine`` and ``--backend tensorrt``.

NEVER RUN: TensorRT is not installed on any machine this package is developed or tested on (no Jetson, no TensorRT
wheel). Everything below follows the TensorRT 10.x Python API documentation and has only been checked for the
one-line error it gives where ``tensorrt`` cannot be imported. The plugins it loads are tested separately, without
TensorRT's libraries, by plugins/tensorrt/tests (see plugins/tensorrt/README.md for what ran where).

The engine folder:

    engine_config.json   kind "edge-quamba/engine", format version, TensorRT version, the model config, the export
                         folder it came from (and the sha256 of its model.trt.onnx), the plugin library (path,
                         sha256), the optimization profiles, the tensor names
    engine.plan          the serialized engine: one engine, two optimization profiles
                         (0: decode, l = 1; 1: prefill, 1 <= l <= max_prompt_len), batch 1
    tokenizer.json       copied from the export folder

Network: ``model.trt.onnx`` of an export folder (custom ops as IPluginV3 plugin nodes; float16 embedding table and
lm_head, whose output ``last_logits`` (b, v) float16 covers the last position only), parsed into a strongly typed
network (kSTRONGLY_TYPED: the graph's own int8/fp16/fp32 types decide precision; it is required for int8 tensors at the
plugin boundaries, and always on in TensorRT 11). States go in and out as separate tensors (conv_state.i ->
conv_state_out.i, ...); the backend ping-pongs two sets of buffers, so no plugin output aliases an input.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from edge_quamba.errors import BackendUnavailableError, CheckpointError, ConfigError, InputError

ENGINE_KIND = "edge-quamba/engine"
ENGINE_FORMAT_VERSION = 1
ENGINE_CONFIG = "engine_config.json"
ENGINE_FILE = "engine.plan"
MIN_TENSORRT = (10, 1)
"""int8 constants feeding an IPluginV3 failed to build in TensorRT 10.0; JetPack 6.1 ships 10.3."""
PLUGIN_NAMES = ("Int8CausalConv1d", "Int8SelectiveScan", "HadamardQuantize")
DECODE_PROFILE, PREFILL_PROFILE = 0, 1


def import_tensorrt():
    """The ``tensorrt`` module, or a one-line BackendUnavailableError saying where it is needed."""
    try:
        import tensorrt
    except ImportError:
        raise BackendUnavailableError(
            "TensorRT is not installed here (Python package `tensorrt`, >= 10.1): build-engine and --backend "
            "tensorrt run on a Jetson with JetPack 6.1+ or a machine with TensorRT (jetson/README.md)") from None
    version = tuple(int(v) for v in tensorrt.__version__.split(".")[:2])
    if version < MIN_TENSORRT:
        raise BackendUnavailableError(f"TensorRT {tensorrt.__version__} is too old: edge-quamba needs >= "
                                      f"{'.'.join(map(str, MIN_TENSORRT))} (JetPack 6.1+)")
    return tensorrt


class _Logger:
    """Collects TensorRT's warnings and errors so a failure can name the first error in one line."""

    def __init__(self, trt):
        class Logger(trt.ILogger):
            def __init__(inner):
                trt.ILogger.__init__(inner)
                inner.errors = []

            def log(inner, severity, msg):
                if severity <= trt.ILogger.Severity.ERROR:
                    inner.errors.append(" ".join(str(msg).split()))

        self.logger = Logger()

    def first_error(self) -> str:
        return self.logger.errors[0] if self.logger.errors else "no error message from TensorRT"


def load_plugins(trt, logger, plugins: Path):
    """Load the plugin library into TensorRT's registry and check that it provides every edge-quamba creator."""
    if not plugins.is_file():
        raise InputError(f"--plugins {plugins} is not a file (build it: plugins/tensorrt/README.md)")
    trt.init_libnvinfer_plugins(logger, "")
    registry = trt.get_plugin_registry()
    registry.load_library(str(plugins))
    missing = [name for name in PLUGIN_NAMES if registry.get_creator(name, "1", "") is None]
    if missing:
        raise BackendUnavailableError(f"{plugins} does not register the plugins {missing}")
    return registry


def build_engine(*, model: str | None, out: str, plugins: str | None, max_prompt_len: int = 2048,
                 workspace_mib: int = 1024) -> Path:
    """Build ``out`` (an engine folder) from the export folder ``model``; see the module docstring."""
    from edge_quamba.atomic import atomic_output_dir
    from edge_quamba.integrity import file_sha256 as sha256, seal
    from edge_quamba.folders import folder_kind
    from edge_quamba.models.loading import resolve_model
    from edge_quamba.onnx import INPUT_IDS, state_names
    from edge_quamba.onnx.folder import onnx_file, read_export_config

    trt = import_tensorrt()
    source = resolve_model(model)
    if folder_kind(source) != "export":
        raise InputError(f"--model {source} is not an export folder: make one with "
                         f"`edge-quamba export --model {source} --out DIR --target tensorrt`")
    if plugins is None:
        raise InputError("--plugins LIB is required: the path of libedge_quamba_trt_plugins.so "
                         "(plugins/tensorrt/README.md)")
    config, export_config = read_export_config(source)
    graph = onnx_file(source, "tensorrt")
    log = _Logger(trt)
    load_plugins(trt, log.logger, Path(plugins))

    builder = trt.Builder(log.logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, log.logger)
    if not parser.parse_from_file(str(graph)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise CheckpointError(f"TensorRT cannot parse {graph}: {errors[0] if errors else log.first_error()}")

    builder_config = builder.create_builder_config()
    builder_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    state_in, _ = state_names(config.n_layer)
    for lengths in ((1, 1, 1), (1, min(128, max_prompt_len), max_prompt_len)):  # decode, then prefill
        profile = builder.create_optimization_profile()
        profile.set_shape(INPUT_IDS, *[(1, n) for n in lengths])
        for name in state_in:  # batch 1; the other dims are static
            shape = tuple(network.get_input(i).shape for i in range(network.num_inputs)
                          if network.get_input(i).name == name)[0]
            fixed = (1, *shape[1:])
            profile.set_shape(name, fixed, fixed, fixed)
        builder_config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, builder_config)
    if plan is None:
        raise CheckpointError(f"TensorRT could not build an engine from {graph}: {log.first_error()}")

    target = Path(out)
    with atomic_output_dir(target, [("--model", source), ("--plugins", Path(plugins))]) as tmp:
        (tmp / ENGINE_FILE).write_bytes(bytes(plan))
        shutil.copyfile(source / "tokenizer.json", tmp / "tokenizer.json")
        engine_config = {
            "kind": ENGINE_KIND, "format_version": ENGINE_FORMAT_VERSION, "tensorrt": trt.__version__,
            "model_config": export_config["model_config"],
            "source": {"export_folder": str(source.resolve()), "model.trt.onnx_sha256": sha256(graph)},
            "plugins": {"library": str(Path(plugins).resolve()), "sha256": sha256(Path(plugins))},
            "profiles": {"decode": {"index": DECODE_PROFILE, "seq_len": [1, 1, 1]},
                         "prefill": {"index": PREFILL_PROFILE, "seq_len": [1, min(128, max_prompt_len),
                                                                           max_prompt_len]}},
            "strongly_typed": True, "batch": 1,
            "files": {ENGINE_FILE: sha256(tmp / ENGINE_FILE), "tokenizer.json": sha256(tmp / "tokenizer.json")},
        }
        (tmp / ENGINE_CONFIG).write_text(json.dumps(seal(engine_config), indent=2, sort_keys=True) + "\n",
                                         encoding="utf-8")
    return target


def read_engine_config(folder: Path) -> dict:
    from edge_quamba.models.config import read_json

    path = folder / ENGINE_CONFIG
    raw = read_json(path)
    if raw.get("kind") != ENGINE_KIND:
        raise ConfigError(f"{path}: kind is {raw.get('kind')!r}, expected {ENGINE_KIND!r}")
    if raw.get("format_version") != ENGINE_FORMAT_VERSION:
        raise ConfigError(f"{path}: engine format {raw.get('format_version')!r} is not {ENGINE_FORMAT_VERSION}")
    return raw


class TensorRTBackend:
    """Batch-1 prefill/decode over an engine folder (NEVER RUN, see the module docstring).

    Profile 0 serves decode (l = 1), profile 1 prefill; each has its own execution context. States live in torch
    CUDA tensors and ping-pong between two sets: the engine reads set A and writes set B, then the roles swap.
    """

    name = "tensorrt"

    def __init__(self, folder: Path):
        import torch

        from edge_quamba.models.config import MambaConfig
        from edge_quamba.onnx import INPUT_IDS, LAST_LOGITS, state_names

        trt = import_tensorrt()
        if not torch.cuda.is_available():
            raise BackendUnavailableError("--backend tensorrt needs an NVIDIA GPU and this machine has none")
        raw = read_engine_config(folder)
        self.config = MambaConfig.from_dict(raw["model_config"])
        log = _Logger(trt)
        load_plugins(trt, log.logger, Path(raw["plugins"]["library"]))
        self.engine = trt.Runtime(log.logger).deserialize_cuda_engine((folder / ENGINE_FILE).read_bytes())
        if self.engine is None:
            raise CheckpointError(f"{folder / ENGINE_FILE} does not deserialize: {log.first_error()}")
        self.contexts = {}
        self.stream = torch.cuda.Stream()
        for name, profile in (("decode", DECODE_PROFILE), ("prefill", PREFILL_PROFILE)):
            context = self.engine.create_execution_context()
            context.set_optimization_profile_async(profile, self.stream.cuda_stream)
            self.contexts[name] = context
        self.torch, self.input_ids, self.logits = torch, INPUT_IDS, LAST_LOGITS
        self.state_in, self.state_out = state_names(self.config.n_layer)

    def empty_states(self) -> list:
        c, torch = self.config, self.torch
        states = []
        for _ in range(self.config.n_layer):
            states.append(torch.zeros(1, c.d_inner, c.d_conv, dtype=torch.int8, device="cuda"))
            states.append(torch.zeros(1, c.d_inner, c.d_state, dtype=torch.float32, device="cuda"))
        return states

    def _run(self, which: str, tokens: list[int], states: list):
        torch = self.torch
        context = self.contexts[which]
        ids = torch.tensor([tokens], dtype=torch.int64, device="cuda")
        logits = torch.empty(1, self.config.vocab_size, dtype=torch.float16, device="cuda")  # last position only
        new_states = [torch.empty_like(s) for s in states]  # the other set of the ping-pong
        context.set_input_shape(self.input_ids, tuple(ids.shape))
        context.set_tensor_address(self.input_ids, ids.data_ptr())
        context.set_tensor_address(self.logits, logits.data_ptr())
        for name_in, name_out, old, new in zip(self.state_in, self.state_out, states, new_states, strict=True):
            context.set_input_shape(name_in, tuple(old.shape))
            context.set_tensor_address(name_in, old.data_ptr())
            context.set_tensor_address(name_out, new.data_ptr())
        if not context.execute_async_v3(self.stream.cuda_stream):
            raise BackendUnavailableError(f"TensorRT {which} failed (enqueueV3 returned false)")
        self.stream.synchronize()
        return logits[0].float().cpu(), new_states

    def prefill(self, tokens: list[int]):
        return self._run("prefill", tokens, self.empty_states())

    def decode(self, token: int, states):
        return self._run("decode", [token], states)
