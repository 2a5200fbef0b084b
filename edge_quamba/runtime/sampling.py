"""Next-token choice: greedy (temperature 0), or temperature / top-k / top-p sampling from a seeded generator.

One sampler for every backend, in numpy (no torch: ``--backend tensorrt`` runs without PyTorch). The logits of any
backend (a torch tensor on any device, or a numpy array) are copied to the host as float64 first, so a seed gives
the same choices from the same logits with every backend.

Numerics: logits are shifted so that their maximum is 0 and divided by the temperature in float64, so the scaled
logits are <= 0 and finite or -inf: a temperature as small as 1e-45 (or one float64 denormal) gives greedy choice
among the maxima, never Inf - Inf or 0 / 0. Logits a model overflowed to +Inf are the maxima (chosen uniformly among
themselves); NaN logits, or no finite choice at all, are a one-line NumericsError: the model's numbers are broken
and no token is the right one.

Randomness: ``SamplingConfig.generator()`` is ``numpy.random.default_rng(seed)`` (PCG64; OS entropy when the seed
is None). Each sampled token draws ONE uniform u in [0, 1) from it and takes the first token, in vocabulary order,
whose cumulative probability exceeds u times the total (inverse CDF), so a run is reproducible from its seed and
the logits alone. Greedy choice draws nothing (the first index of the maximum).

Greedy choice on the device (``--backend cuda``, :mod:`edge_quamba.runtime.generate`'s ``device_greedy``) makes the
same choice without copying the logits here: the first index of the maximum, NaN or all -Inf a NumericsError
(:func:`check_greedy_maximum`). Sampling (temperature > 0) always runs here, for every backend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_quamba.errors import EdgeQuambaError, InputError
from edge_quamba.runtime import SEED_MAX


class NumericsError(EdgeQuambaError):
    """The model produced logits no token can be chosen from (NaN, or all -Inf)."""


@dataclass(frozen=True)
class SamplingConfig:
    """temperature 0 means greedy; top_k 0 and top_p 1.0 disable those filters."""

    temperature: float = 0.8
    top_k: int = 50
    top_p: float = 0.95
    seed: int | None = None

    def __post_init__(self) -> None:
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise InputError(f"--temperature {self.temperature} must be a finite number >= 0")
        if self.top_k < 0:
            raise InputError(f"--top-k {self.top_k} must be >= 0")
        if not 0 < self.top_p <= 1:
            raise InputError(f"--top-p {self.top_p} must be in (0, 1]")
        if self.seed is not None and not 0 <= self.seed <= SEED_MAX:
            raise InputError(f"--seed {self.seed} must be between 0 and 2**64-1")

    def generator(self) -> np.random.Generator:
        return np.random.default_rng(self.seed)


GREEDY = SamplingConfig(temperature=0.0)


def host_logits(logits: Any) -> np.ndarray:
    """(v,) logits of any backend as a float64 numpy array on the host: a torch tensor (any device, any float dtype)
    through ``.detach().float().cpu()`` (torch is never imported here), anything else through numpy."""
    if hasattr(logits, "detach"):
        logits = logits.detach().float().cpu().numpy()
    return np.asarray(logits, dtype=np.float64).reshape(-1)


def _softmax(x: np.ndarray) -> np.ndarray:
    """Softmax of float64 scores whose maximum is finite (entries may be -inf)."""
    e = np.exp(x - x.max())
    return e / e.sum()


def check_greedy_maximum(top: float) -> None:
    """The maximum logit a device's greedy choice found -> NumericsError when no token can be chosen, as
    :func:`sample_next` decides it (a NaN anywhere makes the device's maximum NaN; all -Inf leaves -Inf)."""
    if math.isnan(top):
        raise NumericsError("the model produced NaN logits (found by the greedy choice on the device): its "
                            "activations overflow; the checkpoint cannot be run at this input")
    if top == -math.inf:
        raise NumericsError("the model produced -Inf for every token: no token can be chosen")


def sample_next(logits: Any, config: SamplingConfig, generator: np.random.Generator | None) -> int:
    """logits: (v,) float on any device -> the chosen token id (see the module docstring for the numerics and the
    random draw); ``generator`` is used only when sampling (None is fine for greedy)."""
    logits = host_logits(logits)
    nan = np.isnan(logits)
    if nan.any():
        raise NumericsError(f"the model produced NaN logits ({int(nan.sum())} of {logits.size}): "
                            f"its activations overflow; the checkpoint cannot be run at this input")
    overflowed = np.isposinf(logits)
    if overflowed.any():  # +Inf: the only candidates, equally likely
        logits = np.where(overflowed, 0.0, -np.inf)
    top = logits.max()
    if np.isneginf(top):
        raise NumericsError("the model produced -Inf for every token: no token can be chosen")
    if config.temperature == 0:
        return int(np.argmax(logits))
    with np.errstate(over="ignore"):  # <= 0 whatever the temperature: a tiny one sends all but the maxima to -inf
        logits = (logits - top) / config.temperature
    if 0 < config.top_k < logits.size:
        kth = np.partition(logits, logits.size - config.top_k)[logits.size - config.top_k]  # k-th largest
        logits = np.where(logits < kth, -np.inf, logits)  # ties with the k-th are kept
    if config.top_p < 1.0:
        order = np.argsort(-logits, kind="stable")
        probs = _softmax(logits[order])
        # Drop a token when the tokens ranked above it already reach top_p (the first token is always kept).
        drop = (np.cumsum(probs) - probs) >= config.top_p
        logits = logits.copy()
        logits[order[drop]] = -np.inf
    probs = _softmax(logits)
    cumulative = np.cumsum(probs)
    u = (generator if generator is not None else np.random.default_rng()).random()
    index = int(np.searchsorted(cumulative, u * cumulative[-1], side="right"))
    return min(index, int(np.flatnonzero(probs)[-1]))  # u * total rounded up to the total: the last possible token
