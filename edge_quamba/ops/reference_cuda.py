"""The reference implementations of every ``torch.ops.edge_quamba.*`` op, registered for CUDA tensors.

Explicit opt-in for evaluation on a GPU (``benchmarks/quality.py --device cuda``): the same Python reference code
(:data:`edge_quamba.ops.torch_ops.REFERENCES`: :mod:`edge_quamba.quant.primitives`, :mod:`edge_quamba.quant.qops`)
runs on CUDA tensors, so a quantized variant that has no CUDA kernel (per-channel weights) is evaluated with the
same integer arithmetic as on the CPU: exact int32 sums emulated in float64, the same rounding. It is NOT the
``--backend cuda`` path, which registers our kernels (:mod:`edge_quamba.ops.cuda_ops`) and never this module; a
process uses one or the other (the later registration of an op wins, so do not import both).

Numbers on the GPU equal the CPU's up to float rounding of the non-integer parts (exp, softplus, the scan's dot
products and the library's float32 GEMMs), which can move a code across a rounding tie; nothing is claimed
byte-identical across devices.
"""

from __future__ import annotations

import torch

from edge_quamba.ops import torch_ops

DEVICE = "cuda"
"""The device type the references are registered for (the dispatcher's CUDA key)."""


def register_reference_for_cuda() -> list[str]:
    """Register each op's reference function for CUDA tensors; returns the qualified op names registered."""
    names = []
    for name, fn in torch_ops.REFERENCES.items():
        qualname = f"edge_quamba::{name}"
        torch.library.register_kernel(qualname, DEVICE, fn)
        names.append(qualname)
    return names
