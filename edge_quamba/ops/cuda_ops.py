"""CUDA implementations of the ``torch.ops.edge_quamba.*`` ops: the kernels of ``plugins/kernels`` through the
binding ``plugins/torch/binding.cpp``.

Build: :func:`load_extension` JIT-compiles the binding and every ``plugins/kernels/*.cu`` with
``torch.utils.cpp_extension.load`` (ninja) into a cache folder, ``$EDGE_QUAMBA_CUDA_BUILD_DIR`` or
``~/.cache/edge_quamba/cuda_ext``, in a subfolder named by a hash of the sources, so an edited kernel or header is
rebuilt and an unchanged one is loaded in seconds. Flags: ``-O3 --fmad=false`` (no FMA contraction; the kernels also
write every exactness-critical op as an explicitly rounded intrinsic), never ``--use_fast_math``. The GPU
architecture is the visible GPU's (``TORCH_CUDA_ARCH_LIST`` overrides, as for any torch extension).

Dispatch: :func:`register_cuda_kernels` registers the binding's functions with
``torch.library.register_kernel("edge_quamba::<name>", "cuda", fn)`` for each op of the contract that exists
(``hasattr(torch.ops.edge_quamba, name)`` after importing :mod:`edge_quamba.ops.torch_ops`), so the same model moved
to the GPU runs on the kernels; the CPU kernels stay the qops references. No GPU, no nvcc or a failed build raise
:class:`~edge_quamba.errors.BackendUnavailableError` (one line); nothing falls back to another implementation.

Views: the binding reads the model's non-contiguous views in place through strides (x / z halves of in_proj's
output, dt / B / C slices of x_proj's output); only layouts that no single row stride describes are copied.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import torch

from edge_quamba.errors import BackendUnavailableError

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
KERNEL_DIR = PLUGINS / "kernels"
BINDING = PLUGINS / "torch" / "binding.cpp"
CUDA_FLAGS = ("-O3", "--fmad=false")
OP_NAMES = ("quantize", "int8_linear", "int8_causal_conv1d", "int8_selective_scan", "hadamard_quantize")
"""The five ops of the contract, by torch op name."""


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


def quantize(x, scale):
    """x (...) float32/float16/bfloat16 on CUDA -> int8 (...)."""
    return load_extension().quantize(x, scale)


def int8_linear(x_q, weight_q, bias, x_scale, weight_scale):
    """x_q (..., K) int8, weight_q (N, K) int8, bias (N) float32 or None -> float32 (..., N).
    GEMV kernel for up to 16 rows; above, torch._int_mm (cuBLASLt, exact int32) and the same float32 epilogue."""
    return load_extension().int8_linear(x_q, weight_q, bias, x_scale, weight_scale)


def int8_causal_conv1d(x_q, conv_state_q, weight_q, bias, x_scale, weight_scale, out_scale):
    """-> (u_q (b, l, d_in) int8, conv_state_out (b, d_in, k) int8)."""
    return load_extension().int8_causal_conv1d(x_q, conv_state_q, weight_q, bias, x_scale, weight_scale, out_scale)


def int8_selective_scan(u_q, dt_q, B_q, C_q, z_q, ssm_state, A, D, dt_bias,
                        u_scale, dt_scale, B_scale, C_scale, z_scale):
    """-> (y (b, l, d_in) float32, ssm_state_out (b, d_in, n) float32)."""
    return load_extension().int8_selective_scan(u_q, dt_q, B_q, C_q, z_q, ssm_state, A, D, dt_bias,
                                                u_scale, dt_scale, B_scale, C_scale, z_scale)


def hadamard_quantize(y, out_scale):
    """y (..., n) float32 -> int8 (..., n)."""
    return load_extension().hadamard_quantize(y, out_scale)


_KERNELS = {"quantize": quantize, "int8_linear": int8_linear, "int8_causal_conv1d": int8_causal_conv1d,
            "int8_selective_scan": int8_selective_scan, "hadamard_quantize": hadamard_quantize}
_registered: set[str] = set()


def register_cuda_kernels() -> tuple[str, ...]:
    """Builds/loads the extension and registers its functions as the CUDA kernels of the existing
    ``torch.ops.edge_quamba`` ops (idempotent). Returns the names registered so far."""
    import edge_quamba.ops.torch_ops  # noqa: F401  (defines the ops)

    load_extension()
    for name in OP_NAMES:
        if name not in _registered and hasattr(torch.ops.edge_quamba, name):
            torch.library.register_kernel(f"edge_quamba::{name}", "cuda", _KERNELS[name])
            _registered.add(name)
    return tuple(n for n in OP_NAMES if n in _registered)
