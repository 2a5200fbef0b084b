"""The 4-bit-weight CUDA kernels (plugins/kernels/int4_linear.h) against the reference ops on identical inputs, and
``--backend cuda`` on W4A8 / W4A16 models (GPU only: marker cuda).

Kernels: w4a8_linear and w4a8_linear_quantize must equal the reference bit for bit (torch_ops.w4a8_linear: per-group
exact int32 sums combined in float32 in ascending group order; the quantized form the same value then quantize), on
the GEMV (M <= 16) and the GEMM (M > 16) paths, at the 2.8b and demo-model shapes, strided x views, K below the
group size, a partial last group, odd K / odd group sizes (the one-code-at-a-time GEMV). x codes are drawn in
[-127, 127] (what our quantizers write); one case feeds -128, which a GEMM reads raw, as the reference does.
w4a16_linear (float16 out) must satisfy, per element, |got - ref| <= W4A16_ULP * |ref| + W4A16_SUM * (|x| @ |w|^T):
one float16 rounding step of the output plus float32 accumulation in another order (the reference sums in its
BLAS's order, the kernels group by group, tensor-core float32 accumulation). Outputs are poisoned first
(test_cuda_kernels.poison). Weights are random codes in [-8, 7] (every nibble) with random positive scales.

W4A16's float16 scan kernel (op selective_scan, the fp reference's scan) tracks models.mamba.selective_scan within
SCAN_TOL. Backend: on tiny random W4A8 and W4A16 models, CUDA-graph decode equals teacher-forced prefill (within the stated
tolerance) and replays the eager step exactly; the cuda backend's prefill logits track the reference's; on the
demo model quantized at W4A8 and at W4A16, greedy tokens equal the reference's.
"""

from __future__ import annotations

import pytest
import torch

from edge_quamba.ops import torch_ops
from edge_quamba.quant import primitives
from edge_quamba.runtime import cuda_backend
from helpers import report as report_max
from test_cuda_kernels import gen, poison, report

pytestmark = pytest.mark.cuda

W4A16_ULP = 2.0**-10
"""One float16 rounding step relative to |ref| (the output is rounded once, from nearby float32 values)."""
W4A16_SUM = 2.0**-15
"""float32 accumulation in a different order, relative to sum_k |x_k w_k| (with K <= 5120 here)."""


@pytest.fixture(scope="module")
def ext():
    from edge_quamba.ops import cuda_ops

    return cuda_ops.load_extension()


