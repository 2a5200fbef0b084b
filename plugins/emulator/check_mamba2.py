"""The Mamba2 kernels on the CPU under the kernel emulator: what can be checked here before a GPU run.

    python3 plugins/emulator/check_mamba2.py [--asan] [--demo]

1. Every check function of tests/test_cuda_mamba2.py (conv with per-channel scales, SSD scan, its splits and token
   steps, in_proj's int8 and W4A8 linears with a scale per output segment, the W4A8 GEMV of tests/test_cuda_int4.py
   and its decode fusions, gated RMSNorm with and without Hadamard) and tests/test_cuda_kernels.py's in_proj + conv
   step, dt_proj + scan step and out_proj + residual add in one launch each, on CPU tensors through the emulated
   binding, with the GPU tests' cases and seeds (the same inputs), those small enough to emulate in seconds (the
   largest SSD cases left out).
2. The calls of plugins/torch/sanitizer_smoke_mamba2.py (with --asan: under AddressSanitizer, the memcheck stand-in).
3. The tiny Quamba2 and Quamba (Mamba1) test models through edge_quamba.ops.cuda_ops' own wrappers, registered as the
   CPU kernels of the torch.ops.edge_quamba ops (their device checks relaxed in this process): prefill logits against
   the reference, token-by-token decode states equal to prefill's; with --demo also the Mamba2 demo model (~4
   minutes).
Exits non-zero on the first failure. The emulator is not a GPU: no timing, no memory model or races, host libm.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(HERE), str(ROOT / "plugins" / "torch")]

SSD_LIMIT = 3_000_000  # b * l * h * p * n above which an SSD case is left out (minutes under the emulator)


def kernel_checks(ext) -> None:
    import test_cuda_mamba2 as t

    for case in t.CONV_CASES:
        t.check_conv_channel_scales(ext, "cpu", *case, seed=t.case_seed(case))
    for case in t.SSD_CASES:
        b, l, h, p, g, n = case
        if b * l * h * p * n <= SSD_LIMIT:
            t.check_ssd_scan(ext, "cpu", *case, seed=t.case_seed(case))
    t.check_ssd_splits_and_decode(ext, "cpu", b=1, l=20, h=2, p=16, g=2, n=64)
    for M, K, sizes, stride, bits in t.SEGMENT_CASES:
        if bits == "w8a8" or M <= 16:  # W4A8 above 16 rows is the tensor-core GEMM (inline PTX: not emulated)
            t.check_linear_quantize_segments(ext, "cpu", M, K, sizes, stride, bits, seed=t.case_seed((M, K, *sizes)))
    import test_cuda_int4 as w4

    for M, K, N, group in w4.W4A8_RESIDUAL_CASES:
        w4.check_w4a8_residual(ext, "cpu", M, K, N, group)
    for case in w4.W4A8_CONV_CASES:
        w4.check_w4a8_conv_update(ext, "cpu", *case)
    for M, K, N, group, stride, use_bias in w4.W4A8_CASES:
        if M <= 16 or K % 32 != 0:  # the W4A8 GEMV (the GEMM's files hold inline PTX)
            for quantize in (False, True):
                w4.check_w4a8(ext, "cpu", M, K, N, group, stride, use_bias, quantize)
    import test_cuda_kernels as k1

    for b, K, sizes, conv_begin, C, k, per_channel, use_bias in k1.CONV_UPDATE_CASES:
        k1.check_linear_quantize_conv_update(ext, "cpu", b, K, sizes, conv_begin, C, k, per_channel, use_bias,
                                             seed=b * 7919 + K + C + k)
    for M, K, N in k1.RESIDUAL_CASES:
        k1.check_linear_residual(ext, "cpu", M, K, N, seed=M * 31 + K + N)
    for b, d, n, r in k1.SCAN_DT_CASES:
        k1.check_scan_dt_update(ext, "cpu", b, d, n, r, seed=b * 1000 + d + r)
    for rows, d, groups, hadamard, y_extra, z_extra in t.GATED_CASES:
        t.check_gated_norm(ext, "cpu", rows, d, groups, hadamard, y_extra, z_extra,
                           seed=t.case_seed((*rows, d, groups, hadamard, y_extra, z_extra)))


def use_emulated_binding(ext) -> None:
    """Make cuda_ops' wrappers call ``ext`` on CPU tensors and register them as the ops' CPU kernels."""
    from edge_quamba.ops import cuda_ops

    def check_dtype(name, t, dtype, dim=None):
        cuda_ops._require(isinstance(t, torch.Tensor) and t.dtype == dtype, f"{name} must be a {dtype} tensor")
        cuda_ops._require(dim is None or t.dim() == dim, f"{name} must be {dim}-D, got {tuple(t.shape)}")

    cuda_ops._cuda = check_dtype
    cuda_ops.load_extension = lambda verbose=False: ext
    torch.Tensor.is_cuda = property(lambda self: True)  # the wrappers' remaining `x.is_cuda` checks
    for name in cuda_ops.OP_NAMES:
        torch.library.register_kernel(f"edge_quamba::{name}", "cpu", cuda_ops._KERNELS[name])


TOKENS = torch.randint(0, 120, (1, 20), generator=torch.Generator().manual_seed(1))


def model_check(model, name: str, expected: torch.Tensor) -> None:
    """``expected``: the model's prefill logits through the reference ops (before use_emulated_binding)."""
    from helpers import decode_stepwise, report

    tokens = TOKENS
    with torch.inference_mode():
        logits, states = model(tokens)
        _, step_states = decode_stepwise(model, tokens)
    scale = expected.abs().max().item()
    diff = report(f"{name}: emulated kernels vs reference prefill logits", logits - expected)
    print(f"  relative to the logit scale {scale:.3f}: {diff / scale:.3g}; argmax equal: "
          f"{torch.equal(logits.argmax(-1), expected.argmax(-1))}")
    for i, (a, b) in enumerate(zip(states, step_states, strict=True)):
        if not (torch.equal(a.conv_state, b.conv_state) and torch.equal(a.ssm_state, b.ssm_state)):
            raise AssertionError(f"{name}: layer {i}: decode states differ from prefill's")


