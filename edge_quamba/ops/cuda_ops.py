"""CUDA implementations of the ``torch.ops.edge_quamba.*`` ops: the kernels of ``plugins/kernels`` through the
binding ``plugins/torch/binding.cpp`` (the int8 ops; the 4-bit linears and W4A16's scan in their own block below).

Longer than our ~400-line rule: the extension's build, then one CUDA implementation per op of the ``edge_quamba``
namespace, each a thin argument check around a binding call; they stay together so that the op list here and in
ops/torch_ops.py can be read side by side.

Build: :func:`load_extension` JIT-compiles the binding and every ``plugins/kernels/*.cu`` with
``torch.utils.cpp_extension.load`` (ninja) into a cache folder, ``$EDGE_QUAMBA_CUDA_BUILD_DIR`` or
``~/.cache/edge_quamba/cuda_ext``, in a subfolder named by a hash of the sources, so an edited kernel or header is
rebuilt and an unchanged one is loaded in seconds. Flags: ``-O3 --fmad=false`` (no FMA contraction; the kernels also
write every exactness-critical op as an explicitly rounded intrinsic), never ``--use_fast_math``. The GPU
architecture is the visible GPU's (``TORCH_CUDA_ARCH_LIST`` overrides, as for any torch extension).

Dispatch: :func:`register_cuda_kernels` registers the binding's functions with
``torch.library.register_kernel("edge_quamba::<name>", "cuda", fn)`` for every op of
:mod:`edge_quamba.ops.torch_ops` (the one-token ``*_update`` ops run the prefill kernels at l = 1), so the same
model moved to the GPU runs on the kernels; the CPU kernels stay the qops references. No GPU, no nvcc or a failed build raise
:class:`~edge_quamba.errors.BackendUnavailableError` (one line); nothing falls back to another implementation.

Errors: the Python wrappers below check every argument and raise a one-line ValueError before calling C++ (an
exception thrown inside the binding crashed the interpreter on the H200 image, see :func:`_require`).

Views: the binding reads the model's non-contiguous views in place through strides (x / z halves of in_proj's
output, dt / B / C slices of x_proj's output); only layouts that no single row stride describes are copied.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import os
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import torch

from edge_quamba.errors import BackendUnavailableError
from edge_quamba.quant import primitives
from edge_quamba.quant.hadamard import hadamard_factors

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
KERNEL_DIR = PLUGINS / "kernels"
BINDING = PLUGINS / "torch" / "binding.cpp"
CUDA_FLAGS = ("-O3", "--fmad=false")
HADAMARD_MAX_DIM = 16384
"""Largest n of the Hadamard kernel (one row in 64 KB of shared memory)."""
RMS_NORM_MAX_DIM = 8192
"""Largest d of the RMSNorm + quantize kernel (one row in the registers of a 1024-thread block)."""
OP_NAMES = ("quantize", "rms_norm_quantize", "int8_linear", "int8_linear_residual", "int8_linear_quantize",
            "int8_linear_quantize_segments", "int8_linear_quantize_conv_update", "int8_causal_conv1d",
            "int8_causal_conv1d_update",
            "int8_selective_scan", "int8_selective_scan_update", "int8_selective_scan_dt_update",
            "hadamard_quantize", "hadamard_quantize_dynamic", "int8_linear_per_token")
"""Every op of the edge_quamba namespace (edge_quamba.ops.torch_ops), by torch op name."""


def _sources() -> list[Path]:
    if not BINDING.is_file() or not KERNEL_DIR.is_dir():
        raise BackendUnavailableError(f"CUDA kernel sources not found under {PLUGINS} (needs a source checkout)")
    return [BINDING, *sorted(KERNEL_DIR.glob("*.cu"))]


def build_dir() -> Path:
    """The extension's build folder: the cache root plus a hash of every source and header and the flags."""
    root = Path(os.environ.get("EDGE_QUAMBA_CUDA_BUILD_DIR", Path.home() / ".cache" / "edge_quamba" / "cuda_ext"))
    digest = hashlib.sha256(" ".join(CUDA_FLAGS).encode())
    for path in [*_sources(), *sorted(KERNEL_DIR.glob("*.h")), *sorted(KERNEL_DIR.glob("*.cuh"))]:
        digest.update(path.name.encode() + path.read_bytes())
    return root / digest.hexdigest()[:16]


def _check_toolchain() -> None:
    if not torch.cuda.is_available():
        raise BackendUnavailableError(f"the CUDA kernels need an NVIDIA GPU and a CUDA build of torch "
                                      f"(torch {torch.__version__} sees no GPU)")
    from torch.utils.cpp_extension import CUDA_HOME

    nvcc = Path(CUDA_HOME, "bin", "nvcc") if CUDA_HOME else None
    if nvcc is None or not (nvcc.is_file() or shutil.which("nvcc")):
        raise BackendUnavailableError("building the CUDA kernels needs nvcc: none found (set CUDA_HOME)")


@contextlib.contextmanager
def programmatic_launch():
    """Inside this block the kernels launch with programmatic dependent launch (plugins/kernels/common.h: a kernel
    may start while the previous one finishes, the GEMVs loading their first weights meanwhile); compute capability
    9.0 or later. Capturing a CUDA graph inside it records the launches that way."""
    ext = load_extension()
    ext.set_programmatic_launch(True)
    try:
        yield
    finally:
        ext.set_programmatic_launch(False)


@functools.lru_cache(maxsize=None)
def load_extension(verbose: bool = False) -> ModuleType:
    """Builds (first call, or after a source changed) and loads the binding; returns the Python module."""
    _check_toolchain()
    from torch.utils.cpp_extension import load

    folder = build_dir()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return load(name="edge_quamba_cuda", sources=[str(p) for p in _sources()], extra_cflags=["-O3"],
                    extra_cuda_cflags=list(CUDA_FLAGS), build_directory=str(folder), verbose=verbose)
    except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BackendUnavailableError(f"building the CUDA kernels in {folder} failed: {first}") from e


