"""`--backend cuda`: the quantized reference model on an NVIDIA GPU, prefill eager, decode replayed from a CUDA graph.

Not a second model. The module tree is the quantized reference (:mod:`edge_quamba.quant.qmodel`), which computes
through the ops ``torch.ops.edge_quamba.*`` (:mod:`edge_quamba.ops.torch_ops`); ``edge_quamba.ops.cuda_ops``
registers CUDA kernels for every one of them, so the same Python code runs the kernels once its tensors live on the GPU. A missing
binding, a failed build or an op without a CUDA kernel is a one-line BackendUnavailableError, never a fallback to
the reference ops.

What lives where (batch 1):
    mixers       int8 weights and float32 A, D, dt_bias, biases on the GPU, as in the artifact; the 4-bit linears
                 of W4A8 / W4A16 keep the artifact's packed codes (N, ceil(K / 2)) uint8 and float32 group scales,
                 read by the kernels of plugins/kernels/int4_linear.h (the unpacked int8 codes are never made).
    W4A16        the fp mixer in float16 (``qmodel.W4A16Mixer``): its linears are the 4-bit kernels, its norm,
                 conv, scan and gate the float16 reference's own torch ops on the GPU (decode: many small kernels
                 per layer, all inside the graph).
    scales       the ops take Python floats; each mixer reads its scale buffers once into a cache of floats
                 (``QuantMambaMixer.scales()``), which the eager warm-up steps fill before capture, so the captured
                 step never reads a device tensor on the host (a sync, which capture forbids). A Mamba2 mixer
                 (``QuantMamba2Mixer.scales()``) also caches per-channel float32 scale vectors on the GPU (x, B, C,
                 the conv's outputs), which the ops take as tensors; moving the model drops that cache.
    embeddings   fp16 on the GPU. The artifact stores them in fp16, so the lookup (cast to the float32 residual
                 stream) gives exactly the reference's values; a tied lm_head shares the same fp16 tensor.
    lm_head      fp16 GEMM (cuBLAS, float32 accumulation), float32 logits: the only deviation from the reference.
    norms        float32 weights (d floats each: negligible bytes), so every int8 code entering a mixer equals the
                 reference's.

Decode: ``model.step`` on a static token buffer and static per-layer states is captured once into a
``torch.cuda.CUDAGraph`` (after warm-up steps on a side stream); inside the graph the new states are copied back into
the static buffers (two ``_foreach_copy_`` launches: int8 conv states, float32 scan states), so each replay advances
the sequence by one token. A decode step is then: write the token id into the static buffer, replay, read the static
logits. On compute capability 9.0+ the decode graph is captured with programmatic dependent launch (each of our
kernels starts while its producer finishes and waits for it before touching an activation; the GEMVs load their
first weights meanwhile; :func:`decide_programmatic_launch`, EDGE_QUAMBA_PDL=0 turns it off). Prefill runs as
power-of-two chunks replayed from captured graphs that continue the static states in place
(:mod:`edge_quamba.runtime.cuda_prefill`; a chunk length's first use runs eagerly, its second captures); or, with
``prefill_graphs=False``, eagerly (``model.forward`` on the whole prompt), copying its final states into the static
buffers. The backend therefore holds ONE sequence:
``decode`` refuses states from any prefill but the latest.

Greedy decoding on the GPU (``device_greedy(usable_vocab)``, used by ``generate`` when sampling is greedy): a second
decode graph ends with :func:`greedy_choice_`, one ``torch.max`` over the first ``usable_vocab`` logits whose index
output IS the static token buffer, so the next replay reads the token the previous one chose and the host writes
nothing between replays. The token buffer and the chosen logit are one 16-byte device record (int64 id, float32
maximum), copied after each step (outside the graph: the destination slot changes) into a pinned two-slot host ring
with one event per slot (:class:`TokenRing`); the host waits on a slot's event only when it needs that id. The
generation loop enqueues step t + 1 before it reads token t, so streaming, the EOS check and ``should_stop`` run while
the GPU computes (one step past EOS may be computed and discarded). Sampled decoding (temperature > 0) keeps the host
path: the seeded numpy sampler of ``sampling.py``, the same for every backend.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_quamba.errors import BackendUnavailableError, InputError
from edge_quamba.folders import ModelFolder, load_reference_model
from edge_quamba.models.mamba import LayerState, MambaLM
from edge_quamba.runtime.cuda_prefill import PREFILL_GRAPHS_BY_DEFAULT, PrefillGraphs, capture_graph, copy_states
from edge_quamba.runtime.sampling import check_greedy_maximum

WARMUP_STEPS = 2
"""Eager decode steps on a side stream before capture (lazy cuBLAS/kernel initialization, allocator warm-up)."""
TOKEN_RING_SLOTS = 2
"""Pinned host slots the chosen tokens are copied into: the generation loop reads token t while step t + 1 runs."""
PROGRAMMATIC_LAUNCH_BY_DEFAULT = True
"""Whether ``CudaBackend`` captures its decode graphs with programmatic dependent launch (plugins/kernels/common.h) on
a GPU that has it (compute capability 9.0+; below, as on Orin, they are captured plainly) when neither its argument
nor EDGE_QUAMBA_PDL says. Measured on an H100 (benchmarks/results/latency_pdl_h100.txt): TPOT 2.507 -> 2.149 ms at
Mamba1 2.8b int8, 3.081 -> 2.660 ms at Mamba2 2.7b, 0.587 -> 0.482 ms at 130m, the tokens equal the plain graphs'.
The prefill chunk graphs stay plain: captured that way the 512-token TTFT rose 19.1 -> 21.4 ms at 2.8b."""


def programmatic_launch_requested() -> bool | None:
    """EDGE_QUAMBA_PDL as a request (1: on, 0: off), None when unset; anything else is an error."""
    value = os.environ.get("EDGE_QUAMBA_PDL")
    if value is None:
        return None
    if value not in ("0", "1"):
        raise InputError(f"EDGE_QUAMBA_PDL must be 0 or 1, not {value!r}")
    return value == "1"


def require_cuda_kernels() -> None:
    """Raise BackendUnavailableError (one line) unless a GPU is present and every op of the ``edge_quamba``
    namespace (whatever the quantized reference may call) has a CUDA kernel after the binding registered them."""
    if not torch.cuda.is_available():
        raise BackendUnavailableError("--backend cuda needs an NVIDIA GPU and this machine has none "
                                      "(torch.cuda.is_available() is False)")
    try:
        from edge_quamba.ops import cuda_ops
    except ModuleNotFoundError as exc:
        if exc.name != "edge_quamba.ops.cuda_ops":
            raise
        raise BackendUnavailableError("--backend cuda needs the CUDA kernel binding edge_quamba.ops.cuda_ops, "
                                      "which this installation does not have") from None
    except (ImportError, OSError) as exc:  # the binding exists but does not import
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BackendUnavailableError(f"--backend cuda: the CUDA kernels are not built or do not load ({reason})"
                                      ) from None
    cuda_ops.register_cuda_kernels()  # builds or loads the extension; its failures are one-line errors already
    from edge_quamba.ops.torch_ops import NO_CUDA_KERNEL  # ops of options the backend refuses (refuse_options)

    missing = [name for name in namespace_ops() if name not in NO_CUDA_KERNEL and not has_cuda_kernel(name)]
    if missing:
        raise BackendUnavailableError(f"--backend cuda: no CUDA kernel is registered for {', '.join(missing)}")


def refuse_options(model: MambaLM) -> None:
    """One line naming the quantization option when ``model`` would call an op that has no CUDA kernel
    (``torch_ops.NO_CUDA_KERNEL``): per-channel weight scales. Mamba1 and Mamba2 (Quamba2) at W8A8, W4A8 and W4A16
    have kernels for every op they call."""
    from edge_quamba.quant.linears import QuantLinear

    if any(isinstance(m, QuantLinear) and m.per_channel for m in model.modules()):
        raise BackendUnavailableError("--backend cuda has no kernel for per-channel weight scales (this model was "
                                      "quantized with --weight-scales channel): use --backend ref or ort, or "
                                      "quantize with --weight-scales tensor")


def namespace_ops(namespace: str = "edge_quamba") -> list[str]:
    """Qualified names (``namespace::name``) of every operator defined in ``namespace``, sorted."""
    import edge_quamba.ops.torch_ops  # noqa: F401  (defines the ops)

    return sorted(n for n in torch._C._dispatch_get_all_op_names() if n.startswith(f"{namespace}::"))


def has_cuda_kernel(qualname: str) -> bool:
    """Whether the operator ``namespace::name`` exists and has a kernel for CUDA tensors (the dispatcher's table)."""
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key(qualname, "CUDA")
    except RuntimeError:  # the operator is not defined at all
        return False


class Fp16Head(nn.Module):
    """lm_head with an fp16 weight: hidden (..., d) float -> logits (..., v) float32 (fp16 GEMM, fp32 accumulate)."""

    def __init__(self, weight: nn.Parameter):
        super().__init__()
        self.weight = weight  # (v, d) float16; the embedding table itself when tied

    def forward(self, hidden: Tensor) -> Tensor:
        return F.linear(hidden.to(self.weight.dtype), self.weight).float()


def prepare_gpu_model(model: MambaLM, device: torch.device) -> MambaLM:
    """Move a quantized reference model to ``device`` in the layout described in the module docstring (in place)."""
    model.to(device)
    model.backbone.embeddings.half()
    model.lm_head.half()  # a tied head is the same (already fp16) parameter
    model.lm_head = Fp16Head(model.lm_head.weight)
    return model.eval()


def record_views(record: Tensor) -> tuple[Tensor, Tensor]:
    """The 16-byte token record (uint8) -> (token id (1,) int64 = bytes 0-7, its logit (1,) float32 = bytes 8-11)."""
    return record[:8].view(torch.int64), record[8:12].view(torch.float32)


def greedy_choice_(logits: Tensor, usable_vocab: int, token: Tensor, top: Tensor) -> None:
    """logits (1, v) float32 -> token (1,) int64 <- the first index of the maximum of ``logits[:, :usable_vocab]``,
    top (1,) float32 <- that maximum; one reduction kernel, capturable (both outputs are preallocated).

    The choice of ``sampling.sample_next`` at temperature 0 (``np.argmax``: first index on ties; a +Inf is the maximum,
    the first +Inf wins). ``torch.max`` over a dim returns the first maximal index and propagates NaN, so a NaN logit
    leaves top = NaN and all -Inf leaves top = -Inf: the host turns both into NumericsError (:class:`PendingToken`)."""
    torch.max(logits[:, :usable_vocab], dim=-1, out=(top, token))


class PendingToken:
    """Token ``index`` of a :class:`TokenRing`: ``result()`` waits on its slot's event, reads the id, checks the
    numerics (once; later calls return the same id)."""

    def __init__(self, ring: "TokenRing", index: int):
        self.ring, self.index, self.value = ring, index, None

    def result(self) -> int:
        if self.value is None:
            self.value = self.ring.read(self.index)
        return self.value


class TokenRing:
    """The 16-byte device record (bytes 0-7: the chosen token id, int64, which is also the decode graph's static
    token input; bytes 8-11: its logit, float32) copied device -> pinned host memory asynchronously, into slot
    ``index % slots``, one event per slot. ``read(index)`` is valid until ``slots`` later pushes reuse the slot.

    pin / event: pinned memory and ``torch.cuda.Event`` on a GPU; the CPU tests pass False and a fake event."""

    def __init__(self, record: Tensor, slots: int = TOKEN_RING_SLOTS, pin: bool = True,
                 event: Callable[[], Any] | None = None):
        if record.dtype != torch.uint8 or record.numel() != 16:
            raise ValueError("the token record is 16 bytes (uint8): int64 token id, float32 logit, 4 bytes padding")
        self.record = record
        self.host = torch.zeros((slots, 16), dtype=torch.uint8, pin_memory=pin)
        self.rows = self.host.numpy()  # the same memory, read without torch's per-call overhead
        self.events = [(event or torch.cuda.Event)() for _ in range(slots)]
        self.pushed = 0

    def push(self) -> PendingToken:
        """Enqueue the copy of the record as it will be after the work already enqueued on the current stream."""
        slot = self.pushed % len(self.events)
        self.host[slot].copy_(self.record, non_blocking=True)
        self.events[slot].record()
        self.pushed += 1
        return PendingToken(self, self.pushed - 1)

    def read(self, index: int) -> int:
        if not self.pushed - len(self.events) <= index < self.pushed:
            raise RuntimeError(f"token {index} is no longer in the {len(self.events)}-slot ring ({self.pushed} "
                               f"pushed): read each pending token before enqueuing {len(self.events)} more steps")
        slot = index % len(self.events)
        self.events[slot].synchronize()
        row = self.rows[slot]
        check_greedy_maximum(float(row[8:12].view(np.float32)[0]))
        return int(row[:8].view(np.int64)[0])


def weight_bytes_per_token(model: MambaLM) -> int:
    """Bytes of weights one decode step reads: every tensor on the GPU once (the tied embedding table is read by
    lm_head), except an untied embedding table, of which one row is read."""
    seen, total = set(), 0
    untied_embedding = None
    if model.backbone.embeddings.weight.data_ptr() != model.lm_head.weight.data_ptr():
        untied_embedding = model.backbone.embeddings.weight.data_ptr()
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.device.type != "cuda" or tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        if tensor.data_ptr() == untied_embedding:
            total += tensor.shape[1] * tensor.element_size()
        else:
            total += tensor.numel() * tensor.element_size()
    return total


def decide_programmatic_launch(requested: bool | None, capability: tuple[int, int]) -> bool:
    """Whether the decode graphs use programmatic dependent launch: as requested (``CudaBackend``'s argument or
    EDGE_QUAMBA_PDL), where a request for it on a GPU below compute capability 9.0 is a one-line error; unrequested,
    PROGRAMMATIC_LAUNCH_BY_DEFAULT on GPUs that have it (9.0+), plain launches below (Orin: 8.7)."""
    has_it = tuple(capability) >= (9, 0)
    if requested is None:
        return PROGRAMMATIC_LAUNCH_BY_DEFAULT and has_it
    if requested and not has_it:
        raise BackendUnavailableError(f"programmatic dependent launch (EDGE_QUAMBA_PDL=1) needs compute capability "
                                      f"9.0 or later; this GPU has {capability[0]}.{capability[1]}")
    return requested


class CudaBackend:
    """Batch-1 generation on the GPU: eager prefill, CUDA-graph decode (``graph=False``: eager decode, for tests).

    ``__call__`` is the batched forward evaluation uses: tokens (b, l) -> (logits (b, l, v) float32, states).
    """

    name = "cuda"

    def __init__(self, model: MambaLM, device: str | torch.device = "cuda", graph: bool = True,
                 prefill_graphs: bool | None = None, programmatic_launch: bool | None = None):
        self.device = torch.device(device)
        if self.device.type != "cuda":
            raise BackendUnavailableError(f"--backend cuda runs on a CUDA device, not {self.device}")
        refuse_options(model)
        require_cuda_kernels()
        requested = programmatic_launch_requested() if programmatic_launch is None else programmatic_launch
        self.setup(prepare_gpu_model(model, self.device), graph, prefill_graphs=prefill_graphs,
                   programmatic_launch=decide_programmatic_launch(requested,
                                                                  torch.cuda.get_device_capability(self.device)))

    def setup(self, model: MambaLM, graph: bool, pin: bool = True, event: Callable[[], Any] | None = None,
              prefill_graphs: bool | None = None, programmatic_launch: bool = False) -> None:
        """The static buffers, the decode graph, the token ring and (``prefill_graphs``, None: the default of
        cuda_prefill.py) the chunked prefill around a prepared model on ``self.device``; ``programmatic_launch``:
        the decode graphs are captured with programmatic dependent launch (decide_programmatic_launch).
        (The CPU tests call it on a CPU model with graph=False, pin=False and a fake event: chunked prefill then runs
        its chunks eagerly.)"""
        self.model = model
        self.programmatic_launch = programmatic_launch
        self.vocab = int(self.model.lm_head.weight.shape[0])
        with torch.inference_mode():
            # static decode input: the token id, in the 16-byte record the greedy path copies to the host (TokenRing)
            self.record = torch.zeros(16, dtype=torch.uint8, device=self.device)
            self.token, self.top = record_views(self.record)  # (1,) int64, (1,) float32 (the greedy choice's logit)
            self.states = self.model.empty_states(1)  # static decode states, advanced in place by each step
        self.handle: object | None = None  # identifies the prefill the static states belong to
        self.pool = torch.cuda.graph_pool_handle() if graph else None  # one memory pool for every decode graph
        self.graph, self.logits = self.capture() if graph else (None, None)
        self.ring = TokenRing(self.record, pin=pin, event=event)  # where the greedy path's token ids come back
        self.greedy: dict[int, CudaGreedy] = {}  # usable vocabulary -> its greedy decoder
        use_chunks = PREFILL_GRAPHS_BY_DEFAULT if prefill_graphs is None else prefill_graphs
        # the prompt in chunk graphs continuing the static states (None: eager prefill of the whole prompt)
        self.chunked = PrefillGraphs(self.model, self.states, self.pool, graph=graph) if use_chunks else None

    @torch.inference_mode()
    def capture(self, greedy_vocab: int | None = None) -> tuple[torch.cuda.CUDAGraph, Tensor]:
        """Capture one decode step (reads self.token and self.states, writes self.states; with ``greedy_vocab``
        also writes its greedy choice into self.token and self.top) -> (graph, its static logits (1, v))."""
        scratch = record_views(torch.zeros(16, dtype=torch.uint8, device=self.device))

        def warmup() -> None:  # states are not copied back: warm-up leaves them untouched
            logits, _ = self.model.step(self.token, self.states)
            if greedy_vocab is not None:  # into scratch: self.token is the live sequence's next input
                greedy_choice_(logits, greedy_vocab, *scratch)

        def step() -> Tensor:
            logits, new_states = self.model.step(self.token, self.states)
            copy_states(self.states, new_states)
            if greedy_vocab is not None:
                greedy_choice_(logits, greedy_vocab, self.token, self.top)
            return logits

        return capture_graph(self.device, self.pool, warmup, WARMUP_STEPS, step, self.programmatic_launch)

    def device_greedy(self, usable_vocab: int | None = None) -> "CudaGreedy":
        """Greedy decoding on the GPU over the first ``usable_vocab`` logits (all when None; rows past the
        tokenizer's vocabulary are padding). Captures its decode graph on the first call per vocabulary
        (``graph=False``: eager steps, the same kernels), so call it before timing."""
        usable = self.vocab if usable_vocab is None else min(int(usable_vocab), self.vocab)
        if usable < 1:
            raise InputError(f"greedy decoding needs a vocabulary of at least one token, not {usable_vocab}")
        if usable not in self.greedy:
            self.greedy[usable] = CudaGreedy(self, usable)
        return self.greedy[usable]

    def prepare_prefill(self, n_tokens: int) -> None:
        """Capture the prefill graphs a prompt of ``n_tokens`` uses, so that its prefill only replays (call it before
        timing; nothing to do with eager prefill)."""
        if self.chunked is not None:
            self.chunked.prepare(n_tokens)

    @torch.inference_mode()
    def prefill_last(self, tokens: list[int]) -> Tensor:
        """Run the prompt, make its states the static ones (a new handle) -> the last position's logits (1, v)
        (with chunked prefill: a graph's static buffer, valid until the next prefill)."""
        self.handle = object()
        if self.chunked is not None:
            return self.chunked.run(tokens)
        ids = torch.tensor([tokens], dtype=torch.long).to(self.device)
        logits, states = self.model(ids)
        copy_states(self.states, states)
        return logits[:, -1]

    @torch.inference_mode()
    def prefill(self, tokens: list[int]) -> tuple[Tensor, Any]:
        """The prompt -> logits (v,) float32 on the GPU for the next token, and a handle to the static states."""
        return self.prefill_last(tokens)[0].clone(), self.handle  # a copy: the (1, l, v) logits are freed

    def check_handle(self, states: Any) -> None:
        if states is None or states is not self.handle:
            raise InputError("--backend cuda holds one sequence on the GPU: decode continues only the latest prefill")

    @torch.inference_mode()
    def decode(self, token: int, states: Any) -> tuple[Tensor, Any]:
        """One token of the sequence of the latest prefill -> logits (v,) float32 on the GPU, the same handle."""
        self.check_handle(states)
        self.token.fill_(token)
        if self.graph is not None:
            self.graph.replay()
            return self.logits[0].clone(), states  # the static buffer is overwritten by the next replay
        logits, new_states = self.model.step(self.token, self.states)
        copy_states(self.states, new_states)
        return logits[0], states

    @torch.inference_mode()
    def __call__(self, tokens: Tensor) -> tuple[Tensor, list[LayerState]]:
        return self.model(tokens.to(self.device))


class CudaGreedy:
    """Greedy decoding on the GPU for one usable vocabulary (module docstring): prefill and decode steps that choose
    the next token on the device and write it into the static token buffer; the host only reads the ids
    (``PendingToken.result``). ``graph``: the decode graph with the choice inside (None when the backend decodes
    eagerly); ``logits``: its static logits (1, v)."""

    def __init__(self, backend: CudaBackend, usable_vocab: int):
        self.backend, self.usable_vocab = backend, usable_vocab
        self.graph, self.logits = backend.capture(usable_vocab) if backend.graph is not None else (None, None)

    @torch.inference_mode()
    def prefill(self, tokens: list[int]) -> tuple[PendingToken, Any]:
        b = self.backend
        greedy_choice_(b.prefill_last(tokens), self.usable_vocab, b.token, b.top)
        return b.ring.push(), b.handle

    @torch.inference_mode()
    def decode(self, states: Any) -> PendingToken:
        b = self.backend
        b.check_handle(states)
        if self.graph is not None:
            self.graph.replay()
        else:
            logits, new_states = b.model.step(b.token, b.states)
            copy_states(b.states, new_states)
            greedy_choice_(logits, self.usable_vocab, b.token, b.top)
        return b.ring.push()


def load_cuda_backend(folder: ModelFolder) -> CudaBackend:
    """The cuda backend for an opened quantized artifact or export folder (its reference in ``quantized/``); the
    folder's kind was checked by :func:`edge_quamba.runtime.backends.check_backend`."""
    require_cuda_kernels()  # before reading the weights: fail fast on a machine that cannot run them
    return CudaBackend(load_reference_model(folder))
