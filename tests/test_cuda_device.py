"""edge_quamba/runtime/cuda_device.py with the fake cuda-python (CPU, everywhere) and with the real one on a GPU (no
TensorRT involved): pinned buffers, the one stream, async copies and memsets, a CUDA graph captured from the stream
and replayed, events, a capture that fails. The same tests on both hold the fake that tests/test_tensorrt_runtime.py
relies on to the real module's behaviour. The real case is skipped where there is no GPU or no cuda-python (the GPU
run: benchmarks/gpu/cuda_device_check.sh)."""

import contextlib

import numpy as np
import pytest

import fakes


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.cuda)])
def device(request, monkeypatch):
    with fakes.installed(monkeypatch) if request.param == "fake" else contextlib.nullcontext():
        pytest.importorskip("cuda.bindings.runtime", reason="cuda-python is not installed")
        from edge_quamba.runtime.cuda_device import CudaDevice

        dev = CudaDevice()
        yield dev
        dev.close()


def test_copies_and_memset_on_the_stream(device):
    host = device.pinned((4, 1000), np.float32)
    back = device.pinned((4, 1000), np.float32)
    host[...] = np.arange(4000, dtype=np.float32).reshape(4, 1000)
    buffer = device.malloc(host.nbytes)
    device.upload(buffer, host)
    device.download(back, buffer)
    device.synchronize()
    assert np.array_equal(back, host)
    device.zero(buffer, host.nbytes // 2)
    device.download(back, buffer)
    device.synchronize()
    assert not back[:2].any() and np.array_equal(back[2:], host[2:])
    with pytest.raises(ValueError, match="pinned"):
        device.upload(buffer, np.zeros(4, np.float32))  # pageable memory is refused


def test_a_captured_graph_replays_what_the_stream_would_do(device):
    """Captured: pinned host -> device, memset of the first half, device -> pinned host. Each replay reads the host
    array as it is at replay time (the graph holds addresses, not values)."""
    n = 1 << 16
    source, result = device.pinned((n,), np.int32), device.pinned((n,), np.int32)
    buffer = device.malloc(4 * n)

    def work():
        device.upload(buffer, source)
        device.zero(buffer, 2 * n)
        device.download(result, buffer)

    graph = device.capture(work)
    start, end = device.event(), device.event()
    for value in (3, 7):
        source[...] = value
        device.record(start)
        device.launch(graph)
        device.record(end)
        device.synchronize()
        print("replay", value, "ms", device.elapsed_ms(start, end))
        assert not result[: n // 2].any() and (result[n // 2:] == value).all()
        assert device.elapsed_ms(start, end) >= 0


def test_a_sync_inside_a_capture_fails_in_one_line_and_the_stream_stays_usable(device):
    from edge_quamba.errors import BackendUnavailableError

    with pytest.raises(BackendUnavailableError) as info:
        device.capture(device.synchronize)
    print(info.value)
    assert "\n" not in str(info.value)
    host = device.pinned((8,), np.int64)
    buffer = device.malloc(64)
    device.zero(buffer, 64)
    device.download(host, buffer)
    device.synchronize()
    assert not host.any()
