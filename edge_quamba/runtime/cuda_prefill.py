"""Prefill in CUDA graphs for ``--backend cuda`` (issue 20, step P1 of benchmarks/DECODE_PLAN.md), the default.

Eager prefill runs the model from Python, one launch after another, and at 2.8b most of its 59.7 ms (H200) is launch
and Python time. Here a prompt of n tokens runs as chunks: MAX_CHUNK tokens as often as they fit, then the binary
decomposition of the rest, largest first (700 -> 512 + 128 + 32 + 16 + 8 + 4; :func:`chunk_lengths`). Each chunk
length has one captured graph (all in the decode graphs' memory pool) that reads its chunk's token ids from a static
buffer and the static per-layer states, and writes the new states back into them, so the chunks continue one another
as decode steps do. A length's first use runs its chunk eagerly (the same ops; it also warms up cuBLAS and the
allocator), its second use captures the graph (warm-up steps and the capture, then the replay), later uses replay
it: a single prompt (``run``) pays no capture, a server's repeated lengths do once, and ``prepare`` captures a prompt
length's graphs ahead of timing (``bench``). Only the last position goes through norm_f and lm_head
(:func:`last_position_logits`), as in the TensorRT graph.

Exactness: a chunk continues from the states exactly as the next tokens of one prompt would (the conv reads its
window from the state, the scan continues its recurrence token by token, every GEMM is exact in int32, the norms are
per token), so the states after the chunks equal one-shot prefill's bit for bit (tests/test_cuda_prefill.py, on the
CPU), except at W4A16: its mixer is the float16 fp mixer, whose float16 GEMMs may round differently for another
number of rows (on the GPU the 4-bit GEMV and the prefill GEMM sum in different orders) and whose Mamba2 prefill SSD
is the chunked form (models/mamba2.ssd_chunked) with its float order set by the chunk boundaries: states within
float rounding there. The last position's logits come from a one-row lm_head GEMM, as decode's do: within float32
GEMM rounding of the one-shot prefill's last row (its summation order may differ), not bit-equal. Padded buckets
would not be exact (a padding token advances the state), hence the decomposition.

Measured on an H100 (benchmarks/results/latency_quamba2_h100_p1.json, 512-token prompt): 2.8b int8 TTFT 22.2 ms,
against 50.4-70.9 ms for eager prefill in the other runs of that day; every format of Mamba1 and Mamba2 captures
(tests/test_cuda_prefill.py's cuda tests passed there).
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch import Tensor

from edge_quamba.models.mamba import LayerState, MambaLM

MAX_CHUNK = 512
"""The longest chunk a graph is captured for; longer prompts replay its graph several times."""
PREFILL_GRAPHS_BY_DEFAULT = True
"""Whether ``CudaBackend`` prefills through chunk graphs when not told (``prefill_graphs=False``: the whole prompt
eagerly, one forward)."""


def chunk_lengths(n: int, max_chunk: int = MAX_CHUNK) -> list[int]:
    """n >= 1 prompt tokens -> the chunk lengths it runs as, in order (each a power of two <= max_chunk, itself a power
    of two): max_chunk while it fits, then the binary digits of the rest, largest first."""
    if n < 1 or max_chunk < 1 or max_chunk & (max_chunk - 1):
        raise ValueError(f"chunk_lengths needs n >= 1 and a power-of-two max_chunk, not n={n}, max_chunk={max_chunk}")
    chunks = [max_chunk] * (n // max_chunk)
    rest = n % max_chunk
    chunks += [1 << bit for bit in range(rest.bit_length() - 1, -1, -1) if rest >> bit & 1]
    return chunks


def last_position_logits(model: MambaLM, tokens: Tensor, states: list[LayerState]
                         ) -> tuple[Tensor, list[LayerState]]:
    """tokens (1, l) continuing ``states`` -> logits of the last position (1, v) and the states after the tokens.
    norm_f is per position, so normalizing the last position alone gives its values; lm_head runs on one row."""
    resid, new_states = model.residual_stream(tokens, states)
    hidden = model.backbone.norm_f(resid[:, -1:].to(model.dtype))
    return model.lm_head(hidden)[:, -1], new_states


def capture_graph(device: torch.device, pool, warmup: Callable[[], object], warmup_steps: int,
                  body: Callable[[], Tensor], programmatic: bool = False) -> tuple[torch.cuda.CUDAGraph, Tensor]:
    """``warmup()`` ``warmup_steps`` times on a side stream (lazy cuBLAS and kernel initialization, the allocator;
    it must leave the static buffers as they are), then ``body()`` captured into a graph whose allocations come from
    ``pool`` -> (the graph, body's return value: a static output each replay rewrites). The decode graphs of
    cuda_backend.py and the chunk graphs here are made by it. ``programmatic`` (the decode graphs): our kernels are
    captured with programmatic dependent launch (cuda_ops.programmatic_launch; the warm-up launches plainly)."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmup_steps):
            warmup()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    if programmatic:  # imported here: the binding stays optional for importing this module (require_cuda_kernels)
        from edge_quamba.ops import cuda_ops

        launches = cuda_ops.programmatic_launch()
    else:
        launches = contextlib.nullcontext()
    with launches, torch.cuda.graph(graph, pool=pool):
        out = body()
    return graph, out


class ChunkGraph:
    """One captured chunk of ``length`` tokens: static ids (1, length) int64 in, static logits (1, v) out; the
    backend's static states are read and written in place by each replay."""

    def __init__(self, model: MambaLM, states: list[LayerState], length: int, pool, warmup_steps: int):
        self.ids = torch.zeros((1, length), dtype=torch.long, device=model.device)

        def chunk() -> Tensor:
            logits, new_states = last_position_logits(model, self.ids, states)
            copy_states(states, new_states)
            return logits

        def warmup() -> None:  # functional: the static states are read, not changed
            last_position_logits(model, self.ids, states)

        self.graph, self.logits = capture_graph(model.device, pool, warmup, warmup_steps, chunk)


def copy_states(dst: list[LayerState], src: list[LayerState]) -> None:
    """dst <- src for every layer, in two launches (one per state dtype), capturable in a CUDA graph (the decode
    graphs of cuda_backend.py end with it too)."""
    torch._foreach_copy_([s.conv_state for s in dst], [s.conv_state for s in src])
    torch._foreach_copy_([s.ssm_state for s in dst], [s.ssm_state for s in src])


class PrefillGraphs:
    """Chunked prefill of one model into its backend's static ``states`` (module docstring). ``run`` runs a chunk
    length eagerly on its first use, captures its graph on the second and replays it after; ``prepare`` captures
    ahead; ``graph=False`` runs every chunk eagerly (the CPU tests: no CUDA there)."""

    def __init__(self, model: MambaLM, states: list[LayerState], pool=None, graph: bool = True,
                 max_chunk: int = MAX_CHUNK, warmup_steps: int = 2):
        self.model, self.states, self.pool, self.graph = model, states, pool, graph
        self.max_chunk, self.warmup_steps = max_chunk, warmup_steps
        self.graphs: dict[int, ChunkGraph] = {}
        self.ran_eagerly: set[int] = set()  # chunk lengths used once, without a graph yet

    def captured(self, length: int) -> ChunkGraph:
        """The graph of chunk ``length``, captured now if it has none (the static states are not changed)."""
        if length not in self.graphs:
            self.graphs[length] = ChunkGraph(self.model, self.states, length, self.pool, self.warmup_steps)
        return self.graphs[length]

    @torch.inference_mode()
    def prepare(self, n_tokens: int) -> None:
        """Capture the graphs a prompt of ``n_tokens`` runs through, so that its next prefill only replays (call it
        before timing). Nothing to do with ``graph=False``."""
        if self.graph:
            for length in set(chunk_lengths(n_tokens, self.max_chunk)):
                self.captured(length)

    @torch.inference_mode()
    def run(self, tokens: list[int]) -> Tensor:
        """The prompt from zero states -> the last position's logits (1, v); the static states then hold the
        prompt's. The returned tensor is a graph's static buffer: read or copy it before the next prefill."""
        ids = torch.tensor([tokens], dtype=torch.long).to(self.model.device)
        torch._foreach_zero_([s.conv_state for s in self.states])  # two launches, not two per layer
        torch._foreach_zero_([s.ssm_state for s in self.states])
        start, logits = 0, None
        for length in chunk_lengths(len(tokens), self.max_chunk):
            chunk = ids[:, start:start + length]
            start += length
            if length in self.graphs or length in self.ran_eagerly:  # the second use captures
                graph = self.captured(length)
                graph.ids.copy_(chunk)
                graph.graph.replay()
                logits = graph.logits
                continue
            logits, new_states = last_position_logits(self.model, chunk, self.states)
            copy_states(self.states, new_states)
            if self.graph:
                self.ran_eagerly.add(length)
        return logits