def _require(ok: bool, message: str) -> None:
    """Argument checks happen here, in Python: an exception thrown by the C++ binding crashed the interpreter
    (segmentation fault) on the H200 image (torch 2.11+cu130, undiagnosed), so the binding's own checks are only a
    last line of defence and every user error must be caught before the call."""
    if not ok:
        raise ValueError(message)


def _cuda(name: str, t, dtype: torch.dtype, dim: int | None = None) -> None:
    _require(isinstance(t, torch.Tensor) and t.is_cuda, f"{name} must be a CUDA tensor")
    _require(t.dtype == dtype, f"{name} must be {dtype}, got {t.dtype}")
    if dim is not None:
        _require(t.dim() == dim, f"{name} must be {dim}-D, got shape {tuple(t.shape)}")


def _scale(name: str, value) -> None:
    _require(math.isfinite(value) and value > 0, f"{name} must be a finite float > 0, got {value}")


def quantize(x, scale):
    """x (...) float32/float16/bfloat16 on CUDA -> int8 (...)."""
    _require(isinstance(x, torch.Tensor) and x.is_cuda, "quantize: x must be a CUDA tensor")
    _require(x.dtype in (torch.float32, torch.float16, torch.bfloat16),
             f"quantize: x must be float32, float16 or bfloat16, got {x.dtype}")
    _scale("quantize: scale", scale)
    return load_extension().quantize(x, scale)


def rms_norm_quantize(x, weight, eps, scale):
    """x (..., d) float32 (float16 / bfloat16 are converted first, exactly, as the reference does), weight (d,)
    float32 -> int8 (..., d) = quantize(weight * RMSNorm(x), scale); d <= 8192. One block per row; its sum of
    squares is a tree (codes may differ from the reference at .5 ties only)."""
    _require(isinstance(x, torch.Tensor) and x.is_cuda, "rms_norm_quantize: x must be a CUDA tensor")
    _require(x.dtype in (torch.float32, torch.float16, torch.bfloat16),
             f"rms_norm_quantize: x must be float32, float16 or bfloat16, got {x.dtype}")
    x = x if x.dtype == torch.float32 else x.float()
    _cuda("rms_norm_quantize: weight", weight, torch.float32, 1)
    _require(x.dim() >= 1 and weight.shape[0] == x.shape[-1] and weight.is_contiguous(),
             f"rms_norm_quantize: x {tuple(x.shape)} and weight {tuple(weight.shape)} do not match (..., d), (d,)")
    _require(1 <= x.shape[-1] <= RMS_NORM_MAX_DIM,
             f"rms_norm_quantize: d={x.shape[-1]} not in [1, {RMS_NORM_MAX_DIM}] (the kernel keeps a row in registers)")
    _require(math.isfinite(eps) and eps >= 0, f"rms_norm_quantize: eps must be a finite float >= 0, got {eps}")
    _scale("rms_norm_quantize: scale", scale)
    return load_extension().rms_norm_quantize(x, weight, eps, scale)


def _check_linear(op, x_q, weight_q, bias, x_scale, weight_scale):
    _cuda(f"{op}: x_q", x_q, torch.int8)
    _cuda(f"{op}: weight_q", weight_q, torch.int8, 2)
    _require(x_q.dim() >= 1 and x_q.shape[-1] == weight_q.shape[1],
             f"{op}: x_q {tuple(x_q.shape)} and weight_q {tuple(weight_q.shape)} do not match (..., K), (N, K)")
    _require(weight_q.is_contiguous(), f"{op}: weight_q must be contiguous (N, K)")
    _require(weight_q.shape[1] <= primitives.MAX_K, f"{op}: K={weight_q.shape[1]} > {primitives.MAX_K}")
    if bias is not None:
        _cuda(f"{op}: bias", bias, torch.float32, 1)
        _require(bias.shape[0] == weight_q.shape[0] and bias.is_contiguous(),
                 f"{op}: bias must be a contiguous (N,) float32 tensor")
    _scale(f"{op}: x_scale", x_scale)
    _scale(f"{op}: weight_scale", weight_scale)


def int8_linear(x_q, weight_q, bias, x_scale, weight_scale):
    """x_q (..., K) int8, weight_q (N, K) int8, bias (N) float32 or None -> float32 (..., N).
    GEMV kernel for up to 16 rows; above, torch._int_mm (cuBLASLt, exact int32) and the same float32 epilogue."""
    _check_linear("int8_linear", x_q, weight_q, bias, x_scale, weight_scale)
    return load_extension().int8_linear(x_q, weight_q, bias, x_scale, weight_scale)


def int8_linear_per_token(x_q, weight_q, bias, x_scale, weight_scale):
    """x_q (..., K) int8 with a per-token scale x_scale (...) float32 (each > 0, e.g. from hadamard_quantize_dynamic),
    weight_q (N, K) int8, bias (N) float32 or None -> float32 (..., N); row m's epilogue multiplies by
    float32(x_scale[m] * weight_scale). GEMV for up to 16 rows; above, torch._int_mm and the same epilogue."""
    _cuda("int8_linear_per_token: x_scale", x_scale, torch.float32)
    _check_linear("int8_linear_per_token", x_q, weight_q, bias, 1.0, weight_scale)
    _require(tuple(x_scale.shape) == tuple(x_q.shape[:-1]),
             f"int8_linear_per_token: x_scale {tuple(x_scale.shape)} is not x_q's leading shape "
             f"{tuple(x_q.shape[:-1])}")
    return load_extension().int8_linear_per_token(x_q, weight_q, bias, x_scale, weight_scale)


