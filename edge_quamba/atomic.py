"""Output folders that never destroy user data.

Every command that writes a folder (quantize, export, build-engine) writes it through :func:`atomic_output_dir`:

* ``--out`` is checked before any work (:func:`check_output_dir`). It may be missing, an empty folder, or an
  edge-quamba output of a known kind (:mod:`edge_quamba.folders`) that holds nothing but its marker JSON and the
  files that JSON lists. Anything else (``--out .``, a home folder, an output the user added a file to, a mount
  point) is refused in one line, and so is an ``--out`` equal to, inside, or containing an input (``--model``).
  Whether ``--out`` can be written at all is known then too: the check creates (and removes) an empty temporary
  sibling, so a read-only mount, a pseudo-file system (/proc, /sys) or a missing permission is refused before the
  calibration runs, not after.
* the new folder is built in a temporary sibling ``.NAME.tmp-XXXXXXXX`` that carries the file :data:`MARKER`
  (the writer's pid and host). On success it replaces ``--out``: an old output is renamed aside
  (``.NAME.old-XXXXXXXX``, marked the same way) and deleted once the new one is in place; a failed rename puts the
  old one back.
* on any error, on Ctrl-C (SIGINT) and on SIGTERM / SIGHUP the temporary folder is deleted before the process exits
  (the signal handler that turns SIGTERM into :class:`~edge_quamba.errors.Terminated` is installed only while the
  folder is written, in the main thread). A signal the process inherited as ignored stays ignored: nohup's SIGHUP,
  the SIGINT of a shell's background job.
* what a killed run (SIGKILL, power loss) left behind is deleted by the next run that writes the same ``--out``:
  only siblings named like ours that carry the marker and were written on this host by a process that is gone.
  Marked folders are deleted marker-last, so a deletion that is itself interrupted leaves a marked folder.
* write errors (read-only file system, disk full, quota, busy mount point, permission) are one-line OutputErrors
  naming ``--out``.
* everything written gets the permissions ``mkdir`` and ``open`` give (0777 / 0666 & ~umask): mkdtemp's 0700 and
  the 0600 of writers that write through a temporary file of their own (safetensors' save_file) are widened before
  the folder is moved into place.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
import signal
import socket
import tempfile
import threading
from pathlib import Path
from typing import Iterable

from edge_quamba.errors import ConfigError, OutputError, Terminated, named
from edge_quamba.paths import what_is

MARKER = ".edge-quamba-partial"
"""The file that marks a temporary or retired output folder as edge-quamba's (JSON: pid, host)."""
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EBUSY, errno.ETXTBSY, errno.EACCES,
                errno.EPERM, errno.EXDEV}
"""OSError codes that mean "this place cannot be written", reported in one line instead of a traceback."""
SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
"""Signals that remove the temporary folder before the process ends. SIGINT too: left to Python's KeyboardInterrupt,
an interrupted export sometimes ended killed by SIGINT (exit -2) after its clean-up message, where it must exit 130."""


def check_output_dir(out: str | Path, inputs: Iterable[tuple[str, str | Path]] = (), option: str = "--out",
                     probe: bool = True) -> Path:
    """Refuse an ``out`` that writing would damage or that cannot be written (see the module docstring); returns it
    resolved.

    inputs: (flag, path) of what the command reads, e.g. ("--model", model_dir). probe: check that the temporary
    sibling can be made (False where the caller makes it next).
    """
    target = Path(out).expanduser().resolve()
    cwd = Path.cwd().resolve()
    if target == cwd or target in cwd.parents:
        raise OutputError(f"{named(option, out)}: is the current folder or one above it; name a new folder "
                          f"(e.g. {option} out)")
    for flag, path in inputs:
        source = Path(path).expanduser().resolve()
        if target == source:
            raise OutputError(f"{named(option, out)}: is {named(flag, path)} itself; write to another folder")
        if source in target.parents:
            raise OutputError(f"{named(option, out)}: is inside {named(flag, path)}; write to a folder outside it")
        if target in source.parents:
            raise OutputError(f"{named(flag, path)}: is inside {named(option, out)}, which would replace it; "
                              f"write to another folder")
    if target.exists() or target.is_symlink():
        if not target.is_dir():
            raise OutputError(f"{named(option, out)}: {what_is(target)}, not a folder")
        why = _not_replaceable(target)
        if why is not None:
            raise OutputError(f"{named(option, out)}: {why}; edge-quamba only replaces an empty folder or one of "
                              f"its own outputs (name a new folder)")
        if os.path.ismount(target):  # replaced by renames, which a mount point refuses (EBUSY), after the work
            raise write_error(OSError(errno.EBUSY, os.strerror(errno.EBUSY)), out, option)
    if not target.parent.is_dir():
        parent = what_is(target.parent)
        raise OutputError(f"{named(option, out)}: its parent {target.parent} {parent}"
                          f"{', not a folder' if parent.startswith('is ') else ''}")
    if probe:
        _make_temporary(target, out, option).rmdir()
    return target


