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
logits. Prefill runs eagerly (``model.forward`` on the whole prompt) and copies its final states into the static
buffers. The backend therefore holds ONE sequence: ``decode`` refuses states from any prefill but the latest.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_quamba.errors import BackendUnavailableError, InputError
from edge_quamba.folders import ModelFolder, load_reference_model
from edge_quamba.models.mamba import LayerState, MambaLM

WARMUP_STEPS = 2
"""Eager decode steps on a side stream before capture (lazy cuBLAS/kernel initialization, allocator warm-up)."""


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


def copy_states(dst: list[LayerState], src: list[LayerState]) -> None:
    """dst <- src for every layer, in two launches (one per state dtype), capturable in a CUDA graph."""
    torch._foreach_copy_([s.conv_state for s in dst], [s.conv_state for s in src])
    torch._foreach_copy_([s.ssm_state for s in dst], [s.ssm_state for s in src])


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


class CudaBackend:
    """Batch-1 generation on the GPU: eager prefill, CUDA-graph decode (``graph=False``: eager decode, for tests).

    ``__call__`` is the batched forward evaluation uses: tokens (b, l) -> (logits (b, l, v) float32, states).
    """

    name = "cuda"

    def __init__(self, model: MambaLM, device: str | torch.device = "cuda", graph: bool = True):
        self.device = torch.device(device)
        if self.device.type != "cuda":
            raise BackendUnavailableError(f"--backend cuda runs on a CUDA device, not {self.device}")
        refuse_options(model)
        require_cuda_kernels()
        self.model = prepare_gpu_model(model, self.device)
        with torch.inference_mode():
            self.token = torch.zeros(1, dtype=torch.long, device=self.device)  # static decode input
            self.states = self.model.empty_states(1)  # static decode states, advanced in place by each step
        self.handle: object | None = None  # identifies the prefill the static states belong to
        self.graph, self.logits = self.capture() if graph else (None, None)

    @torch.inference_mode()
    def capture(self) -> tuple[torch.cuda.CUDAGraph, Tensor]:
        """Capture one decode step (reads self.token and self.states, writes self.states)
        -> (graph, its static logits (1, v))."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_STEPS):  # states are not copied back: warm-up leaves them untouched
                self.model.step(self.token, self.states)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            logits, new_states = self.model.step(self.token, self.states)
            copy_states(self.states, new_states)
        return graph, logits

    @torch.inference_mode()
    def prefill(self, tokens: list[int]) -> tuple[Tensor, Any]:
        """The prompt -> logits (v,) float32 on the GPU for the next token, and a handle to the static states."""
        ids = torch.tensor([tokens], dtype=torch.long).to(self.device)
        logits, states = self.model(ids)
        copy_states(self.states, states)
        self.handle = object()
        return logits[0, -1].clone(), self.handle  # a copy: the (1, l, v) logits are freed

    @torch.inference_mode()
    def decode(self, token: int, states: Any) -> tuple[Tensor, Any]:
        """One token of the sequence of the latest prefill -> logits (v,) float32 on the GPU, the same handle."""
        if states is None or states is not self.handle:
            raise InputError("--backend cuda holds one sequence on the GPU: decode continues only the latest prefill")
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


def load_cuda_backend(folder: ModelFolder) -> CudaBackend:
    """The cuda backend for an opened quantized artifact or export folder (its reference in ``quantized/``); the
    folder's kind was checked by :func:`edge_quamba.runtime.backends.check_backend`."""
    require_cuda_kernels()  # before reading the weights: fail fast on a machine that cannot run them
    return CudaBackend(load_reference_model(folder))