def int8_linear_quantize(x_q, weight_q, bias, x_scale, weight_scale, out_scale):
    """quantize(int8_linear(...), out_scale) -> int8 (..., N): the GEMV with an int8 epilogue for up to 16 rows;
    above, torch._int_mm and one fused epilogue kernel (float32 epilogue + quantize in one pass)."""
    _check_linear("int8_linear_quantize", x_q, weight_q, bias, x_scale, weight_scale)
    _scale("int8_linear_quantize: out_scale", out_scale)
    return load_extension().int8_linear_quantize(x_q, weight_q, bias, x_scale, weight_scale, out_scale)


def int8_linear_residual(x_q, weight_q, bias, x_scale, weight_scale, residual):
    """residual + int8_linear(...) -> float32 (..., N): the GEMV adds the residual in its epilogue (up to 16 rows);
    above, torch._int_mm and aten ops."""
    op = "int8_linear_residual"
    _check_linear(op, x_q, weight_q, bias, x_scale, weight_scale)
    _cuda(f"{op}: residual", residual, torch.float32)
    _require(tuple(residual.shape) == (*x_q.shape[:-1], weight_q.shape[0]),
             f"{op}: residual {tuple(residual.shape)} is not the output's shape")
    return load_extension().int8_linear_residual(x_q, weight_q, bias, x_scale, weight_scale, residual)


MAX_OUT_SEGMENTS = 4
"""Most column segments of a *_quantize_segments op (``kMaxOutSegments`` in plugins/kernels/common.h)."""


def _check_segments(op, out_scales, sizes, n):
    _require(1 <= len(sizes) <= MAX_OUT_SEGMENTS and len(out_scales) == len(sizes),
             f"{op}: expected 1 to {MAX_OUT_SEGMENTS} segments with one scale each, got {len(sizes)} sizes and "
             f"{len(out_scales)} scales")
    _require(min(sizes) >= 1 and sum(sizes) == n, f"{op}: segment sizes {list(sizes)} do not split {n} columns")
    for i, scale in enumerate(out_scales):
        _scale(f"{op}: out_scales[{i}]", scale)


def int8_linear_quantize_segments(x_q, weight_q, bias, x_scale, weight_scale, out_scales, sizes):
    """int8_linear_quantize with a scale per consecutive column segment -> int8 (..., N), the same kernels (the
    epilogue picks each column's segment scale)."""
    op = "int8_linear_quantize_segments"
    _check_linear(op, x_q, weight_q, bias, x_scale, weight_scale)
    _check_segments(op, out_scales, sizes, weight_q.shape[0])
    return load_extension().int8_linear_quantize_segments(x_q, weight_q, bias, x_scale, weight_scale,
                                                          list(out_scales), list(sizes))


def _check_conv_update(op, x_q, n, out_scales, sizes, conv_begin, conv_state, conv_weight, conv_bias,
                       conv_weight_scale, conv_out_scale, conv_out_scales):
    """The checks of a *_quantize_conv_update op past its linear's: the segments, the conv's state, weight, bias and
    scales, its columns inside one segment."""
    _check_segments(op, out_scales, sizes, n)
    _cuda(f"{op}: conv_state", conv_state, torch.int8, 3)
    _cuda(f"{op}: conv_weight", conv_weight, torch.int8, 2)
    b, channels, k = conv_state.shape
    _require(x_q.dim() == 2 and x_q.shape[0] == b, f"{op}: x_q must be (b, K) with b = {b}, got {tuple(x_q.shape)}")
    _require(tuple(conv_weight.shape) == (channels, k) and 1 <= k <= 4,
             f"{op}: conv_weight {tuple(conv_weight.shape)} does not fit conv_state {tuple(conv_state.shape)}")
    ends = [sum(sizes[:i + 1]) for i in range(len(sizes))]
    _require(0 <= conv_begin and any(end - size <= conv_begin and conv_begin + channels <= end
                                     for end, size in zip(ends, sizes)),
             f"{op}: the conv's columns {conv_begin}..{conv_begin + channels} are not inside one segment of {sizes}")
    for name, t in (("conv_bias", conv_bias), ("conv_out_scales", conv_out_scales)):
        if t is not None:
            _vector(op, name, t, channels)
            _require(t.is_contiguous(), f"{op}: {name} must be contiguous")
    if conv_out_scales is None:
        _scale(f"{op}: conv_out_scale", conv_out_scale)
    _scale(f"{op}: conv_weight_scale", conv_weight_scale)


def int8_linear_quantize_conv_update(x_q, weight_q, bias, x_scale, weight_scale, out_scales, sizes, conv_begin,
                                     conv_state, conv_weight, conv_bias, conv_weight_scale, conv_out_scale,
                                     conv_out_scales):
    """in_proj and the decode conv step in one op -> (codes (b, N), conv codes (b, C), conv state (b, C, k)): up to
    16 sequences one GEMV whose epilogue runs the conv (plugins/kernels/int8_linear.h), more the GEMM path and the
    conv kernel."""
    op = "int8_linear_quantize_conv_update"
    _check_linear(op, x_q, weight_q, bias, x_scale, weight_scale)
    _check_conv_update(op, x_q, weight_q.shape[0], out_scales, sizes, conv_begin, conv_state, conv_weight, conv_bias,
                       conv_weight_scale, conv_out_scale, conv_out_scales)
    return load_extension().int8_linear_quantize_conv_update(
        x_q, weight_q, bias, x_scale, weight_scale, list(out_scales), list(sizes), conv_begin, conv_state, conv_weight,
        conv_bias, conv_weight_scale, conv_out_scale, conv_out_scales)


