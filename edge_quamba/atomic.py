"""Atomic output folders: build in a temporary sibling, then swap it in, so a failure never destroys existing output."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from edge_quamba.errors import InputError


@contextlib.contextmanager
def atomic_output_dir(out: Path):
    """Yield a fresh temporary folder beside ``out``; on success it replaces ``out``, on any error it is deleted.

    An existing ``out`` is only removed after the new folder is complete (renamed aside, then deleted).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"--out {out}: the parent folder {parent} does not exist")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it 0700; the output folder gets the permissions mkdir would give
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=parent))
        old.rmdir()
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
