"""Hadamard matrices (H H^T = n I, entries +-1), the fast orthonormal transform, factor layout, out_proj rotation."""

import math

import pytest
import torch

from edge_quamba.quant.hadamard import (
    hadamard_factor_matrices,
    hadamard_factors,
    hadamard_matrix,
    hadamard_transform,
    rotate_linear_input,
)

SMALL = [1, 2, 4, 8, 12, 20, 24, 28, 40, 48, 56, 80, 112]
MAMBA_D_INNER = [768, 1536, 2048, 3072, 4096, 5120]


def _report(name: str, diff: torch.Tensor) -> None:
    d = diff.detach().to(torch.float64).abs()
    print(f"{name}: max abs diff {d.max().item():.3e}, mean {d.mean().item():.3e}")


@pytest.mark.parametrize("n", SMALL + MAMBA_D_INNER)
def test_hadamard_matrix_is_hadamard(n):
    h = hadamard_matrix(n, dtype=torch.float32)
    assert h.shape == (n, n) and h.dtype == torch.float32
    assert bool(((h == 1) | (h == -1)).all()), "entries must be +-1"
    # entries are +-1, so every partial sum of H H^T is an integer of magnitude <= n < 2**24: float32 is exact here
    gram = h @ h.T
    off = (gram - n * torch.eye(n)).abs().max().item()
    print(f"n={n} factors={hadamard_factors(n)} max |H H^T - n I| = {off}")
    assert off == 0.0


@pytest.mark.parametrize("n", [7168, 8192, 10240])
def test_large_sizes_rows_orthogonal(n):
    # A full Gram product is too slow here; 48 random rows against the whole matrix check those rows' norms and their
    # orthogonality to every other row (exact in float32, as above).
    h = hadamard_matrix(n, dtype=torch.float32)
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(n))[:48]
    gram_rows = h[idx] @ h.T  # (48, n)
    expected = torch.zeros(48, n)
    expected[torch.arange(48), idx] = n
    off = (gram_rows - expected).abs().max().item()
    print(f"n={n} factors={hadamard_factors(n)} max |(H H^T)[rows] - n I[rows]| = {off}")
    assert bool(((h == 1) | (h == -1)).all())
    assert off == 0.0


def test_factors():
    expected = {1: (1, 1), 2: (1, 2), 12: (12, 1), 20: (20, 1), 28: (28, 1), 40: (20, 2), 768: (12, 64),
                1536: (12, 128), 2048: (1, 2048), 3072: (12, 256), 4096: (1, 4096), 5120: (20, 256),
                7168: (28, 256), 8192: (1, 8192), 10240: (20, 512)}
    got = {n: hadamard_factors(n) for n in expected}
    print(got)
    assert got == expected


@pytest.mark.parametrize("n", [0, -4, 3, 6, 10, 14, 36, 44, 60, 100, 5000, 6144 * 3])
def test_unsupported_sizes_raise(n):
    with pytest.raises(ValueError, match=rf"n={n}.*supported"):
        hadamard_factors(n)
    if n >= 0:
        with pytest.raises(ValueError, match=rf"n={n}"):
            hadamard_transform(torch.zeros(2, n))


def test_matrix_dtype_and_fresh_copy():
    h = hadamard_matrix(12)
    assert h.dtype == torch.float64
    h[0, 0] = 99.0  # mutating a returned matrix must not change later results
    assert hadamard_matrix(12)[0, 0].item() == 1.0


@pytest.mark.parametrize("n", [1, 2, 12, 20, 28, 40, 768, 1536, 2048, 3072, 4096, 5120])
def test_transform_equals_dense_product(n):
    g = torch.Generator().manual_seed(n)
    x = torch.randn(3, 5, n, generator=g, dtype=torch.float64)
    dense = x @ hadamard_matrix(n).T / math.sqrt(n)
    y = hadamard_transform(x)
    _report(f"n={n} transform vs dense", y - dense)
    assert y.dtype == torch.float64 and y.shape == x.shape
    assert (y - dense).abs().max().item() < 1e-12


@pytest.mark.parametrize("n", [12, 768, 5120])
def test_factor_matrices_layout(n):
    m, p = hadamard_factors(n)
    a, b = hadamard_factor_matrices(n, dtype=torch.float64)
    assert a.shape == (m, m) and b.shape == (p, p)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(4, n, generator=g, dtype=torch.float64)
    lowered = (a @ x.reshape(4, m, p) @ b.T).reshape(4, n)  # the two-MatMul ONNX lowering
    dense = x @ hadamard_matrix(n).T / math.sqrt(n)
    _report(f"n={n} A X B^T vs dense", lowered - dense)
    assert (lowered - dense).abs().max().item() < 1e-12
    # the transpose on the left factor matters (Paley matrices are not symmetric)
    if m > 1:
        assert (a.T @ x.reshape(4, m, p) @ b.T).reshape(4, n).sub(dense).abs().max().item() > 1e-3
    a32, b32 = hadamard_factor_matrices(n)
    assert a32.dtype == torch.float32 and b32.dtype == torch.float32


@pytest.mark.parametrize("n", [768, 5120, 7168, 10240])
def test_transform_orthonormal(n):
    g = torch.Generator().manual_seed(11)
    x = torch.randn(4, n, generator=g, dtype=torch.float64)
    y = hadamard_transform(x)
    _report(f"n={n} norm change", y.norm(dim=-1) - x.norm(dim=-1))
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), rtol=1e-13, atol=0)
    # inverse is the transpose: x = y @ R, with R = H / sqrt(n); via the factors: X = A^T Y B
    a, b = hadamard_factor_matrices(n, dtype=torch.float64)
    m, p = a.shape[0], b.shape[0]
    back = (a.T @ y.reshape(4, m, p) @ b).reshape(4, n)
    _report(f"n={n} inverse-transpose round trip", back - x)
    assert (back - x).abs().max().item() < 1e-12


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_transform_preserves_dtype(dtype):
    g = torch.Generator().manual_seed(12)
    x64 = torch.randn(2, 7, 768, generator=g, dtype=torch.float64)
    x = x64.to(dtype)
    y = hadamard_transform(x)
    ref = hadamard_transform(x.to(torch.float64))
    _report(f"{dtype} transform vs float64 of the same input", y.double() - ref)
    assert y.dtype == dtype and y.shape == x.shape
    assert torch.allclose(y.double(), ref, rtol=0, atol=8 * torch.finfo(dtype).eps * ref.abs().max().item())


@pytest.mark.parametrize("n", [768, 5120])
def test_rotate_linear_input_identity(n):
    g = torch.Generator().manual_seed(13)
    w = torch.randn(64, n, generator=g, dtype=torch.float64) / math.sqrt(n)  # the scale of a trained out_proj
    x = torch.randn(9, n, generator=g, dtype=torch.float64)
    w_rot = rotate_linear_input(w)
    y_ref = x @ w.T
    y_rot = hadamard_transform(x) @ w_rot.T
    _report(f"n={n} W'(Hx) vs Wx", y_rot - y_ref)
    assert w_rot.shape == w.shape and w_rot.dtype == w.dtype
    assert (y_rot - y_ref).abs().max().item() < 1e-12
    assert (w_rot - w).abs().max().item() > 1e-3  # it did rotate
    # float32 weight is rotated in float64, then rounded once
    w32 = w.float()
    assert torch.equal(rotate_linear_input(w32), hadamard_transform(w32.double()).float())
