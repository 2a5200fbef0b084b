"""Backends: one interface (prefill a prompt, decode one token) over each way of running a model.

``ref`` runs the PyTorch reference (fp or quantized) anywhere; ``ort`` an export folder on ONNX Runtime; ``cuda`` the
quantized reference on a GPU with CUDA kernels and CUDA-graph decode (:mod:`edge_quamba.runtime.cuda_backend`);
``tensorrt`` an engine folder (:mod:`edge_quamba.runtime.tensorrt_backend`, numpy and cuda-python: no torch). A
backend that cannot run here says why in one line (BackendUnavailableError); nothing ever falls back to another
backend. Logits are a torch tensor (possibly on the backend's device: cuda) or a numpy array (tensorrt); sampling
takes either.

This module imports no torch: ``run``/``bench --backend tensorrt`` must work on a device without PyTorch
(tests/test_tensorrt_runtime.py runs them with ``import torch`` blocked). The reference backend imports it when it is
built, from a model that already needs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from edge_quamba.errors import BackendUnavailableError
from edge_quamba.folders import ModelFolder, load_reference_model
from edge_quamba.kinds import ENGINE, EXPORT, FP, QUANTIZED
from edge_quamba.models.hybrid_config import HybridConfig
from edge_quamba.runtime import BACKENDS

if TYPE_CHECKING:
    import torch


class Backend(Protocol):
    """Batch-1 generation interface. ``states`` is opaque to the caller and threaded through decode."""

    name: str

    def prefill(self, tokens: list[int]) -> tuple[Any, Any]:
        """tokens: the prompt ids -> logits (v,) float32 for the next token, and the states after the prompt."""

    def decode(self, token: int, states: Any) -> tuple[Any, Any]:
        """One token -> logits (v,) float32 for the next token, and the updated states."""


class PendingToken(Protocol):
    """A token id chosen on the device and copied to the host asynchronously; ``result`` waits for that copy only."""

    def result(self) -> int:
        """The token id (waits on the copy's event; NumericsError when the logits had a NaN or were all -Inf)."""


class DeviceGreedy(Protocol):
    """Greedy decoding on the backend's device (optional; ``--backend cuda`` has it): the argmax of the logits is
    written on the device into the input of the next step, so a decode step takes no token from the host, and the id
    comes back through a :class:`PendingToken`. A backend offers it through ``device_greedy(usable_vocab)``;
    :func:`edge_quamba.runtime.generate.device_greedy_decoder` decides when generation uses it (greedy sampling
    only: sampled tokens are always drawn on the host from the seeded generator)."""

    usable_vocab: int

    def prefill(self, tokens: list[int]) -> tuple[PendingToken, Any]:
        """The prompt -> the first new token (pending), and the states after the prompt."""

    def decode(self, states: Any) -> PendingToken:
        """Enqueue one step on the token the previous prefill/decode chose -> the next token (pending); returns
        without waiting for the device."""


class TorchReferenceBackend:
    """Any module with the reference interface: ``forward(tokens (b,l), states)`` and ``step(token (b,), states)``."""

    name = "ref"

    def __init__(self, model: torch.nn.Module):
        import torch

        self.model, self.torch = model, torch

    def prefill(self, tokens: list[int]) -> tuple[torch.Tensor, Any]:
        torch = self.torch
        with torch.inference_mode():
            logits, states = self.model(torch.tensor([tokens], dtype=torch.long))
        return logits[0, -1].float(), states

    def decode(self, token: int, states: Any) -> tuple[torch.Tensor, Any]:
        torch = self.torch
        with torch.inference_mode():
            logits, states = self.model.step(torch.tensor([token], dtype=torch.long), states)
        return logits[0].float(), states


def check_backend(name: str, folder: ModelFolder) -> None:
    """One line when backend ``name`` cannot run ``folder`` (its kind, its architecture, or this machine), from the
    folder's kind and configs alone: commands pass it to :func:`edge_quamba.folders.open_model` as its ``check``, so
    the refusal comes before any file is hashed."""
    if name not in BACKENDS:
        raise BackendUnavailableError(f"unknown backend {name!r} (choose from {', '.join(BACKENDS)})")
    path, kind = folder.path, folder.kind
    if name in ("cuda", "tensorrt") and isinstance(folder.config, HybridConfig):
        raise BackendUnavailableError(
            f"--backend {name} cannot run {path}: it is a hybrid Mamba2 + attention model and no GPU kernels for "
            f"attention are written yet; use --backend ref, or export it and use --backend ort")
    if name == "tensorrt":
        from edge_quamba.runtime.tensorrt_engine import import_tensorrt

        import_tensorrt()  # one line where TensorRT is absent, whatever the folder
    if name == "ref" and kind == ENGINE.name:
        raise BackendUnavailableError(f"--backend ref cannot run a {kind} folder ({path})")
    if name == "ort" and kind != EXPORT.name:
        raise BackendUnavailableError(f"--backend ort runs an export folder and {path} is a {kind} folder: "
                                      f"make one with `edge-quamba export --model {path} --out DIR`")
    if name == "cuda":
        if kind == FP:
            raise BackendUnavailableError(f"--backend cuda runs a quantized model and {path} is an fp checkpoint: "
                                          f"make one first with `edge-quamba quantize --model {path} --out DIR`")
        if kind not in (QUANTIZED.name, EXPORT.name):
            raise BackendUnavailableError(f"--backend cuda cannot run a {kind} folder ({path})")
        if folder.fp32_export:
            raise BackendUnavailableError(f"--backend cuda runs a quantized model and {path} is an fp32 export "
                                          f"(--bits fp32): run it with --backend ort or ref")
    if name == "tensorrt" and kind != ENGINE.name:
        raise BackendUnavailableError(f"--backend tensorrt runs an engine folder and {path} is a {kind} folder: "
                                      f"make one with `edge-quamba build-engine --model EXPORT_DIR --out DIR`")


def make_backend(name: str, folder: ModelFolder, dtype: torch.dtype | None = None,
                 threads: int | None = None) -> Backend:
    """Build the named backend for an opened model folder (fp, quantized, export or engine).

    dtype: the fp reference's dtype (float32 when None). threads: intra-op threads (torch for ref, ONNX Runtime for
    ort); None keeps each runtime's default.
    """
    check_backend(name, folder)
    if name == "ref":
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        return TorchReferenceBackend(load_reference_model(folder, dtype))
    if name == "ort":
        from edge_quamba.runtime.ort_backend import OrtBackend

        return OrtBackend(folder, threads=threads)
    if name == "cuda":
        from edge_quamba.runtime.cuda_backend import load_cuda_backend

        return load_cuda_backend(folder)
    from edge_quamba.runtime.tensorrt_backend import TensorRTBackend

    return TensorRTBackend(folder)


def sequence_model(name: str, folder: ModelFolder, threads: int | None = None):
    """What batched evaluation calls: ``model(tokens (b, l) int64) -> (logits (b, l, v), states)``, with a
    ``device`` attribute for its inputs.

    ref: the PyTorch module; ort: the ONNX Runtime backend (callable, CPU); cuda: the quantized model on the GPU
    (callable, eager); any other backend says in one line why it cannot run here (never a silent fallback).
    """
    backend = make_backend(name, folder, threads=threads)
    if isinstance(backend, TorchReferenceBackend):
        return backend.model
    if not callable(backend):
        raise BackendUnavailableError(f"--backend {name} has no batched forward for evaluation")
    return backend
