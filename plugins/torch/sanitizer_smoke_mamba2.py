"""Calls every Mamba2 kernel of the binding once on small, oddly sized inputs (for compute-sanitizer on the GPU machine).

    compute-sanitizer --tool memcheck python3 plugins/torch/sanitizer_smoke_mamba2.py
Shapes exercise the edge paths: the conv with per-channel scales at l = 1, l < k and over several chunks on strided
views; the SSD scan at every lane layout (d_state 1 .. 256, padded n, rows past headdim, several chunks, 1 and 4
groups, decode); the gated norm + Hadamard at every factor m, a partial warp, groups that split a thread's elements,
E = 16 with > 48 KB of shared memory; the gated norm without Hadamard at 1 .. 8192 channels per group; in_proj's
output quantized at three segment scales (GEMV and prefill epilogue).
"""

from __future__ import annotations

import torch

from edge_quamba.ops.cuda_ops import load_extension


def run(ext, device: str) -> None:
    """Every call below on ``device`` through ``ext`` (the binding, or the CPU kernel emulator's build of it)."""

    def i8(*shape):
        return torch.randint(-128, 128, shape, dtype=torch.int8, device=device)

    def pos(*shape):
        return torch.rand(*shape, device=device) * 0.02 + 0.005

    torch.manual_seed(0)
    for b, l, d, k in [(1, 1, 1024, 4), (2, 3, 130, 4), (1, 130, 200, 3), (2, 65, 64, 1)]:
        x = i8(b, l, d + 8)[..., :d]
        ext.int8_causal_conv1d_channel_scales(x, i8(b, d, k).clamp(min=-127), i8(d, k), torch.randn(d, device=device),
                                              pos(d), 0.02, 0.01)
    for M, K, sizes in [(1, 768, [1536, 1792, 24]), (3, 100, [7, 13, 5]), (40, 768, [1536, 1792, 24])]:
        n = sum(sizes)  # in_proj's z | xBC | dt at three scales: the GEMV, and M > 16 the _int_mm epilogue
        ext.int8_linear_quantize_segments(i8(M, K), i8(n, K), torch.randn(n, device=device), 0.01, 0.02,
                                          [0.05, 0.02, 0.1], sizes)
    for b, l, h, p, g, n in [(1, 1, 12, 64, 2, 64), (2, 70, 4, 10, 2, 5), (1, 33, 8, 16, 4, 128), (1, 9, 2, 4, 1, 256),
                             (2, 3, 3, 3, 1, 1), (1, 40, 6, 8, 3, 32)]:
        conv = i8(b, l, h * p + 2 * g * n)
        x, B, C = conv.split([h * p, g * n, g * n], dim=-1)
        ext.int8_ssd_scan(x, i8(b, l, h), B, C, torch.randn(b, h, p, n, device=device), -torch.rand(h, device=device),
                          torch.randn(h, device=device), torch.randn(h, device=device), pos(h * p), pos(g * n),
                          pos(g * n), 0.01)
    for rows, d, groups in [(3, 8, 1), (2, 48, 8), (2, 64, 2), (1, 768, 2), (2, 5120, 1), (1, 7168, 7), (2, 16384, 2)]:
        y = torch.randn(rows, d + 4, device=device)[:, :d]
        ext.gated_rms_norm_quantize(y, i8(rows, d + 1)[:, :d], torch.rand(d, device=device), 0.05, 1e-5, d // groups,
                                    0.05, True)
    for rows, d, groups in [(3, 1, 1), (2, 100, 4), (1, 5120, 1), (2, 16384, 2)]:
        y = torch.randn(rows, d, device=device)
        ext.gated_rms_norm_quantize(y, i8(rows, d), torch.rand(d, device=device), 0.05, 1e-5, d // groups, 0.05,
                                    False)


def main() -> None:
    run(load_extension(), "cuda")
    torch.cuda.synchronize()
    print("sanitizer smoke (Mamba2): every kernel ran")


if __name__ == "__main__":
    main()
