"""The int8 convention: round half to even, divide by the scale, saturate to [-127, 127], scale floor, exact matmul."""

import numpy as np
import pytest
import torch

from edge_quamba.quant import primitives as P


def _report(name: str, diff: torch.Tensor) -> None:
    d = diff.detach().to(torch.float64).abs()
    print(f"{name}: max abs diff {d.max().item():.3e}, mean {d.mean().item():.3e}")


def test_round_half_to_even_ties():
    x = torch.tensor([0.5, 1.5, 2.5, 3.5, -0.5, -1.5, -2.5, 126.5, -126.5])
    expected = torch.tensor([0, 2, 2, 4, 0, -2, -2, 126, -126], dtype=torch.int8)  # written by hand
    q = P.quantize(x, 1.0)
    print("ties:", x.tolist(), "->", q.tolist())
    assert q.dtype == torch.int8
    assert torch.equal(q, expected)
    # same ties through a non-unit scale that is a power of two (x / s stays exact)
    q4 = P.quantize(x * 0.25, 0.25)
    assert torch.equal(q4, expected)


def test_divides_by_scale_not_reciprocal():
    # Near-tie inputs for several scales: x / s (one rounding) and x * (1/s) (two roundings) round to different ints for
    # some of them. Expected values use numpy's IEEE float32 division and rint (half to even).
    xs, ss = [], []
    for s in np.float32([0.1, 0.3, 0.7, 1.1, 0.013]):
        for k in range(-127, 127):
            t = np.float32((k + 0.5) * float(s))
            for x in (np.nextafter(t, np.float32(-np.inf)), t, np.nextafter(t, np.float32(np.inf))):
                xs.append(x)
                ss.append(s)
    xs, ss = np.array(xs, dtype=np.float32), np.array(ss, dtype=np.float32)
    expected = np.clip(np.rint(xs / ss), -127, 127).astype(np.int8)
    via_reciprocal = np.clip(np.rint(xs * (np.float32(1) / ss)), -127, 127).astype(np.int8)
    n_differ = int((expected != via_reciprocal).sum())
    print(f"{len(xs)} near-tie inputs, {n_differ} where x*(1/s) would round differently from x/s")
    assert n_differ > 0, "test inputs must distinguish division from reciprocal multiplication"
    q = P.quantize(torch.from_numpy(xs), torch.from_numpy(ss))
    mismatches = int((q.numpy() != expected).sum())
    print("mismatches vs float32 division:", mismatches)
    assert mismatches == 0


def test_saturation_never_minus_128():
    s = 0.5
    x = torch.tensor([126.4, 126.5, 127.0, 127.4, 127.5, 128.0, 200.0, 1e30, float("inf")]) * s
    q = P.quantize(torch.cat([x, -x]), s)
    print("saturation:", q.tolist())
    assert torch.equal(q[:9], torch.tensor([126, 126, 127, 127, 127, 127, 127, 127, 127], dtype=torch.int8))
    assert torch.equal(q[9:], -q[:9])
    assert int(q.min()) == -127
    # huge random magnitudes in float16, float32 and float64 also never reach -128
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float16, torch.float32, torch.float64):
        big = (torch.randn(10_000, generator=g) * 1e4).to(dtype)
        qb = P.quantize(big, 0.01)
        assert int(qb.min()) == -127 and int(qb.max()) == 127


def test_nan_quantizes_to_zero():
    q = P.quantize(torch.tensor([float("nan"), 1.0]), 1.0)
    print("nan ->", q.tolist())
    assert q.tolist() == [0, 1]


def test_scale_from_amax():
    s = P.scale_from_amax(2.54)
    print("scale_from_amax(2.54) =", s.item())
    assert s.dtype == torch.float32 and s.shape == ()
    assert s.item() == (torch.tensor(2.54, dtype=torch.float32) / 127).item()
    per_channel = P.scale_from_amax(torch.tensor([127.0, 1.27, 0.0], dtype=torch.float64))
    assert per_channel.dtype == torch.float32
    assert per_channel[0].item() == 1.0
    assert per_channel[1].item() == (torch.tensor(1.27, dtype=torch.float32) / 127).item()
    # amax at the representable edge quantizes to exactly 127 (and -127)
    x = torch.tensor([3.7, -3.7, 1.0])
    assert P.quantize(x, P.scale_from_amax(x.abs().amax())).tolist()[:2] == [127, -127]


