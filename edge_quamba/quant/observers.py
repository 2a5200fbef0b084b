"""Calibration observers: see activation batches one at a time, keep O(1) state, and produce an amax.

An observer only measures; turning its amax into a scale is :func:`edge_quamba.quant.primitives.scale_from_amax`.

    obs = PercentileObserver(name="layers.3.mixer.x_proj.input")
    for batch in calibration_batches:       # the same batches in the same order give a bit-identical amax
        obs.observe(activation_of(batch))   # any shape; all elements form one per-tensor statistic
    scale = scale_from_amax(obs.amax())

Both observers reject NaN/Inf (ValueError naming the tensor) and empty tensors, and raise RuntimeError if ``amax()``
is asked for before anything was observed.

Percentile clipping and the official Quamba code
------------------------------------------------
Quamba clips the input of the selective scan (``u``, the SiLU(conv1d) output that feeds ``x_proj`` and the scan) at a
percentile of |u| instead of its maximum, because a few outlier channels would otherwise waste most of the int8 range.
In enyac-group/Quamba (``PerTensorPercentileObserver`` in ``quamba/real_quant/observer.py`` at 624361b, unchanged in
``quamba/observer.py`` at c474646) each ``update`` computes ``torch.quantile(|x|.flatten(), alpha)`` of that one batch
(one calibration sequence of up to 512 tokens: 512 sequences, batch size 1) and folds it into an exponential moving
average, ``w_max <- w_max + sigma * (q_batch - w_max)`` with ``sigma = 0.01``; the first batch initializes ``w_max``.
The default ``alpha`` for Mamba is 0.99999 at 624361b (the first public release, Nov 2024; 0.999 for Jamba);
the later refactor at c474646 uses 0.9995 for both Mamba1 and Mamba2 with a comment to use 0.99999 for small models
such as 130m.

:class:`PercentileObserver` keeps that statistic, so calibrations reproduce the official recipe:

* per batch, the exact quantile of |x| with the same linear interpolation as ``torch.quantile``
  (position ``alpha * (N - 1)`` among the N sorted values), found with ``torch.topk`` instead of ``torch.quantile``,
  which refuses inputs above 2**24 elements and sorts everything; for alpha near 1, topk keeps only the
  ``N - floor(alpha * (N - 1))`` largest values;
* across batches, the same EMA with ``momentum`` (the official ``sigma``) 0.01.

Why not a global percentile over all calibration tokens? An exact one needs every activation (5120 channels x 100k+
tokens is gigabytes per layer); a histogram approximates it and changes the statistic away from the one Quamba was
evaluated with. The per-batch quantile plus EMA needs memory proportional to one batch and is deterministic: the
per-batch quantile is a function of the multiset of values (topk returns the same values whatever the ties), and the
interpolation and the EMA run in Python float64, so the same batches in the same order give a bit-identical amax. Note
what the EMA means: with 512 batches and momentum 0.01 the first batch keeps weight 0.99**511 ~ 0.006 and the last
~100 batches dominate, so the result depends on the batch order (fixed by the calibration manifest). Feed one sequence
per ``observe`` call, as the official code does; the percentile is taken over whatever one call receives.
Differences from the official code: interpolation and EMA in float64 rather than float32 (the official float32
values differ in the last bits); no 2**24-element limit.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from edge_quamba.quant.config import DEFAULT_MOMENTUM, DEFAULT_PERCENTILE


def _abs_float(x: Tensor, name: str) -> tuple[Tensor, float]:
    """|x| flattened to (N,) in float32 (float64 stays float64), and max |x| as a float; rejects NaN, Inf and empty."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        got = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise TypeError(f"{name}: observers expect a floating tensor, got {got}")
    if x.numel() == 0:
        raise ValueError(f"{name}: observed an empty tensor of shape {tuple(x.shape)}")
    a = x.detach()
    if a.dtype != torch.float64:
        a = a.to(torch.float32)
    a = a.abs().reshape(-1)
    m = float(a.amax())  # amax propagates NaN; one device sync per batch
    if not math.isfinite(m):
        bad = "NaN" if math.isnan(m) else "Inf"
        raise ValueError(f"{name}: observed a non-finite value ({bad}) in a tensor of shape {tuple(x.shape)}")
    return a, m


def batch_quantiles(x: Tensor, percentiles: list[float], name: str) -> list[float]:
    """Each ``percentiles`` quantile of |x| over all N elements of one batch, interpolated as torch.quantile does
    (position ``p * (N - 1)`` among the ascending values). x: floating tensor of any shape; percentiles: fractions in
    (0, 1]. Returns Python floats (float64 arithmetic). See :func:`sequence_quantiles`."""
    return sequence_quantiles(x.reshape(1, -1), percentiles, name)[0]


