"""A fake of the ``tensorrt`` Python package (TensorRT 10.3) for CPU tests of build-engine and --backend tensorrt.

Only the names edge-quamba calls, spelled as in TensorRT 10.3's Python bindings (NVIDIA/TensorRT v10.3.0,
python/src/infer/pyCore.cpp, pyPlugin.cpp, pyFoundationalTypes.cpp; parsers/pyOnnx.cpp) with the enum values of the
10.3 headers. It enforces the rules the backend relies on, as TensorRT documents them:

* a context starts on profile 0; set_input_shape must lie within the profile; every input needs a shape and every
  I/O tensor a device address before execute_async_v3, which returns False otherwise (and logs an error);
* a USER_MANAGED context needs set_device_memory(memory, size) with size >= device_memory_size_v2;
* after any change (profile, shape, address) the first execute_async_v3 must run outside a CUDA graph capture (it does
  shape-dependent setup); one under capture instead fails;
* the plugin creators of the graph's custom nodes must be registered (get_creator(type, version, namespace)).

The "engine" computes a toy recurrence on the bound device buffers of the fake cuda.bindings.runtime, per layer and
per token t: ssm = 0.5 ssm + (t + 1), the conv state shifts left and takes t % 100; last_logits peaks at one token
(:func:`next_token`). :func:`reference_greedy` is the same recurrence in plain Python: a backend that binds, zeroes,
ping-pongs or replays its buffers wrongly generates other tokens than it.

A fake plugin library is a JSON file {"fake_tensorrt_plugin_library": 1, "creators": [[name, version, namespace],
...]}. Counters for the tests: BUILDERS, CONTEXTS, ENQUEUES.
"""

from __future__ import annotations

import ctypes
import enum
import json

import numpy as np

__version__ = "10.3.0.26"

BUILDERS: list["Builder"] = []
CONTEXTS: list["IExecutionContext"] = []
ENQUEUES: list[dict] = []
PLAN_MAGIC = b"FAKE-TENSORRT-PLAN\n"
DEVICE_MEMORY = 4096
"""device_memory_size_v2 of every fake engine."""
ENQUEUE_MS_PER_TOKEN = 0.125
"""What one token of an enqueue advances the fake stream's clock by (so engine timings are exact)."""


class DataType(enum.IntEnum):  # NvInferRuntimeBase.h, release/10.3
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    FP8 = 6
    BF16 = 7
    INT64 = 8


class TensorIOMode(enum.IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class NetworkDefinitionCreationFlag(enum.IntEnum):
    EXPLICIT_BATCH = 0
    STRONGLY_TYPED = 1


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0


class ExecutionContextAllocationStrategy(enum.IntEnum):
    STATIC = 0
    ON_PROFILE_CHANGE = 1
    USER_MANAGED = 2


NUMPY = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8, DataType.INT32: np.int32,
         DataType.INT64: np.int64}
ONNX_TYPES = {1: DataType.FLOAT, 10: DataType.HALF, 3: DataType.INT8, 6: DataType.INT32, 7: DataType.INT64}


class ILogger:
    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    def __init__(self):
        pass

    def log(self, severity, msg):
        pass


def _cudart():
    """The fake cuda.bindings.runtime whose memory and streams the fake engine uses (imported when first needed, as
    the real TensorRT loads CUDA: ``import tensorrt`` works without cuda-python)."""
    from cuda.bindings import runtime

    return runtime


def _error(logger, msg: str) -> None:
    logger.log(ILogger.Severity.ERROR, msg)


# -- plugins --------------------------------------------------------------------------------------------------------

class IPluginRegistry:
    def __init__(self):
        self.creators: set[tuple[str, str, str]] = set()
        self.libraries: list[str] = []

    def load_library(self, plugin_path):
        try:
            data = json.loads(open(plugin_path, encoding="utf-8").read())
        except (OSError, ValueError, UnicodeDecodeError):
            return None
        if not isinstance(data, dict) or data.get("fake_tensorrt_plugin_library") != 1:
            return None
        self.libraries.append(str(plugin_path))
        self.creators |= {tuple(c) for c in data["creators"]}
        return len(self.libraries)

    def get_creator(self, type, version, plugin_namespace=""):
        return (type, version, plugin_namespace) if (type, version, plugin_namespace) in self.creators else None