def test_zero_and_tiny_amax_give_positive_finite_scale():
    z = torch.zeros(4, 8)
    for amax in (0.0, 1e-30, torch.tensor(0.0), z.abs().amax()):
        s = P.scale_from_amax(amax)
        print(f"amax {float(amax):.1e} -> scale {s.item():.3e}")
        assert s.item() > 0 and torch.isfinite(s)
        assert s.item() == pytest.approx(P.AMAX_FLOOR / 127, rel=1e-6)
    s = P.scale_from_amax(z.abs().amax())
    q = P.quantize(z, s)
    assert torch.equal(q, torch.zeros(4, 8, dtype=torch.int8))
    assert torch.equal(P.dequantize(q, s), z)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_amax_rejected(bad):
    with pytest.raises(ValueError, match="amax"):
        P.scale_from_amax(bad)
    with pytest.raises(ValueError, match="amax"):
        P.scale_from_amax(torch.tensor([1.0, bad]))


def test_negative_amax_and_bad_scale_rejected():
    with pytest.raises(ValueError, match="amax"):
        P.scale_from_amax(-1.0)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="scale"):
            P.quantize(torch.ones(3), bad)
    with pytest.raises(TypeError):
        P.quantize(torch.ones(3, dtype=torch.int32), 1.0)
    with pytest.raises(TypeError):
        P.dequantize(torch.ones(3, dtype=torch.int32), 1.0)


def test_weight_with_nan_rejected():
    w = torch.randn(4, 4)
    w[1, 2] = float("nan")
    with pytest.raises(ValueError, match="amax"):
        P.quantize_weight_per_tensor(w)


def test_dequantize_quantize_error_within_half_step():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(100_000, generator=g) * 3
    s = P.scale_from_amax(x.abs().amax())
    xq = P.fake_quantize(x, s)
    err = (xq.double() - x.double()).abs()
    _report("fake_quantize error", err)
    bound = s.item() / 2 + 127 * s.item() * 2.0**-23  # half a step plus float32 rounding of x/s and q*s
    print(f"bound {bound:.6e} (scale/2 = {s.item() / 2:.6e})")
    assert xq.dtype == x.dtype
    assert err.max().item() <= bound
    # dequantize is float32(q) * scale, then cast
    q = P.quantize(x, s)
    assert torch.equal(P.dequantize(q, s), q.float() * s)
    assert P.dequantize(q, s, dtype=torch.float16).dtype == torch.float16


def test_quantize_weight_per_tensor():
    g = torch.Generator().manual_seed(2)
    w = torch.randn(64, 96, generator=g)
    q, s = P.quantize_weight_per_tensor(w)
    print("weight scale", s.item(), "q range", int(q.min()), int(q.max()))
    assert q.dtype == torch.int8 and q.shape == w.shape and s.shape == ()
    assert s.item() == P.scale_from_amax(w.abs().amax()).item()
    assert int(q.abs().max()) == 127
    assert torch.equal(q, P.quantize(w, s))


def test_int8_matmul_exact_at_extremes():
    k = 5120
    g = torch.Generator().manual_seed(3)
    signs_a = torch.randint(0, 2, (6, k), generator=g) * 2 - 1
    signs_b = torch.randint(0, 2, (k, 5), generator=g) * 2 - 1
    a = (signs_a * 127).to(torch.int8)
    b = (signs_b * 127).to(torch.int8)
    a[0] = 127
    a[1] = -127
    b[:, 0] = 127
    acc = P.int8_matmul(a, b)
    ref = a.to(torch.int64) @ b.to(torch.int64)  # independent exact integer reference
    print("extremes: acc[0,0] =", int(acc[0, 0]), "max |acc| =", int(acc.abs().max()),
          "max diff", int((acc.to(torch.int64) - ref).abs().max()))
    assert acc.dtype == torch.int32 and acc.shape == (6, 5)
    assert int(acc[0, 0]) == 127 * 127 * k and int(acc[1, 0]) == -127 * 127 * k
    assert torch.equal(acc.to(torch.int64), ref)


