"""Hadamard matrices and the orthonormal Hadamard transform that rotates the out_proj input (Quamba's output smoothing).

Supported sizes: ``n = m * p`` with ``m`` in {1, 12, 20, 28} and ``p = 2**k`` (k >= 0). This covers every Mamba1/Mamba2
d_inner: 768 = 12*64, 1536 = 12*128, 2048, 3072 = 12*256, 4096, 5120 = 20*256, 7168 = 28*256, 8192, 10240 = 20*512.
(Sizes 40 * 2**k are 20 * 2**(k+1); no separate 40 construction is needed.) The decomposition is unique: m is 1 when
n is a power of two, else 4 times n's odd part, which must be 3, 5 or 7.

Matrices (unnormalized, entries +-1, ``H @ H.T == n * I``)::

    H_n = kron(H_m, H_p)                      m first, the 2**k factor last
    H_p = Sylvester: H_1 = [1], H_2p = [[H_p, H_p], [H_p, -H_p]]
    H_12, H_20: Paley construction I   (q = 11, 19; q prime, q = 3 mod 4)
    H_28:       Paley construction II  (q = 13;     q prime, q = 1 mod 4)

Both Paley constructions are built from the quadratic character chi of GF(q) (chi(0) = 0, chi(a) = +1 if a is a nonzero
square mod q, else -1) through the Jacobsthal matrix ``Q[i, j] = chi(j - i)``, and are checked at construction.
These are not entry-for-entry the tables in fast-hadamard-transform or QuaRot/Quamba (which use, e.g., a 40 x 40 table
for 5120): any Hadamard matrix is a valid rotation, but the transform applied to activations and the one folded into
out_proj must be the same, so every consumer (reference, ONNX lowering, CUDA kernel, TensorRT plugin) takes its matrices
from this module.

Layout (shared by :func:`hadamard_transform`, :func:`hadamard_factor_matrices` and the ONNX lowering)::

    x: (..., n)  ->  X = x.reshape(..., m, p)          row-major: x[i * p + j] = X[i, j]
    Y = A @ X @ B.T,   A = H_m / sqrt(m) (m, m),  B = H_p / sqrt(p) (p, p)
    y = Y.reshape(..., n) == x @ (H_n / sqrt(n)).T     because kron(H_m, H_p) acts on X as H_m X H_p^T

H_p (Sylvester) is symmetric; H_12, H_20, H_28 are not, so the transpose on A matters (A acts on the left).

Rotating a linear layer's input
-------------------------------
With the orthonormal ``R = H_n / sqrt(n)`` (R^T R = I) and a linear layer ``y = W x`` (W: (out, n)),
``y = W x = W R^T R x = (W R^T)(R x)``. So if the activation is transformed, ``x' = R x = hadamard_transform(x)``, the
weight must become ``W' = W R^T``, which is :func:`rotate_linear_input`; row by row, ``W' = hadamard_transform(W)``.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

_SMALL = {12: ("paley1", 11), 20: ("paley1", 19), 28: ("paley2", 13)}
"""Non-power-of-two factors m and how they are built (construction, prime q)."""

SUPPORTED_FORMS = "n = m * 2**k with m in {1, 12, 20, 28} and k >= 0 (e.g. 768, 1536, 2048, 3072, 4096, 5120, 7168)"


def hadamard_factors(n: int) -> tuple[int, int]:
    """(m, p) with n = m * p, m in {1, 12, 20, 28} and p a power of two. Raises ValueError for unsupported n."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"Hadamard size must be a positive int, got n={n!r}; supported: {SUPPORTED_FORMS}")
    odd = n
    while odd % 2 == 0:
        odd //= 2
    m = 1 if odd == 1 else 4 * odd
    if m != 1 and (m not in _SMALL or n % m != 0):
        raise ValueError(f"no Hadamard matrix for n={n}; supported: {SUPPORTED_FORMS}")
    return m, n // m


def _quadratic_character(q: int) -> list[int]:
    """chi(a) for a in 0..q-1 over GF(q), q an odd prime: 0, +1 for nonzero squares, -1 otherwise."""
    squares = {(a * a) % q for a in range(1, q)}
    return [0] + [1 if a in squares else -1 for a in range(1, q)]