_REGISTRY = IPluginRegistry()


def get_plugin_registry():
    return _REGISTRY


def init_libnvinfer_plugins(logger, namespace):
    return True


# -- building -------------------------------------------------------------------------------------------------------

class ITensor:
    def __init__(self, name, shape, dtype):
        self.name, self.shape, self.dtype = name, tuple(shape), dtype


class INetworkDefinition:
    def __init__(self, flags):
        self.flags, self.inputs, self.outputs = flags, [], []

    @property
    def num_inputs(self):
        return len(self.inputs)

    def get_input(self, index):
        return self.inputs[index]

    @property
    def num_outputs(self):
        return len(self.outputs)

    def get_output(self, index):
        return self.outputs[index]


class OnnxParser:
    def __init__(self, network, logger):
        self.network, self.logger, self.errors = network, logger, []

    @property
    def num_errors(self):
        return len(self.errors)

    def get_error(self, index):
        return self.errors[index]

    def parse_from_file(self, model):
        import onnx

        graph = onnx.load(model).graph
        for node in graph.node:
            if node.domain == "edge_quamba":
                attrs = {a.name: a.s.decode() for a in node.attribute if a.type == onnx.AttributeProto.STRING}
                key = (node.op_type, attrs.get("plugin_version", "1"), attrs.get("plugin_namespace", ""))
                if _REGISTRY.get_creator(*key) is None:
                    self.errors.append(f"{node.name}: no plugin creator {key} (fallback plugin importer)")
        if self.errors:
            return False

        def tensors(values):
            return [ITensor(v.name, [d.dim_value if d.HasField("dim_value") else -1
                                     for d in v.type.tensor_type.shape.dim],
                            ONNX_TYPES[v.type.tensor_type.elem_type]) for v in values]

        self.network.inputs, self.network.outputs = tensors(graph.input), tensors(graph.output)
        return True


class IOptimizationProfile:
    def __init__(self):
        self.shapes = {}

    def set_shape(self, input, min, opt, max):
        self.shapes[input] = [list(min), list(opt), list(max)]


class IBuilderConfig:
    def __init__(self):
        self.profiles, self.pools = [], {}

    def set_memory_pool_limit(self, pool, pool_size):
        self.pools[pool] = pool_size

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)
        return len(self.profiles) - 1


class IHostMemory:
    def __init__(self, data: bytes):
        self.data = data

    def __bytes__(self):
        return self.data

    @property
    def nbytes(self):
        return len(self.data)


class Builder:
    def __init__(self, logger):
        self.logger = logger
        BUILDERS.append(self)

    def create_network(self, flags=0):
        return INetworkDefinition(flags)

    def create_builder_config(self):
        return IBuilderConfig()

    def create_optimization_profile(self):
        return IOptimizationProfile()

    def build_serialized_network(self, network, config):
        if not network.flags & (1 << NetworkDefinitionCreationFlag.STRONGLY_TYPED):
            _error(self.logger, "fake: edge-quamba graphs need a strongly typed network")
            return None
        for profile in config.profiles:
            for tensor in network.inputs:
                if -1 in tensor.shape and tensor.name not in profile.shapes:
                    _error(self.logger, f"fake: profile has no shape for the dynamic input {tensor.name}")
                    return None
        io = [{"name": t.name, "mode": int(mode), "dtype": int(t.dtype), "shape": list(t.shape)}
              for tensors, mode in ((network.inputs, TensorIOMode.INPUT), (network.outputs, TensorIOMode.OUTPUT))
              for t in tensors]
        plan = {"version": __version__, "io": io, "profiles": [p.shapes for p in config.profiles]}
        return IHostMemory(PLAN_MAGIC + json.dumps(plan).encode())


# -- running --------------------------------------------------------------------------------------------------------

