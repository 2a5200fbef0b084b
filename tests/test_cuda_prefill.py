"""Chunked prefill (``edge_quamba.runtime.cuda_prefill``; issue 20, step P1): a prompt runs as power-of-two chunks that
continue one another's states.

CPU: the chunk decomposition; for every format the quantizer writes (Mamba1 and Mamba2 at W8A8, W4A8, W4A16, random
weights from the latency benchmark's builders), the chunks run eagerly give states bit-equal to one-shot prefill's
(W4A16: within float rounding, :data:`STATE_RTOL`) and last-position logits within float32 GEMM rounding of
its last row; the backend's chunked prefill then decodes the same greedy tokens as its eager prefill; it is the
default; a chunk length runs eagerly on its first use, is captured on its second and replayed after, and ``prepare``
captures ahead (a stand-in graph class counts the captures), and bench captures before its warm-up run; the
capture mechanism shared with the decode graphs (capture_graph) with recorders in place of torch.cuda's streams,
with and without programmatic dependent launch; when the decode graphs use it (the default on compute capability
9.0+, EDGE_QUAMBA_PDL).
GPU (marker ``cuda``): the same through the captured chunk graphs, prompts across the 512-token chunk, and prefills
of other lengths one after another on one backend, each twice (first uses eager, then captures and replays); decode
graphs captured with programmatic dependent launch equal plainly launched ones (every format; capability 9.0).
"""

import copy
import sys
from pathlib import Path

import pytest
import torch

from edge_quamba.errors import BackendUnavailableError, InputError
from edge_quamba.models.config import Mamba2Config, MambaConfig
from edge_quamba.ops import cuda_ops
from edge_quamba.runtime import cuda_backend, cuda_prefill
from edge_quamba.runtime.cuda_prefill import PrefillGraphs, chunk_lengths, last_position_logits

from test_device_greedy import cpu_backend

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_latency  # noqa: E402  (the random quantized models of the latency benchmark)
import latency_mamba2  # noqa: E402

FORMATS = [(arch, bits) for arch in ("mamba1", "mamba2") for bits in ("w8a8", "w4a8", "w4a16")]
LOGIT_RTOL = 1e-5
"""Last-position logits against one-shot prefill's last row, times max |logit|: a one-row lm_head GEMM may sum in
another order than the l-row one (``pytest -s`` prints each difference)."""


def random_model(arch: str, bits: str, seed: int = 3):
    """A small quantized model of the format, prepared as the cuda backend prepares it (fp16 embeddings and head)."""
    if arch == "mamba1":
        config = MambaConfig(d_model=64, n_layer=2, vocab_size=256, d_state=16, expand=2, d_conv=4)
        model = bench_latency.random_quantized_model(config, seed, "cpu", bits)
    else:
        config = Mamba2Config(d_model=64, n_layer=2, vocab_size=256, d_state=16, headdim=16, ngroups=1)
        model = latency_mamba2.random_quantized_mamba2_model(config, bits, seed=seed, device="cpu")
    return cuda_backend.prepare_gpu_model(model, torch.device("cpu"))


