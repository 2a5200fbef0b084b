"""A fake of cuda-python's ``cuda.bindings.runtime`` (12.6+) for CPU tests of ``--backend tensorrt``.

Same names, argument order and return convention as the real module: every call returns a tuple whose first item is
a ``cudaError_t`` (``(cudaError_t.cudaSuccess, result)``). The "device" is this process's memory: cudaMalloc hands
out ctypes buffers (filled with 0xA5, as real device memory is not zeroed), so the fake TensorRT engine can read and
write them. Work is executed when it is submitted (the fake GPU is synchronous), except on a stream under capture,
where it is recorded into the graph and executed at each cudaGraphLaunch. Time is a per-stream clock that submitted
work advances by a fixed cost (``clock_ms`` of the work), so event timings are exact.

What the tests read: ``LOG`` (one record per call: name, stream, whether captured), ``live_device`` /
``live_pinned`` (allocations not freed), and ``DEVICE_COUNT`` (set 0 to simulate a machine without a GPU). The fake
enforces what real CUDA enforces and the backend relies on: async copies to or from host memory take pinned
memory only, device pointers lie inside an allocation, and during a global-mode capture an allocation or a
synchronization fails and invalidates the capture.
"""

from __future__ import annotations

import ctypes
import enum
import itertools

DEVICE_COUNT = 1
LOG: list[dict] = []
live_device: dict[int, ctypes.Array] = {}
live_pinned: dict[int, ctypes.Array] = {}
_streams: dict[int, "cudaStream_t"] = {}
_ids = itertools.count(0x1000, 0x10)

cudaStreamDefault = 0
cudaStreamNonBlocking = 1


