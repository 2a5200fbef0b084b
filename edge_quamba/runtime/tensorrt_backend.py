"""`--backend tensorrt`: batch-1 prefill and decode over an engine folder, with numpy and cuda-python (no torch).

NEVER RUN WITH TENSORRT (none on any machine we can run). Tested on CPU only, with a fake ``tensorrt`` module and a
fake ``cuda.bindings.runtime`` that keep the TensorRT 10.3 / cuda-python names (tests/fakes, tests/test_tensorrt_
runtime.py): the tests show the order and count of the calls (buffers made once, addresses bound once, one stream,
one graph captured per decode context and replayed), the refusals, and generation through the fake engine's toy
recurrence with ``import torch`` blocked; not TensorRT's numbers or speed.

Memory layout (batch 1; d = d_inner, k = d_conv, n = d_state, v = the padded vocabulary), all made at construction:

    state set 0, set 1   one device block each: conv_state.i (1, d, k) int8 and ssm_state.i (1, d, n) float32 for every
                         layer (Mamba2: (1, conv_dim, k) and (1, h, p, n), :func:`state_shapes`), each at a 256-byte
                         aligned offset (so zeroing a set is one memset)
    decode_ids           (1, 1) int64 device      <- pinned host (1, 1) int64 (the token id, 8 bytes per token)
    prefill_ids          (1, L) int64 device      <- pinned host (1, L) int64; L = the prefill profile's max length
    last_logits          (1, v) float16 device    -> pinned host (1, v) float16 (the only copy out per token)
    scratch              engine.device_memory_size_v2 bytes, shared by the three contexts (they never run at the
                         same time: one stream), given with set_device_memory (ExecutionContextAllocationStrategy
                         USER_MANAGED) instead of one TensorRT allocation per context

Contexts: the plugins write conv_state_out / ssm_state_out as separate outputs (no aliasing of an input), so states
ping-pong between the two sets. Three execution contexts, each with every tensor address bound ONCE at construction
(a rebinding calls onShapeChange on every plugin at the next enqueue: NvInferRuntime.h, IPluginV3OneRuntime::
onShapeChange, and would invalidate a captured graph):

    prefill    profile 1   input_ids = prefill_ids   reads set 0   writes set 1
    decode[0]  profile 0   input_ids = decode_ids    reads set 0   writes set 1
    decode[1]  profile 0   input_ids = decode_ids    reads set 1   writes set 0

Two decode contexts may share profile 0 because they never run concurrently ("each execution context in concurrent
use must use a separate optimization profile": NvInferRuntime.h, class IExecutionContext). Prefill zeroes set 0
(one memset), sets input_ids' shape to (1, l) (its only per-call binding change) and leaves the states in set 1; a
decode step runs decode[p] where p is the set holding the current states, and flips p.

CUDA graphs: each decode context is enqueued once as a warm-up (TensorRT does its shape-dependent setup on the first
enqueueV3 after a change, which must not happen inside a capture), then its enqueue is captured into a CUDA graph
(:meth:`CudaDevice.capture`). A decode step is then: token id pinned host -> device (async), event, graph launch,
event, last_logits device -> pinned host (async), synchronize: every copy, memset, enqueue and launch on the one
stream of :class:`~edge_quamba.runtime.cuda_device.CudaDevice`, and no allocation. ``engine_ms_last`` is the time
between the two events (the enqueue or graph launch alone) of the last prefill or decode; ``cuda_graph`` says whether
decode replays graphs (``cuda_graph=False`` enqueues each step instead, for comparison).

Integrity: the engine folder is verified once, when it is opened (:func:`edge_quamba.folders.open_model`:
engine_config.json's seal, engine.plan's and tokenizer.json's sha256, and the plugin library's sha256 recorded at
build time), before this backend is made; here the recorded TensorRT version is checked before anything is loaded or
deserialized.
"""

from __future__ import annotations

import contextlib

import numpy as np

