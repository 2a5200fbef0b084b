"""The generation loop: prefill the prompt once, then decode one token at a time from the explicit states.

Two ways to choose each token, the same tokens either way:
    host     every backend: the logits come to the host and ``sampling.sample_next`` chooses (greedy, or seeded
             temperature / top-k / top-p sampling: a seed gives the same tokens with every backend).
    device   greedy only, on a backend that offers it (``device_greedy``; ``--backend cuda``): the argmax is taken on
             the device inside the decode step and feeds the next step there; the host reads each id from pinned
             memory and enqueues step t + 1 before it reads token t, so its streaming and stop checks overlap the
             device's work (a step past EOS or a stop may be computed, never returned).
:func:`device_greedy_decoder` picks: the device path for greedy generation on a backend that offers it
(:data:`DEVICE_GREEDY_BY_DEFAULT`), the host path otherwise or when told (``device_greedy=False``;
``benchmarks/bench_latency.py --token-choice`` times both); asked for where it cannot run (``device_greedy=True``), a
one-line error says why. Measured on an H100 (benchmarks/results/latency_quamba2_h100_p1.json): the host's time per
token outside the decode graph falls from 0.1-0.5 ms to 0.003-0.011 ms.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

from edge_quamba.errors import BackendUnavailableError, InputError
from edge_quamba.models.tokenizer import TextTokenizer
from edge_quamba.runtime.backends import Backend, DeviceGreedy
from edge_quamba.runtime.sampling import SamplingConfig, sample_next


@dataclass
class GenerationResult:
    """What one ``run`` produced. Times are wall-clock milliseconds on the host.

    ttft_ms: prompt submitted -> first new token chosen (prefill + one sampling).
    tpot_ms: mean time per new token after the first (decode steps); None when fewer than two tokens came out.
    stop_reason: "max_new_tokens", "eos", or what :func:`generate`'s ``should_stop`` returned.
    token_choice: "host" (``sample_next`` on the host) or "device" (greedy on the backend's device).
    """

    prompt_tokens: list[int]
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    stop_reason: str = "max_new_tokens"
    token_choice: str = "host"


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


DEVICE_GREEDY_BY_DEFAULT = True
"""Whether greedy generation on a backend that offers it chooses tokens on the device when not told
(``device_greedy=None``): ``run``, ``bench`` and ``serve`` do (tests/test_device_greedy.py's cuda tests passed on an
H100, 2026-12-07, benchmarks/results/cuda_tests_h100.txt)."""


def device_greedy_decoder(backend: Backend, sampling: SamplingConfig, usable_vocab: int | None = None,
                          requested: bool | None = None) -> DeviceGreedy | None:
    """The backend's on-device greedy decoder when generation should choose tokens there, else None (host path).

    requested: None follows :data:`DEVICE_GREEDY_BY_DEFAULT` (when on: used where sampling is greedy, temperature 0,
    and the backend offers ``device_greedy``); False never; True requires it: a one-line InputError (sampling is not
    greedy) or BackendUnavailableError (the backend has none) says why it cannot run. Getting the decoder may capture
    a CUDA graph: call this before timing."""
    if requested is False or (requested is None and not DEVICE_GREEDY_BY_DEFAULT):
        return None
    if sampling.temperature != 0:
        if requested:
            raise InputError(f"greedy decoding on the device needs --temperature 0, not {sampling.temperature}: "
                             f"sampled tokens are drawn on the host from the seeded generator, the same for every "
                             f"backend")
        return None
    factory = getattr(backend, "device_greedy", None)
    if factory is None:
        if requested:
            raise BackendUnavailableError(f"--backend {backend.name} has no greedy decoding on the device (only "
                                          f"--backend cuda has): its tokens are chosen on the host")
        return None
    return factory(usable_vocab)


def host_tokens(backend: Backend, prompt_ids: list[int], max_new_tokens: int, sampling: SamplingConfig,
                usable_vocab: int) -> Iterator[int]:
    """Tokens chosen on the host: prefill, then per token ``sample_next`` on the logits and, when the consumer asks
    for the next token, one decode step."""
    generator = sampling.generator()
    logits, states = backend.prefill(prompt_ids)
    for index in range(max_new_tokens):
        token = sample_next(logits[:usable_vocab], sampling, generator)
        yield token
        if index + 1 < max_new_tokens:
            logits, states = backend.decode(token, states)


def device_greedy_tokens(decoder: DeviceGreedy, prompt_ids: list[int], max_new_tokens: int) -> Iterator[int]:
    """Greedy tokens chosen on the device: step t + 1 is enqueued (it reads token t on the device) before token t is
    read back, so the consumer's work on token t overlaps step t + 1. A consumer that stops early leaves at most that
    one step computed and unread."""
    pending, states = decoder.prefill(prompt_ids)
    for index in range(max_new_tokens):
        following = decoder.decode(states) if index + 1 < max_new_tokens else None
        yield pending.result()
        pending = following


def generate(
    backend: Backend,
    tokenizer: TextTokenizer,
    prompt_ids: list[int],
    max_new_tokens: int,
    sampling: SamplingConfig,
    emit: Callable[[str], None] | None = None,
    should_stop: Callable[[], str | None] | None = None,
    device_greedy: bool | None = None,
) -> GenerationResult:
    """Prefill ``prompt_ids``, then sample up to ``max_new_tokens`` tokens, stopping at EOS (which is kept in tokens).

    should_stop: called after each new token that is not EOS (once its text was emitted); a string it returns ends
    generation there and becomes ``stop_reason`` (the server's stop sequences, cancellation and deadline).
    device_greedy: where greedy tokens are chosen (:func:`device_greedy_decoder`; the module docstring)."""
    if max_new_tokens < 1:
        raise InputError(f"--max-new-tokens {max_new_tokens} must be >= 1")
    result = GenerationResult(prompt_tokens=list(prompt_ids))
    streamer = TextStreamer(tokenizer, emit)
    usable_vocab = tokenizer.vocab_size  # rows past the tokenizer's vocabulary are padding, never chosen
    decoder = device_greedy_decoder(backend, sampling, usable_vocab, device_greedy)

    start = time.perf_counter()
    if decoder is not None:
        result.token_choice = "device"
        tokens = device_greedy_tokens(decoder, prompt_ids, max_new_tokens)
    else:
        tokens = host_tokens(backend, prompt_ids, max_new_tokens, sampling, usable_vocab)
    decode_start = None
    for index, token in enumerate(tokens):
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
    tokens.close()
    end = time.perf_counter()
    if len(result.tokens) > 1:
        result.tpot_ms = (end - decode_start) * 1e3 / (len(result.tokens) - 1)
    streamer.update([t for t in result.tokens if t != tokenizer.eos_token_id], final=True)
    result.text = streamer.text
    return result