class cudaError_t(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorNoDevice = 100
    cudaErrorInvalidResourceHandle = 400
    cudaErrorIllegalAddress = 700
    cudaErrorStreamCaptureUnsupported = 900
    cudaErrorStreamCaptureInvalidated = 901


class cudaMemcpyKind(enum.IntEnum):
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2
    cudaMemcpyDeviceToDevice = 3
    cudaMemcpyDefault = 4


class cudaStreamCaptureMode(enum.IntEnum):
    cudaStreamCaptureModeGlobal = 0
    cudaStreamCaptureModeThreadLocal = 1
    cudaStreamCaptureModeRelaxed = 2


class _Handle:
    def __init__(self):
        self._id = next(_ids)

    def __int__(self) -> int:
        return self._id

    def __repr__(self) -> str:
        return f"<{type(self).__name__} 0x{self._id:x}>"


class cudaStream_t(_Handle):
    def __init__(self, flags: int):
        super().__init__()
        self.flags, self.clock, self.capture, self.invalidated = flags, 0.0, None, False


class cudaEvent_t(_Handle):
    def __init__(self):
        super().__init__()
        self.time = None


class cudaGraph_t(_Handle):
    def __init__(self, work):
        super().__init__()
        self.work = work


class cudaGraphExec_t(_Handle):
    def __init__(self, graph):
        super().__init__()
        self.work = list(graph.work)
        self.launches = 0


OK = cudaError_t.cudaSuccess


def _log(call: str, stream=None, **extra) -> None:
    LOG.append({"call": call, "stream": None if stream is None else int(stream), **extra})


def _capturing() -> list[cudaStream_t]:
    return [s for s in _streams.values() if s.capture is not None]


def _forbidden_during_capture(call: str):
    """Real CUDA in global capture mode: an allocation or a synchronization fails and invalidates the capture."""
    capturing = _capturing()
    for stream in capturing:
        stream.invalidated = True
    if capturing:
        _log(call, None, refused="during capture")
        return (cudaError_t.cudaErrorStreamCaptureUnsupported,)
    return None


def _stream(stream) -> cudaStream_t:
    handle = int(stream)
    if handle not in _streams:
        raise ValueError(f"fake cudart: unknown or legacy stream {handle:#x} (the backend must use its own stream)")
    return _streams[handle]


def _submit(stream, call: str, work, clock_ms: float = 0.001, **extra) -> None:
    """Run ``work()`` on ``stream`` now, or record it when the stream is being captured (also used by the fake
    TensorRT for the engine's kernels)."""
    target = _stream(stream)
    captured = target.capture is not None
    _log(call, stream, captured=captured, **extra)

    def timed():
        work()
        target.clock += clock_ms

    if captured:
        target.capture.append(timed)
    else:
        timed()


def in_device_memory(address: int, nbytes: int) -> bool:
    return any(start <= address and address + nbytes <= start + ctypes.sizeof(buf)
               for start, buf in live_device.items())


def _in_pinned_memory(address: int, nbytes: int) -> bool:
    return any(start <= address and address + nbytes <= start + ctypes.sizeof(buf)
               for start, buf in live_pinned.items())


# -- errors and devices ---------------------------------------------------------------------------------------------

def cudaGetDeviceCount():
    _log("cudaGetDeviceCount")
    return (OK, DEVICE_COUNT) if DEVICE_COUNT else (cudaError_t.cudaErrorNoDevice, 0)


def cudaGetErrorName(error):
    return OK, cudaError_t(error).name.encode()


def cudaGetErrorString(error):
    return OK, f"fake CUDA error {int(error)}".encode()


# -- streams --------------------------------------------------------------------------------------------------------

def cudaStreamCreate():
    return cudaStreamCreateWithFlags(cudaStreamDefault)


def cudaStreamCreateWithFlags(flags):
    stream = cudaStream_t(int(flags))
    _streams[int(stream)] = stream
    _log("cudaStreamCreateWithFlags", stream, flags=int(flags))
    return OK, stream


def cudaStreamDestroy(stream):
    _log("cudaStreamDestroy", stream)
    _streams.pop(int(stream))
    return (OK,)


def cudaStreamSynchronize(stream):
    refused = _forbidden_during_capture("cudaStreamSynchronize")
    if refused:
        return refused
    _log("cudaStreamSynchronize", stream)
    _stream(stream)
    return (OK,)


def cudaStreamBeginCapture(stream, mode):
    target = _stream(stream)
    _log("cudaStreamBeginCapture", stream, mode=int(mode))
    target.capture, target.invalidated = [], False
    return (OK,)


def cudaStreamEndCapture(stream):
    target = _stream(stream)
    _log("cudaStreamEndCapture", stream)
    work, invalidated = target.capture, target.invalidated
    target.capture, target.invalidated = None, False
    if invalidated:
        return cudaError_t.cudaErrorStreamCaptureInvalidated, None
    return OK, cudaGraph_t(work)


# -- memory ---------------------------------------------------------------------------------------------------------

def cudaMalloc(size):
    refused = _forbidden_during_capture("cudaMalloc")
    if refused:
        return refused + (0,)
    buffer = (ctypes.c_ubyte * int(size))()
    address = ctypes.addressof(buffer)
    ctypes.memset(address, 0xA5, int(size))
    live_device[address] = buffer
    _log("cudaMalloc", None, size=int(size))
    return OK, address


def cudaFree(devPtr):
    _log("cudaFree")
    live_device.pop(int(devPtr))
    return (OK,)


def cudaMallocHost(size):
    refused = _forbidden_during_capture("cudaMallocHost")
    if refused:
        return refused + (0,)
    buffer = (ctypes.c_ubyte * int(size))()
    address = ctypes.addressof(buffer)
    live_pinned[address] = buffer
    _log("cudaMallocHost", None, size=int(size))
    return OK, address


def cudaFreeHost(ptr):
    _log("cudaFreeHost")
    live_pinned.pop(int(ptr))
    return (OK,)


def cudaMemcpyAsync(dst, src, count, kind, stream):
    dst, src, count = int(dst), int(src), int(count)
    rules = {cudaMemcpyKind.cudaMemcpyHostToDevice: (in_device_memory, _in_pinned_memory),
             cudaMemcpyKind.cudaMemcpyDeviceToHost: (_in_pinned_memory, in_device_memory),
             cudaMemcpyKind.cudaMemcpyDeviceToDevice: (in_device_memory, in_device_memory)}
    if kind not in rules or not (rules[kind][0](dst, count) and rules[kind][1](src, count)):
        _log("cudaMemcpyAsync", stream, refused="not pinned host / device memory of that size")
        return (cudaError_t.cudaErrorInvalidValue,)
    _submit(stream, "cudaMemcpyAsync", lambda: ctypes.memmove(dst, src, count), kind=cudaMemcpyKind(kind).name,
            count=count)
    return (OK,)


def cudaMemsetAsync(devPtr, value, count, stream):
    devPtr, count = int(devPtr), int(count)
    if not in_device_memory(devPtr, count):
        return (cudaError_t.cudaErrorInvalidValue,)
    _submit(stream, "cudaMemsetAsync", lambda: ctypes.memset(devPtr, int(value), count), count=count)
    return (OK,)


# -- events ---------------------------------------------------------------------------------------------------------

def cudaEventCreate():
    _log("cudaEventCreate")
    return OK, cudaEvent_t()


def cudaEventDestroy(event):
    _log("cudaEventDestroy")
    return (OK,)


def cudaEventRecord(event, stream):
    target = _stream(stream)

    def record():
        event.time = target.clock

    _submit(stream, "cudaEventRecord", record, clock_ms=0.0)
    return (OK,)


def cudaEventSynchronize(event):
    refused = _forbidden_during_capture("cudaEventSynchronize")
    return refused or (OK,)


def cudaEventElapsedTime(start, end):
    if start.time is None or end.time is None:
        return cudaError_t.cudaErrorInvalidResourceHandle, 0.0
    return OK, end.time - start.time


# -- graphs ---------------------------------------------------------------------------------------------------------

def cudaGraphInstantiate(graph, flags):
    _log("cudaGraphInstantiate")
    return OK, cudaGraphExec_t(graph)


def cudaGraphLaunch(graphExec, stream):
    graphExec.launches += 1

    def replay():
        for work in graphExec.work:
            work()

    _submit(stream, "cudaGraphLaunch", replay, clock_ms=0.0)
    return (OK,)


def cudaGraphDestroy(graph):
    _log("cudaGraphDestroy")
    return (OK,)


def cudaGraphExecDestroy(graphExec):
    _log("cudaGraphExecDestroy")
    return (OK,)