def _make_temporary(target: Path, out: str | Path, option: str) -> Path:
    """A new empty folder ``.NAME.tmp-XXXXXXXX`` beside ``target``; any failure is a one-line OutputError."""
    try:
        return Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    except OSError as exc:
        error = write_error(exc, out, option)
        if error is not None:
            raise error from None
        hint = " (a pseudo-file system such as /proc or /sys?)" if exc.errno == errno.ENOENT else ""
        raise OutputError(f"{named(option, out)}: cannot create a folder in {target.parent}: "
                          f"{exc.strerror or exc}{hint}") from None


def _not_replaceable(folder: Path) -> str | None:
    """None when ``folder`` is empty or an edge-quamba output holding only what its JSON lists; else why not."""
    from edge_quamba.folders import read_marker
    from edge_quamba.integrity import listed_files

    first = next(folder.iterdir(), None)
    if first is None:
        return None
    try:
        record = read_marker(folder)
        if record is None:
            return f"it holds {first.name!r} and is not an edge-quamba output"
        kind, raw = record
        listed = set(listed_files(raw, folder / kind.config_file))
    except ConfigError as exc:
        return f"it is not a readable edge-quamba output ({exc})"
    allowed_dirs = {str(Path(name).parent.as_posix()) for name in listed} - {"."}
    allowed_dirs |= {p.as_posix() for d in list(allowed_dirs) for p in Path(d).parents} - {"."}
    allowed_files = listed | {kind.config_file, MARKER}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root) / name
            rel = path.relative_to(folder).as_posix()
            if path.is_symlink():
                listed_as = " (listed in its " + kind.config_file + ")" if rel in allowed_files else ""
                return f"it holds {rel!r}, a symbolic link{listed_as}; edge-quamba writes none"
            ok = rel in allowed_dirs if path.is_dir() else rel in allowed_files
            if not ok:
                return f"it holds {rel!r}, which its {kind.config_file} does not list"
    return None


# -- marked temporary folders ---------------------------------------------------------------------------------------

def _mark(folder: Path) -> None:
    record = {"pid": os.getpid(), "host": socket.gethostname(),
              "note": "an unfinished or retired edge-quamba output; safe to delete"}
    (folder / MARKER).write_text(json.dumps(record) + "\n", encoding="utf-8")


def _remove_marked(folder: Path) -> None:
    """Delete a marked folder, the marker last (an interrupted deletion leaves a folder still marked as ours)."""
    for child in folder.iterdir():
        if child.name == MARKER:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    (folder / MARKER).unlink(missing_ok=True)
    folder.rmdir()


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user holds the pid
        return True
    return True


def stale_siblings(target: Path) -> list[Path]:
    """Temporary and retired folders of ``target`` left by edge-quamba runs that are gone (on this host)."""
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(tmp|old)-[A-Za-z0-9_]+$")
    stale = []
    for sibling in target.parent.iterdir():
        marker = sibling / MARKER
        if not pattern.match(sibling.name) or sibling.is_symlink() or not marker.is_file():
            continue
        try:
            record = json.loads(marker.read_text(encoding="utf-8"))
            pid, host = int(record["pid"]), str(record["host"])
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            continue  # being written right now, or not ours after all: leave it
        if host == socket.gethostname() and not _alive(pid):
            stale.append(sibling)
    return stale


# -- errors and signals ---------------------------------------------------------------------------------------------

_OS_ERROR_CODE = re.compile(r"\(os error (\d+)\)")


def write_error(exc: BaseException, out: str | Path, option: str = "--out") -> OutputError | None:
    """A one-line OutputError for an exception that means ``out`` cannot be written, else None.

    Understands OSError and the errors of writers that wrap one in their message (safetensors: "(os error 28)")."""
    code = exc.errno if isinstance(exc, OSError) else None
    if code is None and type(exc).__name__ == "SafetensorError":
        match = _OS_ERROR_CODE.search(str(exc))
        code = int(match.group(1)) if match else None
    if code not in WRITE_ERRNOS:
        return None
    hint = {errno.ENOSPC: "; free some space or choose another folder",
            errno.EDQUOT: "; free some space or choose another folder",
            errno.EBUSY: " (a mount point, or in use by another program)"}.get(code, "")
    return OutputError(f"{named(option, out)}: cannot write there: {os.strerror(code)}{hint}")