def int8_causal_conv1d(x_q, conv_state_q, weight_q, bias, x_scale, weight_scale, out_scale):
    """-> (u_q (b, l, d_in) int8, conv_state_out (b, d_in, k) int8)."""
    _cuda("int8_causal_conv1d: x_q", x_q, torch.int8, 3)
    _cuda("int8_causal_conv1d: conv_state_q", conv_state_q, torch.int8, 3)
    _cuda("int8_causal_conv1d: weight_q", weight_q, torch.int8, 2)
    b, _, d = x_q.shape
    k = weight_q.shape[1]
    _require(tuple(conv_state_q.shape) == (b, d, k) and weight_q.shape[0] == d,
             f"int8_causal_conv1d: shapes do not match: x_q {tuple(x_q.shape)}, conv_state_q "
             f"{tuple(conv_state_q.shape)}, weight_q {tuple(weight_q.shape)}")
    _require(1 <= k <= 4, f"int8_causal_conv1d: width k={k} not in [1, 4]")
    if bias is not None:
        _cuda("int8_causal_conv1d: bias", bias, torch.float32, 1)
        _require(bias.shape[0] == d, "int8_causal_conv1d: bias must be (d_in,)")
    for name, v in (("x_scale", x_scale), ("weight_scale", weight_scale), ("out_scale", out_scale)):
        _scale(f"int8_causal_conv1d: {name}", v)
    return load_extension().int8_causal_conv1d(x_q, conv_state_q, weight_q, bias, x_scale, weight_scale, out_scale)


def _check_scan(op, u_q, dt_q, B_q, C_q, z_q, ssm_state, A, D, dt_bias, scales) -> None:
    """The scan's argument checks: u_q, dt_q, z_q (b, l, d_in), B_q, C_q (b, l, n) int8, the float32 state and
    constants, ``scales`` (name, value) pairs."""
    for name, t in (("u_q", u_q), ("dt_q", dt_q), ("B_q", B_q), ("C_q", C_q), ("z_q", z_q)):
        _cuda(f"{op}: {name}", t, torch.int8, 3)
    _cuda(f"{op}: ssm_state", ssm_state, torch.float32, 3)
    _cuda(f"{op}: A", A, torch.float32, 2)
    _cuda(f"{op}: D", D, torch.float32, 1)
    _cuda(f"{op}: dt_bias", dt_bias, torch.float32, 1)
    b, l, d = u_q.shape
    n = A.shape[1]
    _require(dt_q.shape == u_q.shape and z_q.shape == u_q.shape and tuple(B_q.shape) == (b, l, n)
             and C_q.shape == B_q.shape and A.shape[0] == d and tuple(ssm_state.shape) == (b, d, n)
             and D.shape[0] == d and dt_bias.shape[0] == d,
             f"{op}: shapes do not match: u_q {tuple(u_q.shape)}, B_q {tuple(B_q.shape)}, "
             f"A {tuple(A.shape)}, ssm_state {tuple(ssm_state.shape)}")
    _require(1 <= n <= 32 and n & (n - 1) == 0, f"{op}: d_state n={n} must be a power of two <= 32")
    for name, v in scales:
        _scale(f"{op}: {name}", v)


def int8_selective_scan(u_q, dt_q, B_q, C_q, z_q, ssm_state, A, D, dt_bias,
                        u_scale, dt_scale, B_scale, C_scale, z_scale):
    """-> (y (b, l, d_in) float32, ssm_state_out (b, d_in, n) float32)."""
    _check_scan("int8_selective_scan", u_q, dt_q, B_q, C_q, z_q, ssm_state, A, D, dt_bias,
                (("u_scale", u_scale), ("dt_scale", dt_scale), ("B_scale", B_scale), ("C_scale", C_scale),
                 ("z_scale", z_scale)))
    return load_extension().int8_selective_scan(u_q, dt_q, B_q, C_q, z_q, ssm_state, A, D, dt_bias,
                                                u_scale, dt_scale, B_scale, C_scale, z_scale)


def int8_causal_conv1d_update(x_q, conv_state_q, weight_q, bias, x_scale, weight_scale, out_scale):
    """One token, x_q (b, d_in) -> (u_q (b, d_in), new state): the prefill kernel at l = 1 (a view, no copy)."""
    _cuda("int8_causal_conv1d_update: x_q", x_q, torch.int8, 2)
    u_q, state = int8_causal_conv1d(x_q.unsqueeze(1), conv_state_q, weight_q, bias, x_scale, weight_scale, out_scale)
    return u_q[:, 0], state


def int8_selective_scan_update(u_q, dt_q, B_q, C_q, z_q, ssm_state, A, D, dt_bias,
                               u_scale, dt_scale, B_scale, C_scale, z_scale):
    """One token, u_q, dt_q, z_q (b, d_in) and B_q, C_q (b, n) -> (y (b, d_in), new state): the prefill kernel at
    l = 1 (views, no copies)."""
    for name, t in (("u_q", u_q), ("dt_q", dt_q), ("B_q", B_q), ("C_q", C_q), ("z_q", z_q)):
        _cuda(f"int8_selective_scan_update: {name}", t, torch.int8, 2)
    y, state = int8_selective_scan(*(t.unsqueeze(1) for t in (u_q, dt_q, B_q, C_q, z_q)), ssm_state, A, D, dt_bias,
                                   u_scale, dt_scale, B_scale, C_scale, z_scale)
    return y[:, 0], state