def prompt(n: int, seed: int = 0) -> list[int]:
    return torch.randint(0, 256, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


STATE_RTOL = {("mamba1", "w4a16"): 1e-3, ("mamba2", "w4a16"): 1e-3}
"""Formats whose states are not bit-equal, times max |state|. W4A16 is the float16 fp mixer: its linears are float16
GEMMs whose rounding may depend on the number of rows (a chunk is a different M; on the GPU the 4-bit GEMV and the
prefill GEMM sum in different orders), its conv state holds their float16 outputs, and Mamba2's prefill SSD is the
chunked form (models/mamba2.ssd_chunked), whose float order follows the chunk boundaries (``pytest -s`` prints
each difference). W8A8 and W4A8: integer GEMMs and per-token float epilogues, bit-equal."""


def assert_same_prefill(logits, states, ref_logits, ref_states, state_rtol=0.0):
    """states bit-equal (state_rtol 0) or within state_rtol of their scale; logits (1, v) within LOGIT_RTOL of the
    reference row's scale."""
    for got, ref in zip(states, ref_states, strict=True):
        for name in ("conv_state", "ssm_state"):
            a, b = getattr(got, name).cpu(), getattr(ref, name).cpu()
            if state_rtol == 0.0:
                assert torch.equal(a, b), f"{name} differs"
            else:
                diff = (a.float() - b.float()).abs().max()
                print(f"{name}: max |diff| {float(diff):.3g}, scale {float(b.float().abs().max()):.3g}")
                assert diff <= state_rtol * b.float().abs().max(), f"{name} differs"
    ref_logits = ref_logits.float().cpu()
    diff = (logits.float().cpu() - ref_logits).abs().max()
    print(f"last-position logits: max |diff| {float(diff):.3g}, scale {float(ref_logits.abs().max()):.3g}")
    assert diff <= LOGIT_RTOL * ref_logits.abs().max(), f"last-position logits differ by {float(diff):.3g}"


def test_chunk_lengths():
    assert chunk_lengths(700) == [512, 128, 32, 16, 8, 4]
    assert chunk_lengths(512) == [512] and chunk_lengths(1) == [1]
    assert chunk_lengths(1100) == [512, 512, 64, 8, 4]
    assert chunk_lengths(13, max_chunk=4) == [4, 4, 4, 1]
    for n in range(1, 1200, 7):
        chunks = chunk_lengths(n)
        assert sum(chunks) == n and all(c & (c - 1) == 0 and c <= 512 for c in chunks)
        assert chunks == sorted(chunks, reverse=True)
    for n, max_chunk in ((0, 512), (5, 3)):
        with pytest.raises(ValueError, match="chunk_lengths needs"):
            chunk_lengths(n, max_chunk)


@pytest.mark.parametrize("arch, bits", FORMATS)
def test_chunks_continue_to_one_shot_prefill(arch, bits):
    model = random_model(arch, bits)
    tokens = prompt(37)
    with torch.inference_mode():
        full, ref_states = model(torch.tensor([tokens]))
        states = model.empty_states(1)
        logits = PrefillGraphs(model, states, graph=False, max_chunk=8).run(tokens)  # 8 + 8 + 8 + 8 + 4 + 1
    assert_same_prefill(logits, states, full[:, -1], ref_states, STATE_RTOL.get((arch, bits), 0.0))


def test_last_position_logits_is_the_last_row_of_the_forward():
    model = random_model("mamba1", "w8a8")
    ids = torch.tensor([prompt(9)])
    with torch.inference_mode():
        full, ref_states = model(ids)
        logits, states = last_position_logits(model, ids, model.empty_states(1))
    assert_same_prefill(logits, states, full[:, -1], ref_states)


def greedy(backend, tokens, steps=12):
    logits, handle = backend.prefill(tokens)
    out = []
    for _ in range(steps):
        out.append(int(logits.argmax()))
        logits, handle = backend.decode(out[-1], handle)
    return out


@pytest.mark.parametrize("arch", ["mamba1", "mamba2"])
def test_backend_chunked_prefill_decodes_as_eager_prefill(arch):
    model = random_model(arch, "w8a8")
    eager, chunked = cpu_backend(model, prefill_graphs=False), cpu_backend(model, prefill_graphs=True)
    assert eager.chunked is None and isinstance(chunked.chunked, PrefillGraphs)
    for n in (1, 23, 5):  # prefills of other lengths one after another: each starts from zero states
        assert greedy(chunked, prompt(n, seed=n)) == greedy(eager, prompt(n, seed=n))


def test_prefill_runs_in_chunks_by_default():
    assert cuda_prefill.PREFILL_GRAPHS_BY_DEFAULT is True
    assert isinstance(cpu_backend(random_model("mamba1", "w8a8")).chunked, PrefillGraphs)


class EagerStandInGraph:
    """What ChunkGraph gives the prefill (ids, graph.replay(), logits), computed eagerly on the CPU; counts captures."""

    captures: list[int] = []

    def __init__(self, model, states, length, pool, warmup_steps):
        EagerStandInGraph.captures.append(length)
        self.ids = torch.zeros((1, length), dtype=torch.long)
        self.graph = self
        self.model, self.states = model, states

    def replay(self):
        self.logits, new_states = last_position_logits(self.model, self.ids, self.states)
        cuda_prefill.copy_states(self.states, new_states)


def test_a_chunk_length_runs_eagerly_first_is_captured_second_and_replayed_after(monkeypatch):
    monkeypatch.setattr(cuda_prefill, "ChunkGraph", EagerStandInGraph)
    monkeypatch.setattr(EagerStandInGraph, "captures", [])
    model = random_model("mamba1", "w8a8")
    prefill = PrefillGraphs(model, model.empty_states(1), graph=True, max_chunk=8)
    eager_only = PrefillGraphs(model, model.empty_states(1), graph=False, max_chunk=8)
    captured_before = []
    for n in (13, 13, 13, 5):  # 8 + 4 + 1, three times, then 4 + 1
        captured_before.append(sorted(EagerStandInGraph.captures))
        logits = prefill.run(prompt(n, seed=n)).clone()
        assert torch.equal(logits, eager_only.run(prompt(n, seed=n)))
        for got, want in zip(prefill.states, eager_only.states):
            assert torch.equal(got.conv_state, want.conv_state) and torch.equal(got.ssm_state, want.ssm_state)
    assert captured_before == [[], [], [1, 4, 8], [1, 4, 8]]  # the second run of 13 captured its three lengths
    assert sorted(EagerStandInGraph.captures) == [1, 4, 8] and prefill.ran_eagerly == {1, 4, 8}
    prefill.prepare(16 + 2)  # 8 + 8 + 2: only 2 is new
    assert sorted(EagerStandInGraph.captures) == [1, 2, 4, 8]
    eager_only.prepare(13)
    eager_only.run(prompt(13))
    eager_only.run(prompt(13))
    assert sorted(EagerStandInGraph.captures) == [1, 2, 4, 8] and not eager_only.ran_eagerly


def test_bench_captures_the_prompts_graphs_before_its_warm_up_run(monkeypatch):
    """bench's median_timings calls the backend's prepare_prefill first, so no timed (or warm-up) prefill runs a
    chunk eagerly or captures one."""
    from edge_quamba.runtime.bench import median_timings

    monkeypatch.setattr(cuda_prefill, "ChunkGraph", EagerStandInGraph)
    monkeypatch.setattr(EagerStandInGraph, "captures", [])
    backend = cpu_backend(random_model("mamba1", "w8a8"), prefill_graphs=True)
    backend.chunked.graph = True  # chunk graphs (stand-ins) on this CPU backend
    median_timings(backend, prompt(13), 3, 2)
    assert sorted(EagerStandInGraph.captures) == chunk_lengths(13)[::-1] and not backend.chunked.ran_eagerly


def test_capture_graph_warms_up_on_a_side_stream_then_captures_the_body_once(monkeypatch):
    """The capture mechanism of the decode and chunk graphs, with torch.cuda's streams and graphs replaced by
    recorders (no CUDA here): warm-up runs warmup_steps times inside the side stream, the body once inside the graph
    (in the pool given), and the body's output is returned with the graph."""
    events = []

    class Recorder:
        def __init__(self, name):
            self.name = name

        def __enter__(self):
            events.append(f"enter {self.name}")

        def __exit__(self, *exc):
            events.append(f"exit {self.name}")

    class FakeStream:
        def __init__(self, device=None):
            self.name = "side"

        def wait_stream(self, other):
            events.append(f"{self.name} waits for {other.name}")

    current = FakeStream()
    current.name = "current"
    monkeypatch.setattr(torch.cuda, "Stream", FakeStream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: current)
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: Recorder(f"stream {stream.name}"))
    monkeypatch.setattr(torch.cuda, "CUDAGraph", lambda: "graph")
    monkeypatch.setattr(torch.cuda, "graph", lambda graph, pool: Recorder(f"capture into {graph}, pool {pool}"))

    monkeypatch.setattr(cuda_ops, "programmatic_launch", lambda: Recorder("programmatic launch"))

    graph, out = cuda_prefill.capture_graph(torch.device("cpu"), "pool", lambda: events.append("warmup"), 2,
                                            lambda: events.append("body") or "static output")
    assert (graph, out) == ("graph", "static output")
    warmup = ["side waits for current", "enter stream side", "warmup", "warmup", "exit stream side",
              "current waits for side"]
    assert events == [*warmup, "enter capture into graph, pool pool", "body", "exit capture into graph, pool pool"]
    events.clear()  # programmatic dependent launch: the capture inside the switch, the warm-up outside it
    cuda_prefill.capture_graph(torch.device("cpu"), "pool", lambda: events.append("warmup"), 2,
                               lambda: events.append("body"), programmatic=True)
    assert events == [*warmup, "enter programmatic launch", "enter capture into graph, pool pool", "body",
                      "exit capture into graph, pool pool", "exit programmatic launch"]


