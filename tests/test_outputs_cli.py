"""`quantize` / `export` never destroy user data, as a user runs them: folders that are refused before any work,
SIGTERM and SIGKILL of a running export (subprocess), a full, read-only or busy file system (a private tmpfs mount
in a user namespace; skipped where unshare cannot make one), and the permissions of what is written."""

import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_quamba.atomic import MARKER
from helpers import (TEXT, cli_in_process, default_signals, make_tokenizer, one_error_line, random_hf_model,
                     save_transformers_layout)

QUICK = ("--calib-samples", "2", "--calib-seq-len", "32")


@pytest.fixture(scope="module")
def fp_folder(tmp_path_factory):
    tokenizer = make_tokenizer(120)
    hf = random_hf_model(seed=3, vocab_size=tokenizer.get_vocab_size())
    folder = save_transformers_layout(hf, tmp_path_factory.mktemp("fp") / "model", tokenizer)
    # _start_export calibrates on 64 x 64 = 4096 tokens: TEXT * 4 is 3712 tokens, so that export failed on the
    # calibration text, and the signal tests passed only when their signal came first (on a loaded machine it did not)
    (folder.parent / "calib.txt").write_text(TEXT * 8)
    return folder


def quantize(fp_folder, out, *extra, model=None):
    return cli_in_process("quantize", "--model", str(model or fp_folder), "--out", str(out),
                          "--calib-data", str(fp_folder.parent / "calib.txt"), *QUICK, *extra)


def tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_quantize_refuses_a_folder_with_user_files(fp_folder, tmp_path):
    out = tmp_path / "somefolder"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    start = time.perf_counter()
    line = one_error_line(quantize(fp_folder, out))
    print(f"refused after {time.perf_counter() - start:.2f} s")
    assert "--out" in line and "thesis.tex" in line and "edge-quamba only replaces" in line
    assert tree(out) == {"thesis.tex": b"years of work"} and sorted(os.listdir(tmp_path)) == ["somefolder"]


@pytest.mark.parametrize("where", ["model itself", "inside model"])
def test_quantize_refuses_out_on_the_model(fp_folder, tmp_path, where):
    model = tmp_path / "model"
    shutil.copytree(fp_folder, model)
    before = tree(model)
    out = model if where == "model itself" else model / "quantized"
    line = one_error_line(quantize(fp_folder, out, model=model))
    assert ("itself" if where == "model itself" else "inside --model") in line
    assert tree(model) == before and sorted(os.listdir(tmp_path)) == ["model"]


def test_quantize_out_dot_is_refused(fp_folder, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (work / "README").write_text("mine")
    monkeypatch.chdir(work)
    line = one_error_line(quantize(fp_folder, "."))
    assert "current folder" in line
    assert sorted(os.listdir(tmp_path)) == ["work"] and os.listdir(work) == ["README"]


def test_outputs_replace_outputs_and_get_normal_permissions(fp_folder, tmp_path):
    out = tmp_path / "q"
    for _ in range(2):  # the second run replaces the first run's output
        proc = quantize(fp_folder, out)
        assert proc.returncode == 0, proc.stderr
    umask = os.umask(0)
    os.umask(umask)
    for path in [out, *out.rglob("*")]:
        want = (0o777 if path.is_dir() else 0o666) & ~umask
        print(path.name, oct(stat.S_IMODE(path.stat().st_mode)), oct(want))
        assert stat.S_IMODE(path.stat().st_mode) == want
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors", "quant_config.json", "tokenizer.json"]
    assert sorted(os.listdir(tmp_path)) == ["q"]


def _start_export(fp_folder, out):
    """`edge-quamba export` in a subprocess, made slow enough (calibration windows) to be caught mid-write."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "edge_quamba", "export", "--model", str(fp_folder), "--out", str(out),
         "--calib-data", str(fp_folder.parent / "calib.txt"), "--calib-samples", "64", "--calib-seq-len", "64"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=default_signals)


def _wait_for_temporary(parent: Path, proc, timeout: float = 120.0) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [p for p in parent.iterdir() if p.name.startswith(".out.tmp-") and (p / MARKER).is_file()]
        if found:
            return found[0]
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("the export never created its temporary folder")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_write_removes_the_temporary_and_keeps_the_old_output(fp_folder, tmp_path, sig):
    out = tmp_path / "out"
    assert quantize(fp_folder, out).returncode == 0  # an existing output the interrupted export would replace
    before = tree(out)
    proc = _start_export(fp_folder, out)
    _wait_for_temporary(tmp_path, proc)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    print(stderr)
    assert proc.returncode == (128 + sig if sig == signal.SIGTERM else 130)
    assert "Traceback" not in stderr and stderr.rstrip().splitlines()[-1].startswith("edge-quamba: error:")
    assert sorted(os.listdir(tmp_path)) == ["out"] and tree(out) == before


def test_a_killed_run_leaves_a_marked_temporary_that_the_next_run_removes(fp_folder, tmp_path):
    out = tmp_path / "out"
    proc = _start_export(fp_folder, out)
    temporary = _wait_for_temporary(tmp_path, proc)
    proc.kill()  # SIGKILL: no handler runs
    proc.communicate(timeout=60)
    assert temporary.exists()
    user_folder = tmp_path / ".out.tmp-userdata"  # named like ours but unmarked: never touched
    user_folder.mkdir()
    assert quantize(fp_folder, out).returncode == 0
    assert sorted(os.listdir(tmp_path)) == [".out.tmp-userdata", "out"]


# -- write errors on a real file system: a private tmpfs in a user + mount namespace (nothing outside sees it) -------

def _unshare_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            "mount -t tmpfs -o size=8k tmpfs /tmp"], capture_output=True)
    return probe.returncode == 0


needs_unshare = pytest.mark.skipif(not _unshare_available(), reason="unshare cannot mount a private tmpfs here")


def _quantize_on_mount(fp_folder, mount: Path, out: Path, setup: str) -> subprocess.CompletedProcess:
    """quantize with ``mount`` made a fresh tmpfs (``setup`` adds size / read-only / nested mounts)."""
    command = [sys.executable, "-m", "edge_quamba", "quantize", "--model", str(fp_folder), "--out", str(out),
               "--calib-data", str(fp_folder.parent / "calib.txt"), *QUICK]
    script = f"{setup} && exec " + " ".join(f"'{arg}'" for arg in command)
    return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=os.getcwd())


@needs_unshare
@pytest.mark.parametrize("case", ["disk full", "read-only", "busy mount point"])
def test_write_errors_on_a_real_file_system_are_one_line(fp_folder, tmp_path, case):
    mount = tmp_path / "mnt"
    mount.mkdir()
    out = mount / "out"
    setup, expected = {
        "disk full": (f"mount -t tmpfs -o size=8k tmpfs {mount}", "No space left on device"),
        "read-only": (f"mount -t tmpfs -o ro tmpfs {mount}", "Read-only file system"),
        "busy mount point": (f"mount -t tmpfs tmpfs {mount} && mkdir {out} && mount -t tmpfs tmpfs {out}",
                             "Device or resource busy"),
    }[case]
    proc = _quantize_on_mount(fp_folder, mount, out, setup)
    line = one_error_line(proc)
    assert expected in line and "--out" in line