class Runtime:
    def __init__(self, logger):
        self.logger = logger

    def deserialize_cuda_engine(self, serialized_engine):
        data = bytes(serialized_engine)
        if not data.startswith(PLAN_MAGIC):
            _error(self.logger, "fake: not a serialized engine (magic tag)")
            return None
        plan = json.loads(data[len(PLAN_MAGIC):])
        if plan["version"] != __version__:
            _error(self.logger, f"fake: the plan was built by TensorRT {plan['version']}")
            return None
        return ICudaEngine(plan, self.logger)


class ICudaEngine:
    def __init__(self, plan, logger):
        self.io = {t["name"]: t for t in plan["io"]}
        self.names = [t["name"] for t in plan["io"]]
        self.profiles = plan["profiles"]
        self.logger = logger

    @property
    def num_io_tensors(self):
        return len(self.names)

    def get_tensor_name(self, index):
        return self.names[index]

    def get_tensor_mode(self, name):
        return TensorIOMode(self.io[name]["mode"]) if name in self.io else TensorIOMode.NONE

    def get_tensor_dtype(self, name):
        return DataType(self.io[name]["dtype"])

    def get_tensor_shape(self, name):
        return tuple(self.io[name]["shape"])

    def get_tensor_profile_shape(self, name, profile_index):
        return [tuple(s) for s in self.profiles[profile_index][name]]

    @property
    def num_optimization_profiles(self):
        return len(self.profiles)

    @property
    def device_memory_size_v2(self):
        return DEVICE_MEMORY

    def create_execution_context(self, strategy=ExecutionContextAllocationStrategy.STATIC):
        context = IExecutionContext(self, ExecutionContextAllocationStrategy(strategy))
        CONTEXTS.append(context)
        return context


class IExecutionContext:
    def __init__(self, engine, strategy):
        self.engine, self.strategy = engine, strategy
        self.profile, self.shapes, self.addresses, self.device_memory = 0, {}, {}, None
        self.dirty = True  # something changed since the last enqueue outside a capture
        self.address_calls: dict[str, int] = {}
        self.shape_calls: dict[str, int] = {}

    def _inputs(self):
        return [n for n in self.engine.names if self.engine.io[n]["mode"] == TensorIOMode.INPUT]

    def set_device_memory(self, memory, size):
        if self.strategy != ExecutionContextAllocationStrategy.USER_MANAGED:
            raise RuntimeError("fake: set_device_memory needs a USER_MANAGED context")
        if size < DEVICE_MEMORY or not _cudart().in_device_memory(int(memory), int(size)):
            raise RuntimeError("fake: device memory too small or not device memory")
        self.device_memory = (int(memory), int(size))
        self.dirty = True

    def set_optimization_profile_async(self, profile_index, stream_handle):
        _cudart()._stream(stream_handle)
        if not 0 <= profile_index < len(self.engine.profiles):
            raise RuntimeError("Error in set optimization profile async.")
        self.profile = profile_index
        self.dirty = True
        return True

    def set_input_shape(self, name, shape):
        self.shape_calls[name] = self.shape_calls.get(name, 0) + 1
        if name not in self._inputs():
            return False
        low, _, high = self.engine.profiles[self.profile].get(name, [self.engine.io[name]["shape"]] * 3)
        shape = tuple(int(d) for d in shape)
        if len(shape) != len(low) or not all(lo <= d <= hi for lo, d, hi in zip(low, shape, high)):
            _error(self.engine.logger, f"fake: shape {shape} of {name} is outside profile {self.profile}")
            return False
        if self.shapes.get(name) != shape:
            self.shapes[name] = shape
            self.dirty = True
        return True

    def set_tensor_address(self, name, memory):
        self.address_calls[name] = self.address_calls.get(name, 0) + 1
        if name not in self.engine.io:
            return False
        self.addresses[name] = int(memory)
        self.dirty = True
        return True

    def get_tensor_shape(self, name):
        if self.engine.io[name]["mode"] == TensorIOMode.INPUT:
            return self.shapes.get(name, tuple(self.engine.io[name]["shape"]))
        batch = self.shapes.get("input_ids", (-1,))[0]
        return tuple(batch if d == -1 else d for d in self.engine.io[name]["shape"])

    def infer_shapes(self):
        return [n for n in self._inputs() if n not in self.shapes]

    def _nbytes(self, name):
        return int(np.prod(self.get_tensor_shape(name))) * np.dtype(NUMPY[self.engine.get_tensor_dtype(name)]).itemsize

    def _refuse(self, why):
        _error(self.engine.logger, f"fake enqueueV3: {why}")
        return False

    def execute_async_v3(self, stream_handle):
        stream = _cudart()._stream(stream_handle)
        capturing = stream.capture is not None
        ENQUEUES.append({"context": self, "stream": int(stream_handle), "captured": capturing})
        if self.strategy == ExecutionContextAllocationStrategy.USER_MANAGED and self.device_memory is None:
            return self._refuse("a USER_MANAGED context without device memory")
        if self.infer_shapes():
            return self._refuse(f"input shapes not set: {self.infer_shapes()}")
        regions = {}
        for name in self.engine.names:
            address = self.addresses.get(name)
            if not address or not _cudart().in_device_memory(address, self._nbytes(name)):
                return self._refuse(f"{name} has no device buffer of {self._nbytes(name)} bytes")
            regions[name] = (address, address + self._nbytes(name))
        inputs = set(self._inputs())
        for a in inputs:
            for b in set(regions) - inputs:
                if regions[a][0] < regions[b][1] and regions[b][0] < regions[a][1]:
                    return self._refuse(f"input {a} overlaps output {b}")
        if capturing and self.dirty:
            stream.invalidated = True
            return self._refuse("the first enqueue after a change must not be captured")
        snapshot = {name: (self.addresses[name], self.get_tensor_shape(name), NUMPY[self.engine.get_tensor_dtype(name)])
                    for name in self.engine.names}
        length = snapshot["input_ids"][1][1]
        _cudart()._submit(stream_handle, "enqueueV3", lambda: _toy_engine(snapshot),
                        clock_ms=ENQUEUE_MS_PER_TOKEN * length)
        if not capturing:
            self.dirty = False
        return True


