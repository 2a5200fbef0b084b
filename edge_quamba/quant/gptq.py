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
its columns are fully up to date when its scale is computed (GPTQ's default: both 128; ours: both 64).

Activation order with static groups (``act_order=True``, GPTQ's "act order" / "static groups" options): the columns
are processed by decreasing H[k, k] (the mean squared input of feature k, times 2) instead of k = 0, 1, ...: the
columns that matter most to the output are rounded first, while many columns are still free to absorb their error;
the last ones, whose error nothing compensates any more, are the least important. Written as the natural-order solve
on the permuted problem: with P the order, W' = W[:, P] and H' = H[P][:, P] (the Hessian of the permuted inputs),
U' is the Cholesky factor of H'⁻¹ and the update above runs over k' = 0, 1, ... of W'. What stays in natural order
is the group: column k still reads group k // group_size, so the stored codes, scales and every kernel are exactly
those of natural order (no permutation, no g_idx at run time). Since a group's columns are now quantized at
scattered moments of the solve, its scale cannot be taken from "the current weights when the group starts": it is
fixed before the solve from the group's original columns (the round-to-nearest scale, ``int4_group_scales``), and
each column is rounded at its group's fixed scale when its turn comes. The cost: an error-compensated weight that
grew past its group's amax is clipped to ±7 (natural order sizes the scale to the compensated weights). Columns of
equal H[k, k] keep their natural order (a stable sort), so with H = c I both orders are the same solve.

Details: H is accumulated in float64 over the calibration tokens and divided by their count (a scale of H changes
nothing but the damping's meaning); a column whose input was always zero (H[k, k] = 0) gets H[k, k] = 1 and weight
0 (it never contributes); damping adds ``damp * mean(diag H)`` to the diagonal (the paper's 1%) so that the
Cholesky factorization exists. All arithmetic is float64 on the device of the calibration inputs (the CPU, or a GPU
when the model is calibrated there), in a fixed order: deterministic on one device; a GPU's float64 sums may differ
from the CPU's in the last bits, which can flip a code sitting on a rounding tie.
With a diagonal H, U is diagonal, no error moves, and GPTQ in either order is exactly round-to-nearest (a test holds
this).

Glossary: W (N, K) the nn.Linear weight (out_features, in_features); X (tokens, K) its input; H (K, K); U (K, K);
P (K,) the processing order of the columns (natural: 0..K-1; act order: by decreasing H[k, k]).
"""

from __future__ import annotations

import torch
from torch import Tensor

from edge_quamba.quant.config import DEFAULT_DAMP, DEFAULT_GROUP_SIZE
from edge_quamba.quant.primitives import (AMAX_FLOOR, INT4_MAX, int4_expand_scales,
                                          int4_group_count, int4_group_scales, quantize_int4)


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


def gptq_quantize(w: Tensor, H: Tensor, group_size: int = DEFAULT_GROUP_SIZE, damp: float = DEFAULT_DAMP,
                  act_order: bool = False) -> tuple[Tensor, Tensor]:
    """GPTQ of one weight: w (N, K) float, H (K, K) -> (q (N, K) int8 codes in [-7, 7], scales (N, G) float32).

    ``act_order``: False quantizes columns in natural order, each group's scale taken from its compensated weights;
    True by decreasing H[k, k] with static group scales (module docstring). Either way the codes and scales follow
    the int4 convention exactly (:func:`quantize_int4` at float32 scales ``max(amax, AMAX_FLOOR) / 7``, column k in
    group k // group_size); only which weights are rounded (the compensated ones) differs from RTN.
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
    if act_order:
        return _act_order(W, H, group_size)

    U = _upper_inverse_factor(H)
    scales = torch.empty(n, int4_group_count(k, group_size), dtype=torch.float32, device=device)
    q = torch.empty(n, k, dtype=torch.int8, device=device)
    for start in range(0, k, group_size):  # one block = one group (see the module docstring)
        end = min(start + group_size, k)
        g = start // group_size
        amax = W[:, start:end].abs().amax(dim=1).to(torch.float32)  # the group's current weights, as GPTQ takes them
        scales[:, g] = amax.clamp(min=AMAX_FLOOR) / INT4_MAX
        q[:, start:end] = _solve_block(W, U, start, end, scales[:, g, None].expand(n, end - start))
    return q.cpu(), scales.cpu()


def _act_order(W: Tensor, H: Tensor, group_size: int) -> tuple[Tensor, Tensor]:
    """The act-order solve of damped W (N, K) float64, H (K, K) float64 (module docstring): static scales from W in
    natural order, then the natural-order solve of W[:, P] under H[P][:, P], each column at its own group's scale."""
    n, k = W.shape
    scales = int4_group_scales(W, group_size)  # (N, G) float32, fixed before the solve
    order = torch.argsort(torch.diagonal(H), descending=True, stable=True)  # P: (K,)
    W = W[:, order]  # W' (N, K)
    U = _upper_inverse_factor(H[order][:, order])
    column_scales = int4_expand_scales(scales, k, group_size)[:, order]  # (N, K): column k' reads group P[k'] // G
    q_permuted = torch.empty(n, k, dtype=torch.int8, device=W.device)
    for start in range(0, k, group_size):  # blocks of group_size columns of W' (only the lazy-batch size here)
        end = min(start + group_size, k)
        q_permuted[:, start:end] = _solve_block(W, U, start, end, column_scales[:, start:end])
    q = torch.empty_like(q_permuted)
    q[:, order] = q_permuted  # back to natural column order: the stored layout
    return q.cpu(), scales.cpu()


def _upper_inverse_factor(H: Tensor) -> Tensor:
    """U (K, K) upper triangular with H⁻¹ = Uᵀ U, from the damped H (K, K) float64."""
    return torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)


def _solve_block(W: Tensor, U: Tensor, start: int, end: int, scales: Tensor) -> Tensor:
    """Quantize columns start..end-1 of W (N, K) float64 one by one at ``scales`` (N, end - start) float32, moving
    each rounding error onto the later columns of the block at once and onto the columns from ``end`` on once per
    block (lazy batch; W is updated in place). Returns the block's codes (N, end - start) int8."""
    block = W[:, start:end].clone()  # (N, B), updated column by column
    errors = torch.empty_like(block)
    q = torch.empty(block.shape, dtype=torch.int8, device=W.device)
    for i in range(end - start):
        column = block[:, i]
        q[:, i] = quantize_int4(column, scales[:, i])
        dequantized = q[:, i].to(torch.float32) * scales[:, i]  # float32, as dequantize_int4
        error = (column - dequantized.to(torch.float64)) / U[start + i, start + i]
        block[:, i:] -= error[:, None] * U[start + i, start + i:end][None, :]
        errors[:, i] = error
    W[:, end:] -= errors @ U[start:end, end:]
    return q