def main() -> None:
    from build import build

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--asan", action="store_true", help="the AddressSanitizer build (re-runs itself preloaded)")
    parser.add_argument("--demo", action="store_true", help="also the Mamba2 demo model (slow)")
    args = parser.parse_args()
    if args.asan and "libasan" not in os.environ.get("LD_PRELOAD", ""):
        libasan = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
        env = {**os.environ, "LD_PRELOAD": libasan, "ASAN_OPTIONS": "detect_leaks=0"}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    start = time.perf_counter()
    ext = build(args.asan)
    print(f"[{time.perf_counter() - start:.0f} s] emulated binding loaded", flush=True)
    kernel_checks(ext)
    print(f"[{time.perf_counter() - start:.0f} s] kernel checks passed", flush=True)
    import sanitizer_smoke_mamba2

    sanitizer_smoke_mamba2.run(ext, "cpu")
    print(f"[{time.perf_counter() - start:.0f} s] sanitizer smoke calls ran", flush=True)
    from test_cuda_mamba2 import tiny_quantized_mamba2

    from test_cuda_backend import quantized_tiny_model

    # the Mamba1 model's decode runs in_proj and the conv step as one op (int8_linear_quantize_conv_update)
    models = [("tiny Quamba2 model", tiny_quantized_mamba2()),
              ("tiny Quamba W8A8 Mamba1 model", quantized_tiny_model())]
    if args.demo:
        import tempfile

        from edge_quamba.folders import load_quantized_model
        from edge_quamba.quant.pipeline import quantize_checkpoint
        from edge_quamba.quant.qmodel import QuantConfig

        out = Path(tempfile.mkdtemp()) / "q"
        quantize_checkpoint(model="demo-mamba2", out=out, progress=False,
                            qconfig=QuantConfig(method="quamba2", calib_samples=4, calib_seq_len=64))
        models.append(("demo-mamba2 W8A8", load_quantized_model(out)))
    with torch.inference_mode():
        expected = [model(TOKENS)[0] for _, model in models]
    use_emulated_binding(ext)
    for (name, model), logits in zip(models, expected, strict=True):
        model_check(model, name, logits)
    print(f"[{time.perf_counter() - start:.0f} s] all emulated Mamba2 checks passed")


if __name__ == "__main__":
    main()