def int8_selective_scan_dt_update(u_q, dt_r_q, B_q, C_q, z_q, ssm_state, A, D, dt_bias, dt_weight, u_scale,
                                  dt_r_scale, dt_weight_scale, dt_scale, B_scale, C_scale, z_scale):
    """One token with dt_proj inside the scan kernel: u_q, z_q (b, d_in), dt_r_q (b, r), B_q, C_q (b, n), dt_weight
    (d_in, r) -> (y (b, d_in), new state, dt_q (b, d_in)), one launch."""
    op = "int8_selective_scan_dt_update"
    for name, t in (("u_q", u_q), ("dt_r_q", dt_r_q), ("B_q", B_q), ("C_q", C_q), ("z_q", z_q),
                    ("dt_weight", dt_weight)):
        _cuda(f"{op}: {name}", t, torch.int8, 2)
    _require(dt_r_q.shape[0] == u_q.shape[0] and dt_r_q.shape[1] >= 1 and dt_r_q.stride(1) == 1,
             f"{op}: dt_r_q must be (b, r) with channel stride 1, got {tuple(dt_r_q.shape)}")
    _require(tuple(dt_weight.shape) == (u_q.shape[1], dt_r_q.shape[1]) and dt_weight.is_contiguous(),
             f"{op}: dt_weight must be a contiguous ({u_q.shape[1]}, {dt_r_q.shape[1]}) tensor, got "
             f"{tuple(dt_weight.shape)}")
    # the scan at l = 1; its dt input is made inside, shaped as u_q
    _check_scan(op, *(t.unsqueeze(1) for t in (u_q, u_q, B_q, C_q, z_q)), ssm_state, A, D, dt_bias,
                (("u_scale", u_scale), ("dt_r_scale", dt_r_scale), ("dt_weight_scale", dt_weight_scale),
                 ("dt_scale", dt_scale), ("B_scale", B_scale), ("C_scale", C_scale), ("z_scale", z_scale)))
    return load_extension().int8_selective_scan_dt_update(u_q, dt_r_q, B_q, C_q, z_q, ssm_state, A, D, dt_bias,
                                                          dt_weight, u_scale, dt_r_scale, dt_weight_scale, dt_scale,
                                                          B_scale, C_scale, z_scale)


def hadamard_quantize(y, out_scale):
    """y (..., n) float32 -> int8 (..., n)."""
    _cuda("hadamard_quantize: y", y, torch.float32)
    _require(y.dim() >= 1, "hadamard_quantize: y must have a channel dim")
    n = y.shape[-1]
    try:
        hadamard_factors(n)
    except ValueError as e:
        raise ValueError(f"hadamard_quantize: {e}") from None
    _require(n <= HADAMARD_MAX_DIM, f"hadamard_quantize: n={n} > {HADAMARD_MAX_DIM} (the kernel's shared memory)")
    _scale("hadamard_quantize: out_scale", out_scale)
    return load_extension().hadamard_quantize(y, out_scale)


def hadamard_quantize_dynamic(y):
    """y (..., n) float32 -> (int8 (..., n), float32 (...)): the Hadamard kernel with a per-token scale (one block
    reduction of the row's amax before the divide)."""
    _cuda("hadamard_quantize_dynamic: y", y, torch.float32)
    _require(y.dim() >= 1, "hadamard_quantize_dynamic: y must have a channel dim")
    n = y.shape[-1]
    try:
        hadamard_factors(n)
    except ValueError as e:
        raise ValueError(f"hadamard_quantize_dynamic: {e}") from None
    _require(n <= HADAMARD_MAX_DIM,
             f"hadamard_quantize_dynamic: n={n} > {HADAMARD_MAX_DIM} (the kernel's shared memory)")
    return load_extension().hadamard_quantize_dynamic(y)




_KERNELS = {"quantize": quantize, "rms_norm_quantize": rms_norm_quantize, "int8_linear": int8_linear,
            "int8_linear_residual": int8_linear_residual, "int8_linear_quantize": int8_linear_quantize,
            "int8_linear_quantize_segments": int8_linear_quantize_segments,
            "int8_linear_quantize_conv_update": int8_linear_quantize_conv_update,
            "int8_causal_conv1d": int8_causal_conv1d,
            "int8_causal_conv1d_update": int8_causal_conv1d_update, "int8_selective_scan": int8_selective_scan,
            "int8_selective_scan_update": int8_selective_scan_update,
            "int8_selective_scan_dt_update": int8_selective_scan_dt_update, "hadamard_quantize": hadamard_quantize,
            "hadamard_quantize_dynamic": hadamard_quantize_dynamic, "int8_linear_per_token": int8_linear_per_token}
_registered: set[str] = set()


# ------------------------------------------------------ 4-bit-weight linears (plugins/kernels/int4_*), W4A16's scan

INT4_MAX_GROUPS = 6144
"""Largest G = ceil(K / group_size) of the 4-bit kernels (``kInt4MaxGroups`` in plugins/kernels/int4_linear.h)."""