def test_programmatic_launch_request_from_the_environment(monkeypatch):
    monkeypatch.delenv("EDGE_QUAMBA_PDL", raising=False)
    assert cuda_backend.programmatic_launch_requested() is None
    for value, expected in (("1", True), ("0", False)):
        monkeypatch.setenv("EDGE_QUAMBA_PDL", value)
        assert cuda_backend.programmatic_launch_requested() is expected
    monkeypatch.setenv("EDGE_QUAMBA_PDL", "yes")
    with pytest.raises(InputError, match="EDGE_QUAMBA_PDL must be 0 or 1, not 'yes'"):
        cuda_backend.programmatic_launch_requested()


def test_decode_graphs_use_programmatic_launch_where_the_gpu_has_it():
    decide = cuda_backend.decide_programmatic_launch
    assert cuda_backend.PROGRAMMATIC_LAUNCH_BY_DEFAULT is True
    assert decide(None, (9, 0)) is True and decide(None, (10, 0)) is True
    assert decide(None, (8, 7)) is False  # Orin: no programmatic dependent launch, plain graphs
    assert decide(False, (9, 0)) is False and decide(True, (9, 0)) is True
    with pytest.raises(BackendUnavailableError, match="needs compute capability 9.0 or later; this GPU has 8.7"):
        decide(True, (8, 7))