def int4_weight(n: int, k: int, group: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(codes (n, k) int8 in [-8, 7], packed (n, ceil(k / 2)) uint8, scales (n, G) float32 in [1e-4, 1e-2])."""
    codes = torch.randint(-8, 8, (n, k), generator=g, dtype=torch.int8)
    scales = torch.rand(n, primitives.int4_group_count(k, group), generator=g) * 0.01 + 1e-4
    return codes, primitives.pack_int4(codes), scales


def x_codes(m: int, k: int, stride: int | None, g: torch.Generator) -> torch.Tensor:
    """(m, k) int8 codes in [-127, 127], a row-strided view of an (m, stride) tensor when stride is given."""
    return torch.randint(-127, 128, (m, stride or k), generator=g, dtype=torch.int8)[:, :k]


def cuda_or_none(t):
    return None if t is None else t.cuda()


# (M, K, N, group, x row stride or None, bias): 2.8b layers (in_proj, x_proj, dt_proj as a view of x_proj's output,
# out_proj), groups a lane team covers whole and groups wider than a team, the demo model's (dt_proj: K = 24 <
# group), every GEMV chunk width, odd K and odd groups, the GEMM with M and N tails and groups of 3 steps, and the
# M > 16 GEMV fallback.
W4A8_CASES = [
    (1, 2560, 10240, 64, None, False),   # in_proj 2.8b decode: 16-byte chunks
    (1, 5120, 192, 64, None, True),      # x_proj 2.8b: split-K over 256 threads per row
    (1, 160, 5120, 64, 192, True),       # dt_proj 2.8b: strided view, last group of 32 columns
    (1, 5120, 2560, 64, None, False),    # out_proj 2.8b
    (1, 2560, 640, 128, None, True),     # groups of 128: teams of 4 lanes own whole groups
    (1, 4096, 96, 2048, None, False),    # groups of 2048: wider than a team, summed with atomics
    (4, 4096, 40, 1024, None, True),     # the same, 4 x rows per pass
    (1, 384, 1536, 64, None, False),     # demo in_proj
    (1, 24, 768, 64, 56, True),          # demo dt_proj: one partial group, 4-byte chunks
    (3, 768, 56, 64, None, True),        # demo x_proj, batch 3 (4-row passes)
    (5, 96, 40, 32, 104, False),         # 8-byte chunks (x stride 104)
    (7, 100, 33, 20, 101, True),         # one code per chunk (odd stride), groups of 20
    (2, 39, 17, 13, None, False),        # odd K (half-filled last byte), odd group size
    (16, 512, 64, 128, None, False),     # largest M of the GEMV
    (17, 64, 24, 64, 80, True),          # smallest M of the GEMM, strided x
    (100, 320, 200, 96, None, True),     # GEMM: M and N tails, groups of 96 (3 steps), last group 32
    (512, 2560, 10240, 64, None, True),  # prefill in_proj
    (512, 160, 5120, 64, 192, False),    # prefill dt_proj: strided view
    (37, 24, 768, 64, 56, False),        # M > 16 with K % 32 != 0: the GEMV for prefill
]


def w4a8_inputs(M, K, N, group, stride, use_bias, seed):
    g = gen(seed)
    x_q = x_codes(M, K, stride, g)
    _, packed, scales = int4_weight(N, K, group, g)
    bias = torch.randn(N, generator=g) if use_bias else None
    return x_q, packed, scales, bias


def check_w4a8(ext, device, M, K, N, group, stride, use_bias, quantize):
    """w4a8_linear (float out) or w4a8_linear_quantize against the reference, bit for bit, on ``device`` (the GPU,
    or the CPU kernel emulator's build of the binding for the GEMV cases)."""
    seed = M * 7919 + K * 31 + N + group if not quantize else M * 7907 + K * 29 + N + group
    x_q, packed, scales, bias = w4a8_inputs(M, K, N, group, stride, use_bias, seed)
    x_scale = 0.0173
    to = lambda t: None if t is None else t.to(device)  # noqa: E731
    if quantize:
        y = torch_ops.w4a8_linear(x_q, packed, scales, bias, x_scale, group)
        out_scale = float(y.abs().max()) / 150  # the largest |y| saturate at +-127
        ref = torch_ops.w4a8_linear_quantize(x_q, packed, scales, bias, x_scale, group, out_scale)
        if device == "cuda":
            poison(((M, N), torch.int8))
        got = ext.w4a8_linear_quantize(to(x_q), to(packed), to(scales), to(bias), x_scale, group, out_scale).cpu()
        report(f"w4a8_linear_quantize M={M} K={K} N={N} group={group}", got, ref)
        print(f"  codes at +-127: {int((ref.abs() == 127).sum())} of {ref.numel()}")
        assert got.dtype == torch.int8 and not (got == -128).any(), "unwritten outputs"
    else:
        ref = torch_ops.w4a8_linear(x_q, packed, scales, bias, x_scale, group)
        if device == "cuda":
            poison(((M, N), torch.float32))
        got = ext.w4a8_linear(to(x_q), to(packed), to(scales), to(bias), x_scale, group).cpu()
        report(f"w4a8_linear M={M} K={K} N={N} group={group} stride={stride}", got, ref)
        assert got.dtype == torch.float32 and not torch.isnan(got).any(), "unwritten outputs"
    assert got.shape == ref.shape and torch.equal(got, ref)


@pytest.mark.parametrize("M,K,N,group,stride,use_bias", W4A8_CASES)
def test_w4a8_linear_exact(ext, M, K, N, group, stride, use_bias):
    check_w4a8(ext, "cuda", M, K, N, group, stride, use_bias, quantize=False)


@pytest.mark.parametrize("M,K,N,group,stride,use_bias", W4A8_CASES)
def test_w4a8_linear_quantize_exact(ext, M, K, N, group, stride, use_bias):
    check_w4a8(ext, "cuda", M, K, N, group, stride, use_bias, quantize=True)


# The W4A8 decode fusions (the GEMV's epilogue): out_proj + the residual add, in_proj + the conv step.
W4A8_RESIDUAL_CASES = [(1, 5120, 2560, 64), (3, 768, 56, 64), (16, 96, 40, 32), (17, 100, 33, 20)]  # (M, K, N, g)
W4A8_CONV_CASES = [  # (b, K, sizes, conv_begin, C, k, per-channel conv scales, group)
    (1, 2560, (10240,), 0, 5120, 4, False, 64),             # 2.8b W4A8 in_proj and the conv over x
    (1, 2560, (5120, 5376, 80), 5120, 5376, 4, True, 64),   # Mamba2 2.7b: the conv over xBC
    (3, 100, (7, 13, 5), 7, 13, 2, True, 20),               # odd sizes, one code per chunk
    (17, 100, (96,), 0, 48, 4, False, 20),                  # b > 16: the launches apart
]


def check_w4a8_residual(ext, device, M, K, N, group):
    """residual + w4a8_linear(...) in one op, bit for bit the reference's float32 add after the linear."""
    x_q, packed, scales, bias = w4a8_inputs(M, K, N, group, None, True, M * 31 + K + N)
    residual = torch.randn(M, N, generator=gen(M + N)) * 4
    to = lambda t: t.to(device)  # noqa: E731
    got = ext.w4a8_linear_residual(to(x_q), to(packed), to(scales), to(bias), 0.0173, group, to(residual)).cpu()
    ref = torch_ops.w4a8_linear_residual(x_q, packed, scales, bias, 0.0173, group, residual)
    report(f"w4a8_linear_residual M={M} K={K} N={N}", got, ref)
    assert torch.equal(got, ref) and torch.equal(ref, residual + torch_ops.w4a8_linear(x_q, packed, scales, bias,
                                                                                        0.0173, group))


def check_w4a8_conv_update(ext, device, b, K, sizes, conv_begin, C, k, per_channel, group):
    """W4A8 in_proj + the conv step in one op against the two launches apart on the same device (bit for bit) and
    its codes against the reference."""
    n = sum(sizes)
    x_q, packed, scales, bias = w4a8_inputs(b, K, n, group, None, True, b * 7919 + K + C)
    y = torch_ops.w4a8_linear(x_q, packed, scales, bias, 0.0173, group)
    out_scales = [float(part.abs().max()) / 150 for part in y.split(list(sizes), dim=-1)]
    g = gen(b + C)
    state = torch.randint(-127, 128, (b, C, k), generator=g, dtype=torch.int8)
    conv_w = torch.randint(-127, 128, (C, k), generator=g, dtype=torch.int8)
    conv_b = torch.randn(C, generator=g) * 0.5
    conv_scales = (torch.rand(C, generator=g) * 3 + 1) / 127 if per_channel else None
    to = lambda t: None if t is None else t.to(device)  # noqa: E731
    codes, u, new_state = ext.w4a8_linear_quantize_conv_update(
        to(x_q), to(packed), to(scales), to(bias), 0.0173, group, out_scales, list(sizes), conv_begin, to(state),
        to(conv_w), to(conv_b), 0.0041, 3.0 / 127, to(conv_scales))
    apart = ext.w4a8_linear_quantize_segments(to(x_q), to(packed), to(scales), to(bias), 0.0173, group, out_scales,
                                              list(sizes))
    segment = next(i for i, end in enumerate(torch.tensor(sizes).cumsum(0).tolist()) if conv_begin < end)
    conv_x = apart[:, conv_begin:conv_begin + C].unsqueeze(1)
    if per_channel:
        u_apart, state_apart = ext.int8_causal_conv1d_channel_scales(conv_x, to(state), to(conv_w), to(conv_b),
                                                                     to(conv_scales), out_scales[segment], 0.0041)
    else:
        u_apart, state_apart = ext.int8_causal_conv1d(conv_x, to(state), to(conv_w), to(conv_b), out_scales[segment],
                                                      0.0041, 3.0 / 127)
    ref = torch_ops.w4a8_linear_quantize_segments(x_q, packed, scales, bias, 0.0173, group, out_scales, list(sizes))
    report(f"w4a8_linear_quantize_conv_update b={b} K={K} sizes={sizes}: u vs two launches", u.cpu(),
           u_apart[:, 0].cpu())
    assert torch.equal(codes.cpu(), ref) and torch.equal(apart.cpu(), ref)
    assert torch.equal(u.cpu(), u_apart[:, 0].cpu()) and torch.equal(new_state.cpu(), state_apart.cpu())


@pytest.mark.parametrize("M,K,N,group", W4A8_RESIDUAL_CASES)
def test_w4a8_linear_residual_exact(ext, M, K, N, group):
    check_w4a8_residual(ext, "cuda", M, K, N, group)


@pytest.mark.parametrize("b,K,sizes,conv_begin,C,k,per_channel,group", W4A8_CONV_CASES)
def test_w4a8_linear_quantize_conv_update_equals_two_launches(ext, b, K, sizes, conv_begin, C, k, per_channel, group):
    check_w4a8_conv_update(ext, "cuda", b, K, sizes, conv_begin, C, k, per_channel, group)


@pytest.mark.parametrize("M", [1, 512])
def test_w4a8_reads_minus_128_raw_as_the_reference(ext, M):
    """A GEMM reads its int8 input raw (primitives, "Reading codes"): -128 multiplies as -128, GEMV and GEMM."""
    g = gen(40 + M)
    x_q = x_codes(M, 256, None, g)
    x_q[:, ::3] = -128
    _, packed, scales = int4_weight(128, 256, 64, g)
    ref = torch_ops.w4a8_linear(x_q, packed, scales, None, 0.01, 64)
    assert not torch.equal(ref, torch_ops.w4a8_linear(primitives.read_codes(x_q), packed, scales, None, 0.01, 64))
    got = ext.w4a8_linear(x_q.cuda(), packed.cuda(), scales.cuda(), None, 0.01, 64).cpu()
    report(f"w4a8_linear with -128 inputs, M={M}", got, ref)
    assert torch.equal(got, ref)


@pytest.mark.parametrize("l", [1, 20])
def test_w4a8_batched_view_3d(ext, l):
    """(b, l, K): the x half of a (b, l, 2K) tensor (a sequence stride), decode l = 1 and prefill; out (b, l, N)."""
    g = gen(6 + l)
    full = torch.randint(-127, 128, (2, l, 2 * 768), generator=g, dtype=torch.int8)
    x_q = full[..., :768]
    _, packed, scales = int4_weight(1536, 768, 64, g)
    ref = torch_ops.w4a8_linear_quantize(x_q, packed, scales, None, 0.01, 64, 0.05)
    got = ext.w4a8_linear_quantize(x_q.cuda(), packed.cuda(), scales.cuda(), None, 0.01, 64, 0.05).cpu()
    report(f"w4a8_linear_quantize (2, {l}, 768) view", got, ref)
    assert got.shape == (2, l, 1536) and torch.equal(got, ref)


# (M, K, N, group, x row stride or None, bias): the tensor-core GEMV (M <= 16, passes of 8 x rows), the one-warp-per-
# output kernel (K or the group not a multiple of 32, x stride not a multiple of 8), and the GEMM.
W4A16_CASES = [
    (1, 2560, 10240, 64, None, False),   # in_proj 2.8b decode
    (1, 5120, 192, 64, None, True),      # x_proj 2.8b (groups split over 8 warps)
    (1, 160, 5120, 64, 192, True),       # dt_proj 2.8b: strided view, 3 groups (5 warps idle)
    (1, 5120, 2560, 64, None, False),    # out_proj 2.8b
    (1, 2560, 640, 128, None, True),     # groups of 128: teams of 4 lanes own whole groups
    (1, 4096, 96, 2048, None, False),    # groups of 2048: wider than a team, summed with atomics
    (4, 4096, 40, 1024, None, True),     # the same, 4 x rows per pass
    (1, 384, 1536, 64, None, False),     # demo in_proj
    (1, 24, 768, 64, 56, True),          # demo dt_proj: the one-warp-per-output kernel
    (3, 768, 56, 64, None, True),        # demo x_proj, batch 3
    (9, 96, 40, 32, 104, False),         # two passes of 8 x rows
    (16, 320, 200, 96, None, True),      # N tail, groups of 96
    (5, 39, 17, 13, None, False),        # odd K and group: one warp per output
    (17, 64, 24, 64, 72, True),          # smallest M of the GEMM, strided x
    (100, 320, 200, 96, None, True),     # GEMM: M and N tails, groups of 96
    (512, 2560, 10240, 64, None, True),  # prefill in_proj
    (512, 160, 5120, 64, 192, False),    # prefill dt_proj: strided view
    (37, 24, 768, 64, 56, False),        # M > 16 with K % 32 != 0: one warp per output
]


@pytest.mark.parametrize("M,K,N,group,stride,use_bias", W4A16_CASES)
def test_w4a16_linear_within_float16_rounding(ext, M, K, N, group, stride, use_bias):
    g = gen(M * 7877 + K * 23 + N + group)
    x = torch.randn(M, stride or K, generator=g).half()[:, :K]
    codes, packed, scales = int4_weight(N, K, group, g)
    bias = torch.randn(N, generator=g) if use_bias else None
    ref = torch_ops.w4a16_linear(x, packed, scales, bias, group)
    poison(((M, N), torch.float16))
    got = ext.w4a16_linear(x.cuda(), packed.cuda(), scales.cuda(), cuda_or_none(bias), group).cpu()
    diff = report(f"w4a16_linear M={M} K={K} N={N} group={group} stride={stride}", got, ref)
    w_hat = primitives.dequantize_int4(codes, scales, group).double()
    magnitude = x.double().abs() @ w_hat.abs().T  # sum_k |x_k w_k|
    bound = W4A16_ULP * ref.double().abs() + W4A16_SUM * magnitude
    print(f"  worst |diff| / bound {float((diff / bound).max()):.3f}")
    assert got.dtype == torch.float16 and got.shape == ref.shape
    assert not torch.isnan(got).any(), "unwritten outputs"
    assert (diff <= bound).all()


SCAN_TOL = 1e-4
"""W4A16 scan y and state: max |gpu - ref| <= SCAN_TOL * max |ref| (the sum over states is a shuffle tree, expf)."""


@pytest.mark.parametrize("b,l,d,n", [(1, 1, 130, 16), (2, 37, 70, 16), (1, 512, 256, 16), (1, 9, 40, 8)])
def test_w4a16_scan_kernel_tracks_the_reference(ext, b, l, d, n):
    """The float16 scan (op selective_scan) on the layouts W4A16's mixer passes: u with a channel stride of l (the
    conv's transposed output), B and C views of x_proj's output; y and the state against models.mamba.selective_scan
    (CPU)."""
    g = gen(b * 1000 + l * 10 + d + n)
    u = torch.randn(b, d, l, generator=g).half().transpose(1, 2)  # (b, l, d), channel stride l
    delta = torch.rand(b, l, d, generator=g) * 0.5 + 1e-3
    A = -torch.rand(d, n, generator=g) * 4
    xp = torch.randn(b, l, 5 + 2 * n, generator=g).half()
    B, C = xp[..., 5:5 + n], xp[..., 5 + n:]
    D = torch.randn(d, generator=g).half()
    state = torch.randn(b, d, n, generator=g)
    y_ref, h_ref = torch_ops.selective_scan(u, delta, A, B, C, D, state)
    poison(((b, l, d), torch.float32), ((b, d, n), torch.float32))
    y, h = ext.selective_scan(*(t.cuda() for t in (u, delta, A, B, C, D, state)))
    for name, got, ref in (("y", y.cpu(), y_ref), ("state", h.cpu(), h_ref)):
        diff = report(f"w4a16 scan {name} b={b} l={l} d={d} n={n}", got, ref)
        assert not torch.isnan(got).any(), "unwritten outputs"
        assert diff.max() <= SCAN_TOL * ref.abs().max() + 1e-6


def test_int4_wrappers_reject_bad_arguments_in_one_line():
    from edge_quamba.ops import cuda_ops

    x = torch.zeros(1, 64, dtype=torch.int8, device="cuda")
    packed = torch.zeros(8, 32, dtype=torch.uint8, device="cuda")
    scales = torch.ones(8, 1, device="cuda")
    cases = [
        (lambda: cuda_ops.w4a8_linear(x, packed.view(torch.int8), scales, None, 0.1, 64), "weight_packed must be"),
        (lambda: cuda_ops.w4a8_linear(x, packed, scales, None, 0.1, 32), r"weight_scale \(8, 1\) must be"),
        (lambda: cuda_ops.w4a8_linear(x[:, :62], packed, scales, None, 0.1, 64), r"weight_packed \(8, 32\) must be"),
        (lambda: cuda_ops.w4a8_linear_quantize(x, packed, scales, None, 0.1, 64, 0.0), "out_scale"),
        (lambda: cuda_ops.w4a16_linear(x, packed, scales, None, 64), "x must be torch.float16"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            call()
        assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------- the cuda backend, 4-bit

def tiny_four_bit_model(bits: str):
    """A tiny random model (d_model 64, d_inner 128, dt_rank 4) quantized at ``bits`` with GPTQ, groups of 32: in_proj
    2 groups, x_proj / out_proj 4, dt_proj one partial group of 4 columns (every GEMV/GEMM shape rule is exercised)."""
    from edge_quamba.models.config_dispatch import parse_model_config
    from edge_quamba.models.mamba import MambaLM
    from edge_quamba.quant.calibrate import CalibrationData, LinearHessians, calibrate
    from edge_quamba.quant.qmodel import QuantConfig, quantize_model
    from helpers import random_hf_model

    hf = random_hf_model(seed=12, noise=0.1, hidden_size=64, num_hidden_layers=2, state_size=8)
    fp = MambaLM(parse_model_config(hf.config.to_dict(), "test"))
    fp.load_state_dict(hf.state_dict())
    qconfig = QuantConfig(bits=bits, group_size=32, calib_samples=4, calib_seq_len=48)
    tokens = torch.randint(0, 120, (4, 48), generator=torch.Generator().manual_seed(13))
    hessians = LinearHessians(fp.config.n_layer, fp.config.dt_rank)
    amaxes = calibrate(fp.eval(), CalibrationData(tokens, source="random", sha256="0" * 64), qconfig, progress=False,
                       hessians=hessians)
    return quantize_model(fp, amaxes, qconfig, hessians.hessians())


def teacher_forced(backend, tokens):
    from test_cuda_backend import teacher_forced as run

    return run(backend, tokens)


DECODE_TOL = {"w4a8": 1e-2, "w4a16": 1e-2}
"""Decode vs prefill logits, relative to the largest |logit|: the scan's C·h sums in another order in the step
(w4a8, as w8a8); w4a16 also rounds its float16 conv and scan in another order (tests/test_int4.py)."""


@pytest.mark.parametrize("bits", ["w4a8", "w4a16"])
def test_graph_decode_equals_teacher_forced_prefill(bits):
    backend = cuda_backend.CudaBackend(tiny_four_bit_model(bits))
    tokens = torch.randint(0, 120, (40,), generator=torch.Generator().manual_seed(3)).tolist()
    with torch.inference_mode():
        prefill = backend(torch.tensor([tokens]))[0][0].float().cpu()  # (l, v), one eager forward
    stepped = teacher_forced(backend, tokens)
    scale = prefill.abs().max().item()
    diff = report_max(f"{bits} graph decode vs prefill logits", stepped - prefill)
    print(f"logit scale {scale:.3f}")
    assert diff <= DECODE_TOL[bits] * scale
    top2 = prefill.topk(2, dim=-1).values
    clear = (top2[:, 0] - top2[:, 1]) > 2 * diff  # argmax must agree wherever the margin exceeds the noise
    assert torch.equal(stepped.argmax(-1)[clear], prefill.argmax(-1)[clear])


@pytest.mark.parametrize("bits", ["w4a8", "w4a16"])
def test_graph_replay_equals_eager_step(bits):
    graph = cuda_backend.CudaBackend(tiny_four_bit_model(bits))
    eager = cuda_backend.CudaBackend(tiny_four_bit_model(bits), graph=False)
    tokens = torch.randint(0, 120, (24,), generator=torch.Generator().manual_seed(4)).tolist()
    a, b = teacher_forced(graph, tokens), teacher_forced(eager, tokens)
    report_max(f"{bits} graph vs eager decode", a - b)
    assert torch.equal(a, b)
    for sa, sb in zip(graph.states, eager.states):
        assert torch.equal(sa.conv_state, sb.conv_state) and torch.equal(sa.ssm_state, sb.ssm_state)


@pytest.mark.parametrize("bits", ["w4a8", "w4a16"])
def test_backend_prefill_tracks_the_reference(bits):
    reference = tiny_four_bit_model(bits)
    gpu = cuda_backend.CudaBackend(tiny_four_bit_model(bits))
    tokens = torch.randint(0, 120, (1, 48), generator=torch.Generator().manual_seed(8))
    with torch.inference_mode():
        expected = reference(tokens)[0].float()
        got = gpu(tokens)[0].float().cpu()
    scale = expected.abs().max().item()
    diff = report_max(f"{bits} cuda vs ref prefill logits", got - expected)
    print(f"logit scale {scale:.3f}")
    assert diff <= 1e-2 * scale


@pytest.fixture(scope="module", params=["w4a8", "w4a16"])
def demo_four_bit(request, tmp_path_factory):
    from edge_quamba.quant.pipeline import quantize_checkpoint
    from edge_quamba.quant.qmodel import QuantConfig

    bits = request.param
    folder = quantize_checkpoint(model=None, out=tmp_path_factory.mktemp(f"demo_{bits}") / "q",
                                 qconfig=QuantConfig(bits=bits, calib_samples=8, calib_seq_len=128), progress=False)
    return bits, folder


def test_demo_model_greedy_tokens_equal_the_reference(demo_four_bit):
    from edge_quamba.runtime.run import run_prompt
    from edge_quamba.runtime.sampling import SamplingConfig

    bits, folder = demo_four_bit
    greedy = SamplingConfig(temperature=0)
    runs = {name: run_prompt(model=str(folder), prompt="The history of", max_new_tokens=24, sampling=greedy,
                             backend=name) for name in ("ref", "cuda")}
    print(bits, {name: r.tokens for name, r in runs.items()})
    assert runs["cuda"].tokens == runs["ref"].tokens
    assert runs["cuda"].text == runs["ref"].text
