"""Calls every path of the 4-bit-weight kernels once on small, oddly sized inputs (for compute-sanitizer on the GPU
machine), next to plugins/torch/sanitizer_smoke.py (the int8 kernels).

    compute-sanitizer --tool memcheck python3 plugins/torch/sanitizer_smoke_int4.py
Shapes: the W4A8 GEMV with 16-, 8-, 4-byte and one-code chunks, 1- and 4-row passes, split-K up to 256 threads,
rows past N, K below the group size, odd K; the W4A16 tensor-core GEMV (one and two passes of 8 rows, idle warps),
its one-warp-per-output fallback; the GEMM (both modes, M and N tails, groups of 3 steps, a strided x).
"""

from __future__ import annotations

import torch

from edge_quamba.ops.cuda_ops import load_extension


def packed(n: int, k: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, -(-k // 2)), dtype=torch.uint8, device="cuda")


def scales(n: int, k: int, group: int) -> torch.Tensor:
    return torch.rand(n, -(-k // group), device="cuda") * 0.01 + 1e-4


def main() -> None:
    ext = load_extension()
    torch.manual_seed(0)
    # (M, K, N, group, x row stride)
    for M, K, N, group, stride in [(1, 2560, 1000, 64, 2560), (1, 5120, 192, 64, 5120), (3, 24, 77, 64, 56),
                                   (5, 96, 33, 32, 104), (2, 39, 17, 13, 39), (7, 100, 33, 20, 101),
                                   (16, 160, 130, 64, 192), (20, 64, 24, 64, 72), (100, 320, 200, 96, 320),
                                   (40, 160, 64, 64, 192), (37, 24, 70, 64, 56)]:
        x = torch.randint(-127, 128, (M, stride), dtype=torch.int8, device="cuda")[:, :K]
        w, s, b = packed(N, K), scales(N, K, group), torch.randn(N, device="cuda")
        ext.w4a8_linear(x, w, s, b, 0.01, group)
        ext.w4a8_linear_quantize(x, w, s, None, 0.01, group, 0.05)
        if N >= 3:  # three column segments at their own scales (Mamba2's in_proj)
            sizes = [N // 3, N // 3, N - 2 * (N // 3)]
            ext.w4a8_linear_quantize_segments(x, w, s, b, 0.01, group, [0.05, 0.02, 0.1], sizes)
        # the decode fusions: the residual add, the conv step over the second segment (with M > 16 the launches
        # apart)
        ext.w4a8_linear_residual(x, w, s, b, 0.01, group, torch.randn(M, N, device="cuda"))
        if N >= 3:
            c = sizes[1]
            state = torch.randint(-127, 128, (M, c, 4), dtype=torch.int8, device="cuda")
            conv_w = torch.randint(-127, 128, (c, 4), dtype=torch.int8, device="cuda")
            ext.w4a8_linear_quantize_conv_update(x, w, s, b, 0.01, group, [0.05, 0.02, 0.1], sizes, sizes[0], state,
                                                 conv_w, torch.randn(c, device="cuda"), 0.01, 0.03,
                                                 torch.rand(c, device="cuda") + 0.01)
        x16 = torch.randn(M, stride, device="cuda").half()[:, :K]
        ext.w4a16_linear(x16, w, s, b, group)
    torch.cuda.synchronize()
    print("sanitizer smoke (4-bit): every kernel ran")


if __name__ == "__main__":
    main()
