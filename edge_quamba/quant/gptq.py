"""GPTQ (Frantar et al., arXiv 2210.17323): error-compensating rounding of one linear layer's weight to group-wise
int4 (the convention of :mod:`edge_quamba.quant.primitives`), written from the paper.

The problem, per layer: find int4 codes Q minimizing ||W X^T - Ŵ X^T||² over calibration inputs X (rows: tokens),
Ŵ = dequantized Q. Its Hessian in W is H = 2 X^T X (K, K), the same for every output row. GPTQ quantizes the
columns k = 0, 1, ..., K-1 in order and, after each, spreads that column's rounding error over the not yet quantized
columns with the optimal (OBS) update, using the upper Cholesky factor U of H⁻¹ (H⁻¹ = Uᵀ U):

    e      = (w_k - ŵ_k) / U[k, k]                 (N,)
    w_j   -= e * U[k, j]         for j > k         (the columns still to quantize)

Lazy batches: columns are processed in blocks of ``block_size``; the update of columns beyond the block is applied
once per block (``W[:, end:] -= E @ U[block, end:]``), which is the same sum computed in another order.
Group-wise scales are taken as GPTQ does, when a group's first column is reached, from the group's *current*
(already error-compensated) weights. We use block size = group size so that a group is always inside one block and
its columns are fully up to date when its scale is computed (GPTQ's default: both 128).

Details: H is accumulated in float64 over the calibration tokens and divided by their count (a scale of H changes
nothing but the damping's meaning); a column whose input was always zero (H[k, k] = 0) gets H[k, k] = 1 and weight
0 (it never contributes); damping adds ``damp * mean(diag H)`` to the diagonal (the paper's 1%) so that the
Cholesky factorization exists. No activation reordering ("act order": it would make the group of a column depend on
H, and a kernel would need a permutation). All arithmetic is float64 on the device of the calibration inputs (the
CPU, or a GPU when the model is calibrated there), in a fixed order: deterministic on one device; a GPU's float64
sums may differ from the CPU's in the last bits, which can flip a code sitting on a rounding tie.
With H = I, U is diagonal, no error moves, and GPTQ is exactly round-to-nearest (a test holds this).

Glossary: W (N, K) the nn.Linear weight (out_features, in_features); X (tokens, K) its input; H (K, K); U (K, K).
"""

from __future__ import annotations

import torch
from torch import Tensor

from edge_quamba.quant.primitives import (AMAX_FLOOR, DEFAULT_GROUP_SIZE, INT4_MAX, int4_group_count,
                                          quantize_int4)

DEFAULT_DAMP = 0.01
"""Fraction of the mean diagonal of H added to its diagonal (the paper's λ)."""


class HessianAccumulator:
    """Running H = 2 X^T X / tokens of one linear layer's inputs, in float64 on the device of the first input (a
    GPU's float64 GEMM keeps calibrating a 100 M-parameter model on the GPU fast). x: (..., K), any float dtype."""

    def __init__(self, in_features: int):
        self.in_features = in_features
        self.H: Tensor | None = None
        self.tokens = 0

    def add(self, x: Tensor) -> None:
        if self.H is None:
            self.H = torch.zeros(self.in_features, self.in_features, dtype=torch.float64, device=x.device)
        rows = x.detach().reshape(-1, x.shape[-1]).to(device=self.H.device, dtype=torch.float64)
        if not bool(torch.isfinite(rows).all()):
            raise ValueError("GPTQ calibration input holds NaN or Inf")
        total = self.tokens + rows.shape[0]
        self.H.mul_(self.tokens / total).add_(rows.T @ rows, alpha=2.0 / total)  # running mean of 2 x x^T
        self.tokens = total


def gptq_quantize(w: Tensor, H: Tensor, group_size: int = DEFAULT_GROUP_SIZE,
                  damp: float = DEFAULT_DAMP) -> tuple[Tensor, Tensor]:
    """GPTQ of one weight: w (N, K) float, H (K, K) -> (q (N, K) int8 codes in [-7, 7], scales (N, G) float32).

    The codes and scales follow the int4 convention exactly (:func:`quantize_int4` at float32 scales
    ``max(amax, AMAX_FLOOR) / 7``); only which weights are rounded (the compensated ones) differs from RTN.
    Computed on H's device; returned on the CPU."""
    n, k = w.shape
    if H.shape != (k, k):
        raise ValueError(f"GPTQ: Hessian {tuple(H.shape)} does not fit the weight {tuple(w.shape)}")
    if not damp > 0:
        raise ValueError(f"GPTQ damping must be > 0, got {damp}")
    device = H.device
    W = w.detach().to(device=device, dtype=torch.float64).clone()
    H = H.detach().to(dtype=torch.float64).clone()
    dead = torch.diagonal(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H.diagonal().add_(damp * float(torch.diagonal(H).mean()))
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)  # H^-1 = U^T U

    groups = int4_group_count(k, group_size)
    scales = torch.empty(n, groups, dtype=torch.float32, device=device)
    q = torch.empty(n, k, dtype=torch.int8, device=device)
    for start in range(0, k, group_size):  # one block = one group (see the module docstring)
        end = min(start + group_size, k)
        block = W[:, start:end].clone()  # (N, B), updated column by column
        errors = torch.empty_like(block)
        g = start // group_size
        amax = block.abs().amax(dim=1).to(torch.float32)  # the group's current weights, as GPTQ takes them
        scales[:, g] = amax.clamp(min=AMAX_FLOOR) / INT4_MAX
        for i in range(end - start):
            column = block[:, i]
            q[:, start + i] = quantize_int4(column, scales[:, g])
            dequantized = q[:, start + i].to(torch.float32) * scales[:, g]  # float32, as dequantize_int4
            error = (column - dequantized.to(torch.float64)) / U[start + i, start + i]
            block[:, i:] -= error[:, None] * U[start + i, start + i:end][None, :]
            errors[:, i] = error
        W[:, end:] -= errors @ U[start:end, end:]
    return q.cpu(), scales.cpu()
