"""Calibration observers: abs-max over batches, Quamba's percentile + EMA statistic, determinism, error messages."""

import pytest
import torch

from edge_quamba.quant.observers import DEFAULT_MOMENTUM, DEFAULT_PERCENTILE, AbsMaxObserver, PercentileObserver

NAME = "layers.3.mixer.x_proj.input"


def _batches(seed: int, n: int = 6, shape=(1, 128, 96)) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g) * (1 + i) for i in range(n)]


def test_absmax_equals_global_max():
    batches = _batches(0)
    batches[2][0, 5, 7] = -40.0  # the global max |x| is negative and in the middle batch
    obs = AbsMaxObserver(NAME)
    for b in batches:
        obs.observe(b)
    expected = torch.cat([b.flatten() for b in batches]).abs().max()
    print(f"absmax {obs.amax().item()} expected {expected.item()} after {obs.num_batches} batches")
    assert obs.amax().dtype == torch.float32 and obs.amax().shape == ()
    assert obs.amax().item() == expected.item() == 40.0


def test_percentile_single_batch_matches_torch_quantile():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 1000, 37, generator=g, dtype=torch.float64)
    for p in (0.5, 0.999, DEFAULT_PERCENTILE, 1.0):
        obs = PercentileObserver(NAME, percentile=p)
        obs.observe(x)
        ref = torch.quantile(x.abs().flatten(), p).item()
        got = obs.batch_quantile(x)
        print(f"percentile {p}: ours {got!r} torch.quantile {ref!r} diff {abs(got - ref):.2e}")
        assert abs(got - ref) <= 1e-12 * ref
        assert obs.amax().item() == torch.tensor(got, dtype=torch.float32).item()


def test_percentile_ema_follows_official_update():
    # official: w_max = q_0; then w_max = w_max + sigma * (q_i - w_max), sigma = 0.01, q_i the per-batch quantile
    batches = _batches(2)
    obs = PercentileObserver(NAME)
    for b in batches:
        obs.observe(b)
    ref = None
    for b in batches:
        q = torch.quantile(b.double().abs().flatten(), DEFAULT_PERCENTILE).item()
        ref = q if ref is None else ref + DEFAULT_MOMENTUM * (q - ref)
    print(f"EMA amax {obs.amax().item()!r} reference {ref!r}")
    assert obs.amax().item() == pytest.approx(ref, rel=1e-6)
    # momentum 1.0 keeps only the last batch
    last = PercentileObserver(NAME, momentum=1.0)
    for b in batches:
        last.observe(b)
    assert last.amax().item() == pytest.approx(
        torch.quantile(batches[-1].double().abs().flatten(), DEFAULT_PERCENTILE).item(), rel=1e-6)


def test_percentile_clips_planted_outlier():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 512, 768, generator=g)
    x[0, 100, 7] = 1e4
    pct, absmax = PercentileObserver(NAME), AbsMaxObserver(NAME)
    pct.observe(x)
    absmax.observe(x)
    print(f"percentile amax {pct.amax().item():.4f}, abs max {absmax.amax().item():.1f}")
    assert absmax.amax().item() == 1e4
    assert pct.amax().item() < 10.0  # |N(0,1)| tail at 0.99999 is ~4.4, far below the outlier


def test_observers_deterministic_bit_identical():
    def run(cls, **kw):
        obs = cls(NAME, **kw)
        for b in _batches(4, n=8, shape=(2, 257, 130)):
            obs.observe(b)
        return obs.amax()

    for cls in (AbsMaxObserver, PercentileObserver):
        a, b = run(cls), run(cls)
        print(f"{cls.__name__}: run1 {a.item()!r} run2 {b.item()!r}")
        assert torch.equal(a, b)
    # order matters for the EMA (documented): reversing the batches gives another amax
    obs = PercentileObserver(NAME)
    for b in reversed(_batches(4, n=8, shape=(2, 257, 130))):
        obs.observe(b)
    assert obs.amax().item() != run(PercentileObserver).item()


@pytest.mark.parametrize("cls", [AbsMaxObserver, PercentileObserver])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_raises_with_name(cls, bad):
    obs = cls(NAME)
    obs.observe(torch.randn(4, 8))
    x = torch.randn(4, 8)
    x[2, 3] = bad
    with pytest.raises(ValueError, match=r"layers\.3\.mixer\.x_proj\.input"):
        obs.observe(x)
    x16 = x.to(torch.float16)
    with pytest.raises(ValueError, match="non-finite"):
        obs.observe(x16)


@pytest.mark.parametrize("cls", [AbsMaxObserver, PercentileObserver])
def test_amax_before_observe_raises(cls):
    obs = cls(NAME)
    with pytest.raises(RuntimeError, match=r"layers\.3\.mixer\.x_proj\.input.*before any observe"):
        obs.amax()


@pytest.mark.parametrize("cls", [AbsMaxObserver, PercentileObserver])
def test_empty_and_integer_inputs_rejected(cls):
    obs = cls(NAME)
    with pytest.raises(ValueError, match="empty"):
        obs.observe(torch.empty(0, 16))
    with pytest.raises(TypeError):
        obs.observe(torch.ones(3, dtype=torch.int8))


def test_percentile_arguments_validated():
    with pytest.raises(ValueError, match="fraction"):
        PercentileObserver(NAME, percentile=99.999)
    with pytest.raises(ValueError, match="fraction"):
        PercentileObserver(NAME, percentile=0.0)
    with pytest.raises(ValueError, match="momentum"):
        PercentileObserver(NAME, momentum=0.0)


def test_half_precision_inputs():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 64, 32, generator=g)
    for dtype in (torch.float16, torch.bfloat16):
        xd = x.to(dtype)
        a, p = AbsMaxObserver(NAME), PercentileObserver(NAME, percentile=0.99)
        a.observe(xd)
        p.observe(xd)
        ref = torch.quantile(xd.double().abs().flatten(), 0.99).item()
        print(f"{dtype}: absmax {a.amax().item()} percentile {p.amax().item()} ref {ref}")
        assert a.amax().item() == xd.abs().max().float().item()
        assert p.amax().item() == pytest.approx(ref, rel=1e-6)