# ---------------------------------------------------------------- GPU


@pytest.mark.cuda
@pytest.mark.parametrize("arch, bits", FORMATS)
def test_cuda_chunk_graphs_equal_eager_prefill(arch, bits):
    model = random_model(arch, bits)
    graphs = cuda_backend.CudaBackend(copy.deepcopy(model), prefill_graphs=True)
    eager = cuda_backend.CudaBackend(copy.deepcopy(model), prefill_graphs=False)
    for n in (700, 1, 37, 512) * 2:  # across the 512 chunk, shorter prompts; first uses eager, then graphs
        tokens = prompt(n, seed=n)
        logits = graphs.prefill_last(tokens).clone()
        ref_logits = eager.prefill_last(tokens)
        assert_same_prefill(logits, graphs.states, ref_logits, eager.states, STATE_RTOL.get((arch, bits), 0.0))
        assert greedy(graphs, tokens, 8) == greedy(eager, tokens, 8)
    assert sorted(graphs.chunked.graphs) == [1, 4, 8, 16, 32, 128, 512]  # every length used twice: captured


@pytest.mark.cuda
@pytest.mark.parametrize("arch, bits", FORMATS)
def test_cuda_programmatic_launch_graphs_equal_plain_graphs(arch, bits):
    """Decode graphs captured with programmatic dependent launch (the kernels wait for their producer before touching
    an activation) decode exactly as plainly launched ones: the same kernels, the same results (the prefill chunk
    graphs are plain in both; on an H100 this test also passed with the chunk graphs captured that way)."""
    if torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("programmatic dependent launch needs compute capability 9.0")
    model = random_model(arch, bits)
    pdl = cuda_backend.CudaBackend(copy.deepcopy(model), programmatic_launch=True)
    plain = cuda_backend.CudaBackend(copy.deepcopy(model), programmatic_launch=False)
    for n in (700, 37) * 2:  # the second round replays captured chunk graphs
        tokens = prompt(n, seed=n)
        logits = pdl.prefill_last(tokens).clone()
        assert_same_prefill(logits, pdl.states, plain.prefill_last(tokens), plain.states)
        assert greedy(pdl, tokens, 8) == greedy(plain, tokens, 8)
