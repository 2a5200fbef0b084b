"""Calls every kernel of the binding once on small, oddly sized inputs (for compute-sanitizer on the GPU machine).

    compute-sanitizer --tool memcheck python3 plugins/torch/sanitizer_smoke.py
Shapes exercise the edge paths: 1-, 4-, 8- and 16-byte GEMV loads, split-K, rows past N, channels past a block,
l < k, several sequence chunks, every Hadamard factor m, its shuffle / cross-warp / partial-warp paths and the
> 48 KB shared-memory case, the int8 GEMV epilogue and the _int_mm + fused epilogue, RMSNorm rows of 1 .. 8192, the
decode fusions (in_proj + conv step, dt_proj + scan step, out_proj + residual add).
"""

from __future__ import annotations

import torch

from edge_quamba.ops.cuda_ops import load_extension


def i8(*shape):
    return torch.randint(-127, 128, shape, dtype=torch.int8, device="cuda")


def main() -> None:
    ext = load_extension()
    torch.manual_seed(0)
    for shape in [(3, 5), (2, 7, 129)]:
        ext.quantize(torch.randn(*shape, device="cuda")[..., 1:], 0.05)
        ext.quantize(torch.randn(*shape, device="cuda").half(), 0.05)
    for M, K, N, stride in [(1, 2560, 1000, 2560), (1, 5120, 192, 5120), (3, 24, 77, 56), (5, 100, 33, 101),
                            (2, 160, 130, 192), (20, 64, 24, 64)]:
        x = i8(M, stride)[:, :K]
        ext.int8_linear(x, i8(N, K), torch.randn(N, device="cuda"), 0.01, 0.02)
        ext.int8_linear_quantize(x, i8(N, K), torch.randn(N, device="cuda"), 0.01, 0.02, 0.05)
    ext.int8_linear_quantize(i8(33, 72)[:, :64], i8(24, 64), torch.randn(24, device="cuda"), 0.01, 0.02, 0.05)
    for rows, d in [(1, 1), (3, 130), (2, 2560), (1, 8192)]:
        ext.rms_norm_quantize(torch.randn(rows, d + 3, device="cuda")[:, :d], torch.rand(d, device="cuda"), 1e-5, 0.05)
    for b, l, d, k in [(1, 1, 130, 4), (2, 3, 100, 4), (1, 130, 200, 3), (2, 65, 64, 1)]:
        xz = i8(b, l, 2 * d)
        ext.int8_causal_conv1d(xz[..., :d], i8(b, d, k), i8(d, k), torch.randn(d, device="cuda"), 0.02, 0.01, 0.03)
    for b, l, d, n in [(1, 1, 130, 16), (2, 37, 70, 16), (1, 9, 40, 8), (1, 3, 33, 32), (1, 4, 5, 1)]:
        xp = i8(b, l, 24 + 2 * n)
        xz = i8(b, l, 2 * d)
        A = -torch.rand(d, n, device="cuda")
        ext.int8_selective_scan(i8(b, l, d), i8(b, l, d), xp[..., 24:24 + n], xp[..., 24 + n:], xz[..., d:],
                                torch.randn(b, d, n, device="cuda"), A, torch.randn(d, device="cuda"),
                                torch.randn(d, device="cuda"), 0.02, 0.01, 0.02, 0.02, 0.03)
    # the decode fusions: in_proj with the conv step in its epilogue (one segment, and three with the conv over the
    # second), out_proj with the residual add, dt_proj inside the scan step
    for b, K, sizes, begin, c, k in [(1, 130, [260], 0, 130, 4), (3, 24, [7, 13, 5], 7, 13, 2),
                                     (17, 64, [96], 0, 48, 4)]:
        n_out = sum(sizes)
        ext.int8_linear_quantize_conv_update(i8(b, K), i8(n_out, K), torch.randn(n_out, device="cuda"), 0.01, 0.02,
                                             [0.05] * len(sizes), sizes, begin, i8(b, c, k), i8(c, k),
                                             torch.randn(c, device="cuda"), 0.01, 0.03,
                                             torch.rand(c, device="cuda") + 0.01 if len(sizes) > 1 else None)
    for M, K, N in [(1, 130, 77), (17, 64, 24)]:
        ext.int8_linear_residual(i8(M, K), i8(N, K), torch.randn(N, device="cuda"), 0.01, 0.02,
                                 torch.randn(M, N, device="cuda"))
    for b, d, n, r in [(1, 130, 16, 24), (2, 5, 8, 3)]:
        xp = i8(b, r + 2 * n)
        ext.int8_selective_scan_dt_update(i8(b, d), xp[:, :r], xp[:, r:r + n], xp[:, r + n:], i8(b, 2 * d)[:, d:],
                                          torch.randn(b, d, n, device="cuda"), -torch.rand(d, n, device="cuda"),
                                          torch.randn(d, device="cuda"), torch.randn(d, device="cuda"), i8(d, r),
                                          0.02, 0.02, 0.01, 0.05, 0.02, 0.02, 0.03)
    for n in [1, 8, 12, 20, 28, 56, 320, 768, 4096, 5120, 12288, 16384]:
        ext.hadamard_quantize(torch.randn(3, n + 8, device="cuda")[:, :n], 0.05)
    torch.cuda.synchronize()
    print("sanitizer smoke: every kernel ran")


if __name__ == "__main__":
    main()