def _jacobsthal(q: int) -> Tensor:
    """(q, q) float64 Jacobsthal matrix Q[i, j] = chi(j - i mod q)."""
    chi = _quadratic_character(q)
    return torch.tensor([[chi[(j - i) % q] for j in range(q)] for i in range(q)], dtype=torch.float64)


def _paley1(q: int) -> Tensor:
    """(q+1, q+1) Hadamard for a prime q = 3 mod 4: H = I + S, S = [[0, 1^T], [-1, Q]] (skew: S^T = -S, S S^T = q I)."""
    s = torch.zeros(q + 1, q + 1, dtype=torch.float64)
    s[0, 1:] = 1.0
    s[1:, 0] = -1.0
    s[1:, 1:] = _jacobsthal(q)
    return torch.eye(q + 1, dtype=torch.float64) + s


def _paley2(q: int) -> Tensor:
    """(2(q+1), 2(q+1)) Hadamard for a prime q = 1 mod 4.

    C = [[0, 1^T], [1, Q]] is a symmetric conference matrix (C C^T = q I); each 0 becomes [[1, -1], [-1, -1]] and each
    +-1 becomes +-[[1, 1], [1, -1]].
    """
    c = torch.zeros(q + 1, q + 1, dtype=torch.float64)
    c[0, 1:] = 1.0
    c[1:, 0] = 1.0
    c[1:, 1:] = _jacobsthal(q)
    on_zero = torch.tensor([[1.0, -1.0], [-1.0, -1.0]], dtype=torch.float64)
    on_one = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    return torch.kron(c, on_one) + torch.kron(torch.eye(q + 1, dtype=torch.float64), on_zero)