from edge_quamba.errors import BackendUnavailableError, CheckpointError, InputError
from edge_quamba.folders import ModelFolder
from edge_quamba.kinds import ENGINE_FILE
from edge_quamba.models.config import Mamba2Config, require_mamba1
from edge_quamba.runtime.cuda_device import CudaDevice
from edge_quamba.runtime.tensorrt_engine import DECODE_PROFILE, PREFILL_PROFILE, Logger, import_tensorrt, load_plugins

ALIGN = 256
"""Byte alignment of every tensor inside a state block (cudaMalloc's own alignment)."""


def state_shapes(config) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The batch-1 shapes of one layer's conv_state and ssm_state for a Mamba1 or Mamba2 config (the graph's)."""
    if isinstance(config, Mamba2Config):
        return (1, config.conv_dim, config.d_conv), (1, config.nheads, config.headdim, config.d_state)
    return (1, config.d_inner, config.d_conv), (1, config.d_inner, config.d_state)


def _aligned(nbytes: int) -> int:
    return -(-nbytes // ALIGN) * ALIGN


class _Sequence:
    """The opaque ``states`` of this backend: which step of which prompt the device buffers hold. Only the latest one
    is accepted by :meth:`TensorRTBackend.decode` (the buffers are static: an older step's states are gone)."""


class TensorRTBackend:
    """Batch-1 prefill/decode over an engine folder (NEVER RUN with TensorRT: see the module docstring)."""

    name = "tensorrt"

    def __init__(self, folder: ModelFolder, *, cuda_graph: bool = True):
        """folder: an opened engine folder (:func:`edge_quamba.folders.open_model`: engine.plan, tokenizer.json and
        the plugin library verified)."""
        trt = import_tensorrt()
        if folder.engine.tensorrt != trt.__version__:
            raise CheckpointError(f"{folder.path} was built with TensorRT {folder.engine.tensorrt} and this is "
                                  f"TensorRT {trt.__version__} (engines do not move between versions); rebuild it with "
                                  f"`edge-quamba build-engine`")
        self.config = folder.config
        require_mamba1(self.config, "--backend tensorrt")
        self.cuda_graph = cuda_graph
        self.engine_ms_last: float | None = None
        """Engine-only milliseconds of the last prefill or decode (CUDA events around the enqueue / graph launch)."""
        self.device = CudaDevice()
        try:
            self._load(trt, folder)
        except BaseException:
            with contextlib.suppress(BackendUnavailableError):  # keep the first error, free what was made
                self.device.close()
            raise
        self._live: _Sequence | None = None
        self._read = 0  # the state set that holds the live sequence's states

    def _load(self, trt, folder: ModelFolder) -> None:
        """Plugins, engine, buffers, contexts and decode graphs (see the module docstring), in that order."""
        from edge_quamba.onnx import INPUT_IDS, LAST_LOGITS, state_names

        config, device = self.config, self.device
        log = Logger(trt)
        load_plugins(trt, log, folder.engine.plugin_library, folder.engine.plugin_creators)
        plan = folder.path / ENGINE_FILE
        self.engine = trt.Runtime(log.logger).deserialize_cuda_engine(plan.read_bytes())
        if self.engine is None:
            raise CheckpointError(f"{plan} does not deserialize: {log.first_error()}")
        self.input_ids, self.logits_name = INPUT_IDS, LAST_LOGITS
        self.state_in, self.state_out = state_names(config.n_layer)
        self._check_io(trt)
        self.max_prompt_len = int(self.engine.get_tensor_profile_shape(INPUT_IDS, PREFILL_PROFILE)[2][1])

        # -- buffers, made once ------------------------------------------------------------------------------
        shapes = {}
        conv_shape, ssm_shape = state_shapes(config)
        for conv, ssm in zip(self.state_in[0::2], self.state_in[1::2]):
            shapes[conv], shapes[ssm] = (conv_shape, np.int8), (ssm_shape, np.float32)
        offsets, size = {}, 0
        for name, (shape, dtype) in shapes.items():
            offsets[name] = size
            size += _aligned(int(np.prod(shape)) * np.dtype(dtype).itemsize)
        self._state_bytes = size
        self._sets = [device.malloc(size), device.malloc(size)]
        self._state_offsets = offsets
        self._decode_ids = device.malloc(8)
        self._prefill_ids = device.malloc(8 * self.max_prompt_len)
        self._logits = device.malloc(2 * config.vocab_size)
        self._host_token = device.pinned((1, 1), np.int64)
        self._host_prompt = device.pinned((1, self.max_prompt_len), np.int64)
        self._host_logits = device.pinned((1, config.vocab_size), np.float16)
        scratch_bytes = int(self.engine.device_memory_size_v2)
        self._scratch = (device.malloc(scratch_bytes), scratch_bytes) if scratch_bytes else (0, 0)
        self._start, self._end = device.event(), device.event()

        # -- contexts, every address bound once ----------------------------------------------------------------
        strategy = trt.ExecutionContextAllocationStrategy.USER_MANAGED
        self.prefill_context = self._context(strategy, PREFILL_PROFILE, self._prefill_ids, read=0)
        self.decode_contexts = [self._context(strategy, DECODE_PROFILE, self._decode_ids, read=p) for p in (0, 1)]
        for parity in (0, 1):
            device.zero(self._sets[parity], size)
        device.zero(self._decode_ids, 8)
        self._graphs = None
        if self.cuda_graph:
            self._graphs = []
            for context in self.decode_contexts:
                self._enqueue(context, "decode warm-up")
                self._graphs.append(device.capture(lambda c=context: self._enqueue(c, "decode capture")))
        device.synchronize()

    def _check_io(self, trt) -> None:
        """The engine's I/O tensors are exactly the graph interface this backend binds, with its dtypes."""
        engine = self.engine
        names = {engine.get_tensor_name(i) for i in range(engine.num_io_tensors)}
        expected = {self.input_ids: trt.DataType.INT64, self.logits_name: trt.DataType.HALF}
        for names_of_layer in (self.state_in, self.state_out):
            for conv, ssm in zip(names_of_layer[0::2], names_of_layer[1::2]):
                expected[conv], expected[ssm] = trt.DataType.INT8, trt.DataType.FLOAT
        if names != set(expected):
            raise CheckpointError(f"the engine's tensors are not those of an edge-quamba graph with "
                                  f"{self.config.n_layer} layers (missing {sorted(set(expected) - names)[:3]}, "
                                  f"unexpected {sorted(names - set(expected))[:3]}); rebuild it")
        for name, dtype in expected.items():
            if engine.get_tensor_dtype(name) != dtype:
                raise CheckpointError(f"the engine's {name} is {engine.get_tensor_dtype(name)}, expected {dtype}")

    def _state_address(self, parity: int, name: str) -> int:
        return self._sets[parity] + self._state_offsets[name]

    def _context(self, strategy, profile: int, ids: int, read: int):
        """An execution context on ``profile`` reading the states of set ``read`` and writing set ``1 - read``, with
        every address bound and every input shape set (input_ids (1, 1): prefill sets its length per call)."""
        context = self.engine.create_execution_context(strategy)
        if context is None:
            raise BackendUnavailableError(f"TensorRT could not create an execution context (profile {profile})")
        if self._scratch[1]:
            context.set_device_memory(*self._scratch)
        context.set_optimization_profile_async(profile, self.device.handle)  # raises RuntimeError on failure
        bindings = {self.input_ids: ids, self.logits_name: self._logits}
        for name_in, name_out in zip(self.state_in, self.state_out, strict=True):
            bindings[name_in] = self._state_address(read, name_in)
            bindings[name_out] = self._state_address(1 - read, name_in)
        conv_shape, ssm_shape = state_shapes(self.config)
        shapes = {self.input_ids: (1, 1)}
        for conv, ssm in zip(self.state_in[0::2], self.state_in[1::2]):
            shapes[conv], shapes[ssm] = conv_shape, ssm_shape
        for name, shape in shapes.items():
            if not context.set_input_shape(name, shape):
                raise CheckpointError(f"the engine refuses the shape {shape} for {name} (profile {profile})")
        for name, address in bindings.items():
            if not context.set_tensor_address(name, address):
                raise CheckpointError(f"the engine has no tensor {name}")
        unresolved = context.infer_shapes()
        if unresolved:
            raise CheckpointError(f"the engine cannot infer the shapes of {unresolved[:3]} (profile {profile})")
        outputs = {self.logits_name: (1, self.config.vocab_size)}
        for conv, ssm in zip(self.state_out[0::2], self.state_out[1::2]):
            outputs[conv], outputs[ssm] = conv_shape, ssm_shape
        for name, shape in outputs.items():
            if tuple(context.get_tensor_shape(name)) != shape:
                raise CheckpointError(f"the engine's {name} is {tuple(context.get_tensor_shape(name))}, expected "
                                      f"{shape} for this model config")
        return context

    def _enqueue(self, context, what: str) -> None:
        if not context.execute_async_v3(self.device.handle):
            raise BackendUnavailableError(f"TensorRT {what} failed (enqueueV3 returned false)")

    def _finish(self) -> np.ndarray:
        """Copy the last logits out, wait for the stream, time the engine; (v,) float32 (a copy: the pinned buffer
        is reused by the next call)."""
        self.device.download(self._host_logits, self._logits)
        self.device.synchronize()
        self.engine_ms_last = self.device.elapsed_ms(self._start, self._end)
        return self._host_logits[0].astype(np.float32)

    def prefill(self, tokens: list[int]) -> tuple[np.ndarray, _Sequence]:
        """tokens: the prompt ids -> logits (v,) float32 of the next token, and the (opaque) states."""
        n = len(tokens)
        if not 1 <= n <= self.max_prompt_len:
            raise InputError(f"the prompt is {n} tokens long; this engine's prefill profile takes 1 to "
                             f"{self.max_prompt_len} (build-engine --max-prompt-len)")
        self._check_tokens(tokens)
        device = self.device
        self._host_prompt[0, :n] = tokens
        device.upload(self._prefill_ids, self._host_prompt[0, :n])
        device.zero(self._sets[0], self._state_bytes)  # prefill reads set 0: empty states
        if not self.prefill_context.set_input_shape(self.input_ids, (1, n)):
            raise InputError(f"the engine refuses a prompt of {n} tokens")
        device.record(self._start)
        self._enqueue(self.prefill_context, "prefill")
        device.record(self._end)
        logits = self._finish()
        self._read, self._live = 1, _Sequence()
        return logits, self._live

    def decode(self, token: int, states: _Sequence) -> tuple[np.ndarray, _Sequence]:
        """One token -> logits (v,) float32 of the next token, and the states (only the latest are accepted)."""
        if states is not self._live:
            raise InputError("--backend tensorrt holds one sequence on the device: decode takes the states of its "
                             "latest prefill or decode step only")
        self._check_tokens([token])
        device, parity = self.device, self._read
        self._host_token[0, 0] = token
        device.upload(self._decode_ids, self._host_token)
        device.record(self._start)
        if self._graphs is not None:
            device.launch(self._graphs[parity])
        else:
            self._enqueue(self.decode_contexts[parity], "decode")
        device.record(self._end)
        logits = self._finish()
        self._read, self._live = 1 - parity, _Sequence()
        return logits, self._live

    def _check_tokens(self, tokens: list[int]) -> None:
        """Token ids index the embedding table inside the engine; one out of range is refused here."""
        bad = [t for t in tokens if not 0 <= t < self.config.vocab_size]
        if bad:
            raise InputError(f"token id {bad[0]} is outside the model's vocabulary (0..{self.config.vocab_size - 1})")

    def close(self) -> None:
        """Free the contexts, the engine and every CUDA resource (the backend is unusable afterwards)."""
        self.device.synchronize()
        self.prefill_context = self.decode_contexts = self._graphs = self.engine = None
        self.device.close()