def _check_int4(op, x, weight_packed, weight_scale, bias, group_size, x_dtype):
    """Shared checks of the three 4-bit linears: x (..., K) of x_dtype, weight_packed (N, ceil(K / 2)) uint8 and
    weight_scale (N, G) float32 contiguous, bias (N,) float32 or None, 1 <= group_size, G <= the kernels' limit."""
    _cuda(f"{op}: x", x, x_dtype)
    _cuda(f"{op}: weight_packed", weight_packed, torch.uint8, 2)
    _cuda(f"{op}: weight_scale", weight_scale, torch.float32, 2)
    _require(isinstance(group_size, int) and group_size >= 1, f"{op}: group_size must be an int >= 1, got {group_size}")
    _require(x.dim() >= 1, f"{op}: x must have an input-feature dim")
    k, n = x.shape[-1], weight_packed.shape[0]
    _require(1 <= k <= primitives.MAX_K, f"{op}: K={k} not in [1, {primitives.MAX_K}]")
    groups = primitives.int4_group_count(k, group_size)
    _require(tuple(weight_packed.shape) == (n, -(-k // 2)) and weight_packed.is_contiguous(),
             f"{op}: weight_packed {tuple(weight_packed.shape)} must be a contiguous (N, {-(-k // 2)}) tensor for "
             f"x {tuple(x.shape)}")
    _require(tuple(weight_scale.shape) == (n, groups) and weight_scale.is_contiguous(),
             f"{op}: weight_scale {tuple(weight_scale.shape)} must be a contiguous ({n}, {groups}) tensor "
             f"(K={k}, group_size={group_size})")
    _require(groups <= INT4_MAX_GROUPS, f"{op}: {groups} groups per row > {INT4_MAX_GROUPS} (the W4A8 GEMV keeps a "
             f"block's per-group sums in shared memory); use a larger group size")
    if bias is not None:
        _cuda(f"{op}: bias", bias, torch.float32, 1)
        _require(bias.shape[0] == n and bias.is_contiguous(), f"{op}: bias must be a contiguous ({n},) float32 tensor")


def w4a8_linear(x_q, weight_packed, weight_scale, bias, x_scale, group_size):
    """x_q (..., K) int8, weight_packed (N, ceil(K / 2)) uint8, weight_scale (N, G) float32, bias (N) float32 or None
    -> float32 (..., N), bit-exact (plugins/kernels/int4_linear.h: the dp4a GEMV for up to 16 rows, above the
    tensor-core GEMM where K and the group size are multiples of 32)."""
    _check_int4("w4a8_linear", x_q, weight_packed, weight_scale, bias, group_size, torch.int8)
    _scale("w4a8_linear: x_scale", x_scale)
    return load_extension().w4a8_linear(x_q, weight_packed, weight_scale, bias, x_scale, group_size)


def w4a8_linear_quantize(x_q, weight_packed, weight_scale, bias, x_scale, group_size, out_scale):
    """quantize(w4a8_linear(...), out_scale) -> int8 (..., N) in one kernel (the same epilogue, then quantize_rn)."""
    _check_int4("w4a8_linear_quantize", x_q, weight_packed, weight_scale, bias, group_size, torch.int8)
    _scale("w4a8_linear_quantize: x_scale", x_scale)
    _scale("w4a8_linear_quantize: out_scale", out_scale)
    return load_extension().w4a8_linear_quantize(x_q, weight_packed, weight_scale, bias, x_scale, group_size,
                                                 out_scale)


def w4a8_linear_quantize_segments(x_q, weight_packed, weight_scale, bias, x_scale, group_size, out_scales, sizes):
    """w4a8_linear_quantize with a scale per consecutive column segment -> int8 (..., N), one kernel."""
    op = "w4a8_linear_quantize_segments"
    _check_int4(op, x_q, weight_packed, weight_scale, bias, group_size, torch.int8)
    _scale(f"{op}: x_scale", x_scale)
    _check_segments(op, out_scales, sizes, weight_packed.shape[0])
    return load_extension().w4a8_linear_quantize_segments(x_q, weight_packed, weight_scale, bias, x_scale, group_size,
                                                          list(out_scales), list(sizes))


def w4a8_linear_residual(x_q, weight_packed, weight_scale, bias, x_scale, group_size, residual):
    """residual + w4a8_linear(...) -> float32 (..., N): the W4A8 GEMV adds the residual in its epilogue."""
    op = "w4a8_linear_residual"
    _check_int4(op, x_q, weight_packed, weight_scale, bias, group_size, torch.int8)
    _scale(f"{op}: x_scale", x_scale)
    _cuda(f"{op}: residual", residual, torch.float32)
    _require(tuple(residual.shape) == (*x_q.shape[:-1], weight_packed.shape[0]),
             f"{op}: residual {tuple(residual.shape)} is not the output's shape")
    return load_extension().w4a8_linear_residual(x_q, weight_packed, weight_scale, bias, x_scale, group_size, residual)


def w4a8_linear_quantize_conv_update(x_q, weight_packed, weight_scale, bias, x_scale, group_size, out_scales, sizes,
                                     conv_begin, conv_state, conv_weight, conv_bias, conv_weight_scale,
                                     conv_out_scale, conv_out_scales):
    """int8_linear_quantize_conv_update with W4A8 weights: the W4A8 GEMV's epilogue runs the conv step."""
    op = "w4a8_linear_quantize_conv_update"
    _check_int4(op, x_q, weight_packed, weight_scale, bias, group_size, torch.int8)
    _scale(f"{op}: x_scale", x_scale)
    _check_conv_update(op, x_q, weight_packed.shape[0], out_scales, sizes, conv_begin, conv_state, conv_weight,
                       conv_bias, conv_weight_scale, conv_out_scale, conv_out_scales)
    return load_extension().w4a8_linear_quantize_conv_update(
        x_q, weight_packed, weight_scale, bias, x_scale, group_size, list(out_scales), list(sizes), conv_begin,
        conv_state, conv_weight, conv_bias, conv_weight_scale, conv_out_scale, conv_out_scales)


def w4a16_linear(x, weight_packed, weight_scale, bias, group_size):
    """x (..., K) float16, weight_packed (N, ceil(K / 2)) uint8, weight_scale (N, G) float32, bias (N) float32 or
    None -> float16 (..., N), float32 accumulation (mma.sync GEMV / GEMM where K and the group size are multiples
    of 32 and x's rows are 16-byte aligned, otherwise one warp per output)."""
    _check_int4("w4a16_linear", x, weight_packed, weight_scale, bias, group_size, torch.float16)
    return load_extension().w4a16_linear(x, weight_packed, weight_scale, bias, group_size)


def selective_scan(u, delta, A, B, C, D, ssm_state):
    """W4A16's prefill scan (op selective_scan, the fp reference's float order): u (b, l, d_in) float16, delta
    (b, l, d_in) float32, A (d_in, n) float32, B, C (b, l, n) float16, D (d_in,) float16, ssm_state (b, d_in, n)
    float32 -> (y (b, l, d_in) float32, ssm_state_out (b, d_in, n) float32); n a power of two <= 32."""
    for name, t, dtype, dim in (("u", u, torch.float16, 3), ("delta", delta, torch.float32, 3),
                                ("A", A, torch.float32, 2), ("B", B, torch.float16, 3), ("C", C, torch.float16, 3),
                                ("D", D, torch.float16, 1), ("ssm_state", ssm_state, torch.float32, 3)):
        _cuda(f"selective_scan: {name}", t, dtype, dim)
    b, l, d = u.shape
    n = A.shape[1]
    _require(delta.shape == u.shape and tuple(B.shape) == (b, l, n) and C.shape == B.shape and A.shape[0] == d
             and D.shape[0] == d and tuple(ssm_state.shape) == (b, d, n),
             f"selective_scan: shapes do not match: u {tuple(u.shape)}, B {tuple(B.shape)}, A {tuple(A.shape)}, "
             f"ssm_state {tuple(ssm_state.shape)}")
    _require(1 <= n <= 32 and n & (n - 1) == 0, f"selective_scan: d_state n={n} must be a power of two <= 32")
    return load_extension().selective_scan(u, delta, A, B, C, D, ssm_state)


OP_NAMES += ("w4a8_linear", "w4a8_linear_residual", "w4a8_linear_quantize", "w4a8_linear_quantize_segments",
             "w4a8_linear_quantize_conv_update", "w4a16_linear", "selective_scan")
_KERNELS.update(w4a8_linear=w4a8_linear, w4a8_linear_residual=w4a8_linear_residual,
                w4a8_linear_quantize=w4a8_linear_quantize, w4a8_linear_quantize_segments=w4a8_linear_quantize_segments,
                w4a8_linear_quantize_conv_update=w4a8_linear_quantize_conv_update, w4a16_linear=w4a16_linear,
                selective_scan=selective_scan)
# ------------------------------------------------------------------- end of the 4-bit-weight linears and W4A16 scan


def register_cuda_kernels() -> tuple[str, ...]:
    """Builds/loads the extension and registers its functions as the CUDA kernels of the existing
    ``torch.ops.edge_quamba`` ops (idempotent). Returns the names registered so far."""
    import edge_quamba.ops.torch_ops  # noqa: F401  (defines the ops)

    load_extension()
    for name in OP_NAMES:
        if name not in _registered:
            torch.library.register_kernel(f"edge_quamba::{name}", "cuda", _KERNELS[name])
            _registered.add(name)
    return tuple(n for n in OP_NAMES if n in _registered)


# ------------------------------------------------------------------------------------------ Mamba2 (Quamba2) ops
# The ops of edge_quamba.quant.mamba2_qmodel.Mamba2QuantOps (the rest of a Mamba2 W8A8 layer, rms_norm_quantize,
# int8_linear, quantize, are the ops above). The per-channel scale vectors are checked for shape and dtype only:
# checking their values would read the GPU from the host (a sync, which CUDA-graph capture forbids); the quantized
# model makes them > 0 and finite (scale_from_amax).

SSD_MAX_STATE = 256
"""Largest d_state of the SSD scan kernel (lanes keep up to 16 states each, 16 lanes per channel row)."""


def _vector(op: str, name: str, t, size: int) -> None:
    _cuda(f"{op}: {name}", t, torch.float32, 1)
    _require(t.shape[0] == size, f"{op}: {name} must be ({size},), got {tuple(t.shape)}")


def int8_causal_conv1d_channel_scales(x_q, conv_state_q, weight_q, bias, out_scales, x_scale, weight_scale):
    """x_q (b, l, conv_dim) int8 -> (codes (b, l, conv_dim) int8, each channel c at out_scales[c], new state)."""
    op = "int8_causal_conv1d_channel_scales"
    _cuda(f"{op}: x_q", x_q, torch.int8, 3)
    _cuda(f"{op}: conv_state_q", conv_state_q, torch.int8, 3)
    _cuda(f"{op}: weight_q", weight_q, torch.int8, 2)
    b, _, d = x_q.shape
    k = weight_q.shape[1]
    _require(tuple(conv_state_q.shape) == (b, d, k) and weight_q.shape[0] == d,
             f"{op}: shapes do not match: x_q {tuple(x_q.shape)}, conv_state_q {tuple(conv_state_q.shape)}, "
             f"weight_q {tuple(weight_q.shape)}")
    _require(1 <= k <= 4, f"{op}: width k={k} not in [1, 4]")
    if bias is not None:
        _vector(op, "bias", bias, d)
    _vector(op, "out_scales", out_scales, d)
    _scale(f"{op}: x_scale", x_scale)
    _scale(f"{op}: weight_scale", weight_scale)
    return load_extension().int8_causal_conv1d_channel_scales(x_q, conv_state_q, weight_q, bias, out_scales, x_scale,
                                                              weight_scale)


def int8_causal_conv1d_channel_scales_update(x_q, conv_state_q, weight_q, bias, out_scales, x_scale, weight_scale):
    """One token, x_q (b, conv_dim) -> (codes (b, conv_dim), new state): the prefill kernel at l = 1 (a view)."""
    _cuda("int8_causal_conv1d_channel_scales_update: x_q", x_q, torch.int8, 2)
    codes, state = int8_causal_conv1d_channel_scales(x_q.unsqueeze(1), conv_state_q, weight_q, bias, out_scales,
                                                     x_scale, weight_scale)
    return codes[:, 0], state


def int8_ssd_scan(x_q, dt_q, B_q, C_q, ssm_state, A, D, dt_bias, x_scales, B_scales, C_scales, dt_scale):
    """x_q (b, l, h p), dt_q (b, l, h), B_q, C_q (b, l, g n) int8, ssm_state (b, h, p, n) float32
    -> (y (b, l, h p) float32, new state (b, h, p, n)); d_state n <= 256; the x / B / C views of the conv output are
    read in place."""
    op = "int8_ssd_scan"
    for name, t in (("x_q", x_q), ("dt_q", dt_q), ("B_q", B_q), ("C_q", C_q)):
        _cuda(f"{op}: {name}", t, torch.int8, 3)
    _cuda(f"{op}: ssm_state", ssm_state, torch.float32, 4)
    b, l, d_in = x_q.shape
    _, h, p, n = ssm_state.shape
    gn = B_q.shape[2]
    _require(1 <= n <= SSD_MAX_STATE, f"{op}: d_state n={n} not in [1, {SSD_MAX_STATE}]")
    _require(gn >= n and gn % n == 0 and h % (gn // n) == 0,
             f"{op}: B_q's width {gn} is not g * n with g dividing h={h} (n={n})")
    _require(ssm_state.shape[0] == b and d_in == h * p and tuple(dt_q.shape) == (b, l, h)
             and tuple(B_q.shape) == (b, l, gn) and C_q.shape == B_q.shape,
             f"{op}: shapes do not match: x_q {tuple(x_q.shape)}, dt_q {tuple(dt_q.shape)}, B_q {tuple(B_q.shape)}, "
             f"C_q {tuple(C_q.shape)}, ssm_state {tuple(ssm_state.shape)}")
    for name, t, size in (("A", A, h), ("D", D, h), ("dt_bias", dt_bias, h), ("x_scales", x_scales, d_in),
                          ("B_scales", B_scales, gn), ("C_scales", C_scales, gn)):
        _vector(op, name, t, size)
    _scale(f"{op}: dt_scale", dt_scale)
    return load_extension().int8_ssd_scan(x_q, dt_q, B_q, C_q, ssm_state, A, D, dt_bias, x_scales, B_scales,
                                          C_scales, dt_scale)


def int8_ssd_scan_update(x_q, dt_q, B_q, C_q, ssm_state, A, D, dt_bias, x_scales, B_scales, C_scales, dt_scale):
    """One token, x_q (b, h p), dt_q (b, h), B_q, C_q (b, g n) -> (y (b, h p), new state): the prefill kernel at
    l = 1 (views, no copies)."""
    for name, t in (("x_q", x_q), ("dt_q", dt_q), ("B_q", B_q), ("C_q", C_q)):
        _cuda(f"int8_ssd_scan_update: {name}", t, torch.int8, 2)
    y, state = int8_ssd_scan(*(t.unsqueeze(1) for t in (x_q, dt_q, B_q, C_q)), ssm_state, A, D, dt_bias, x_scales,
                             B_scales, C_scales, dt_scale)
    return y[:, 0], state


def _check_gated_norm(op, y, z_q, weight, z_scale, eps, group_size, out_scale) -> None:
    _cuda(f"{op}: y", y, torch.float32)
    _cuda(f"{op}: z_q", z_q, torch.int8)
    _require(y.dim() >= 1 and z_q.shape == y.shape, f"{op}: y {tuple(y.shape)} and z_q {tuple(z_q.shape)} differ")
    d = y.shape[-1]
    _vector(op, "weight", weight, d)
    _require(weight.is_contiguous(), f"{op}: weight must be contiguous")
    _require(isinstance(group_size, int) and group_size >= 1 and d % group_size == 0,
             f"{op}: group_size {group_size} does not divide d={d}")
    _require(math.isfinite(eps) and eps >= 0, f"{op}: eps must be a finite float >= 0, got {eps}")
    _scale(f"{op}: z_scale", z_scale)
    _scale(f"{op}: out_scale", out_scale)


def gated_rms_norm_quantize(y, z_q, weight, z_scale, eps, group_size, out_scale):
    """y (..., d) float32, z_q (..., d) int8 -> int8 (..., d): the gated RMSNorm over groups of group_size channels
    (<= 8192), quantized; one block per (row, group); codes equal the reference's up to .5 ties (its sum order)."""
    op = "gated_rms_norm_quantize"
    _check_gated_norm(op, y, z_q, weight, z_scale, eps, group_size, out_scale)
    _require(group_size <= RMS_NORM_MAX_DIM, f"{op}: group_size {group_size} > {RMS_NORM_MAX_DIM} (one group in "
                                             f"the registers of a block)")
    return load_extension().gated_rms_norm_quantize(y, z_q, weight, z_scale, eps, group_size, out_scale, False)


def gated_rms_norm_hadamard_quantize(y, z_q, weight, z_scale, eps, group_size, out_scale):
    """The same with the Hadamard transform before the quantize, in the Hadamard kernel (one block per row): d as
    hadamard_quantize takes it."""
    op = "gated_rms_norm_hadamard_quantize"
    _check_gated_norm(op, y, z_q, weight, z_scale, eps, group_size, out_scale)
    n = y.shape[-1]
    try:
        hadamard_factors(n)
    except ValueError as e:
        raise ValueError(f"{op}: {e}") from None
    _require(n <= HADAMARD_MAX_DIM, f"{op}: d={n} > {HADAMARD_MAX_DIM} (the kernel's shared memory)")
    return load_extension().gated_rms_norm_quantize(y, z_q, weight, z_scale, eps, group_size, out_scale, True)


MAMBA2_KERNELS = {"int8_causal_conv1d_channel_scales": int8_causal_conv1d_channel_scales,
                  "int8_causal_conv1d_channel_scales_update": int8_causal_conv1d_channel_scales_update,
                  "int8_ssd_scan": int8_ssd_scan, "int8_ssd_scan_update": int8_ssd_scan_update,
                  "gated_rms_norm_quantize": gated_rms_norm_quantize,
                  "gated_rms_norm_hadamard_quantize": gated_rms_norm_hadamard_quantize}
OP_NAMES = OP_NAMES + tuple(MAMBA2_KERNELS)
_KERNELS.update(MAMBA2_KERNELS)