def _sylvester(p: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """(p, p) Sylvester Hadamard in ``dtype`` (+-1 is exact in any dtype), p a power of two: H_2p = kron(H_2, H_p)."""
    h = torch.ones(1, 1, dtype=dtype)
    h2 = torch.tensor([[1, 1], [1, -1]], dtype=dtype)
    while h.shape[0] < p:
        h = torch.kron(h2, h)
    return h


@functools.lru_cache(maxsize=None)
def _small_hadamard(m: int) -> Tensor:
    """Cached (m, m) float64 H_m for m in {1, 12, 20, 28}, verified. Internal: callers must not modify it."""
    if m == 1:
        return torch.ones(1, 1, dtype=torch.float64)
    kind, q = _SMALL[m]
    h = _paley1(q) if kind == "paley1" else _paley2(q)
    if h.shape != (m, m) or not torch.equal(h @ h.T, m * torch.eye(m, dtype=torch.float64)):
        raise AssertionError(f"Paley construction for m={m} (q={q}) is not Hadamard")
    return h


def hadamard_matrix(n: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """Dense unnormalized (n, n) Hadamard matrix H_n = kron(H_m, H_p), entries +-1, H_n @ H_n.T == n * I.

    Built on each call directly in ``dtype`` (entries +-1 are exact in every dtype); only the tiny H_m factors are
    cached, because a cached dense float64 H_10240 would pin 800 MB and nothing on a hot path needs the dense matrix
    (use :func:`hadamard_transform`). Returns a fresh tensor.
    """
    m, p = hadamard_factors(n)
    return torch.kron(_small_hadamard(m).to(dtype), _sylvester(p, dtype))


def hadamard_factor_matrices(n: int, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """Normalized factors (A, B) = (H_m / sqrt(m), H_p / sqrt(p)), shapes (m, m) and (p, p), in ``dtype``.

    Each entry is +-1/sqrt(.) computed in float64 and rounded once to ``dtype``.

    hadamard_transform(x) == (A @ x.reshape(..., m, p) @ B.T).reshape(..., n). For a power-of-two n, A is [[1.]].
    B = H_p / sqrt(p) is itself kron(H_p1, H_p2) / sqrt(p1 p2) for any split p = p1 * p2, should a lowering prefer
    smaller matrices.
    """
    m, p = hadamard_factors(n)
    a = (_small_hadamard(m) / math.sqrt(m)).to(dtype)
    c = torch.tensor(1.0 / math.sqrt(p), dtype=torch.float64).to(dtype)  # the constant, rounded once
    b = _sylvester(p, dtype) * c
    return a, b


def _fwht_last(y: Tensor) -> Tensor:
    """Unnormalized Sylvester transform along the last dim (a power of two): y (..., p) -> y @ H_p^T = y @ H_p."""
    p = y.shape[-1]
    lead = y.shape[:-1]
    h = 1
    while h < p:
        # pairs (i, i + h) inside blocks of 2h: one H_2 butterfly per bit of the index
        v = y.reshape(*lead, p // (2 * h), 2, h)
        a, b = v[..., 0, :], v[..., 1, :]
        y = torch.stack((a + b, a - b), dim=-2).reshape(*lead, p)
        h *= 2
    return y


def hadamard_transform(x: Tensor) -> Tensor:
    """Orthonormal Hadamard transform along the last dim: y = x @ H_n^T / sqrt(n), same shape and dtype as x.

    x: floating (..., n) with n supported (see hadamard_factors). Computed as X = x.reshape(..., m, p), a fast
    Walsh-Hadamard transform over p (n log p adds; stages h = 1, 2, 4, ... in that order, (a, b) -> (a + b, a - b)),
    H_m over m in the fixed order of :func:`_small_left`, one multiply by float(1/sqrt(n)) rounded once to the work
    dtype. This order is part of the op's definition (HadamardQuantize): CUDA kernels follow it bit for bit. float64 stays float64;
    float32, float16 and bfloat16 are computed in float32 and cast back.
    """
    if not x.is_floating_point():
        raise TypeError(f"hadamard_transform expects a floating tensor, got {x.dtype}")
    n = x.shape[-1]
    m, p = hadamard_factors(n)
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    lead = x.shape[:-1]
    y = _fwht_last(x.to(work).reshape(*lead, m, p))  # (..., m, p) @ H_p^T
    if m > 1:
        y = _small_left(y, _small_hadamard(m))  # H_m @ (...)
    inv_sqrt_n = torch.tensor(1.0 / math.sqrt(n), dtype=torch.float64).to(work)  # the constant, rounded once
    y = y.reshape(*lead, n) * inv_sqrt_n.to(x.device)
    return y.to(x.dtype)


def _small_left(y: Tensor, h_m: Tensor) -> Tensor:
    """H_m @ Y for Y (..., m, p) with a +-1 matrix H_m (m, m), summed in a fixed order: row i is
    (((s_i0 Y_0 + s_i1 Y_1) + s_i2 Y_2) + ...) with s = H_m[i, r] a sign, r ascending. A matmul's summation order is
    the library's choice; kernels reproduce this one bit for bit. All rows advance together: multiplying by +-1 is
    exact, so ``acc + s * Y_r`` rounds exactly as ``acc + Y_r`` or ``acc - Y_r`` does."""
    signs = h_m.to(device=y.device, dtype=y.dtype)[:, :, None]  # (m, m, 1)
    acc = signs[:, 0] * y[..., 0:1, :]  # (..., m, p)
    for r in range(1, h_m.shape[0]):
        acc = acc + signs[:, r] * y[..., r:r + 1, :]
    return acc


def rotate_linear_input(weight: Tensor) -> Tensor:
    """W' = W R^T with R = H_n / sqrt(n), so that W' @ hadamard_transform(x) == W @ x.

    weight: (out_features, n), the nn.Linear layout. Returns the same shape and dtype, computed in float64.
    Proof: R is orthonormal (R^T R = I), so W x = W (R^T R) x = (W R^T)(R x); and R x is hadamard_transform(x).
    Row by row, (W R^T)[o] = R W[o], i.e. W' = hadamard_transform(W) along in_features.
    """
    if weight.dim() != 2:
        raise ValueError(f"rotate_linear_input expects a 2-D (out_features, in_features) weight, "
                         f"got {tuple(weight.shape)}")
    return hadamard_transform(weight.to(torch.float64)).to(weight.dtype)