def test_int8_matmul_exact_random_and_batched():
    k = 5120
    g = torch.Generator().manual_seed(4)
    a = torch.randint(-127, 128, (2, 16, k), generator=g).to(torch.int8)
    b = torch.randint(-127, 128, (k, 24), generator=g).to(torch.int8)
    a[:, :8] = a[:, :8].abs()  # non-negative rows x columns: sums reach ~2e7 > 2**24, where float32 is inexact
    b[:, :12] = b[:, :12].abs()
    acc = P.int8_matmul(a, b)
    ref = a.to(torch.int64) @ b.to(torch.int64)
    f32 = (a.float() @ b.float()).to(torch.int64)  # float32 accumulation is not exact at this K
    print("random: max diff", int((acc.to(torch.int64) - ref).abs().max()),
          "| float32 path would differ in", int((f32 != ref).sum()), "of", ref.numel())
    assert int((f32 != ref).sum()) > 0, "inputs must be large enough to distinguish exact from float32 accumulation"
    assert acc.shape == (2, 16, 24)
    assert torch.equal(acc.to(torch.int64), ref)


def test_int8_matmul_rejects_bad_input():
    with pytest.raises(TypeError):
        P.int8_matmul(torch.ones(2, 3), torch.ones(3, 2, dtype=torch.int8))
    k = P.MAX_K + 1
    with pytest.raises(ValueError, match="MAX_K"):
        P.int8_matmul(torch.ones(1, k, dtype=torch.int8), torch.ones(k, 1, dtype=torch.int8))


def test_int8_linear_matches_float_reference():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 7, 256, generator=g)
    w = torch.randn(48, 256, generator=g) * 0.05
    s_x = P.scale_from_amax(x.abs().amax())
    x_q = P.quantize(x, s_x)
    w_q, s_w = P.quantize_weight_per_tensor(w)
    y = P.int8_linear(x_q, s_x, w_q, s_w)
    exact = (x_q.double() @ w_q.double().T) * (s_x * s_w).double()
    _report("int8_linear vs float64 of the same codes", y.double() - exact)
    assert y.dtype == torch.float32 and y.shape == (3, 7, 48)
    assert torch.equal(y, P.int8_matmul(x_q, w_q.T).float() * (s_x * s_w))
    assert torch.allclose(y.double(), exact, rtol=1e-6, atol=0)
    sqnr = 10 * torch.log10((x @ w.T).pow(2).mean() / (y - x @ w.T).pow(2).mean())
    print(f"int8_linear SQNR vs fp32 {sqnr.item():.1f} dB")
    assert sqnr.item() > 30


def test_quantize_segments_each_at_its_scale_and_label():
    """Consecutive segments of the last axis, each quantized at its own scale, each under its own code label."""
    x = torch.randn(3, 10, generator=torch.Generator().manual_seed(0))
    got = P.quantize_segments(x, [0.1, 0.002, 0.5], [4, 5, 1])
    want = torch.cat([P.quantize(x[:, :4], 0.1), P.quantize(x[:, 4:9], 0.002), P.quantize(x[:, 9:], 0.5)], dim=-1)
    assert torch.equal(got, want) and (got[:, 4:9].abs() == 127).any()  # the small scale saturates
    seen = []

    def hook(label, quotient, q):
        seen.append((label, q.shape[-1]))
        return q

    with P.quantize_hook(hook), P.code_label(("a", "b", "c")):
        P.quantize_segments(x, [0.1, 0.002, 0.5], [4, 5, 1])
    with P.quantize_hook(hook), P.code_label("one"):
        P.quantize_segments(x, [0.1, 0.2], [4, 6])
    assert seen == [("a", 4), ("b", 5), ("c", 1), ("one", 4), ("one", 6)]


@pytest.mark.parametrize("scales,sizes,labels", [([0.1], [4, 6], None), ([0.1, 0.1], [4, 5], None),
                                                 ([0.1, 0.1], [0, 10], None), ([0.1, 0.1], [4, 6], ("a",))])
def test_quantize_segments_rejects_mismatched_segments(scales, sizes, labels):
    with pytest.raises(ValueError, match="quantize_segments"), P.code_label(labels):
        P.quantize_segments(torch.zeros(2, 10), scales, sizes)
