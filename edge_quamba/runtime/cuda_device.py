"""The CUDA runtime under ``--backend tensorrt``: device and pinned host buffers, ONE stream, events, CUDA graphs.

NOT YET RUN ON A GPU. It is exercised in CI through a fake of ``cuda.bindings.runtime``
(tests/fakes/cuda/bindings/runtime.py) that keeps the real module's names, argument order and ``(cudaError_t,
*results)`` return convention and records what was called on which stream; tests/test_cuda_device.py runs the same
tests on the real module where a GPU and cuda-python are present (benchmarks/gpu/cuda_device_check.sh). The names and
signatures used here were checked against cuda-bindings 12.9.10 installed on a CPU machine, where CudaDevice() gives
its one-line "no GPU" error (cudaErrorInsufficientDriver).

Why cuda-python (``cuda.bindings.runtime``, >= 12.6.1) and not pycuda, for a Jetson (JetPack 6.1+, aarch64) without
PyTorch:
    * it is the CUDA runtime API one to one (cudaMallocHost, cudaMemcpyAsync, cudaStreamBeginCapture,
      cudaGraphInstantiate, cudaGraphLaunch, cudaEventElapsedTime...), so the graph capture TensorRT documents for
      ``enqueueV3`` is written exactly as in C++, on the primary context that TensorRT itself uses. pycuda manages
      its own driver contexts (``pycuda.autoinit`` creates one), which must then be kept current around every
      TensorRT call;
    * NVIDIA's TensorRT 10.3 Python samples use it (samples/python/common_runtime.py: cudaMallocHost, cudaMalloc,
      cudaMemcpyAsync, cudaStreamCreate), pinned to cuda-python 12.x;
    * it ships linux-aarch64 wheels (``pip install 'cuda-python>=12.6.1,<13'``: CUDA 12, as JetPack 6), while
      pycuda is compiled from source against the CUDA toolkit on the device; jetson-containers builds both.
    12.6.1 (October 2024) introduced the ``cuda.bindings`` module layout; older releases spell it ``cuda.cudart``.

Everything goes through :class:`CudaDevice`, the one object that talks to CUDA: it owns one non-blocking stream
(:attr:`CudaDevice.stream`, handed to TensorRT as :attr:`CudaDevice.handle`) and issues every copy, memset, event,
enqueue-capture and graph launch on it, so they are ordered among themselves and never race TensorRT's work (no
work is ever put on the legacy default stream). Buffers are allocated when the backend is built, never per token,
and freed by :meth:`CudaDevice.close`.
"""

from __future__ import annotations

import ctypes
from typing import Any, Callable

import numpy as np

from edge_quamba.errors import BackendUnavailableError

CUDA_PYTHON = "cuda-python>=12.6.1,<13"
"""The pip requirement: the cuda.bindings layout (12.6.1+) for CUDA 12 (JetPack 6)."""


