"""What a path is, in words, for one-line errors that say what the user actually passed.

A FIFO, a device or a socket is not "no such file"; a missing path under a regular file is not merely "does not
exist" (the file is not a folder). :func:`what_is` names the kind; :func:`require_regular_file` refuses anything but
a regular file before it is opened (opening a FIFO blocks until a writer comes; a device reads forever).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from edge_quamba.errors import EdgeQuambaError, InputError

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISREG, "a regular file"))


def kind_of(mode: int) -> str:
    """'a folder', 'a FIFO (named pipe)', ... for an ``st_mode``."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def what_is(path: str | Path) -> str:
    """How a path that is not what was wanted should be described: "is a FIFO (named pipe)", "is a folder",
    "does not exist", "does not exist (X is a regular file, not a folder)", "is a symbolic link to a missing
    target", "cannot be read (Permission denied)"."""
    path = Path(path)
    try:
        return f"is {kind_of(os.stat(path).st_mode)}"
    except FileNotFoundError:
        if path.is_symlink():
            return "is a symbolic link to a missing target"
        return "does not exist"
    except NotADirectoryError:  # a component of the path is a file used as a folder
        for parent in path.parents:
            if parent.exists():
                return f"does not exist ({parent} {what_is(parent)}, not a folder)"
        return "does not exist"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"


def require_regular_file(path: str | Path, what: str, error: type[EdgeQuambaError] = InputError) -> Path:
    """``path`` when it is a regular file (a symlink to one too); else a one-line ``error`` "WHAT: is a FIFO ...".

    what: how the message names it, e.g. "--calib-data calib.txt"."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except OSError:
        raise error(f"{what}: {what_is(path)}") from None
    if not stat.S_ISREG(mode):
        raise error(f"{what}: is {kind_of(mode)}, not a regular file")
    return path
