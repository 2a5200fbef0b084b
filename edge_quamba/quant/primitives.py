"""The int8 quantization convention of edge-quamba, and the only code in the project that rounds or clamps to int8.

Longer than our ~400-line rule on purpose: every rounding and clamp of the project (the int8 section and the
int4 one) lives here, so that this one file is the whole convention that every backend is checked against.

The convention
--------------
    symmetric, zero point 0, q in [-127, 127]
    scale = amax / 127                       (float32; x ~= q * scale, the meaning of ONNX ``y_scale``)
    q     = clamp(round_half_to_even(float32(x) / scale), -127, 127)
    x_hat = float32(q) * scale               (then cast to the requested dtype)

Every other implementation (the PyTorch quantized reference, the ONNX graph, the ONNX Runtime ops, the CUDA kernels,
the TensorRT plugins) must produce the same int8 values as :func:`quantize` for the same float32 input and scale.
Tests compare integer tensors exactly, so the details below matter.

Why these details
-----------------
* **One scale meaning.** Public Mamba/LLM quantization code mixes ``amax / 127`` scales with ``amax / 127.5`` and with
  multipliers ``127 / amax``. We store only ``scale = amax / 127`` and always *divide* by it.
* **Division, not multiplication by a reciprocal.** ``x * (1 / s)`` rounds twice (the reciprocal, then the product) and
  differs from the correctly rounded ``x / s`` in the last bit for some inputs; at a rounding tie that changes the int8
  value. ONNX ``QuantizeLinear`` is specified as ``round(x / y_scale)``, and CUDA ``__float2int_rn(x / s)`` divides
  exactly as long as the kernel is compiled without ``--use_fast_math`` (which turns ``/`` into an approximate divide;
  write ``__fdiv_rn(x, s)`` to be safe). The official Quamba Hadamard-quantize kernel multiplies by a reciprocal;
  we do not.
* **Round half to even.** ``torch.round``, ``numpy.rint``, ONNX ``QuantizeLinear`` and CUDA ``__float2int_rn`` all round
  ties to even (0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -2.5 -> -2). C ``roundf`` rounds ties away from zero (2.5 -> 3) and must
  not be used; the official Quamba CUDA kernels (enyac-group/Quamba at c474646) use ``roundf``, and its Python
  activation quantizer casts to int8 without rounding at all (truncation), so our integers will not match theirs
  bit for bit at ties.
* **-128 is excluded.** The range is symmetric, so ``-q`` never overflows (in int8, ``-(-128)`` wraps to -128), the
  representable magnitudes are the same on both sides, and the int8 x int8 products are bounded by 127 * 127.
  Beware: ONNX ``QuantizeLinear`` (and TensorRT's quantize layer) saturate to [-128, 127], so a value below
  -127.5 * scale becomes -128 there. Our quantizers never write -128; see "Reading codes" for what a reader does
  with one.
* **float32 arithmetic.** Scales are float32. :func:`quantize` divides in float32 (a float64 input is first rounded to
  float32, which is what a float32 kernel would see; float16 and bfloat16 convert to float32 exactly).
  :func:`dequantize` multiplies in float32, as ``DequantizeLinear`` with a float32 scale does, then casts.
* **Special values.** +-Inf saturates to +-127. NaN becomes 0, which is what the CUDA float-to-int conversion gives;
  finiteness is the observers' job (they reject NaN/Inf during calibration), not the hot path's.
* **Zero and tiny amax.** An all-zero tensor has amax 0, which would give scale 0 and 0 / 0 = NaN.
  :func:`scale_from_amax` therefore clamps amax to at least :data:`AMAX_FLOOR` (1e-5, the floor the official Quamba
  observers apply), so every scale is > 0 and finite; an all-zero tensor then quantizes to zeros and dequantizes to
  zeros. A tensor whose true amax is below the floor is quantized with the floor's scale (no saturation, coarser steps).

int8 x int8 matmul
------------------
``int8_matmul`` returns the exact int32 sum of int8 products. Each product is at most 128 * 128 = 16384 in magnitude
(127 * 127 = 16129 within our range), so a reduction of length K is bounded by 16384 * K, which fits int32 for
K <= :data:`MAX_K` = 131071 (with our range, |acc| <= 127 * 127 * K). The CPU/GPU emulation computes in float64: every
product and every partial sum is an integer below 2**31 < 2**53, so each float64 operation is exact whatever the
summation order or blocking, and the result equals integer arithmetic (float32 would not be: 127 * 127 * 5120 > 2**24).
A quantized linear layer is ``y = float32(x_q @ w_q^T) * (s_x * s_w)``, see :func:`int8_linear`.

Reading codes: -128 reads as -127
---------------------------------
Every op that reads int8 activation codes (the custom ops' references in :mod:`edge_quamba.quant.qops`, their ONNX
function bodies, CUDA kernels and TensorRT plugins) reads a code of -128 as -127 (:func:`read_codes`;
:func:`dequantize` does it). Our own quantizers never write -128, so for them this changes nothing. It exists for the
TensorRT graph: there a GEMM's requantization must be a QuantizeLinear directly on the GEMM's output, or TensorRT
cannot fuse it into the GEMM's epilogue (a Max in between, the other way to keep -128 out, blocks that fusion), and
TensorRT's QuantizeLinear saturates to [-128, 127]. Reading -128 as -127 downstream gives exactly the values of a
producer that clamps to [-127, 127]: ``max(round(x / s), -127)`` either way. A conv state stores the codes as read
(clamped), so states stay in [-127, 127] too. int8 GEMMs do not apply the rule (TensorRT's own GEMMs cannot), so a
graph must never feed a possible -128 into a GEMM; the lowering requantizes such an input with a clamp first
(:mod:`edge_quamba.onnx.lower_mamba1`).

Weight scales: per tensor or per output channel
-----------------------------------------------
The paper's weights are per tensor: one ``s_w = max|W| / 127``. Per channel (``QuantConfig.weight_scales="channel"``)
gives each output row ``o`` of a linear weight W (out_features, in_features) its own
``s_w[o] = max(max_k |W[o, k]|, AMAX_FLOOR) / 127`` with the same rounding rules; the epilogue then multiplies output
column ``o`` by ``float32(s_x * s_w[o])`` (a vector read instead of a scalar). The scale is per *output* channel, so
it factors out of the reduction over K and the int32 accumulator is unchanged.

Per-token (dynamic) scales
--------------------------
An activation may instead carry one scale per token, computed at run time from the values themselves
(:func:`per_token_scale`): ``s_tok = max(amax over the token's last-axis values, AMAX_FLOOR) / 127`` in float32, the
same formula as a static scale (:func:`scale_from_amax`) over one row instead of a calibration set, and codes are
``quantize(x, s_tok[..., None])``: still a true division, half to even, [-127, 127]. Since the token's largest value
maps to exactly +-127, nothing saturates. A linear layer on such codes multiplies each row's int32 accumulator by
``float32(s_tok * s_w)`` (:func:`int8_linear_per_token`), the static formula with a per-row scale.

Glossary: ``x`` float tensor, ``q`` int8 tensor, ``s``/``scale`` float32 scale (0-dim, or broadcastable to x),
``amax`` max |x| over what the scale must cover, ``K`` reduction length (in_features).
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Callable

import torch
from torch import Tensor

from edge_quamba.quant.config import DEFAULT_GROUP_SIZE

INT8_MAX = 127
"""Largest int8 code used; the range is [-INT8_MAX, INT8_MAX]."""

AMAX_FLOOR = 1e-5
"""amax is clamped to at least this before dividing by 127, so every scale is > 0 and finite."""

MAX_K = (2**31 - 1) // (128 * 128)
"""Longest reduction int8_matmul accepts: 16384 * K must fit int32 (131071)."""


def _check_finite(t: Tensor, what: str) -> None:
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{what} must be finite, got {t.detach().cpu().flatten()[:8].tolist()} (NaN or Inf present)")


def _as_scale(scale: Tensor | float, device: torch.device) -> Tensor:
    """A validated float32 scale tensor on ``device``. scale: 0-dim, or any shape broadcastable to the data."""
    s = torch.as_tensor(scale, device=device).to(torch.float32)
    _check_finite(s, "scale")
    if not bool((s > 0).all()):
        raise ValueError(f"scale must be > 0, got {s.detach().cpu().flatten()[:8].tolist()}")
    return s


def scale_from_amax(amax: Tensor | float) -> Tensor:
    """Scale that maps [-amax, amax] onto [-127, 127]: ``max(float32(amax), AMAX_FLOOR) / 127``.

    amax: float or tensor of any shape (0-dim per tensor, (C,) per channel), >= 0 and finite.
    Returns a float32 tensor of the same shape (on the same device), every element > 0 and finite.
    Raises ValueError naming ``amax`` if it holds NaN, Inf or a negative value.
    """
    a = torch.as_tensor(amax).to(torch.float32)
    _check_finite(a, "amax")
    if not bool((a >= 0).all()):
        raise ValueError(f"amax must be >= 0, got {a.detach().cpu().flatten()[:8].tolist()}")
    return a.clamp(min=AMAX_FLOOR) / INT8_MAX


def quantize(x: Tensor, scale: Tensor | float) -> Tensor:
    """int8 codes of ``x``: ``clamp(round_half_to_even(float32(x) / scale), -127, 127)``.

    x: floating tensor, any shape (...). scale: float or float tensor broadcastable to x, > 0 and finite.
    Returns an int8 tensor of shape (...) with values in [-127, 127] (never -128). NaN -> 0, +-Inf -> +-127.
    """
    if not x.is_floating_point():
        raise TypeError(f"quantize expects a floating tensor, got {x.dtype}")
    s = _as_scale(scale, x.device)
    quotient = x.to(torch.float32) / s
    r = torch.round(quotient)  # torch.round: half to even
    r = torch.nan_to_num(r, nan=0.0, posinf=float(INT8_MAX), neginf=float(-INT8_MAX))
    q = r.clamp_(-INT8_MAX, INT8_MAX).to(torch.int8)
    hook = _TIE_HOOK.get()
    return q if hook is None else hook(_CODE_LABEL.get(), quotient, q)


_TIE_HOOK: contextvars.ContextVar[Callable[[str | None, Tensor, Tensor], Tensor] | None] = contextvars.ContextVar(
    "edge_quamba_tie_hook", default=None)
_CODE_LABEL: contextvars.ContextVar[str | tuple[str, ...] | None] = contextvars.ContextVar(
    "edge_quamba_code_label", default=None)


@contextlib.contextmanager
def code_label(label: str | tuple[str, ...]):
    """Name the int8 tensor that the :func:`quantize` calls inside this block produce (e.g.
    ``layers.3.mixer.u_q``), for a :func:`quantize_hook`. The quantized reference labels every code it makes. A
    tuple names the segments of one :func:`quantize_segments` call, one label each."""
    token = _CODE_LABEL.set(label)
    try:
        yield
    finally:
        _CODE_LABEL.reset(token)


@contextlib.contextmanager
def quantize_hook(hook: Callable[[str | None, Tensor, Tensor], Tensor]):
    """Validation only: within this block every :func:`quantize` call passes the label of the tensor it makes
    (:func:`code_label`, None outside a label), its float32 quotient ``x / scale`` and its int8 codes to
    ``hook(label, quotient, q)`` and returns what the hook returns.

    A backend under test computes float values that differ from ours in the last bits (another exp, another summation
    order), so now and then one of its codes lands on the other side of a rounding tie, and in a recurrent model
    that one code changes everything after it. ``edge_quamba.onnx.validate`` uses this hook to let the reference
    take the backend's side of such ties (only where the quotient is provably within a tiny distance of .5), so that
    everything else can still be compared exactly. Outside such a block quantize is unchanged.
    """
    token = _TIE_HOOK.set(hook)
    try:
        yield
    finally:
        _TIE_HOOK.reset(token)


def split_code_label() -> tuple[str | tuple[str, ...] | None, str | None]:
    """The current :func:`code_label` split for a fused op that quantizes twice, first a linear's output (its
    segments) and then a conv's: a tuple's last label names the conv's codes and the rest the linear's (one label
    left: a plain label); a plain label (or none) names both."""
    label = _CODE_LABEL.get()
    if not isinstance(label, tuple):
        return label, label
    first = label[:-1]
    return (first[0] if len(first) == 1 else first), label[-1]


def quantize_segments(x: Tensor, scales: list[float], sizes: list[int]) -> Tensor:
    """int8 codes of consecutive segments of x's last axis, each at its own scale: segment i (``sizes[i]`` columns)
    is quantized at ``scales[i]`` (:func:`quantize`), in order. x (..., N) float, ``sum(sizes) == N`` -> (..., N) int8.

    Mamba2's in_proj output z | xBC | Δ, whose three sites have three scales, quantized in the GEMM's epilogue
    (op ``int8_linear_quantize_segments``). Under a :func:`code_label` tuple of one label per segment each segment's
    quantize carries its own label (for :func:`quantize_hook`)."""
    if len(scales) != len(sizes) or sum(sizes) != x.shape[-1] or min(sizes, default=0) < 1:
        raise ValueError(f"quantize_segments: sizes {list(sizes)} and {len(scales)} scales do not split a last axis "
                         f"of {x.shape[-1]}")
    label = _CODE_LABEL.get()
    labels = label if isinstance(label, tuple) else (label,) * len(sizes)
    if len(labels) != len(sizes):
        raise ValueError(f"quantize_segments: {len(labels)} labels for {len(sizes)} segments")
    codes = []
    for part, scale, part_label in zip(x.split(list(sizes), dim=-1), scales, labels, strict=True):
        with code_label(part_label):
            codes.append(quantize(part, scale))
    return torch.cat(codes, dim=-1)


def read_codes(q: Tensor) -> Tensor:
    """int8 codes as every op reads them: -128 (which only TensorRT's saturating QuantizeLinear writes) reads as
    -127, every other code as itself (see "Reading codes"). q: int8 (...) -> int8 (...)."""
    if q.dtype != torch.int8:
        raise TypeError(f"read_codes expects an int8 tensor, got {q.dtype}")
    return q.clamp(min=-INT8_MAX)


def dequantize(q: Tensor, scale: Tensor | float, dtype: torch.dtype = torch.float32) -> Tensor:
    """Float values of int8 codes: ``(float32(read_codes(q)) * scale).to(dtype)``.

    q: int8 tensor (...). scale: float or float tensor broadcastable to q, > 0 and finite. Returns (...) in ``dtype``.
    """
    if q.dtype != torch.int8:
        raise TypeError(f"dequantize expects an int8 tensor, got {q.dtype}")
    s = _as_scale(scale, q.device)
    return (read_codes(q).to(torch.float32) * s).to(dtype)


def fake_quantize(x: Tensor, scale: Tensor | float) -> Tensor:
    """``dequantize(quantize(x, scale), scale)`` in x's dtype: x (...) -> (...).

    For |x| <= 127 * scale the error is at most scale / 2 (plus float32 rounding); beyond, x saturates to +-127 * scale.
    """
    return dequantize(quantize(x, scale), scale, dtype=x.dtype)


def quantize_weight_per_tensor(w: Tensor) -> tuple[Tensor, Tensor]:
    """Per-tensor symmetric int8 weight: scale from max |w|.

    w: floating (out_features, in_features) (any shape works). Returns (q int8 same shape, scale float32 0-dim).
    Raises ValueError if w holds NaN or Inf.
    """
    if not w.is_floating_point():
        raise TypeError(f"quantize_weight_per_tensor expects a floating tensor, got {w.dtype}")
    if w.numel() == 0:
        raise ValueError("quantize_weight_per_tensor got an empty weight")
    amax = w.detach().abs().amax()  # amax propagates NaN, so scale_from_amax rejects NaN/Inf weights
    scale = scale_from_amax(amax)
    return quantize(w, scale), scale


def quantize_weight_per_channel(w: Tensor) -> tuple[Tensor, Tensor]:
    """Per-output-channel symmetric int8 weight: row ``o`` at scale ``max_k |w[o, k]| / 127`` (floored as
    :func:`scale_from_amax`).

    w: floating (out_features, in_features). Returns (q int8 (out_features, in_features), scale float32
    (out_features,)). Raises ValueError if w holds NaN or Inf.
    """
    if not w.is_floating_point():
        raise TypeError(f"quantize_weight_per_channel expects a floating tensor, got {w.dtype}")
    if w.dim() != 2 or w.numel() == 0:
        raise ValueError(f"quantize_weight_per_channel expects a non-empty 2-D weight, got shape {tuple(w.shape)}")
    scale = scale_from_amax(w.detach().abs().amax(dim=1))  # (out_features,); NaN propagates and is rejected
    return quantize(w, scale[:, None]), scale


def per_token_scale(x: Tensor) -> Tensor:
    """One scale per token: ``max(float32(amax |x| over the last axis), AMAX_FLOOR) / 127``.

    x: floating (..., d), finite. Returns float32 (...): x ~ quantize(x, s[..., None]) * s[..., None].
    Raises ValueError if a row's amax is NaN or Inf (:func:`scale_from_amax`).
    """
    if not x.is_floating_point():
        raise TypeError(f"per_token_scale expects a floating tensor, got {x.dtype}")
    return scale_from_amax(x.detach().to(torch.float32).abs().amax(dim=-1))


def int8_matmul(a_q: Tensor, b_q: Tensor) -> Tensor:
    """Exact int32 ``a_q @ b_q`` of int8 tensors (torch.matmul shapes and broadcasting).

    a_q: int8 (..., M, K) or (K,). b_q: int8 (K, N), (..., K, N) or (K,). Returns int32 of the torch.matmul shape,
    e.g. (..., M, N). Requires K <= MAX_K so that no sum can overflow int32 (|acc| <= 128 * 128 * K).
    Computed in float64, which is exact here (see the module docstring); a kernel accumulates in int32.
    """
    if a_q.dtype != torch.int8 or b_q.dtype != torch.int8:
        raise TypeError(f"int8_matmul expects int8 tensors, got {a_q.dtype} and {b_q.dtype}")
    k = a_q.shape[-1]
    if k > MAX_K:
        raise ValueError(f"int8_matmul reduction length K={k} exceeds MAX_K={MAX_K}: the int32 sum could overflow")
    acc = torch.matmul(a_q.to(torch.float64), b_q.to(torch.float64))
    return acc.to(torch.int32)


def int8_linear(x_q: Tensor, x_scale: Tensor | float, w_q: Tensor, w_scale: Tensor | float) -> Tensor:
    """int8 x int8 linear layer without bias: ``float32(x_q @ w_q^T) * float32(x_scale * w_scale)``.

    x_q: int8 (..., in_features). w_q: int8 (out_features, in_features), the nn.Linear layout.
    x_scale: per-tensor scale (float or 0-dim tensor). w_scale: float, 0-dim, or (out_features,) per output channel.
    Returns float32 (..., out_features). The combined scale is rounded to float32 once, then multiplies the int32
    accumulator converted to float32, the order a GEMM epilogue with ``alpha = s_x * s_w`` uses.
    """
    acc = int8_matmul(x_q, w_q.transpose(-1, -2))
    alpha = _as_scale(x_scale, x_q.device) * _as_scale(w_scale, x_q.device)
    return acc.to(torch.float32) * alpha


def int8_linear_per_token(x_q: Tensor, x_scale: Tensor, w_q: Tensor, w_scale: Tensor | float) -> Tensor:
    """:func:`int8_linear` with one input scale per token (row of x_q):
    ``float32(x_q @ w_q^T) * float32(x_scale[..., None] * w_scale)``.

    x_q: int8 (..., in_features). x_scale: float32 (...), each > 0 (:func:`per_token_scale`). w_q: int8
    (out_features, in_features); w_scale: per-tensor. Returns float32 (..., out_features); the product of the two
    scales is rounded to float32 once per row, then multiplies the int32 accumulator, as a GEMM epilogue that reads a
    per-row scale does.
    """
    if x_scale.shape != x_q.shape[:-1]:
        raise ValueError(f"per-token x_scale {tuple(x_scale.shape)} must be x_q's leading shape "
                         f"{tuple(x_q.shape[:-1])}")
    acc = int8_matmul(x_q, w_q.transpose(-1, -2))
    alpha = _as_scale(x_scale, x_q.device)[..., None] * _as_scale(w_scale, x_q.device)
    return acc.to(torch.float32) * alpha


# ----------------------------------------------------------------------------------------------------------------
# int4 group-wise weights (W4A8, W4A16)
#
# The convention
# --------------
#     symmetric, zero point 0, q in [-7, 7], per (row, group) along the input dim K
#     group g of row n holds columns [g * group_size, min((g + 1) * group_size, K))
#     scale[n, g] = max(amax[n, g], AMAX_FLOOR) / 7      (float32, shape (N, G), G = ceil(K / group_size))
#     q[n, k]     = clamp(round_half_to_even(float32(w[n, k]) / scale[n, k // group_size]), -7, 7)
#     w_hat[n, k] = float32(q[n, k]) * scale[n, k // group_size]
#
# * **-8 is excluded** for the reasons the int8 range excludes -128: the range is symmetric (one scale meaning,
#   amax / 7, for both signs) and -q never overflows. It costs one of 16 codes. ONNX INT4 holds [-8, 7], so every
#   code fits an INT4 initializer unchanged, and since weights are quantized offline no clip is ever needed.
# * **K % group_size != 0**: the last group is partial (K - (G - 1) * group_size columns), and K < group_size gives
#   one group of K columns (Mamba1's dt_proj: K = dt_rank, e.g. 24). This is ONNX blocked quantization's own rule
#   (the scale has ceil(K / block_size) entries along the blocked axis), so the graph needs no padding.
# * **float32 scales**, not float16: the int8 convention's scales are float32 and the W4A8 epilogue multiplies
#   s_x * s_w in float32; float16 would underflow to subnormals below amax ~ 4e-4 (AMAX_FLOOR / 7 = 1.4e-6 is
#   subnormal in float16) and saves only 2 bytes per 64 bytes of packed weights (3%).
# * **Packing**: two codes per byte along K, low nibble first (element 2j in bits 0-3, 2j + 1 in bits 4-7, two's
#   complement nibbles), the order ONNX packs INT4; a row of odd K ends with a zero high nibble. Stored per row:
#   (N, ceil(K / 2)) uint8 in safetensors. In memory the reference keeps the unpacked int8 codes.
#
# W4A8 linear (:func:`int4_group_linear`): int8 activations x_q at a per-tensor scale s_x, int4 weights. Per group g
# the int32 partial sum acc_g = sum_{k in g} x_q[k] * q[n, k] is exact (|acc_g| <= 127 * 7 * group_size < 2**24, so
# float32(acc_g) is exact too), and the groups are combined in float32 in this order:
#     alpha_g = float32(s_x * scale[n, g])        (the scale product rounded once)
#     y = float32(acc_0) * alpha_0;  then for g = 1 .. G-1:  y = y + float32(acc_g) * alpha_g   (each op rounded)
# A kernel that accumulates the whole row in int32 would need one scale for all groups; the per-group float sum is
# what group-wise W4A8 GEMMs (and ONNX DequantizeLinear -> MatMul) compute, in their own order: graphs are compared
# with a tolerance on floats.

INT4_MAX = 7
"""Largest int4 code used; the range is [-INT4_MAX, INT4_MAX] (ONNX INT4's -8 is never produced)."""


def int4_group_count(in_features: int, group_size: int) -> int:
    """G = ceil(K / group_size): the number of scales per row (the last group may be partial)."""
    if group_size < 1:
        raise ValueError(f"group size must be >= 1, got {group_size}")
    return -(-in_features // group_size)


def int4_expand_scales(scales: Tensor, in_features: int, group_size: int) -> Tensor:
    """Per-(row, group) scales (N, G) -> per-element scales (N, K): column k reads group k // group_size."""
    return scales.repeat_interleave(group_size, dim=-1)[..., :in_features]


def int4_group_scales(w: Tensor, group_size: int) -> Tensor:
    """Round-to-nearest scales of a weight: ``max(amax(row, group), AMAX_FLOOR) / 7``.

    w: floating (N, K). Returns float32 (N, G). Raises ValueError if w holds NaN or Inf."""
    n, k = w.shape
    g = int4_group_count(k, group_size)
    padded = torch.zeros(n, g * group_size, dtype=torch.float32, device=w.device)
    padded[:, :k] = w.detach().abs().to(torch.float32)  # |w| >= 0, so zero padding never raises a group's amax
    amax = padded.view(n, g, group_size).amax(-1)
    _check_finite(amax, "weight")
    return amax.clamp(min=AMAX_FLOOR) / INT4_MAX


def quantize_int4(w: Tensor, scale: Tensor) -> Tensor:
    """int4 codes of ``w`` at elementwise (broadcastable) float32 scales:
    ``clamp(round_half_to_even(float32(w) / scale), -7, 7)``, held in an int8 tensor of w's shape."""
    if not w.is_floating_point():
        raise TypeError(f"quantize_int4 expects a floating tensor, got {w.dtype}")
    s = _as_scale(scale, w.device)
    r = torch.round(w.to(torch.float32) / s)
    r = torch.nan_to_num(r, nan=0.0, posinf=float(INT4_MAX), neginf=float(-INT4_MAX))
    return r.clamp_(-INT4_MAX, INT4_MAX).to(torch.int8)


def quantize_weight_int4(w: Tensor, group_size: int = DEFAULT_GROUP_SIZE) -> tuple[Tensor, Tensor]:
    """Round-to-nearest group-wise int4 weight: w (N, K) float -> (q (N, K) int8 in [-7, 7], scales (N, G) float32).
    GPTQ (:mod:`edge_quamba.quant.gptq`) uses the same scales rule and :func:`quantize_int4`."""
    scales = int4_group_scales(w, group_size)
    return quantize_int4(w, int4_expand_scales(scales, w.shape[1], group_size)), scales


def dequantize_int4(q: Tensor, scales: Tensor, group_size: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """q (N, K) int8 codes in [-7, 7], scales (N, G) float32 -> ``(float32(q) * scale).to(dtype)`` (N, K)."""
    if q.dtype != torch.int8:
        raise TypeError(f"dequantize_int4 expects int8-held codes, got {q.dtype}")
    s = _as_scale(int4_expand_scales(scales, q.shape[-1], group_size), q.device)
    return (q.to(torch.float32) * s).to(dtype)


def pack_int4(q: Tensor) -> Tensor:
    """q (N, K) int8 codes in [-8, 7] -> (N, ceil(K / 2)) uint8, two per byte along K, low nibble first."""
    if q.dtype != torch.int8 or q.dim() != 2:
        raise TypeError(f"pack_int4 expects a 2-d int8 tensor, got {q.dtype} with {q.dim()} dims")
    if bool(((q < -8) | (q > 7)).any()):
        raise ValueError("pack_int4: codes outside the int4 range [-8, 7]")
    n, k = q.shape
    nibbles = torch.zeros(n, k + k % 2, dtype=torch.uint8, device=q.device)
    nibbles[:, :k] = (q.to(torch.int16) & 0xF).to(torch.uint8)  # two's complement low 4 bits
    return nibbles[:, 0::2] | (nibbles[:, 1::2] << 4)


def unpack_int4(packed: Tensor, in_features: int) -> Tensor:
    """(N, ceil(K / 2)) uint8 from :func:`pack_int4` -> (N, K) int8 codes (sign-extended nibbles)."""
    if packed.dtype != torch.uint8 or packed.dim() != 2 or packed.shape[1] != -(-in_features // 2):
        raise ValueError(f"unpack_int4: expected (N, {-(-in_features // 2)}) uint8, got {packed.dtype} "
                         f"{tuple(packed.shape)}")
    nibbles = torch.stack([packed & 0xF, packed >> 4], dim=-1).flatten(1)[:, :in_features].to(torch.int8)
    return torch.where(nibbles > 7, nibbles - 16, nibbles)


def int4_group_linear(x_q: Tensor, x_scale: Tensor | float, w_q: Tensor, w_scales: Tensor,
                      group_size: int) -> Tensor:
    """W4A8 linear without bias: int8 x_q (..., K) at a per-tensor x_scale, int4 codes w_q (N, K) (int8-held) at
    w_scales (N, G) -> float32 (..., N), groups combined in the order of the section above."""
    k = x_q.shape[-1]
    if w_q.shape[1] != k or w_scales.shape[1] != int4_group_count(k, group_size):
        raise ValueError(f"int4_group_linear: x (..., {k}), w {tuple(w_q.shape)}, scales {tuple(w_scales.shape)} "
                         f"with group size {group_size} do not fit")
    alpha = _as_scale(x_scale, x_q.device) * _as_scale(w_scales, x_q.device)  # (N, G) float32
    y = None
    for g, start in enumerate(range(0, k, group_size)):
        cols = slice(start, min(start + group_size, k))
        acc = int8_matmul(x_q[..., cols], w_q[:, cols].transpose(0, 1))  # (..., N) exact int32
        term = acc.to(torch.float32) * alpha[:, g]
        y = term if y is None else y + term
    return y
