"""Tokenizer loading: the model folder's tokenizer.json, or an explicit ``--tokenizer`` (mamba_ssm ships none)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge_quamba.errors import CheckpointError, named
from edge_quamba.kinds import TOKENIZER
from edge_quamba.paths import require_regular_file


@dataclass
class TextTokenizer:
    """A thin wrapper over a ``tokenizers.Tokenizer`` with the ids generation needs.

    eos_token_id: the id that ends generation (from config.json when it says, else the tokenizer's own).
    """

    backend: object  # tokenizers.Tokenizer
    eos_token_id: int | None
    source: str

    def encode(self, text: str) -> list[int]:
        return self.backend.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.backend.decode(ids, skip_special_tokens=True)

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)


MAX_VOCAB_PADDING = 128
"""Embedding rows a model may have beyond its tokenizer's vocabulary: checkpoints round the vocabulary up to a
multiple of 8 to 128 rows (mamba_ssm's pad_vocab_size_multiple; e.g. 50277 tokens in 50280 rows). A tokenizer that
leaves more rows unused is taken for another model's."""


def _tokenizer_file(spec: Path, where: str = "") -> Path | None:
    """``spec`` or the tokenizer.json in it; None when there is none; a FIFO, device, ... in its place is a
    one-line CheckpointError that says what it is (``where`` prefixes it)."""
    file = spec / TOKENIZER if spec.is_dir() else spec
    if not file.exists() and not file.is_symlink():
        return None
    return require_regular_file(file, where.removesuffix(": ") if where and file == spec else f"{where}{file}",
                                CheckpointError)


def load_tokenizer(model_dir: Path, override: str | None = None, eos_token_id: int | None = None, *,
                   model_vocab_size: int | None = None, option: str = "--tokenizer") -> TextTokenizer:
    """The tokenizer for ``model_dir``: ``override`` (a tokenizer.json, a folder holding one, or a hub id) wins.

    ``eos_token_id`` (from config.json) is used when given; otherwise the tokenizer's ``<|endoftext|>``/``</s>``.
    ``model_vocab_size`` (the embedding rows), when given, is checked against the tokenizer's vocabulary (see
    :data:`MAX_VOCAB_PADDING`). Errors about an override name ``option`` (the flag the user typed).
    """
    from tokenizers import Tokenizer

    where = f"{named(option, override)}: " if override is not None else ""
    spec = override or str(model_dir)
    file = _tokenizer_file(Path(spec).expanduser(), where)
    if file is None and override is not None and not Path(override).expanduser().exists():
        from edge_quamba.models.locate import download_from_hub, looks_like_hub_id

        if not looks_like_hub_id(override):
            raise CheckpointError(f"{where}no such file or folder")
        file = _tokenizer_file(download_from_hub(override, option))
    if file is None:
        hint = "" if override else " (mamba_ssm checkpoints ship none: pass --tokenizer FILE_OR_HUB_ID)"
        raise CheckpointError(f"{where}no tokenizer.json in {spec}{hint}")
    try:
        backend = Tokenizer.from_file(str(file))
    except Exception as exc:  # tokenizers raises a bare Exception for malformed files
        detail = " ".join(str(exc).split())[:200]
        raise CheckpointError(f"{where}{file} is not a readable tokenizer.json: {detail}") from None
    if eos_token_id is None:
        for token in ("<|endoftext|>", "</s>", "<eos>"):
            eos_token_id = backend.token_to_id(token)
            if eos_token_id is not None:
                break
    tokenizer = TextTokenizer(backend=backend, eos_token_id=eos_token_id, source=str(file))
    if model_vocab_size is not None:
        check_vocab(tokenizer, model_vocab_size, where or f"{file}: ")
    return tokenizer


def check_vocab(tokenizer: TextTokenizer, model_vocab_size: int, where: str) -> None:
    """A tokenizer whose ids run past the embedding (too big) or leave many rows unused (too small) belongs to
    another model: one-line CheckpointError. ``where`` prefixes the message (the flag or the file)."""
    size = tokenizer.vocab_size
    if size > model_vocab_size:
        raise CheckpointError(f"{where}the tokenizer has {size} tokens but the model's embedding has only "
                              f"{model_vocab_size} rows: it is not this model's tokenizer")
    if size <= model_vocab_size - MAX_VOCAB_PADDING:
        raise CheckpointError(f"{where}the tokenizer has {size} tokens but the model's embedding has "
                              f"{model_vocab_size} rows: it is not this model's tokenizer")
    eos = tokenizer.eos_token_id
    if eos is not None and eos >= model_vocab_size:
        raise CheckpointError(f"{where}eos token id {eos} is outside the model's {model_vocab_size} embedding rows")
