"""Every CUDA kernel against the quantized reference on identical int8 inputs and scales (GPU only: marker cuda).

Integer outputs must be exact, with one rule: the conv's u_q and rms_norm_quantize's codes may differ by one code
where the reference quotient is within 1e-4 of .5 (CUDA expf vs the CPU's exp differ in the last bit; the
kernel's mean of squares sums in its own order; ties are counted and printed). Float outputs (the scan's y and state) within the tolerance SCAN_TOL relative to the largest reference
magnitude (the sum over states is a shuffle tree, exp/log1p come from another libm). Outputs are poisoned before
each call: the binding allocates its outputs from torch's caching allocator, so freed blocks of the same sizes
filled with a sentinel (-128 for int8, never produced by quantize; NaN for float32) are what it gets back, and a
result that still holds a sentinel was not written.

The reference functions are called directly (edge_quamba.quant.qops / primitives, and the CPU kernels of the fused
ops in edge_quamba.ops.torch_ops), on CPU copies of the inputs.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edge_quamba.ops import torch_ops
from edge_quamba.quant import primitives, qops

pytestmark = pytest.mark.cuda

SCAN_TOL = 1e-4
"""Scan y and state: max |gpu - ref| <= SCAN_TOL * max |ref| (+ 1e-6 absolute)."""
TIE_WIDTH = 1e-4


@pytest.fixture(scope="module")
def ext():
    from edge_quamba.ops import cuda_ops

    return cuda_ops.load_extension()


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rand_i8(*shape, g) -> torch.Tensor:
    """Random int8 codes, -128 included: kernels read it as -127 (primitives.read_codes), as the reference does."""
    return torch.randint(-128, 128, shape, generator=g, dtype=torch.int8)


def poison(*outputs: tuple[tuple[int, ...], torch.dtype]) -> None:
    """Fill freed caching-allocator blocks of the outputs' sizes with a sentinel before the call under test."""
    blocks = []
    for shape, dtype in outputs:
        fill = -128 if dtype == torch.int8 else float("nan")
        blocks.append(torch.full(shape, fill, dtype=dtype, device="cuda"))
    torch.cuda.synchronize()
    del blocks