def import_cudart():
    """``cuda.bindings.runtime``, or a one-line BackendUnavailableError naming the package."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        raise BackendUnavailableError(f"--backend tensorrt needs cuda-python (module cuda.bindings.runtime), which "
                                      f"is not installed here: pip install '{CUDA_PYTHON}'") from None
    return runtime


class CudaDevice:
    """CUDA device 0 as the TensorRT backend uses it: one stream for everything, buffers made once.

    Host arrays made by :meth:`pinned` are page-locked (cudaMallocHost), so the async copies from and to them are
    truly asynchronous and may sit in a captured graph; :meth:`upload` and :meth:`download` take only those.
    """

    def __init__(self, runtime: Any | None = None):
        self.rt = runtime if runtime is not None else import_cudart()
        err, count = self.rt.cudaGetDeviceCount()
        if err != self.rt.cudaError_t.cudaSuccess or count < 1:
            why = self._error_text(err) if err != self.rt.cudaError_t.cudaSuccess else "no device"
            raise BackendUnavailableError(f"--backend tensorrt needs an NVIDIA GPU and CUDA finds none ({why})")
        self._device: list[int] = []
        self._pinned: list[tuple[int, int]] = []  # (address, bytes)
        self._events: list[Any] = []
        self._graphs: list[tuple[Any, Any]] = []  # (graph, executable graph)
        self.stream = self._call("cudaStreamCreateWithFlags", self.rt.cudaStreamNonBlocking)
        self.handle = int(self.stream)  # cuda-python 12.x: int() of a handle is its address
        """The stream as the integer TensorRT's Python API takes (execute_async_v3, set_optimization_profile_async)."""

    # -- errors ---------------------------------------------------------------------------------------------------

    def _error_text(self, err) -> str:
        name = self.rt.cudaGetErrorName(err)[1]
        text = self.rt.cudaGetErrorString(err)[1]
        decode = lambda b: b.decode() if isinstance(b, bytes) else str(b)  # noqa: E731
        return f"{decode(name)}: {decode(text)}"

    def _call(self, name: str, *args):
        """Call ``cudart.<name>(*args)``; raise a one-line error unless it returns cudaSuccess; return its results
        (None, one value, or a tuple)."""
        err, *results = getattr(self.rt, name)(*args)
        if err != self.rt.cudaError_t.cudaSuccess:
            raise BackendUnavailableError(f"CUDA {name} failed: {self._error_text(err)}")
        return None if not results else results[0] if len(results) == 1 else tuple(results)

    # -- memory (construction time only) --------------------------------------------------------------------------

    def malloc(self, nbytes: int) -> int:
        """A device buffer of ``nbytes`` (aligned to at least 256 bytes), freed by :meth:`close`."""
        address = int(self._call("cudaMalloc", max(int(nbytes), 1)))
        self._device.append(address)
        return address

    def pinned(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        """A page-locked host array (cudaMallocHost), viewed by numpy, freed by :meth:`close`."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        address = int(self._call("cudaMallocHost", max(nbytes, 1)))
        self._pinned.append((address, max(nbytes, 1)))
        buffer = (ctypes.c_byte * nbytes).from_address(address)
        return np.frombuffer(buffer, dtype=dtype).reshape(shape)

    def _check_pinned(self, host: np.ndarray) -> int:
        address = host.ctypes.data
        if not host.flags.c_contiguous or not any(start <= address and address + host.nbytes <= start + size
                                                  for start, size in self._pinned):
            raise ValueError("async copies take contiguous slices of arrays made by CudaDevice.pinned only")
        return address

    # -- work on the stream ---------------------------------------------------------------------------------------

    def upload(self, device: int, host: np.ndarray) -> None:
        """Async copy of the pinned ``host`` array to ``device``, on the stream."""
        self._call("cudaMemcpyAsync", device, self._check_pinned(host), host.nbytes,
                   self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream)

    def download(self, host: np.ndarray, device: int) -> None:
        """Async copy of ``host.nbytes`` bytes at ``device`` into the pinned ``host`` array, on the stream."""
        self._call("cudaMemcpyAsync", self._check_pinned(host), device, host.nbytes,
                   self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream)

    def zero(self, device: int, nbytes: int) -> None:
        """Async memset of ``nbytes`` at ``device`` to 0, on the stream."""
        self._call("cudaMemsetAsync", device, 0, int(nbytes), self.stream)

    def event(self) -> Any:
        """A timing event (cudaEventCreate), destroyed by :meth:`close`."""
        event = self._call("cudaEventCreate")
        self._events.append(event)
        return event

    def record(self, event) -> None:
        self._call("cudaEventRecord", event, self.stream)

    def elapsed_ms(self, start, end) -> float:
        """Milliseconds between two recorded events (call after :meth:`synchronize`)."""
        return float(self._call("cudaEventElapsedTime", start, end))

    def capture(self, enqueue: Callable[[], None]) -> Any:
        """Capture what ``enqueue()`` puts on the stream into a CUDA graph and return it instantiated (the work is
        recorded, not run). Global capture mode, as TensorRT's CUDA-graph guide does: an unsafe CUDA call from
        TensorRT during the capture fails it instead of silently running outside the graph."""
        self._call("cudaStreamBeginCapture", self.stream, self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal)
        try:
            enqueue()
        except BaseException:  # end the capture (the stream stays usable), drop the partial graph, re-raise
            err, graph = self.rt.cudaStreamEndCapture(self.stream)
            if err == self.rt.cudaError_t.cudaSuccess:
                self.rt.cudaGraphDestroy(graph)
            raise
        err, graph = self.rt.cudaStreamEndCapture(self.stream)
        if err != self.rt.cudaError_t.cudaSuccess:
            raise BackendUnavailableError(f"CUDA graph capture of the decode step failed: {self._error_text(err)}")
        try:
            executable = self._call("cudaGraphInstantiate", graph, 0)
        except BackendUnavailableError:
            self.rt.cudaGraphDestroy(graph)
            raise
        self._graphs.append((graph, executable))
        return executable

    def launch(self, executable) -> None:
        """Replay a captured graph on the stream."""
        self._call("cudaGraphLaunch", executable, self.stream)

    def synchronize(self) -> None:
        self._call("cudaStreamSynchronize", self.stream)

    def close(self) -> None:
        """Wait for the stream, then free every graph, event and buffer made here and the stream itself."""
        if self.stream is None:
            return
        self.synchronize()
        for graph, executable in self._graphs:
            self._call("cudaGraphExecDestroy", executable)
            self._call("cudaGraphDestroy", graph)
        for event in self._events:
            self._call("cudaEventDestroy", event)
        for address in self._device:
            self._call("cudaFree", address)
        for address, _ in self._pinned:
            self._call("cudaFreeHost", address)
        self._call("cudaStreamDestroy", self.stream)
        self._graphs, self._events, self._device, self._pinned, self.stream = [], [], [], [], None