def sequence_quantiles(x: Tensor, percentiles: list[float], name: str) -> list[list[float]]:
    """:func:`batch_quantiles` of each ``x[i]`` (one calibration sequence each, as the official recipe feeds them),
    from ONE topk over the rows of the largest values the lowest percentile needs: one launch and one device sync
    per batch instead of one per sequence and percentile. Each result equals a separate computation (topk's values
    are a function of the row's multiset of values).

    x: floating (b, ...), rows of N elements. Returns b lists, each with one float per percentile.
    """
    a, _ = _abs_float(x, name)  # rejects NaN, Inf and empty for the whole batch
    rows = a.view(x.shape[0], -1)  # (b, N)
    n = rows.shape[1]
    positions = [p * (n - 1) for p in percentiles]  # 0-based positions among ascending values
    lows = [min(int(math.floor(pos)), n - 1) for pos in positions]
    k_max = n - min(lows)  # the lo-th ascending value is the (n - lo)-th largest
    top = torch.topk(rows, k_max, dim=1, largest=True, sorted=True).values.double().cpu()  # (b, k_max) descending
    results = []
    for row in top:
        quantiles = []
        for pos, lo in zip(positions, lows):
            k = n - lo
            if k == 1:
                quantiles.append(float(row[0]))  # the row's max
                continue
            v_lo, v_hi = float(row[k - 1]), float(row[k - 2])  # ascending[lo], ascending[lo + 1]
            quantiles.append(v_lo + (pos - lo) * (v_hi - v_lo))
        results.append(quantiles)
    return results


class AbsMaxObserver:
    """Running max |x| over all observed batches (per tensor).

    name: the tensor's name, used in error messages (e.g. "layers.3.mixer.in_proj.input").
    """

    def __init__(self, name: str):
        self.name = name
        self.num_batches = 0
        self._amax = 0.0

    def observe(self, x: Tensor) -> None:
        """x: floating tensor of any shape (e.g. (b, l, d)); all elements count."""
        _, m = _abs_float(x, self.name)
        self._amax = max(self._amax, m)
        self.num_batches += 1

    def amax(self) -> Tensor:
        """max |x| over every observed element, as a float32 0-dim tensor."""
        if self.num_batches == 0:
            raise RuntimeError(f"{self.name}: amax() called before any observe(); run calibration first")
        return torch.tensor(self._amax, dtype=torch.float32)

    def __repr__(self) -> str:
        return f"AbsMaxObserver(name={self.name!r}, num_batches={self.num_batches})"


class PercentileObserver:
    """EMA over batches of the per-batch ``percentile`` quantile of |x| (Quamba's scan-input clipping).

    percentile: quantile as a fraction in (0, 1], e.g. 0.99999 (not 99.999); 1.0 gives the per-batch max.
    momentum: weight of each new batch in the EMA, in (0, 1]; 1.0 keeps only the last batch.
    name: the tensor's name, used in error messages (e.g. "layers.3.mixer.x_proj.input").
    """

    def __init__(self, name: str, percentile: float = DEFAULT_PERCENTILE, momentum: float = DEFAULT_MOMENTUM):
        if not (0.0 < percentile <= 1.0):
            raise ValueError(f"{name}: percentile must be a fraction in (0, 1] such as 0.99999, got {percentile}")
        if not (0.0 < momentum <= 1.0):
            raise ValueError(f"{name}: momentum must be in (0, 1], got {momentum}")
        self.name = name
        self.percentile = float(percentile)
        self.momentum = float(momentum)
        self.num_batches = 0
        self._amax = 0.0

    def batch_quantile(self, x: Tensor) -> float:
        """The ``percentile`` quantile of |x| over all elements of one batch, interpolated as torch.quantile does.

        x: floating tensor of any shape with N elements. Returns a Python float (computed in float64).
        """
        return batch_quantiles(x, [self.percentile], self.name)[0]

    def observe(self, x: Tensor) -> None:
        """x: floating tensor of any shape, one calibration batch (one sequence in the official recipe)."""
        self.update(self.batch_quantile(x))

    def update(self, q: float) -> None:
        """Fold one batch's quantile ``q`` (:func:`batch_quantiles`) into the EMA; the first batch initializes it."""
        if self.num_batches == 0:
            self._amax = q
        else:
            self._amax = self._amax + self.momentum * (q - self._amax)
        self.num_batches += 1

    def amax(self) -> Tensor:
        """The EMA of per-batch quantiles, as a float32 0-dim tensor."""
        if self.num_batches == 0:
            raise RuntimeError(f"{self.name}: amax() called before any observe(); run calibration first")
        return torch.tensor(self._amax, dtype=torch.float32)

    def __repr__(self) -> str:
        return (f"PercentileObserver(name={self.name!r}, percentile={self.percentile}, momentum={self.momentum}, "
                f"num_batches={self.num_batches})")


class ChannelAbsMaxObserver:
    """Running max |x| per channel (the last axis) over all observed batches: the statistics from which Quamba2
    groups channels (:mod:`edge_quamba.quant.cluster`) and takes its group scales.

    name: the tensor's name, used in error messages.
    """

    def __init__(self, name: str):
        self.name = name
        self.num_batches = 0
        self._amax: Tensor | None = None

    def observe(self, x: Tensor) -> None:
        """x: floating (..., c); every element of a channel counts for that channel."""
        _abs_float(x, self.name)  # the same checks (finite, non-empty) as the per-tensor observers
        batch = x.detach().abs().reshape(-1, x.shape[-1]).amax(0).to(torch.float32)
        self._amax = batch if self._amax is None else torch.maximum(self._amax, batch)
        self.num_batches += 1

    def amax(self) -> Tensor:
        """(c,) float32: max |x| of each channel over every observed element."""
        if self._amax is None:
            raise RuntimeError(f"{self.name}: amax() called before any observe(); run calibration first")
        return self._amax.clone()

    def __repr__(self) -> str:
        return f"ChannelAbsMaxObserver(name={self.name!r}, num_batches={self.num_batches})"
