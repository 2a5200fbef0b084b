"""Request bodies of /v1/completions and /v1/chat/completions, validated into one :class:`GenerationRequest`.

Parsing is strict (pydantic strict mode: ``"1"`` is not a number, ``1.0`` is not an integer) and unknown fields are
refused, as OpenAI's API does. Fields OpenAI defines that this server does not implement are accepted only at their
neutral value (``n: 1``, ``logprobs: null``, penalties 0, ...) and refused otherwise, never silently ignored.

Sampling follows OpenAI's defaults: temperature 1, top_p 1 (``temperature: 0`` is greedy); ``top_k`` is an
extension (as in vLLM and llama.cpp), 0 = off. ``seed`` (0 .. 2**64-1) makes sampling reproducible: the same
request gives the same tokens on the same backend. ``max_tokens`` defaults to 16 for completions (OpenAI's default)
and to the server's --max-tokens for chat; a larger value than --max-tokens is refused. At most 4 stop sequences.
A prompt may be a string or token ids, one prompt per request (a batch of prompts is refused).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_quamba.errors import InputError
from edge_quamba.runtime import SEED_MAX
from edge_quamba.runtime.generate import encode_prompt
from edge_quamba.runtime.sampling import SamplingConfig
from edge_quamba.serve.errors import APIError

COMPLETION_DEFAULT_MAX_TOKENS = 16
MAX_STOP_SEQUENCES = 4


@dataclass(frozen=True)
class Limits:
    """What one request may ask for and how long it may take (the serve command's flags)."""

    max_prompt_tokens: int = 4096
    max_tokens: int = 1024
    max_body_bytes: int = 1 << 20
    max_queue: int = 16
    request_timeout_s: float = 300.0
    shutdown_timeout_s: float = 10.0


@dataclass(frozen=True)
class GenerationRequest:
    """One validated request: what the generation loop needs and how to answer."""

    prompt_ids: list[int]
    max_tokens: int
    sampling: SamplingConfig
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class StreamOptions(_Strict):
    include_usage: bool | None = None


class _Sampling(_Strict):
    """What both endpoints share."""

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    seed: int | None = Field(default=None, ge=0, le=SEED_MAX)
    stop: str | list[str] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    user: str | None = None
    # Defined by OpenAI, not implemented here: accepted only at the neutral value (see NEUTRAL).
    n: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | int | None = None


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool | None = None
    best_of: int | None = None
    suffix: str | None = None


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None


class ChatRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    top_logprobs: int | None = None


NEUTRAL = {"n": (None, 1), "presence_penalty": (None, 0), "frequency_penalty": (None, 0), "logit_bias": (None, {}),
           "logprobs": (None, False), "top_logprobs": (None, 0), "echo": (None, False), "best_of": (None, 1),
           "suffix": (None,)}
"""Fields this server does not implement, and the values that mean "not used"."""


def _param(loc: tuple) -> str | None:
    """A pydantic error location as the client's field path: ("messages", 0, "list[TextPart]", 1, "text") ->
    "messages.0.text" (union member tags are dropped)."""
    parts = [str(p) for p in loc if isinstance(p, int) or (p.isidentifier() and p.islower()
                                                          and p not in {"str", "int", "float", "bool", "list"})]
    return ".".join(parts) or None


def parse(model: type[_Strict], body: object) -> _Strict:
    """Validate a decoded JSON body; the first problem becomes a 400 naming the field."""
    if not isinstance(body, dict):
        raise APIError(400, f"the request body must be a JSON object, not {type(body).__name__}")
    try:
        request = model.model_validate(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        param = _param(error["loc"])
        if error["type"] == "missing":
            raise APIError(400, f"missing required parameter: '{param}'", param=param) from None
        if error["type"] == "extra_forbidden":
            raise APIError(400, f"unrecognized request argument supplied: '{param}'", param=param) from None
        raise APIError(400, f"invalid value for '{param}': {error['msg']}", param=param) from None
    for name, neutral in NEUTRAL.items():
        value = getattr(request, name, None)
        if value not in neutral:
            raise APIError(400, f"'{name}' is not supported by this server: leave it out or send "
                           f"{json.dumps(neutral[-1])}", param=name)
    return request


def _stops(request: _Sampling, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    stop = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    if len(stop) > MAX_STOP_SEQUENCES:
        raise APIError(400, f"at most {MAX_STOP_SEQUENCES} stop sequences (got {len(stop)})", param="stop")
    return tuple(stop) + extra


def _max_tokens(value: int | None, default: int, limits: Limits, param: str) -> int:
    value = default if value is None else value
    if value > limits.max_tokens:
        raise APIError(400, f"'{param}' is {value}; this server allows at most {limits.max_tokens} (--max-tokens)",
                       param=param)
    return value


def _sampling(request: _Sampling) -> SamplingConfig:
    return SamplingConfig(temperature=1.0 if request.temperature is None else request.temperature,
                          top_k=request.top_k or 0, top_p=1.0 if request.top_p is None else request.top_p,
                          seed=request.seed)


def _generation(request: _Sampling, prompt_ids: list[int], max_tokens: int, stop: tuple[str, ...]
                ) -> GenerationRequest:
    options = request.stream_options
    if options is not None and not request.stream:
        raise APIError(400, "'stream_options' is only allowed with 'stream': true", param="stream_options")
    return GenerationRequest(prompt_ids=prompt_ids, max_tokens=max_tokens, sampling=_sampling(request), stop=stop,
                             stream=bool(request.stream),
                             include_usage=bool(options is not None and options.include_usage))


def encode_text(tokenizer, text: str, limits: Limits, param: str) -> list[int]:
    try:
        return encode_prompt(tokenizer, text, limits.max_prompt_tokens)
    except InputError as exc:  # empty, or longer than --max-prompt-tokens
        raise APIError(400, str(exc), param=param) from None


def _token_ids(tokenizer, ids: list[int], limits: Limits) -> list[int]:
    if not ids:
        raise APIError(400, "the prompt is empty", param="prompt")
    if len(ids) > limits.max_prompt_tokens:
        raise APIError(400, f"the prompt is {len(ids)} tokens long; the limit is {limits.max_prompt_tokens} "
                       f"(--max-prompt-tokens)", param="prompt")
    bad = [i for i in ids if not 0 <= i < tokenizer.vocab_size]
    if bad:
        raise APIError(400, f"token id {bad[0]} is outside the vocabulary (0 .. {tokenizer.vocab_size - 1})",
                       param="prompt")
    return ids


def completion_request(request: CompletionRequest, tokenizer, limits: Limits) -> GenerationRequest:
    prompt = request.prompt
    if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
        if len(prompt) != 1:
            raise APIError(400, f"one prompt per request (got {len(prompt)})", param="prompt")
        prompt = prompt[0]
    ids = encode_text(tokenizer, prompt, limits, "prompt") if isinstance(prompt, str) \
        else _token_ids(tokenizer, prompt, limits)
    max_tokens = _max_tokens(request.max_tokens, COMPLETION_DEFAULT_MAX_TOKENS, limits, "max_tokens")
    return _generation(request, ids, max_tokens, _stops(request))


def message_dicts(request: ChatRequest) -> list[dict[str, str]]:
    """Messages as the chat template takes them: a list of text parts is joined with newlines."""
    return [{"role": m.role, "content": m.content if isinstance(m.content, str)
             else "\n".join(part.text for part in m.content)} for m in request.messages]


def chat_request(request: ChatRequest, tokenizer, template, limits: Limits) -> GenerationRequest:
    if request.max_tokens is not None and request.max_completion_tokens is not None:
        raise APIError(400, "give 'max_tokens' or 'max_completion_tokens', not both", param="max_tokens")
    asked, param = ((request.max_completion_tokens, "max_completion_tokens") if request.max_tokens is None
                    else (request.max_tokens, "max_tokens"))
    ids = encode_text(tokenizer, template.render(message_dicts(request)), limits, "messages")
    return _generation(request, ids, _max_tokens(asked, limits.max_tokens, limits, param),
                       _stops(request, template.stop))
