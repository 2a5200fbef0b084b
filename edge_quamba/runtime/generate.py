"""The generation loop: prefill the prompt once, then decode one token at a time from the explicit states."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from edge_quamba.errors import InputError
from edge_quamba.models.tokenizer import TextTokenizer
from edge_quamba.runtime.backends import Backend
from edge_quamba.runtime.sampling import SamplingConfig, sample_next


@dataclass
class GenerationResult:
    """What one ``run`` produced. Times are wall-clock milliseconds on the host.

    ttft_ms: prompt submitted -> first new token chosen (prefill + one sampling).
    tpot_ms: mean time per new token after the first (decode steps); None when fewer than two tokens came out.
    stop_reason: "max_new_tokens", "eos", or what :func:`generate`'s ``should_stop`` returned.
    """

    prompt_tokens: list[int]
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    stop_reason: str = "max_new_tokens"


class TextStreamer:
    """Turns a growing list of token ids into text pieces, holding back incomplete UTF-8 sequences."""

    def __init__(self, tokenizer: TextTokenizer, emit: Callable[[str], None] | None):
        self.tokenizer, self.emit, self.text = tokenizer, emit, ""

    def update(self, ids: list[int], final: bool = False) -> None:
        text = self.tokenizer.decode(ids)
        if text.endswith("\ufffd") and not final:
            return  # a multi-byte character is still being spelled out by byte tokens
        if self.emit is not None and len(text) > len(self.text) and text.startswith(self.text):
            self.emit(text[len(self.text):])
        self.text = text


def encode_prompt(tokenizer: TextTokenizer, prompt: str, max_prompt_tokens: int) -> list[int]:
    ids = tokenizer.encode(prompt)
    if not ids:
        raise InputError("the prompt is empty (it encodes to no tokens)")
    if len(ids) > max_prompt_tokens:
        raise InputError(f"the prompt is {len(ids)} tokens long; the limit is {max_prompt_tokens} (--max-prompt-tokens)")
    return ids


def generate(
    backend: Backend,
    tokenizer: TextTokenizer,
    prompt_ids: list[int],
    max_new_tokens: int,
    sampling: SamplingConfig,
    emit: Callable[[str], None] | None = None,
    should_stop: Callable[[], str | None] | None = None,
) -> GenerationResult:
    """Prefill ``prompt_ids``, then sample up to ``max_new_tokens`` tokens, stopping at EOS (which is kept in tokens).

    should_stop: called after each new token that is not EOS (once its text was emitted); a string it returns ends
    generation there and becomes ``stop_reason`` (the server's stop sequences, cancellation and deadline)."""
    if max_new_tokens < 1:
        raise InputError(f"--max-new-tokens {max_new_tokens} must be >= 1")
    generator = sampling.generator()
    result = GenerationResult(prompt_tokens=list(prompt_ids))
    streamer = TextStreamer(tokenizer, emit)
    usable_vocab = tokenizer.vocab_size  # rows past the tokenizer's vocabulary are padding, never chosen

    start = time.perf_counter()
    logits, states = backend.prefill(prompt_ids)
    decode_start = None
    for index in range(max_new_tokens):
        token = sample_next(logits[:usable_vocab], sampling, generator)
        result.tokens.append(token)
        if index == 0:
            decode_start = time.perf_counter()
            result.ttft_ms = (decode_start - start) * 1e3
        if token == tokenizer.eos_token_id:
            result.stop_reason = "eos"
            break
        streamer.update(result.tokens)
        reason = should_stop() if should_stop is not None else None
        if reason is not None:
            result.stop_reason = reason
            break
        if index + 1 < max_new_tokens:
            logits, states = backend.decode(token, states)
    end = time.perf_counter()
    if len(result.tokens) > 1:
        result.tpot_ms = (end - decode_start) * 1e3 / (len(result.tokens) - 1)
    streamer.update([t for t in result.tokens if t != tokenizer.eos_token_id], final=True)
    result.text = streamer.text
    return result
