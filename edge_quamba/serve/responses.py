"""OpenAI response objects: a whole (non-streamed) answer, and the chunks of a stream.

A stream is server-sent events, one ``data: {json}`` line and a blank line per chunk, ended by ``data: [DONE]``, as
OpenAI's clients parse it. Completions stream ``text_completion`` objects whose choice carries a text piece; chat
streams ``chat.completion.chunk`` objects whose first delta is ``{"role": "assistant", "content": ""}`` and whose
later deltas carry content. The last choice chunk has an empty piece and the finish_reason; with
``stream_options.include_usage`` one more chunk follows with no choices and the usage counts. An error after the
stream started (the model failed) is sent as a ``data: {"error": {...}}`` event, which OpenAI's clients raise.

Usage counts tokens: prompt_tokens as the model saw them (after the chat template), completion_tokens every token
generated (an EOS included; tokens after a stop sequence's start included: they were computed).
"""

from __future__ import annotations

import json
import time
import uuid

from edge_quamba.serve.engine import Outcome

DONE = "data: [DONE]\n\n"


def sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'), ensure_ascii=False)}\n\n"


def usage(outcome: Outcome) -> dict:
    return {"prompt_tokens": outcome.prompt_tokens, "completion_tokens": outcome.completion_tokens,
            "total_tokens": outcome.prompt_tokens + outcome.completion_tokens}


class _Format:
    """The fields every object of one answer shares (one id for the whole stream)."""

    object = chunk_object = prefix = ""

    def __init__(self, model: str, fingerprint: str):
        self.id = f"{self.prefix}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model, self.fingerprint = model, fingerprint

    def _head(self, object: str) -> dict:
        return {"id": self.id, "object": object, "created": self.created, "model": self.model,
                "system_fingerprint": self.fingerprint}

    def chunk(self, choice: dict | None) -> dict:
        return {**self._head(self.chunk_object), "choices": [] if choice is None else [choice]}

    def usage_chunk(self, outcome: Outcome) -> dict:
        return {**self.chunk(None), "usage": usage(outcome)}


class CompletionFormat(_Format):
    object = chunk_object = "text_completion"
    prefix = "cmpl"

    def full(self, outcome: Outcome) -> dict:
        choice = {"index": 0, "text": outcome.text, "logprobs": None, "finish_reason": outcome.finish_reason}
        return {**self._head(self.object), "choices": [choice], "usage": usage(outcome)}

    def opening(self) -> list[dict]:
        return []

    def piece(self, text: str, finish_reason: str | None = None) -> dict:
        return self.chunk({"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason})

    def closing(self, finish_reason: str) -> dict:
        return self.piece("", finish_reason)


class ChatFormat(_Format):
    object, chunk_object = "chat.completion", "chat.completion.chunk"
    prefix = "chatcmpl"

    def full(self, outcome: Outcome) -> dict:
        choice = {"index": 0, "message": {"role": "assistant", "content": outcome.text}, "logprobs": None,
                  "finish_reason": outcome.finish_reason}
        return {**self._head(self.object), "choices": [choice], "usage": usage(outcome)}

    def _delta(self, delta: dict, finish_reason: str | None = None) -> dict:
        return self.chunk({"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason})

    def opening(self) -> list[dict]:
        return [self._delta({"role": "assistant", "content": ""})]

    def piece(self, text: str) -> dict:
        return self._delta({"content": text})

    def closing(self, finish_reason: str) -> dict:
        return self._delta({}, finish_reason)
