"""Tokenizer loading: the model folder's tokenizer.json, or an explicit ``--tokenizer`` (mamba_ssm ships none)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge_quamba.errors import CheckpointError


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


def _tokenizer_file(spec: Path) -> Path | None:
    if spec.is_file():
        return spec
    if (spec / "tokenizer.json").is_file():
        return spec / "tokenizer.json"
    return None


def load_tokenizer(model_dir: Path, override: str | None = None, eos_token_id: int | None = None) -> TextTokenizer:
    """The tokenizer for ``model_dir``: ``override`` (a tokenizer.json, a folder holding one, or a hub id) wins.

    ``eos_token_id`` (from config.json) is used when given; otherwise the tokenizer's ``<|endoftext|>``/``</s>``.
    """
    from tokenizers import Tokenizer

    spec = override or str(model_dir)
    file = _tokenizer_file(Path(spec).expanduser())
    if file is None and override is not None and not Path(override).exists():
        from edge_quamba.models.loading import download_from_hub

        file = _tokenizer_file(download_from_hub(override))
    if file is None:
        hint = "" if override else " (mamba_ssm checkpoints ship none: pass --tokenizer FILE_OR_HUB_ID)"
        raise CheckpointError(f"no tokenizer.json in {spec}{hint}")
    try:
        backend = Tokenizer.from_file(str(file))
    except Exception as exc:  # tokenizers raises a bare Exception for malformed files
        raise CheckpointError(f"{file} is not a readable tokenizer.json: {exc}") from None
    if eos_token_id is None:
        for token in ("<|endoftext|>", "</s>", "<eos>"):
            eos_token_id = backend.token_to_id(token)
            if eos_token_id is not None:
                break
    return TextTokenizer(backend=backend, eos_token_id=eos_token_id, source=str(file))
