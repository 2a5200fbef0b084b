"""File integrity of edge-quamba outputs: streamed sha256 (hashed once per process), and the seal of their JSON.

Every output folder (quantized artifact, export folder, engine folder) describes itself in one JSON file that lists
``files``: each file it wrote (path relative to the folder, "/" separated) -> sha256 of its bytes. The JSON itself
carries ``config_sha256``: the sha256 of its canonical form without that key (:func:`canonical_json`), so an edit
of the JSON (a scale, a knob, a hash) is caught too. Opening a folder checks both, so a changed, swapped, truncated
or missing file is a one-line CheckpointError, never a silently different model. The opener
(:mod:`edge_quamba.folders`) runs the cheap checks (:func:`check_seal`, :func:`check_listed_file`, the weights' sizes
against their headers) on everything before it hashes anything (:func:`check_sha256`).

This is integrity against accidents and naive edits (a swapped tokenizer, a "fixed" config, a half-copied folder),
not a signature: whoever edits a file and recomputes the hashes is not stopped.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from edge_quamba.errors import CheckpointError, ConfigError

SEAL_KEY = "config_sha256"
"""The key of an output JSON that holds the sha256 of the rest of it."""

_CHUNK = 1 << 20
_VERIFIED: dict[tuple, str] = {}
"""(resolved path, device, inode, size, mtime_ns) -> sha256: a file is hashed once per process while unchanged."""


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, streamed in 1 MiB chunks (memory stays flat for multi-GB weights)."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
    digest = _VERIFIED.get(key)
    if digest is None:
        sha = hashlib.sha256()
        with open(path, "rb") as file:
            while chunk := file.read(_CHUNK):
                sha.update(chunk)
        digest = _VERIFIED[key] = sha.hexdigest()
    return digest


def canonical_json(data: dict) -> str:
    """The form the seal hashes: sorted keys, no whitespace, ASCII only (independent of indentation)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def seal(data: dict) -> dict:
    """``data`` plus its ``config_sha256`` (written last by every output writer)."""
    body = {k: v for k, v in data.items() if k != SEAL_KEY}
    return {**body, SEAL_KEY: hashlib.sha256(canonical_json(body).encode("ascii")).hexdigest()}


def check_seal(data: dict, source: Path) -> None:
    """ConfigError unless ``data`` (the JSON read from ``source``) still has the sha256 it was written with."""
    recorded = data.get(SEAL_KEY)
    if not isinstance(recorded, str):
        raise ConfigError(f"{source} has no {SEAL_KEY} (written by an older edge-quamba, or edited); re-create "
                          f"the folder")
    try:
        expected = seal(data)[SEAL_KEY]
    except ValueError as exc:  # NaN / Infinity written into the JSON by hand
        raise ConfigError(f"{source} holds a value JSON cannot represent: {exc}") from None
    if recorded != expected:
        raise ConfigError(f"{source} was edited after edge-quamba wrote it (its {SEAL_KEY} does not match); "
                          f"re-create the folder")


def listed_files(data: dict, source: Path) -> dict[str, str]:
    """The ``files`` map of an output JSON, checked to be relative paths inside the folder with sha256 values."""
    files = data.get("files")
    if not isinstance(files, dict) or not files:
        raise ConfigError(f"{source} does not list its files")
    for name, digest in files.items():
        parts = Path(name).parts
        if not parts or Path(name).is_absolute() or ".." in parts or not isinstance(digest, str):
            raise ConfigError(f"{source} lists an invalid file entry {name!r}")
    return files


def missing_or_what(path: Path) -> str:
    """'is missing', or what the path is instead of a regular file ('is a FIFO (named pipe), not a regular file')."""
    from edge_quamba.paths import what_is

    what = what_is(path)
    return "is missing" if what == "does not exist" else f"{what}, not a regular file"


def check_listed_file(path: Path, source: Path, remedy: str) -> None:
    """CheckpointError unless ``path`` (listed in ``source``) is a regular file: the cheap check, before hashing."""
    if not path.is_file():
        raise CheckpointError(f"{path} {missing_or_what(path)} ({source.name} lists it); {remedy}")


def check_sha256(path: Path, digest: str, source: Path, remedy: str) -> None:
    """CheckpointError unless the bytes of ``path`` have the sha256 ``digest`` that ``source`` records for it."""
    try:
        actual = file_sha256(path)
    except OSError as exc:
        raise CheckpointError(f"{path} cannot be read: {exc.strerror or exc}") from None
    if actual != digest:
        raise CheckpointError(f"{path} does not match the sha256 in {source.name} (changed, swapped or corrupt); "
                              f"{remedy}")