_terminating = threading.Event()
"""Set by the first SIGTERM / SIGHUP: later ones are ignored while the temporary folders are removed (cleared when
the outermost output folder is done)."""
_received: list[int] = []
"""That first signal's number, so that a Terminated which a library caught and replaced with its own error
(safetensors' loader turns it into a ValueError) still ends the run as the signal."""
_depth = [0]


@contextlib.contextmanager
def _signals_raise_terminated():
    """While the block runs, SIGTERM, SIGHUP and SIGINT raise Terminated (once: a second signal during the clean-up
    is ignored); the previous handlers are restored afterwards. A signal already ignored (SIG_IGN, inherited from
    nohup or from a shell that started a background job) keeps being ignored. Only the main thread can install
    handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: old for sig in SIGNALS if (old := signal.getsignal(sig)) != signal.SIG_IGN}

    def handler(signum, _frame):
        if _terminating.is_set():  # already unwinding (a nested output restored this handler): let it clean up
            return
        _terminating.set()
        _received[:] = [signum]
        raise Terminated(signum)

    for sig in previous:
        signal.signal(sig, handler)
    _depth[0] += 1
    try:
        yield
    finally:
        _depth[0] -= 1
        if _depth[0] == 0:
            _terminating.clear()
            _received.clear()
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)


# -- the context manager --------------------------------------------------------------------------------------------

def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _normal_permissions(folder: Path) -> None:
    """0777 & ~umask for folders (and executables), 0666 & ~umask for files, as mkdir and open would give."""
    mask = _umask()
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root) / name
            if path.is_symlink():
                continue
            executable = path.is_dir() or path.stat().st_mode & 0o100
            path.chmod((0o777 if executable else 0o666) & ~mask)
    folder.chmod(0o777 & ~mask)


def _swap_in(tmp: Path, target: Path) -> None:
    """Put the finished ``tmp`` at ``target``; an existing output is retired and deleted only afterwards."""
    old = None
    if target.exists():
        if next(target.iterdir(), None) is None:
            target.rmdir()  # an empty folder: nothing to keep (EBUSY here for a mount point, before any change)
        else:
            old = target.parent / f".{target.name}.old-{secrets.token_hex(4)}"
            _mark(target)
            try:
                target.rename(old)
            except OSError:
                (target / MARKER).unlink(missing_ok=True)
                raise
    try:
        tmp.rename(target)
    except OSError:
        if old is not None:
            old.rename(target)
            (target / MARKER).unlink(missing_ok=True)
        raise
    (target / MARKER).unlink()
    if old is not None:
        with contextlib.suppress(OSError):  # still marked: the next run removes what is left
            _remove_marked(old)


@contextlib.contextmanager
def atomic_output_dir(out: str | Path, inputs: Iterable[tuple[str, str | Path]] = (), option: str = "--out"):
    """Yield a fresh temporary folder beside ``out``; on success it replaces ``out``, on any error or signal it is
    deleted (see the module docstring). ``inputs``: (flag, path) pairs ``out`` must not touch."""
    inputs = list(inputs)
    target = check_output_dir(out, inputs, option, probe=False)
    for stale in stale_siblings(target):
        with contextlib.suppress(OSError):
            _remove_marked(stale)
    with _signals_raise_terminated():
        tmp = _make_temporary(target, out, option)
        try:
            _mark(tmp)
            yield tmp
            if _received:  # a signal whose Terminated was swallowed on its way (raised in a weakref callback, a
                raise Terminated(_received[0])  # finalizer: "Exception ignored"): never commit after it
            _normal_permissions(tmp)
            check_output_dir(out, inputs, option, probe=False)  # nothing foreign appeared in --out meanwhile
            _swap_in(tmp, target)
        except BaseException as exc:
            if tmp.exists():
                with contextlib.suppress(OSError):
                    _remove_marked(tmp)
            if _received and not isinstance(exc, Terminated):  # our Terminated, replaced on its way out by a library
                raise Terminated(_received[0]) from None
            error = write_error(exc, out, option)
            if error is not None:
                raise error from None
            raise
