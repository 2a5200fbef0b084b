"""Next-token choice: greedy (temperature 0), or temperature / top-k / top-p sampling from a seeded generator.

Numerics: logits are shifted so that their maximum is 0 and divided by the temperature in float64, so the scaled
logits are <= 0 and finite or -inf: a temperature as small as 1e-45 (or one float64 denormal) gives greedy choice
among the maxima, never Inf - Inf or 0 / 0. Logits a model overflowed to +Inf are the maxima (chosen uniformly among
themselves); NaN logits, or no finite choice at all, are a one-line NumericsError: the model's numbers are broken
and no token is the right one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

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

    def generator(self) -> torch.Generator:
        gen = torch.Generator()
        gen.manual_seed(self.seed if self.seed is not None else torch.seed())
        return gen


GREEDY = SamplingConfig(temperature=0.0)


def sample_next(logits: Tensor, config: SamplingConfig, generator: torch.Generator | None) -> int:
    """logits: (v,) float on any device -> the chosen token id (see the module docstring for the numerics);
    ``generator`` (a CPU generator) is used only when sampling (None is fine for greedy). The logits move to the
    host first, so a seed gives the same choices from the same logits with every backend."""
    logits = logits.detach().to("cpu")
    if torch.isnan(logits).any():
        raise NumericsError(f"the model produced NaN logits ({int(torch.isnan(logits).sum())} of {logits.numel()}): "
                            f"its activations overflow; the checkpoint cannot be run at this input")
    logits = logits.double()
    overflowed = torch.isposinf(logits)
    if overflowed.any():  # +Inf: the only candidates, equally likely
        logits = torch.zeros_like(logits).masked_fill(~overflowed, float("-inf"))
    top = logits.max()
    if torch.isneginf(top):
        raise NumericsError("the model produced -Inf for every token: no token can be chosen")
    if config.temperature == 0:
        return int(torch.argmax(logits))
    logits = (logits - top) / config.temperature  # <= 0: no overflow, whatever the temperature
    if 0 < config.top_k < logits.numel():
        kth = torch.topk(logits, config.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if config.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
        # Drop a token when the tokens ranked above it already reach top_p (the first token is always kept).
        drop_sorted = (cumulative - torch.softmax(sorted_logits, dim=-1)) >= config.top_p
        logits = logits.masked_fill(drop_sorted.scatter(0, order, drop_sorted), float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))
