"""Train the demo model's byte-level BPE tokenizer (vocab 8192) on the train split.

``<|endoftext|>`` is the only special token, id 0; it serves as BOS, EOS and padding. The tokenizer adds no
special tokens on its own (no post-processor): the training recipe puts ``<|endoftext|>`` between documents.
Byte-level, so every UTF-8 string round-trips through encode/decode.

Training runs single-threaded (``RAYON_NUM_THREADS=1``, set before ``tokenizers`` is imported) so the merge order,
and with it tokenizer.json, is byte-identical on every rerun.

Usage::

    python3 export/recipes/train_tokenizer.py --out edge_quamba/assets/demo_model
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
EOT = "<|endoftext|>"


def train_tokenizer(*, train_text: Path, vocab_size: int = 8192, min_frequency: int = 2):
    """Byte-level BPE trained on the documents of `train_text` (separated by blank lines)."""
    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    documents = train_text.read_text(encoding="utf-8").split("\n\n")
    tokenizer.train_from_iterator(documents, trainer=trainer, length=len(documents))
    if tokenizer.token_to_id(EOT) != 0:
        raise RuntimeError(f"{EOT} got id {tokenizer.token_to_id(EOT)}, expected 0")
    if tokenizer.get_vocab_size() != vocab_size:
        raise RuntimeError(f"vocab has {tokenizer.get_vocab_size()} entries, expected {vocab_size}")
    return tokenizer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-text", type=Path, default=REPO_ROOT / ".train_data/train.txt")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "edge_quamba/assets/demo_model")
    parser.add_argument("--vocab-size", type=int, default=8192)
    args = parser.parse_args(argv)
    if not args.train_text.is_file():
        parser.error(f"{args.train_text} not found: run export/recipes/build_corpus.py first")
    tokenizer = train_tokenizer(train_text=args.train_text, vocab_size=args.vocab_size)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "tokenizer.json"
    tokenizer.save(str(path))
    print(f"wrote {path} (vocab {tokenizer.get_vocab_size()}, {EOT} = {tokenizer.token_to_id(EOT)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
