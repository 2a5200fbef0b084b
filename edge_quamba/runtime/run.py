"""`edge-quamba run` as a library call, top to bottom: open the model folder once (refusing a backend that cannot run
it before anything is hashed), its tokenizer, the backend built from the opened folder, generate."""

from __future__ import annotations

from typing import Callable

from edge_quamba.folders import load_model_tokenizer, open_model
from edge_quamba.runtime.backends import check_backend, make_backend
from edge_quamba.runtime.generate import GenerationResult, encode_prompt, generate
from edge_quamba.runtime.sampling import SamplingConfig


def run_prompt(
    *,
    model: str | None,
    prompt: str,
    max_new_tokens: int = 64,
    sampling: SamplingConfig = SamplingConfig(),
    backend: str = "ref",
    tokenizer: str | None = None,
    max_prompt_tokens: int = 4096,
    emit: Callable[[str], None] | None = None,
    threads: int | None = None,
) -> GenerationResult:
    """Generate a continuation of ``prompt``; ``emit`` receives text pieces as they are decoded."""
    folder = open_model(model, check=lambda opened: check_backend(backend, opened))
    tok = load_model_tokenizer(folder, tokenizer)
    prompt_ids = encode_prompt(tok, prompt, max_prompt_tokens)
    runner = make_backend(backend, folder, threads=threads)
    return generate(runner, tok, prompt_ids, max_new_tokens, sampling, emit=emit)