def report(name: str, got: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    diff = (got.double() - ref.double()).abs()
    print(f"{name}: max |diff| {diff.max().item():.3g}, mean {diff.mean().item():.3g}, "
          f"max |ref| {ref.abs().max().item():.3g}")
    return diff


# ---------------------------------------------------------------------------------------------------- quantize

@pytest.mark.parametrize("shape", [(1, 2560), (3, 7, 5120), (2, 1, 768), (5, 13)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_quantize_exact(ext, shape, dtype):
    g = gen(sum(shape) * 10 + [torch.float32, torch.float16, torch.bfloat16].index(dtype))
    scale = 2.5 / 127
    values = (torch.randn(shape, generator=g) * 3).reshape(-1)
    ties = (torch.arange(-130, 130, dtype=torch.float32) + 0.5) * scale  # quotients at or next to .5
    k = min(values.numel(), ties.numel())
    values[:k] = ties[:k]
    wide = torch.zeros(*shape[:-1], shape[-1] + 24, dtype=dtype)
    wide[..., : shape[-1]] = values.reshape(shape).to(dtype)
    x = wide[..., : shape[-1]]  # a row-strided view, as the model slices its outputs
    poison((shape, torch.int8))
    got = ext.quantize(x.cuda(), scale).cpu()
    ref = primitives.quantize(x, scale)
    report(f"quantize {shape} {dtype}", got, ref)
    assert got.dtype == torch.int8 and got.shape == ref.shape
    assert torch.equal(got, ref)
    specials = torch.tensor([float("nan"), float("inf"), -float("inf"), 1e30], dtype=dtype)
    got_s = ext.quantize(specials.cuda(), scale).cpu()
    assert got_s.tolist() == [0, 127, -127, 127] == primitives.quantize(specials, scale).tolist()


# ------------------------------------------------------------------------------------------------- int8_linear

LINEAR_CASES = [  # (M, K, N, x row stride or None, bias): 2.8b decode layers, the demo model's, prefill, odd sizes
    (1, 2560, 10240, None, False),   # in_proj 2.8b
    (1, 5120, 192, None, False),     # x_proj 2.8b (split-K)
    (1, 160, 5120, 192, True),       # dt_proj 2.8b: dt is a view of x_proj's (.., 192) output
    (1, 5120, 2560, None, False),    # out_proj 2.8b
    (1, 384, 1536, None, True),      # demo in_proj
    (1, 24, 768, 56, True),          # demo dt_proj: K = 24, row stride 56 (8-byte loads)
    (3, 768, 56, None, False),       # demo x_proj, batch 3
    (7, 100, 33, 101, True),         # odd sizes: 1-byte loads, 4-row passes
    (16, 512, 64, None, False),      # largest M of the GEMV path
    (512, 2560, 10240, None, True),  # prefill: torch._int_mm path
    (37, 20, 768, 56, False),        # prefill, K % 8 != 0: GEMV path (4-byte loads)
]


@pytest.mark.parametrize("M,K,N,stride,use_bias", LINEAR_CASES)
def test_int8_linear_exact(ext, M, K, N, stride, use_bias):
    g = gen(M * 7919 + K * 31 + N)
    x_full = rand_i8(M, stride or K, g=g)
    x_q = x_full[:, :K]
    w_q = rand_i8(N, K, g=g)
    bias = torch.randn(N, generator=g) if use_bias else None
    x_scale, w_scale = 0.0173, 0.00291
    poison(((M, N), torch.float32))
    got = ext.int8_linear(x_q.cuda(), w_q.cuda(), None if bias is None else bias.cuda(), x_scale, w_scale).cpu()
    ref = primitives.int8_linear(x_q, torch.tensor(x_scale), w_q, torch.tensor(w_scale))
    if bias is not None:
        ref = ref + bias
    report(f"int8_linear M={M} K={K} N={N}", got, ref)
    assert not torch.isnan(got).any(), "unwritten outputs"
    assert torch.equal(got, ref)


def test_int8_linear_batched_view_3d(ext):
    """(b, l, K) view with a sequence stride (the x half of a (b, l, 2K) tensor), decode l = 1 and b = 2."""
    g = gen(5)
    full = rand_i8(2, 1, 2 * 768, g=g)
    x_q = full[..., :768]
    w_q = rand_i8(1536, 768, g=g)
    got = ext.int8_linear(x_q.cuda(), w_q.cuda(), None, 0.01, 0.02).cpu()
    ref = primitives.int8_linear(x_q, torch.tensor(0.01), w_q, torch.tensor(0.02))
    report("int8_linear (2, 1, 768) view", got, ref)
    assert torch.equal(got, ref)


# ---------------------------------------------------------------------------------------- int8_linear_quantize

LINEAR_QUANTIZE_CASES = [  # (M, K, N, x row stride or None, bias)
    (1, 2560, 10240, None, False),   # in_proj 2.8b decode
    (1, 5120, 192, None, True),      # x_proj 2.8b (split-K)
    (1, 160, 5120, 192, False),      # dt_proj 2.8b: dt is a view of x_proj's (.., 192) output
    (3, 768, 56, 1536, True),        # strided view, 4-row pass
    (16, 512, 64, 520, False),       # largest M of the GEMV path, strided
    (17, 512, 64, 1024, True),       # smallest M of the torch._int_mm + epilogue path, strided (copied) x
    (17, 20, 768, 56, False),        # M > 16 but K % 8 != 0: GEMV path
    (512, 2560, 10240, 5120, True),  # prefill in_proj: the x half of a (l, 2 K) tensor
    (512, 5120, 192, None, False),   # prefill x_proj
    (7, 100, 33, 101, True),         # odd sizes: 1-byte loads
]


@pytest.mark.parametrize("M,K,N,stride,use_bias", LINEAR_QUANTIZE_CASES)
def test_int8_linear_quantize_exact(ext, M, K, N, stride, use_bias):
    g = gen(M * 7907 + K * 29 + N + 1)
    x_q = rand_i8(M, stride or K, g=g)[:, :K]
    w_q = rand_i8(N, K, g=g)
    bias = torch.randn(N, generator=g) if use_bias else None
    x_scale, w_scale = 0.0173, 0.00291
    y = torch_ops.int8_linear(x_q, w_q, bias, x_scale, w_scale)
    out_scale = float(y.abs().max()) / 150  # the largest |y| saturate at +-127
    ref = torch_ops.int8_linear_quantize(x_q, w_q, bias, x_scale, w_scale, out_scale)
    poison(((M, N), torch.int8))
    got = ext.int8_linear_quantize(x_q.cuda(), w_q.cuda(), None if bias is None else bias.cuda(), x_scale, w_scale,
                                   out_scale).cpu()
    report(f"int8_linear_quantize M={M} K={K} N={N} stride={stride}", got, ref)
    print(f"  codes at +-127: {int((ref.abs() == 127).sum())} of {ref.numel()}")
    assert got.dtype == torch.int8 and got.shape == ref.shape
    assert not (got == -128).any(), "unwritten outputs"
    assert torch.equal(got, ref)


def test_int8_linear_quantize_batched_view_3d(ext):
    """(b, l, K) view with a sequence stride, decode l = 1 and b = 2, output (b, l, N)."""
    g = gen(6)
    x_q = rand_i8(2, 1, 2 * 768, g=g)[..., :768]
    w_q = rand_i8(1536, 768, g=g)
    got = ext.int8_linear_quantize(x_q.cuda(), w_q.cuda(), None, 0.01, 0.02, 0.05).cpu()
    ref = torch_ops.int8_linear_quantize(x_q, w_q, None, 0.01, 0.02, 0.05)
    report("int8_linear_quantize (2, 1, 768) view", got, ref)
    assert got.shape == (2, 1, 1536) and torch.equal(got, ref)


# ------------------------------------------------------ out_proj with the block's residual add in its epilogue

RESIDUAL_CASES = [(1, 5120, 2560), (2, 1536, 768), (16, 100, 33), (17, 64, 24)]  # (M, K, N); M > 16: _int_mm path


def check_linear_residual(ext, device, M, K, N, seed=0):
    """residual + int8_linear(...) in one op, bit for bit the reference's float32 add after the linear."""
    g = gen(seed)
    x_q, w_q = rand_i8(M, K, g=g), rand_i8(N, K, g=g)
    bias, residual = torch.randn(N, generator=g), torch.randn(M, N, generator=g) * 4
    if device == "cuda":
        poison(((M, N), torch.float32))
    got = ext.int8_linear_residual(x_q.to(device), w_q.to(device), bias.to(device), 0.0173, 0.00291,
                                   residual.to(device)).cpu()
    ref = torch_ops.int8_linear_residual(x_q, w_q, bias, 0.0173, 0.00291, residual)
    report(f"int8_linear_residual M={M} K={K} N={N}", got, ref)
    assert torch.equal(got, ref) and torch.equal(ref, residual + torch_ops.int8_linear(x_q, w_q, bias, 0.0173,
                                                                                        0.00291))


@pytest.mark.parametrize("M,K,N", RESIDUAL_CASES)
def test_int8_linear_residual_exact(ext, M, K, N):
    check_linear_residual(ext, "cuda", M, K, N, seed=M * 31 + K + N)


# ---------------------------------------------- in_proj with the decode conv step in its epilogue (one launch)

CONV_UPDATE_CASES = [  # (b, K, sizes, conv_begin, conv channels C, k, per-channel conv scales, conv bias)
    (1, 2560, (10240,), 0, 5120, 4, False, True),             # 2.8b: xz at one scale, the conv over its x half
    (2, 768, (3072,), 0, 1536, 4, False, True),               # 130m, batch 2
    (16, 96, (384,), 0, 192, 3, False, False),                # the GEMV's largest batch, k = 3, no bias
    (17, 96, (384,), 0, 192, 4, False, True),                 # b > 16: the GEMM path, then the conv kernel
    (1, 2560, (5120, 5376, 80), 5120, 5376, 4, True, True),   # Mamba2 2.7b: the conv over xBC, per-channel scales
    (3, 100, (7, 13, 5), 7, 13, 2, True, False),              # odd sizes, 1-byte loads
]


def check_linear_quantize_conv_update(ext, device, b, K, sizes, conv_begin, C, k, per_channel, use_bias, seed=0):
    """The one-launch op against the two ops it replaces on the same device (the same expf: bit for bit) and its
    linear codes against the reference (exact)."""
    g = gen(seed)
    n = sum(sizes)
    x_q, w_q = rand_i8(b, K, g=g), rand_i8(n, K, g=g)
    bias = torch.randn(n, generator=g)
    x_scale, w_scale = 0.0173, 0.00291
    y = torch_ops.int8_linear(x_q, w_q, bias, x_scale, w_scale)
    out_scales = [float(part.abs().max()) / 150 for part in y.split(list(sizes), dim=-1)]
    state, conv_w = rand_i8(b, C, k, g=g), rand_i8(C, k, g=g)
    conv_b = torch.randn(C, generator=g) * 0.5 if use_bias else None
    conv_scales = (torch.rand(C, generator=g) * 3 + 1) / 127 if per_channel else None
    conv_w_scale, u_scale = 0.0041, 3.0 / 127
    to = lambda t: t.to(device) if isinstance(t, torch.Tensor) else t  # noqa: E731
    if device == "cuda":
        poison(((b, n), torch.int8), ((b, C), torch.int8), ((b, C, k), torch.int8))
    codes, u, new_state = ext.int8_linear_quantize_conv_update(
        to(x_q), to(w_q), to(bias), x_scale, w_scale, out_scales, list(sizes), conv_begin, to(state), to(conv_w),
        to(conv_b), conv_w_scale, u_scale, to(conv_scales))
    apart = ext.int8_linear_quantize_segments(to(x_q), to(w_q), to(bias), x_scale, w_scale, out_scales, list(sizes))
    segment = next(i for i, end in enumerate(torch.tensor(sizes).cumsum(0).tolist()) if conv_begin < end)
    conv_x = apart[:, conv_begin:conv_begin + C].unsqueeze(1)
    if per_channel:
        u_apart, state_apart = ext.int8_causal_conv1d_channel_scales(conv_x, to(state), to(conv_w), to(conv_b),
                                                                     to(conv_scales), out_scales[segment],
                                                                     conv_w_scale)
    else:
        u_apart, state_apart = ext.int8_causal_conv1d(conv_x, to(state), to(conv_w), to(conv_b), out_scales[segment],
                                                      conv_w_scale, u_scale)
    ref = torch_ops.int8_linear_quantize_segments(x_q, w_q, bias, x_scale, w_scale, out_scales, list(sizes))
    report(f"int8_linear_quantize_conv_update b={b} K={K} sizes={sizes}: u vs two launches", u.cpu(),
           u_apart[:, 0].cpu())
    assert torch.equal(codes.cpu(), ref) and torch.equal(apart.cpu(), ref)
    assert torch.equal(u.cpu(), u_apart[:, 0].cpu()) and torch.equal(new_state.cpu(), state_apart.cpu())


@pytest.mark.parametrize("b,K,sizes,conv_begin,C,k,per_channel,use_bias", CONV_UPDATE_CASES)
def test_int8_linear_quantize_conv_update_equals_two_launches(ext, b, K, sizes, conv_begin, C, k, per_channel,
                                                              use_bias):
    check_linear_quantize_conv_update(ext, "cuda", b, K, sizes, conv_begin, C, k, per_channel, use_bias,
                                      seed=b * 7919 + K + C + k)


# ------------------------------------------------------------------------------------------- rms_norm_quantize

def check_ties(name, got, ref, quotient):
    """got == ref except by one code where the reference quotient is within TIE_WIDTH of .5 (counted, printed)."""
    diff = got.to(torch.int32) - ref.to(torch.int32)
    frac = quotient.abs() - quotient.abs().floor()
    tie = ((frac - 0.5).abs() < TIE_WIDTH) & (quotient.abs() < 127.5)
    off = diff != 0
    print(f"{name}: {int(tie.sum())} near-ties in the reference, {int(off.sum())} codes differ "
          f"({int((off & tie).sum())} at ties), max |diff| {int(diff.abs().max()) if diff.numel() else 0}")
    assert not (got == -128).any(), "unwritten outputs"
    assert not (off & ~(tie & (diff.abs() == 1))).any(), "codes differ away from a rounding tie"


def reference_with_quotient(fn, *args):
    """fn(*args) under a quantize hook: (codes, the float32 quotient x / scale of its last quantize)."""
    captured = []

    def hook(label, quotient, q):
        captured.append(quotient.clone())
        return q

    with primitives.quantize_hook(hook):
        out = fn(*args)
    return out, captured[-1]


@pytest.mark.parametrize("shape,stride", [
    ((1, 1, 2560), None), ((1, 2560), 2600), ((2, 37, 768), None), ((3, 1000), 1003), ((1, 8192), None),
    ((4, 130), None), ((2, 1), None), ((512, 2560), None), ((5, 5120), 5121),
])
def test_rms_norm_quantize(ext, shape, stride):
    g = gen(sum(shape) * 17 + (stride or 0))
    d = shape[-1]
    wide = torch.randn(*shape[:-1], stride or d, generator=g) * 2
    wide[..., :3] = torch.tensor([40.0, -25.0, 0.0])[: min(3, d)]  # outliers, as the residual stream has
    x = wide[..., :d]  # a row-strided view when stride is given
    weight = torch.rand(d, generator=g) + 0.5
    eps = 1e-5
    normed = weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))
    scale = float(normed.abs().max()) / 150  # the largest values saturate
    ref, quotient = reference_with_quotient(torch_ops.rms_norm_quantize, x, weight, eps, scale)
    poison((shape, torch.int8))
    got = ext.rms_norm_quantize(x.cuda(), weight.cuda(), eps, scale).cpu()
    report(f"rms_norm_quantize {shape} stride={stride}", got, ref)
    assert got.dtype == torch.int8 and got.shape == ref.shape
    check_ties(f"rms_norm_quantize {shape}", got, ref, quotient)


# ------------------------------------------------------------------------------------------ int8_causal_conv1d

def conv_inputs(b, l, d, k, use_bias, seed):
    g = gen(seed)
    xz = rand_i8(b, l, 2 * d, g=g)  # in_proj's int8 output; x is its first half (sequence stride 2d)
    state = rand_i8(b, d, k, g=g)
    w = rand_i8(d, k, g=g)
    bias = torch.randn(d, generator=g) * 0.5 if use_bias else None
    return xz[..., :d], state, w, bias


def conv_reference(x, state, w, bias, scales):
    captured = []

    def hook(label, quotient, q):
        captured.append(quotient.clone())
        return q

    with primitives.quantize_hook(hook):
        u_ref, s_ref = qops.int8_causal_conv1d(x, state, w, bias, *scales)
    return u_ref, s_ref, captured[-1]


def check_u(name, u_got, u_ref, quotient):
    check_ties(name, u_got, u_ref, quotient)


CONV_SCALES = (0.0213, 0.0041, 3.0 / 127)


@pytest.mark.parametrize("b,l,d,k,use_bias", [
    (1, 1, 768, 4, True), (2, 1, 5120, 4, True),                      # decode
    (1, 2, 768, 4, True), (2, 3, 100, 4, False), (1, 5, 130, 3, True),  # l < k and odd d
    (1, 64, 768, 4, True), (2, 65, 768, 2, True), (1, 300, 1536, 4, True), (1, 17, 64, 1, False),
])
def test_int8_causal_conv1d(ext, b, l, d, k, use_bias):
    x, state, w, bias = conv_inputs(b, l, d, k, use_bias, seed=b * 1000 + l * 10 + k)
    poison(((b, l, d), torch.int8), ((b, d, k), torch.int8))
    u, s = ext.int8_causal_conv1d(x.cuda(), state.cuda(), w.cuda(), None if bias is None else bias.cuda(),
                                  *CONV_SCALES)
    u_ref, s_ref, quotient = conv_reference(x, state, w, bias, CONV_SCALES)
    check_u(f"conv b={b} l={l} d={d} k={k}", u.cpu(), u_ref, quotient)
    assert torch.equal(s.cpu(), s_ref), "conv state differs"


def test_int8_causal_conv1d_two_chunks_equal_one(ext):
    b, l, d, k = 2, 150, 768, 4
    x, state, w, bias = conv_inputs(b, l, d, k, True, seed=77)
    x, state, w, bias = x.cuda(), state.cuda(), w.cuda(), bias.cuda()
    u_all, s_all = ext.int8_causal_conv1d(x, state, w, bias, *CONV_SCALES)
    for split in (1, 2, 3, 64, 100):
        u1, s1 = ext.int8_causal_conv1d(x[:, :split], state, w, bias, *CONV_SCALES)
        u2, s2 = ext.int8_causal_conv1d(x[:, split:], s1, w, bias, *CONV_SCALES)
        assert torch.equal(torch.cat([u1, u2], 1), u_all) and torch.equal(s2, s_all), f"split at {split}"


# ----------------------------------------------------------------------------------------- int8_selective_scan

SCAN_SCALES = (3.0 / 127, 1.5 / 127, 2.0 / 127, 2.0 / 127, 4.0 / 127)  # u, dt, B, C, z


def scan_inputs(b, l, d, n, r, seed):
    g = gen(seed)
    u = rand_i8(b, l, d, g=g)
    dt = rand_i8(b, l, d, g=g)
    xz = rand_i8(b, l, 2 * d, g=g)
    z = xz[..., d:]  # the z half of in_proj's output: sequence stride 2d
    xp = rand_i8(b, l, r + 2 * n, g=g)  # x_proj's int8 output: dt_low | B | C
    B, C = xp[..., r:r + n], xp[..., r + n:]
    state = torch.randn(b, d, n, generator=g)
    A = -torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1) * torch.rand(d, 1, generator=g).add(0.5)
    D = torch.randn(d, generator=g)
    dt_init = torch.exp(torch.rand(d, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    dt_bias = dt_init + torch.log(-torch.expm1(-dt_init))  # inverse softplus, as Mamba initializes it
    dt_bias[:3] = torch.tensor([25.0, 19.9, -30.0])[: min(3, d)]  # softplus's threshold branch and tiny deltas
    return [u, dt, B, C, z, state, A, D, dt_bias]


def run_scan(ext, args):
    return ext.int8_selective_scan(*[a.cuda() for a in args], *SCAN_SCALES)


def check_scan(name, y, s, args):
    y_ref, s_ref = qops.int8_selective_scan(*args, *SCAN_SCALES)
    assert not torch.isnan(y).any() and not torch.isnan(s).any(), "unwritten outputs"
    for what, got, ref in (("y", y, y_ref), ("state", s, s_ref)):
        diff = report(f"{name} {what}", got, ref)
        bound = SCAN_TOL * ref.abs().max().item() + 1e-6
        assert diff.max().item() <= bound, f"{what}: {diff.max().item():.3g} > {bound:.3g}"


@pytest.mark.parametrize("b,l,d,n", [
    (1, 1, 768, 16), (2, 1, 5120, 16),                         # decode
    (1, 7, 768, 16), (2, 64, 130, 16), (1, 300, 768, 16),      # prefill, odd d
    (1, 33, 96, 8), (1, 20, 64, 4), (1, 40, 64, 32), (1, 5, 32, 1),
])
def test_int8_selective_scan(ext, b, l, d, n):
    args = scan_inputs(b, l, d, n, r=24, seed=b * 100003 + l * 101 + d + n)
    poison(((b, l, d), torch.float32), ((b, d, n), torch.float32))
    y, s = run_scan(ext, args)
    check_scan(f"scan b={b} l={l} d={d} n={n}", y.cpu(), s.cpu(), args)


def test_int8_selective_scan_chunks_and_decode_steps_equal_prefill(ext):
    b, l, d, n = 2, 40, 768, 16
    args = [a.cuda() for a in scan_inputs(b, l, d, n, r=24, seed=9)]
    u, dt, B, C, z, state, A, D, dt_bias = args
    y_all, s_all = ext.int8_selective_scan(*args, *SCAN_SCALES)
    for split in (1, 16, 17, 39):
        part = lambda t, sl: t[:, sl]  # noqa: E731
        y1, s1 = ext.int8_selective_scan(*(part(t, slice(0, split)) for t in (u, dt, B, C, z)), state, A, D,
                                         dt_bias, *SCAN_SCALES)
        y2, s2 = ext.int8_selective_scan(*(part(t, slice(split, l)) for t in (u, dt, B, C, z)), s1, A, D,
                                         dt_bias, *SCAN_SCALES)
        assert torch.equal(torch.cat([y1, y2], 1), y_all) and torch.equal(s2, s_all), f"split at {split}"
    h, ys = state, []
    for t in range(l):  # decode: one token at a time
        y_t, h = ext.int8_selective_scan(*(x[:, t:t + 1] for x in (u, dt, B, C, z)), h, A, D, dt_bias, *SCAN_SCALES)
        ys.append(y_t)
    assert torch.equal(torch.cat(ys, 1), y_all) and torch.equal(h, s_all)



# ------------------------------------------------------------- dt_proj inside the scan kernel (decode, one launch)

SCAN_DT_CASES = [  # (b, d_in, n, dt_rank)
    (1, 5120, 16, 160),  # 2.8b decode
    (2, 1536, 16, 48),   # 130m, batch 2
    (3, 100, 8, 7),      # odd sizes
]


def check_scan_dt_update(ext, device, b, d, n, r, seed=0):
    """The one-launch op against dt_proj (int8_linear_quantize) and the scan step apart on the same device: dt codes,
    y and the state bit for bit (the scan's arithmetic is the same once the codes are)."""
    u, dt, B, C, z, h, A, D, dt_bias = scan_inputs(b, 1, d, n, r, seed)[:9]
    g = gen(seed + 1)
    dbc = rand_i8(b, r + 2 * n, g=g)  # x_proj's output: dt_r | B | C, dt_r a strided view
    dt_r = dbc[:, :r]
    w = rand_i8(d, r, g=g)
    dt_r_scale, w_scale = 2.0 / 127, 0.0031
    dt_scale = float(torch_ops.int8_linear(dt_r, w, None, dt_r_scale, w_scale).abs().max()) / 150
    to = lambda t: t.to(device)  # noqa: E731
    if device == "cuda":
        poison(((b, d), torch.float32), ((b, d, n), torch.float32), ((b, d), torch.int8))
    scales = (SCAN_SCALES[0], dt_r_scale, w_scale, dt_scale, *SCAN_SCALES[2:])
    y, state, dt_q = ext.int8_selective_scan_dt_update(
        to(u[:, 0]), to(dt_r), to(B[:, 0]), to(C[:, 0]), to(z[:, 0]), to(h), to(A), to(D), to(dt_bias), to(w), *scales)
    dt_apart = ext.int8_linear_quantize(to(dt_r), to(w), None, dt_r_scale, w_scale, dt_scale)
    y_apart, state_apart = ext.int8_selective_scan(
        *(to(t) for t in (u, dt_apart.unsqueeze(1), B, C, z, h, A, D, dt_bias)), SCAN_SCALES[0], dt_scale,
        *SCAN_SCALES[2:])
    report(f"int8_selective_scan_dt_update b={b} d={d} n={n} r={r}: y vs two launches", y.cpu(), y_apart[:, 0].cpu())
    assert torch.equal(dt_q.cpu(), torch_ops.int8_linear_quantize(dt_r, w, None, dt_r_scale, w_scale, dt_scale))
    assert torch.equal(dt_q.cpu(), dt_apart.cpu()) and (dt_q.cpu().abs() == 127).any()
    assert torch.equal(y.cpu(), y_apart[:, 0].cpu()) and torch.equal(state.cpu(), state_apart.cpu())


@pytest.mark.parametrize("b,d,n,r", SCAN_DT_CASES)
def test_int8_selective_scan_dt_update_equals_two_launches(ext, b, d, n, r):
    check_scan_dt_update(ext, "cuda", b, d, n, r, seed=b * 1000 + d + r)

# ---------------------------------------------------------------------------------------- hadamard_quantize

@pytest.mark.parametrize("n", [1, 2, 4, 8, 12, 16, 20, 28, 48, 56, 320, 512, 768, 1536, 2048, 3072, 4096, 5120, 7168,
                               8192, 10240, 12288, 14336, 16384])
@pytest.mark.parametrize("rows", [(1, 1), (3,), (2, 37)])  # m > 1: the column split over 8 blocks a row, fewer, none
def test_hadamard_quantize_exact(ext, n, rows):
    g = gen(n * 13 + rows[-1])
    y = torch.randn(*rows, n, generator=g) * 2
    y[..., :5] = torch.tensor([30.0, -30.0, 0.0, 1e-3, -7.0])[: min(5, n)]
    scale = 4.0 / 127
    poison(((*rows, n), torch.int8))
    got = ext.hadamard_quantize(y.cuda(), scale).cpu()
    ref = qops.hadamard_quantize(y, scale)
    report(f"hadamard_quantize n={n} rows={rows}", got, ref)
    assert not (got == -128).any(), "unwritten outputs"
    assert torch.equal(got, ref)


@pytest.mark.parametrize("n,extra", [(5120, 64), (5120, 1), (2048, 1), (768, 3)])
def test_hadamard_quantize_row_strided_view(ext, n, extra):
    """Row stride n + extra: 16-byte aligned rows (float4 loads) for extra = 64, scalar loads otherwise."""
    g = gen(3 + n + extra)
    y = torch.randn(3, 5, n + extra, generator=g)[..., :n]
    poison(((3, 5, n), torch.int8))
    got = ext.hadamard_quantize(y.cuda(), 0.03).cpu()
    ref = qops.hadamard_quantize(y, 0.03)
    report(f"hadamard_quantize n={n} row stride {n + extra}", got, ref)
    assert not (got == -128).any(), "unwritten outputs"
    assert torch.equal(got, ref)


BAD_CALLS = '''
import torch
from edge_quamba.ops import cuda_ops as ext
i8 = lambda *s: torch.zeros(*s, dtype=torch.int8, device="cuda")
calls = [
    lambda: ext.hadamard_quantize(torch.zeros(1, 36, device="cuda"), 0.1),
    lambda: ext.int8_linear(i8(1, 64), i8(8, 32), None, 1.0, 1.0),
    lambda: ext.int8_causal_conv1d(i8(1, 3, 8), i8(1, 8, 5), i8(8, 5), None, 1.0, 1.0, 1.0),
    lambda: ext.quantize(i8(4), 1.0),
    lambda: ext.rms_norm_quantize(torch.zeros(1, 9000, device="cuda"), torch.ones(9000, device="cuda"), 1e-5, 0.1),
    lambda: ext.int8_linear_quantize(i8(1, 32), i8(8, 32), None, 1.0, 1.0, 0.0),
]
for call in calls:
    try:
        call()
        print("no error")
    except ValueError as e:
        print("ValueError:", e)
'''


def test_bad_arguments_raise_one_line_value_errors():
    """The cuda_ops wrappers reject bad arguments in Python. Run in a subprocess: a C++ exception from the binding
    crashed the interpreter on the H200 image, which would otherwise end the whole test run."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.run([sys.executable, "-c", BAD_CALLS], capture_output=True, text=True, env=env, timeout=300)
    print(proc.stdout, proc.stderr[-3000:])
    assert proc.returncode == 0, f"crashed with return code {proc.returncode}"
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 6 and all(line.startswith("ValueError: ") for line in lines), lines
    assert "hadamard_quantize: no Hadamard matrix for n=36" in lines[0] and "width k=5" in lines[2] and "quantize" in lines[3]
    assert "rms_norm_quantize: d=9000" in lines[4] and "int8_linear_quantize: out_scale" in lines[5]


# ------------------------------------------------------------------------------------------------- dispatch

def test_registered_ops_dispatch_to_the_kernels(ext):
    """torch.ops.edge_quamba.<op> on CUDA tensors runs the kernel (same bits as calling the binding)."""
    from edge_quamba.ops import cuda_ops

    names = cuda_ops.register_cuda_kernels()
    print("registered:", names)
    assert set(names) == set(cuda_ops.OP_NAMES)
    ops = torch.ops.edge_quamba
    x, state, w, bias = (t.cuda() for t in conv_inputs(1, 9, 768, 4, True, seed=1))
    for a, e in zip(ops.int8_causal_conv1d(x, state, w, bias, *CONV_SCALES),
                    ext.int8_causal_conv1d(x, state, w, bias, *CONV_SCALES)):
        assert a.is_cuda and torch.equal(a, e)
    args = [t.cuda() for t in scan_inputs(1, 9, 768, 16, r=24, seed=2)]
    for a, e in zip(ops.int8_selective_scan(*args, *SCAN_SCALES), ext.int8_selective_scan(*args, *SCAN_SCALES)):
        assert a.is_cuda and torch.equal(a, e)
    y = torch.randn(1, 3, 768, device="cuda")
    assert torch.equal(ops.hadamard_quantize(y, 0.02), ext.hadamard_quantize(y, 0.02))
    assert torch.equal(ops.quantize(y, 0.02), ext.quantize(y, 0.02))
    xq, wq = torch.randint(-127, 128, (1, 768), device="cuda", dtype=torch.int8), \
        torch.randint(-127, 128, (56, 768), device="cuda", dtype=torch.int8)
    assert torch.equal(ops.int8_linear(xq, wq, None, 0.1, 0.2), ext.int8_linear(xq, wq, None, 0.1, 0.2))
    # the fused ops: on CUDA tensors they run the kernels, on CPU tensors the references
    got = ops.int8_linear_quantize(xq, wq, None, 0.1, 0.2, 0.5)
    assert got.is_cuda and torch.equal(got, ext.int8_linear_quantize(xq, wq, None, 0.1, 0.2, 0.5))
    assert torch.equal(got.cpu(), ops.int8_linear_quantize(xq.cpu(), wq.cpu(), None, 0.1, 0.2, 0.5))
    norm_w = torch.rand(768, device="cuda") + 0.5
    got = ops.rms_norm_quantize(y, norm_w, 1e-5, 0.02)
    assert got.is_cuda and torch.equal(got, ext.rms_norm_quantize(y, norm_w, 1e-5, 0.02))
    cpu = ops.rms_norm_quantize(y.cpu(), norm_w.cpu(), 1e-5, 0.02)
    assert int((got.cpu().int() - cpu.int()).abs().max()) <= 1  # equal up to the tie rule (checked above)
    # the one-token ops (what decode calls) on strided (b, d_in) views == the prefill kernel at l = 1
    x1, state1, w1, bias1 = (t.cuda() for t in conv_inputs(2, 1, 768, 4, True, seed=3))
    x_view = torch.cat([x1, x1], dim=-1)[:, 0, :768]  # (b, d_in), row stride 2 d_in like in_proj's x half
    got = ops.int8_causal_conv1d_update(x_view, state1, w1, bias1, *CONV_SCALES)
    want = ext.int8_causal_conv1d(x1, state1, w1, bias1, *CONV_SCALES)
    assert torch.equal(got[0], want[0][:, 0]) and torch.equal(got[1], want[1])
    one = [t.cuda() for t in scan_inputs(2, 1, 768, 16, r=24, seed=4)]
    got = ops.int8_selective_scan_update(*(t[:, 0] for t in one[:5]), *one[5:], *SCAN_SCALES)
    want = ext.int8_selective_scan(*one, *SCAN_SCALES)
    assert torch.equal(got[0], want[0][:, 0]) and torch.equal(got[1], want[1])
