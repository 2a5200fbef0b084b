"""Next-token choice: greedy (temperature 0), or temperature / top-k / top-p sampling from a seeded generator."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from edge_quamba.errors import InputError


@dataclass(frozen=True)
class SamplingConfig:
    """temperature 0 means greedy; top_k 0 and top_p 1.0 disable those filters."""

    temperature: float = 0.8
    top_k: int = 50
    top_p: float = 0.95
    seed: int | None = None

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise InputError(f"--temperature {self.temperature} must be >= 0")
        if self.top_k < 0:
            raise InputError(f"--top-k {self.top_k} must be >= 0")
        if not 0 < self.top_p <= 1:
            raise InputError(f"--top-p {self.top_p} must be in (0, 1]")

    def generator(self) -> torch.Generator:
        gen = torch.Generator()
        gen.manual_seed(self.seed if self.seed is not None else torch.seed())
        return gen


def sample_next(logits: Tensor, config: SamplingConfig, generator: torch.Generator) -> int:
    """logits: (v,) float on any device -> the chosen token id.

    Greedy picks on the logits' device (one int comes back); sampling moves the logits to the host, where the
    seeded CPU generator lives, so a seed gives the same choices from the same logits with every backend."""
    if config.temperature == 0:
        return int(torch.argmax(logits))
    logits = logits.float().cpu()
    logits = logits / config.temperature
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
