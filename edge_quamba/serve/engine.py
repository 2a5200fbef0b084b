"""One request's generation, run in the scheduler's worker thread.

It is :func:`edge_quamba.runtime.generate.generate`, the loop `edge-quamba run` uses (prefill once, decode token by
token from explicit states, seeded sampling), given three more reasons to stop through its ``should_stop`` hook,
checked after every token: a stop sequence appeared in the text (:mod:`edge_quamba.serve.stops`), the job was
cancelled (client gone, shutdown), or the request's deadline passed (--request-timeout).

finish_reason, as OpenAI's clients read it: "stop" when the model wrote EOS or a stop sequence; "length" when
anything else cut the text short: max_tokens, the request timeout, or shutdown.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from edge_quamba.runtime.generate import generate
from edge_quamba.serve.scheduler import Job, Piece
from edge_quamba.serve.stops import StopMatcher


@dataclass(frozen=True)
class Outcome:
    """What the handler answers with. first_token_at: time.monotonic() when the first token was chosen;
    tpot_s: mean seconds per token after the first (None with fewer than two)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    stop_reason: str
    first_token_at: float
    tpot_s: float | None


class Engine:
    """A backend and its tokenizer; calling it runs one job (a GenerationRequest as payload) to its end."""

    def __init__(self, backend, tokenizer):
        self.backend, self.tokenizer = backend, tokenizer

    def __call__(self, job: Job) -> Outcome:
        request = job.payload
        matcher = StopMatcher(request.stop)
        first_token_at: float | None = None

        def emit(piece: str) -> None:
            text = matcher.feed(piece)
            if text:
                job.post(Piece(text))

        def should_stop() -> str | None:
            nonlocal first_token_at
            first_token_at = first_token_at or time.monotonic()
            if matcher.stopped:
                return "stop_sequence"
            if job.cancelled.is_set():
                return "cancelled"
            if time.monotonic() >= job.deadline:
                return "timeout"
            return None

        result = generate(self.backend, self.tokenizer, request.prompt_ids, request.max_tokens, request.sampling,
                          emit=emit, should_stop=should_stop)
        tail = matcher.flush()
        if tail:
            job.post(Piece(tail))
        stopped = matcher.stopped or result.stop_reason == "eos"
        return Outcome(text=matcher.text, prompt_tokens=len(request.prompt_ids),
                       completion_tokens=len(result.tokens), finish_reason="stop" if stopped else "length",
                       stop_reason="stop_sequence" if matcher.stopped else result.stop_reason,
                       first_token_at=first_token_at or time.monotonic(),
                       tpot_s=None if result.tpot_ms is None else result.tpot_ms / 1e3)