# -- the toy model --------------------------------------------------------------------------------------------------

def _view(address, shape, dtype):
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return np.frombuffer((ctypes.c_ubyte * nbytes).from_address(address), dtype=dtype).reshape(shape)


def _step(conv: np.ndarray, ssm: np.ndarray, token: int) -> tuple[np.ndarray, np.ndarray]:
    ssm = (np.float32(0.5) * ssm + np.float32(token + 1)).astype(np.float32)
    conv = np.roll(conv, -1, axis=-1)
    conv[..., -1] = token % 100
    return conv, ssm


def next_token(conv: np.ndarray, ssm: np.ndarray) -> int:
    """The token the toy's last_logits peak at, from the last layer's states (always in 1..97: never EOS 0)."""
    return 1 + (int(ssm.reshape(-1)[0]) * 31 + int(conv.reshape(-1)[conv.shape[-1] - 2])) % 97


def _toy_engine(snapshot) -> None:
    views = {name: _view(*spec) for name, spec in snapshot.items()}
    tokens = [int(t) for t in views["input_ids"][0]]
    layers = sorted(int(n.split(".")[1]) for n in views if n.startswith("conv_state."))
    for i in layers:
        conv, ssm = views[f"conv_state.{i}"].copy(), views[f"ssm_state.{i}"].copy()
        for token in tokens:
            conv, ssm = _step(conv, ssm, token)
        views[f"conv_state_out.{i}"][...] = conv
        views[f"ssm_state_out.{i}"][...] = ssm
    logits = views["last_logits"]
    target = next_token(conv, ssm)
    logits[...] = -np.abs(np.arange(logits.shape[-1]) - target).astype(np.float16)


def reference_greedy(prompt: list[int], new_tokens: int, d_inner: int, d_conv: int, d_state: int) -> list[int]:
    """What greedy generation through the toy engine must produce (states kept in plain numpy arrays)."""
    conv, ssm = np.zeros((1, d_inner, d_conv), np.int8), np.zeros((1, d_inner, d_state), np.float32)
    for token in prompt:
        conv, ssm = _step(conv, ssm, token)
    out = []
    for _ in range(new_tokens):
        out.append(next_token(conv, ssm))
        conv, ssm = _step(conv, ssm, out[-1])
    return out
