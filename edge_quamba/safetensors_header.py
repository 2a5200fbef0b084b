"""A safetensors file's header, read without torch: tensor names, shapes and dtypes, and the byte size they imply.

The format (huggingface/safetensors, docs "Format"): 8 bytes, a little-endian u64 N; N bytes of UTF-8 JSON mapping each
tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets into the data that follows; an optional
``"__metadata__"`` entry of strings); then the data, every byte of which belongs to exactly one tensor. So a file's size
is known from its first 8 + N bytes: 8 + N + the largest end offset. :func:`read_header` checks that, and that each
tensor's byte range is its shape times its dtype's size, before a single tensor byte is read or hashed: a truncated
file, one with bytes appended, or one whose header lies about its tensors is a one-line CheckpointError at once,
whatever its size (the opener, :mod:`edge_quamba.folders`, runs this before any sha256).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from edge_quamba.errors import CheckpointError

TensorInfo = tuple[tuple[int, ...], str]
"""(shape, safetensors dtype name such as "F16" or "I8") of one tensor, read from a file header."""

DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
               "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8}
"""Bytes per element of each safetensors dtype that a dense tensor can have."""
MAX_HEADER_BYTES = 100 << 20
"""The safetensors library's own limit on N (100 MB); a larger claim is not a safetensors file."""


def read_header(file: Path) -> dict[str, TensorInfo]:
    """Names -> (shape, dtype) from ``file``'s header, after checking that the header describes exactly the bytes the
    file holds. Reads at most 8 + N bytes."""
    try:
        size = os.stat(file).st_size
        with open(file, "rb") as handle:
            head = handle.read(8)
            length = int.from_bytes(head, "little") if len(head) == 8 else None
            if length is None or length > min(MAX_HEADER_BYTES, size - 8):
                raise CheckpointError(f"{file} is not a safetensors file (its first 8 bytes do not give the length of "
                                      f"a header inside the file's {size} bytes)")
            raw = handle.read(length)
    except OSError as exc:
        raise CheckpointError(f"{file} cannot be read: {exc.strerror or exc}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CheckpointError(f"{file} is not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{file} is not a safetensors file (its header is not a JSON object)")
    infos: dict[str, TensorInfo] = {}
    end_of_data = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        shape, dtype, offsets = _entry(file, name, entry)
        begin, end = offsets
        if end - begin != math.prod(shape) * DTYPE_BYTES[dtype]:
            raise CheckpointError(f"{file}: the header gives tensor {name} {end - begin} bytes, its shape {shape} "
                                  f"and dtype {dtype} need {math.prod(shape) * DTYPE_BYTES[dtype]}")
        infos[name] = (shape, dtype)
        end_of_data = max(end_of_data, end)
    expected = 8 + length + end_of_data
    if size != expected:
        what = "is truncated" if size < expected else "has bytes after its last tensor"
        raise CheckpointError(f"{file} {what}: its header describes {expected} bytes, the file holds {size}")
    return infos


def _entry(file: Path, name: str, entry) -> tuple[tuple[int, ...], str, tuple[int, int]]:
    """(shape, dtype, (begin, end)) of one header entry, each checked to be of the right JSON type and range."""
    ok = isinstance(entry, dict) and entry.get("dtype") in DTYPE_BYTES
    shape, offsets = (entry.get("shape"), entry.get("data_offsets")) if ok else (None, None)
    ok = ok and isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)
    ok = ok and isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
    if not ok or not 0 <= offsets[0] <= offsets[1]:
        raise CheckpointError(f"{file}: the header entry of tensor {name!r} is not a safetensors tensor description")
    return tuple(shape), entry["dtype"], (offsets[0], offsets[1])
