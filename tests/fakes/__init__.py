"""Fakes of TensorRT 10.3 (``tensorrt/``) and cuda-python (``cuda/bindings/runtime.py``) for CPU tests.

This folder on sys.path (first) makes ``import tensorrt`` and ``from cuda.bindings import runtime`` get the fakes;
:func:`installed` does that for one test, with fresh module state, and puts back whatever real modules of those
names the process had imported.
"""

import contextlib
import sys
from pathlib import Path

FOLDER = Path(__file__).parent
MODULES = ("tensorrt", "cuda")


def drop() -> None:
    """Forget the imported ``tensorrt`` and ``cuda`` modules (the next import loads them afresh)."""
    for name in [n for n in sys.modules if n.split(".")[0] in MODULES]:
        del sys.modules[name]


@contextlib.contextmanager
def installed(monkeypatch):
    real = {n: m for n, m in sys.modules.items() if n.split(".")[0] in MODULES}
    drop()
    monkeypatch.syspath_prepend(str(FOLDER))
    try:
        yield
    finally:
        drop()
        sys.modules.update(real)
