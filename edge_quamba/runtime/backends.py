"""Backends: one interface (prefill a prompt, decode one token) over each way of running a model.

``ref`` runs the PyTorch reference (fp or quantized) anywhere; ``ort`` an export folder on ONNX Runtime; ``cuda`` the
quantized reference on a GPU with CUDA kernels and CUDA-graph decode (:mod:`edge_quamba.runtime.cuda_backend`). A
backend that cannot run here says why in one line (BackendUnavailableError); nothing ever falls back to another
backend. Logits may live on the backend's device (cuda); sampling handles that.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from edge_quamba.errors import BackendUnavailableError
from edge_quamba.folders import load_reference_model  # noqa: F401 (lives in folders; imported from here too)
from edge_quamba.runtime import BACKENDS


class Backend(Protocol):
    """Batch-1 generation interface. ``states`` is opaque to the caller and threaded through decode."""

    name: str

    def prefill(self, tokens: list[int]) -> tuple[Tensor, Any]:
        """tokens: the prompt ids -> logits (v,) float32 for the next token, and the states after the prompt."""

    def decode(self, token: int, states: Any) -> tuple[Tensor, Any]:
        """One token -> logits (v,) float32 for the next token, and the updated states."""


class TorchReferenceBackend:
    """Any module with the reference interface: ``forward(tokens (b,l), states)`` and ``step(token (b,), states)``."""

    name = "ref"

    def __init__(self, model: torch.nn.Module):
        self.model = model

    @torch.inference_mode()
    def prefill(self, tokens: list[int]) -> tuple[Tensor, Any]:
        logits, states = self.model(torch.tensor([tokens], dtype=torch.long))
        return logits[0, -1].float(), states

    @torch.inference_mode()
    def decode(self, token: int, states: Any) -> tuple[Tensor, Any]:
        logits, states = self.model.step(torch.tensor([token], dtype=torch.long), states)
        return logits[0].float(), states


def make_backend(name: str, path: Path, kind: str, dtype: torch.dtype = torch.float32,
                 threads: int | None = None) -> Backend:
    """Build the named backend for the model folder ``path`` of kind ``kind`` (fp, quantized or export).

    threads: intra-op threads (torch for ref, ONNX Runtime for ort); None keeps each runtime's default.
    """
    if name in ("cuda", "tensorrt"):
        refuse_hybrid(name, path)
    if name == "ref":
        if threads is not None:
            torch.set_num_threads(threads)
        return TorchReferenceBackend(load_reference_model(path, kind, dtype))
    if name == "ort":
        if kind != "export":
            raise BackendUnavailableError(f"--backend ort runs an export folder and {path} is a {kind} folder: "
                                          f"make one with `edge-quamba export --model {path} --out DIR`")
        from edge_quamba.runtime.ort_backend import OrtBackend

        return OrtBackend(path, threads=threads)
    if name == "cuda":
        from edge_quamba.runtime.cuda_backend import load_cuda_backend

        return load_cuda_backend(path, kind)
    if name == "tensorrt":
        from edge_quamba.runtime.tensorrt_engine import TensorRTBackend, import_tensorrt

        import_tensorrt()  # one line where TensorRT is absent, whatever the folder
        if kind != "engine":
            raise BackendUnavailableError(f"--backend tensorrt runs an engine folder and {path} is a {kind} folder: "
                                          f"make one with `edge-quamba build-engine --model EXPORT_DIR --out DIR`")
        return TensorRTBackend(path)
    raise BackendUnavailableError(f"unknown backend {name!r} (choose from {', '.join(BACKENDS)})")


def refuse_hybrid(name: str, path: Path) -> None:
    """One line for a GPU backend asked to run a hybrid Mamba2 + attention model: no attention kernel exists."""
    from edge_quamba.folders import load_config
    from edge_quamba.models.hybrid_config import HybridConfig

    if isinstance(load_config(path), HybridConfig):
        raise BackendUnavailableError(
            f"--backend {name} cannot run {path}: it is a hybrid Mamba2 + attention model and no GPU kernels for "
            f"attention are written yet; use --backend ref, or export it and use --backend ort")


def sequence_model(name: str, path: Path, kind: str, threads: int | None = None):
    """What batched evaluation calls: ``model(tokens (b, l) int64) -> (logits (b, l, v), states)``, with a
    ``device`` attribute for its inputs.

    ref: the PyTorch module; ort: the ONNX Runtime backend (callable, CPU); cuda: the quantized model on the GPU
    (callable, eager); any other backend says in one line why it cannot run here (never a silent fallback).
    """
    backend = make_backend(name, path, kind, threads=threads)
    if isinstance(backend, TorchReferenceBackend):
        return backend.model
    if not callable(backend):
        raise BackendUnavailableError(f"--backend {name} has no batched forward for evaluation")
    return backend
