"""The standard streams of the command-line entry points (edge-quamba, edge-quamba-lm-eval).

Started with stdout closed (``>&-``), Python has no ``sys.stdout`` at all: output would be lost silently (exit 0) or
fail deep inside with an AttributeError. :func:`stdout_closed` lets an entry point refuse that in one line before any
work. A reader that goes away mid-run (``| head``) is a BrokenPipeError: :func:`drop_stdout` points fd 1 at
/dev/null so that the interpreter's final flush does not raise again, and the entry point exits quietly.
"""

from __future__ import annotations

import io
import os
import sys

CLOSED_STDOUT = "stdout is closed; redirect it (e.g. > /dev/null) instead of closing it (>&-)"


def stdout_closed() -> bool:
    """True when the process has no usable stdout (fd 1 closed before it started, or closed since)."""
    if sys.stdout is None:
        return True
    try:
        os.fstat(sys.stdout.fileno())
    except (io.UnsupportedOperation, AttributeError):  # replaced by an object without a descriptor (a StringIO)
        return False
    except (OSError, ValueError):  # EBADF; ValueError: the Python file object itself was closed
        return True
    return False


def drop_stdout() -> None:
    """Send whatever is still buffered for stdout to /dev/null (after EPIPE: the reader is gone)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
