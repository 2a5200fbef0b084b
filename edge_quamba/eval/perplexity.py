"""Held-out perplexity: token-level, non-overlapping windows, any model kind through a backend's batched forward.

Each window of ``seq_len`` tokens starts from the zero state and scores its ``seq_len - 1`` next-token predictions;
windows do not overlap (stride = seq_len), so each token is scored at most once and the first token of every window
is context only. A final window shorter than 2 tokens is dropped. Perplexity = exp(mean negative log-likelihood).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from edge_quamba.errors import InputError
from edge_quamba.folders import load_model_tokenizer, open_model
from edge_quamba.models.tokenizer import TextTokenizer
from edge_quamba.paths import require_regular_file
from edge_quamba.runtime.backends import check_backend, sequence_model
from edge_quamba.runtime.sampling import NumericsError


def read_text(data: str | Path) -> str:
    path = require_regular_file(data, f"--data {data}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not a readable UTF-8 text file: {exc}") from None
    if not text.strip():
        raise InputError(f"{path} holds no text")
    return text


def make_windows(ids: list[int], seq_len: int) -> torch.Tensor:
    """ids -> (windows, seq_len) int64, dropping a last window shorter than seq_len (kept if it is the only one)."""
    if len(ids) < 2:
        raise InputError(f"the evaluation text is {len(ids)} token(s) long; at least 2 are needed")
    if len(ids) < seq_len:
        return torch.tensor([ids], dtype=torch.long)
    usable = len(ids) // seq_len * seq_len
    return torch.tensor(ids[:usable], dtype=torch.long).view(-1, seq_len)


@torch.inference_mode()
def window_nll(model, windows: torch.Tensor, batch_size: int, progress: bool = True) -> tuple[float, int]:
    """Sum of next-token negative log-likelihoods (nats) over all windows, and the count of scored tokens.

    model: ``model(tokens (b, l)) -> (logits (b, l, v), states)``, a reference module or a backend's forward."""
    total, count = 0.0, 0
    for start in tqdm(range(0, windows.shape[0], batch_size), desc="perplexity", unit="batch", disable=not progress,
                      file=None):
        batch = windows[start:start + batch_size].to(model.device)
        logits, _ = model(batch)
        logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
        nll = -logp.gather(-1, batch[:, 1:, None]).squeeze(-1)
        if not torch.isfinite(nll).all():
            raise NumericsError(f"the model's log-likelihoods are NaN or Inf in windows {start}-"
                                f"{start + batch.shape[0] - 1}: its activations overflow; no perplexity to report")
        total += float(nll.double().sum())
        count += nll.numel()
    return total, count


def evaluate_perplexity(
    *,
    model: str | None,
    data: str | Path,
    seq_len: int = 512,
    max_tokens: int | None = None,
    batch_size: int = 8,
    backend: str = "ref",
    tokenizer: str | None = None,
    progress: bool = True,
    threads: int | None = None,
) -> dict:
    """Perplexity of ``model`` on the text file ``data`` with any backend that has a batched forward (ref, ort);
    returns a JSON-ready report."""
    folder = open_model(model, check=lambda opened: check_backend(backend, opened))
    path, kind = folder.path, folder.kind
    tok: TextTokenizer = load_model_tokenizer(folder, tokenizer)
    ids = tok.encode(read_text(data))
    if max_tokens is not None:
        ids = ids[:max_tokens]
    windows = make_windows(ids, seq_len)
    net = sequence_model(backend, folder, threads=threads)
    total, count = window_nll(net, windows, batch_size, progress=progress)
    nll = total / count
    return {
        "model": str(path), "kind": kind, "backend": backend, "data": str(data), "seq_len": seq_len,
        "stride": seq_len, "windows": int(windows.shape[0]), "scored_tokens": count,
        "nll_per_token": nll, "perplexity": math.exp(nll),
    }
