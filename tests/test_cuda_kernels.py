"""Every CUDA kernel against the quantized reference on identical int8 inputs and scales (GPU only: marker cuda).

Integer outputs must be exact, with one rule: the conv's u_q may differ by one code where the reference quotient
u / out_scale is within 1e-4 of .5 (CUDA expf vs the CPU's exp differ in the last bit; ties are counted and
printed). Float outputs (the scan's y and state) within the tolerance SCAN_TOL relative to the largest reference
magnitude (the sum over states is a shuffle tree, exp/log1p come from another libm). Outputs are poisoned before
each call: the binding allocates its outputs from torch's caching allocator, so freed blocks of the same sizes
filled with a sentinel (-128 for int8, never produced by quantize; NaN for float32) are what it gets back, and a
result that still holds a sentinel was not written.

The reference functions are called directly (edge_quamba.quant.qops / primitives), on CPU copies of the inputs.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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
    return torch.randint(-127, 128, shape, generator=g, dtype=torch.int8)


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

    def hook(quotient, q):
        captured.append(quotient.clone())
        return q

    with primitives.quantize_hook(hook):
        u_ref, s_ref = qops.int8_causal_conv1d(x, state, w, bias, *scales)
    return u_ref, s_ref, captured[-1]


def check_u(name, u_got, u_ref, quotient):
    diff = u_got.to(torch.int32) - u_ref.to(torch.int32)
    frac = quotient.abs() - quotient.abs().floor()
    tie = ((frac - 0.5).abs() < TIE_WIDTH) & (quotient.abs() < 127.5)
    off = diff != 0
    print(f"{name}: {int(tie.sum())} near-ties in the reference, {int(off.sum())} codes differ "
          f"({int((off & tie).sum())} at ties), max |diff| {int(diff.abs().max()) if diff.numel() else 0}")
    assert not (u_got == -128).any(), "unwritten outputs"
    assert not (off & ~(tie & (diff.abs() == 1))).any(), "u_q differs away from a rounding tie"


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


# ---------------------------------------------------------------------------------------- hadamard_quantize

@pytest.mark.parametrize("n", [1, 2, 12, 20, 28, 56, 768, 1536, 2048, 5120, 7168, 10240, 16384])
@pytest.mark.parametrize("rows", [(1, 1), (2, 37)])
def test_hadamard_quantize_exact(ext, n, rows):
    g = gen(n * 13 + rows[1])
    y = torch.randn(*rows, n, generator=g) * 2
    y[..., :5] = torch.tensor([30.0, -30.0, 0.0, 1e-3, -7.0])[: min(5, n)]
    scale = 4.0 / 127
    poison(((*rows, n), torch.int8))
    got = ext.hadamard_quantize(y.cuda(), scale).cpu()
    ref = qops.hadamard_quantize(y, scale)
    report(f"hadamard_quantize n={n} rows={rows}", got, ref)
    assert not (got == -128).any(), "unwritten outputs"
    assert torch.equal(got, ref)


def test_hadamard_quantize_row_strided_view(ext):
    g = gen(3)
    full = torch.randn(3, 5, 5120 + 64, generator=g)
    y = full[..., :5120]
    got = ext.hadamard_quantize(y.cuda(), 0.03).cpu()
    assert torch.equal(got, qops.hadamard_quantize(y, 0.03))


BAD_CALLS = '''
import torch
from edge_quamba.ops import cuda_ops as ext
i8 = lambda *s: torch.zeros(*s, dtype=torch.int8, device="cuda")
calls = [
    lambda: ext.hadamard_quantize(torch.zeros(1, 36, device="cuda"), 0.1),
    lambda: ext.int8_linear(i8(1, 64), i8(8, 32), None, 1.0, 1.0),
    lambda: ext.int8_causal_conv1d(i8(1, 3, 8), i8(1, 8, 5), i8(8, 5), None, 1.0, 1.0, 1.0),
    lambda: ext.quantize(i8(4), 1.0),
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
    assert len(lines) == 4 and all(line.startswith("ValueError: ") for line in lines), lines
    assert "hadamard_quantize: no Hadamard matrix for n=36" in lines[0] and "width k=5" in lines[2] and "quantize" in lines[3]


# ------------------------------------------------------------------------------------------------- dispatch

def test_registered_ops_dispatch_to_the_kernels(ext):
    """torch.ops.edge_quamba.<op> on CUDA tensors runs the kernel (same bits as calling the binding)."""
    from edge_quamba.ops import cuda_ops

    names = cuda_ops.register_cuda_kernels()
    print("registered:", names)
    assert {"int8_causal_conv1d", "int8_selective_scan", "hadamard_quantize"} <= set(names)
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
    if "quantize" in names:
        assert torch.equal(ops.quantize(y, 0.02), ext.quantize(y, 0.02))
    if "int8_linear" in names:
        xq, wq = torch.randint(-127, 128, (1, 768), device="cuda", dtype=torch.int8), \
            torch.randint(-127, 128, (56, 768), device="cuda", dtype=torch.int8)
        assert torch.equal(ops.int8_linear(xq, wq, None, 0.1, 0.2), ext.int8_linear(xq, wq, None, 0.1, 0.2))
