"""The demo trainer's data (export/recipes/train_demo.py, train_demo_hybrid.py): documents tokenized into one stream
joined by <|endoftext|>, random training windows from a seeded generator, held-out windows in which every token after
the first is a target once, and the held-out loss. A text named *.xz is read xz-compressed (how the corpus travels to
the GPU machine); --tokens-cache keeps the streams between runs, keyed by the sha256 of the tokenizer and texts.
"""

from __future__ import annotations

import lzma
from pathlib import Path

import torch

EOT = "<|endoftext|>"


def read_text(path: Path) -> str:
    """A UTF-8 text file, or an xz-compressed one (name ending .xz: how the corpus travels to the GPU machine)."""
    if path.suffix == ".xz":
        with lzma.open(path, "rt", encoding="utf-8") as handle:
            return handle.read()
    return path.read_text(encoding="utf-8")


def tokenize_documents(tokenizer, path: Path) -> torch.Tensor:
    """Token stream (n,) int64: <|endoftext|> doc_0 <|endoftext|> doc_1 ... <|endoftext|>."""
    eot = tokenizer.token_to_id(EOT)
    documents = read_text(path).rstrip("\n").split("\n\n")
    ids = [eot]
    for encoding in tokenizer.encode_batch(documents, add_special_tokens=False):
        ids.extend(encoding.ids)
        ids.append(eot)
    return torch.tensor(ids, dtype=torch.int64)


def random_windows(stream: torch.Tensor, batch: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """(batch, length) windows starting at seeded random offsets."""
    starts = torch.randint(0, stream.numel() - length, (batch,), generator=generator)
    return torch.stack([stream[s : s + length] for s in starts.tolist()])


def heldout_windows(stream: torch.Tensor, length: int) -> torch.Tensor:
    """(n, length) windows overlapping by one token, so each token after the first is a target exactly once."""
    n = (stream.numel() - 1) // (length - 1)
    return torch.stack([stream[i * (length - 1) : i * (length - 1) + length] for i in range(n)])


@torch.no_grad()
def heldout_loss(model, windows: torch.Tensor, batch: int, device: torch.device, autocast_dtype) -> float:
    """Mean next-token cross-entropy (nats/token) over all windows."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, windows.shape[0], batch):
        ids = windows[i : i + batch].to(device)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = model(input_ids=ids[:, :-1], use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum"
        )
        total += loss.item()
        count += ids[:, 1:].numel()
    model.train(was_training)
    return total / count


def load_streams(args, tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, eval) token streams; with --tokens-cache, read from it when it was made from the same tokenizer and
    texts (sha256 of each), else tokenized and written there (torch.save of int32 tensors; read weights_only)."""
    import hashlib

    key = {name: hashlib.sha256(path.read_bytes()).hexdigest()
           for name, path in (("tokenizer", args.tokenizer), ("train_text", args.train_text),
                              ("eval_text", args.eval_text))}
    cache = args.tokens_cache
    if cache is not None and cache.is_file():
        saved = torch.load(cache, map_location="cpu", weights_only=True)
        if saved.get("key") == key:
            print(f"token streams read from {cache}", flush=True)
            return saved["train"].long(), saved["eval"].long()
        print(f"{cache} was made from other inputs: tokenizing again", flush=True)
    train_stream = tokenize_documents(tokenizer, args.train_text)
    eval_stream = tokenize_documents(tokenizer, args.eval_text)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"key": key, "train": train_stream.int(), "eval": eval_stream.int()}, cache)
        print(f"wrote {cache}", flush=True)
    return train_stream, eval_stream
