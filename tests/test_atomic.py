"""Output folders never destroy user data: what may be replaced, what is refused, temporary folders and their
clean-up (errors, failed renames, stale folders of killed runs), write errors as one line, normal permissions.

The command-line cases (quantize / export on real folders, SIGTERM and SIGKILL of a subprocess, a full or read-only
file system) are in tests/test_outputs_cli.py."""

import errno
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edge_quamba.atomic import MARKER, atomic_output_dir, check_output_dir
from edge_quamba.errors import OutputError, Terminated
from edge_quamba.integrity import file_sha256, seal


def fake_output(folder: Path) -> Path:
    """A minimal edge-quamba output: quant_config.json (kind, files, seal) and the one file it lists."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes(b"weights")
    digest = file_sha256(folder / "model.safetensors")
    config = {"kind": "edge-quamba/quantized", "files": {"model.safetensors": digest}}
    (folder / "quant_config.json").write_text(json.dumps(seal(config)))
    return folder


def siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir())


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_success_replaces_an_existing_output_with_normal_permissions(tmp_path):
    out = fake_output(tmp_path / "out")
    with atomic_output_dir(out) as tmp:
        (tmp / "new.txt").write_text("new")
        (tmp / "sub").mkdir()
    assert sorted(p.name for p in out.iterdir()) == ["new.txt", "sub"]  # the marker is gone too
    (tmp_path / "by_mkdir").mkdir()
    (tmp_path / "by_write").write_text("x")
    assert mode(out) == mode(tmp_path / "by_mkdir") and mode(out / "sub") == mode(tmp_path / "by_mkdir")
    assert mode(out / "new.txt") == mode(tmp_path / "by_write")
    assert siblings(out) == ["by_mkdir", "by_write", "out"]  # no temporary or retired folder left behind


def test_an_empty_folder_and_a_new_path_are_written(tmp_path):
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "empty", tmp_path / "new"):
        with atomic_output_dir(out) as tmp:
            (tmp / "a").write_text("a")
        assert [p.name for p in out.iterdir()] == ["a"]


def test_failure_keeps_the_existing_output_and_removes_the_temporary(tmp_path):
    out = fake_output(tmp_path / "out")
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(RuntimeError):
        with atomic_output_dir(out) as tmp:
            (tmp / "partial.txt").write_text("partial")
            raise RuntimeError("boom")
    assert sorted(p.name for p in out.iterdir()) == before
    assert siblings(out) == ["out"]


FOREIGN = {
    "user files": lambda f: (f.mkdir(), (f / "thesis.tex").write_text("years of work")),
    "output plus a user file": lambda f: (fake_output(f), (f / "notes.txt").write_text("mine")),
    "output plus a user folder": lambda f: (fake_output(f), (f / "data").mkdir()),
    "damaged output json": lambda f: (f.mkdir(), (f / "quant_config.json").write_text("{not json")),
    "output json of another kind": lambda f: (f.mkdir(), (f / "export_config.json").write_text('{"kind": "x"}')),
    "a file": lambda f: f.write_text("a file, not a folder"),
}


@pytest.mark.parametrize("case", sorted(FOREIGN))
def test_a_folder_edge_quamba_did_not_write_is_refused_untouched(tmp_path, case):
    out = tmp_path / "out"
    FOREIGN[case](out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} if out.is_dir() else out.read_bytes()
    with pytest.raises(OutputError) as info:
        with atomic_output_dir(out) as tmp:
            (tmp / "x").write_text("x")
    print(info.value)
    assert "\n" not in str(info.value) and str(info.value).startswith("--out ")
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} if out.is_dir() else out.read_bytes()
    assert after == before and siblings(out) == ["out"]


@pytest.mark.parametrize("where", [".", "..", "cwd-absolute"])
def test_the_current_folder_or_above_is_refused(tmp_path, monkeypatch, where):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    out = str(work) if where == "cwd-absolute" else where
    with pytest.raises(OutputError, match="current folder"):
        with atomic_output_dir(out):
            pass
    assert siblings(work) == ["work"] and list(work.iterdir()) == []


@pytest.mark.parametrize("relation, expected", [("same", "itself"), ("out inside model", "is inside --model"),
                                                ("model inside out", "--model .* is inside --out")])
def test_out_and_model_must_not_overlap(tmp_path, relation, expected):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    out = {"same": model, "out inside model": model / "q", "model inside out": tmp_path}[relation]
    if relation == "model inside out":
        out, model = tmp_path / "outer", tmp_path / "outer" / "model"
        fake_output(out)
    with pytest.raises(OutputError, match=expected):
        check_output_dir(out, [("--model", model)])


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def _temporary(parent: Path, name: str, pid: int | None, host: str | None = None) -> Path:
    import socket

    folder = parent / name
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "big.bin").write_bytes(b"0" * 1000)
    if pid is not None:
        (folder / MARKER).write_text(json.dumps({"pid": pid, "host": host or socket.gethostname()}))
    return folder


def test_stale_temporaries_of_dead_runs_are_removed_and_nothing_else(tmp_path):
    out = tmp_path / "out"
    dead = _temporary(tmp_path, ".out.tmp-dead0001", _dead_pid())
    retired = _temporary(tmp_path, ".out.old-dead0002", _dead_pid())
    unmarked = _temporary(tmp_path, ".out.tmp-user0003", None)  # named like ours, but no marker: not ours
    alive = _temporary(tmp_path, ".out.tmp-live0004", os.getppid())  # a run still going
    elsewhere = _temporary(tmp_path, ".out.tmp-host0005", _dead_pid(), host="another-host")
    other_name = _temporary(tmp_path, ".other.tmp-dead0006", _dead_pid())
    with atomic_output_dir(out) as tmp:
        (tmp / "a").write_text("a")
    assert not dead.exists() and not retired.exists()
    assert all(p.exists() for p in (unmarked, alive, elsewhere, other_name))


def test_a_failed_rename_puts_the_old_output_back(tmp_path, monkeypatch):
    out = fake_output(tmp_path / "out")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_rename = Path.rename

    def rename(self, target):
        if self.name.startswith(".out.tmp-"):
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(self))
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(OutputError, match="Device or resource busy"):
        with atomic_output_dir(out) as tmp:
            (tmp / "new.txt").write_text("new")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert siblings(out) == ["out"]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES])
def test_write_errors_inside_the_folder_are_one_line(tmp_path, code):
    out = fake_output(tmp_path / "out")
    with pytest.raises(OutputError) as info:
        with atomic_output_dir(out) as tmp:
            raise OSError(code, os.strerror(code), str(tmp / "model.safetensors"))
    print(info.value)
    assert os.strerror(code) in str(info.value) and "\n" not in str(info.value)
    assert siblings(out) == ["out"]


def test_safetensors_write_error_is_one_line(tmp_path):
    from safetensors import SafetensorError

    with pytest.raises(OutputError, match="No space left on device"):
        with atomic_output_dir(tmp_path / "out"):
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    assert siblings(tmp_path / "out") == []


def test_other_errors_keep_their_type(tmp_path):
    with pytest.raises(OSError) as info:
        with atomic_output_dir(tmp_path / "out"):
            raise OSError(errno.ENOENT, "not a write error")
    assert not isinstance(info.value, OutputError)


@pytest.fixture
def sigint_not_ignored():
    """SIGINT as Python sets it when it is not ignored (a background ``pytest ... &`` inherits it ignored, and an
    ignored signal is kept ignored by the output writer, by design)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_whose_error_was_swallowed_still_ends_the_run_and_keeps_the_old_output(tmp_path, sig,
                                                                                         sigint_not_ignored):
    """A signal that lands in a weakref callback or a finalizer (Python prints "Exception ignored in ..." and goes
    on; seen once under load, in importlib's module-lock callback during an export): the block runs to its end, but
    nothing is committed and the run ends as the signal."""
    out = fake_output(tmp_path / "out")
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(Terminated) as info:
        with atomic_output_dir(out) as tmp:
            try:
                signal.raise_signal(sig)
            except Terminated:
                pass  # what the interpreter does with an exception raised in a weakref callback
            (tmp / "model.safetensors").write_text("finished after the signal")
    assert info.value.signum == sig
    assert sorted(p.name for p in out.iterdir()) == before and siblings(out) == ["out"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_a_library_replaced_with_its_own_error_still_ends_the_run_as_the_signal(tmp_path, sig,
                                                                                          sigint_not_ignored):
    """safetensors' loader catches the Terminated our handler raises inside it and raises a ValueError instead
    ("could not determine the shape of object type ..."): the run still ends as the signal, not as a damaged file."""
    out = fake_output(tmp_path / "out")
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(Terminated) as info:
        with atomic_output_dir(out):
            try:
                signal.raise_signal(sig)
            except Terminated:
                raise ValueError("could not determine the shape of object type 'torch.storage.UntypedStorage'")
    assert info.value.signum == sig
    assert sorted(p.name for p in out.iterdir()) == before and siblings(out) == ["out"]
    with pytest.raises(RuntimeError):  # the next output's errors are its own again
        with atomic_output_dir(tmp_path / "next"):
            raise RuntimeError("boom")
