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
from collections.abc import Iterator
from contextlib import contextmanager

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


class _KeptWriteErrors:
    """sys.stdout, but a write's OSError is kept (and still raised) for :func:`argparse_write_errors_raised`."""

    def __init__(self, stream):
        self._stream = stream
        self.errors: list[OSError] = []

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as exc:
            self.errors.append(exc)
            raise

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


@contextmanager
def argparse_write_errors_raised() -> Iterator[None]:
    """argparse swallows an OSError from writing ``--help`` (its ``_print_message``) and exits 0: around a parse, the
    first such error (EPIPE: the reader is gone) is raised at the end instead, in place of that SystemExit(0)."""
    kept = _KeptWriteErrors(sys.stdout)
    sys.stdout = kept
    try:
        yield
    finally:
        sys.stdout = kept._stream
        if kept.errors:
            raise kept.errors[0]
