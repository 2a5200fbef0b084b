"""Hostile cases about the process rather than the files (issue 21), each one line on stderr and a non-zero exit:
a hub id behind an unreachable proxy, lm-eval task data offline, a closed stdout, a reader of stdout that goes away,
and inherited SIG_IGN kept (nohup, background jobs). The file cases: test_hostile.py.

Each runs in a subprocess (environment variables read at import, file descriptors, signals) on the tiny random
models of conftest.hostile_folders. No test reaches the network: hub traffic goes to a closed local port through
HTTPS_PROXY / HTTP_PROXY."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_quamba.atomic import MARKER, atomic_output_dir
from helpers import one_error_line

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def folders(hostile_folders):
    return hostile_folders


def env_without_offline(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "NO_PROXY", "no_proxy")}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def closed_port() -> int:
    """A local TCP port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- the hub behind an unreachable proxy; lm-eval task data offline ---------------------------------------------

@pytest.mark.parametrize("proxy", ["closed port", "malformed URL", "socks"])
@pytest.mark.parametrize("flag", ["--model", "--tokenizer"])
def test_hub_id_behind_an_unreachable_proxy_is_one_line(folders, tmp_path, proxy, flag):
    port = closed_port()
    url = {"closed port": f"http://127.0.0.1:{port}", "malformed URL": "http://[::1",
           "socks": f"socks5://127.0.0.1:{port}"}[proxy]
    env = env_without_offline(HTTPS_PROXY=url, HTTP_PROXY=url, HF_HOME=str(tmp_path / "hf"), HF_HUB_ETAG_TIMEOUT="3",
                              HF_HUB_DOWNLOAD_TIMEOUT="3")
    model = ["--model", "edge-quamba-test/no-such-model"] if flag == "--model" else \
        ["--model", str(folders["fp"]), "--tokenizer", "edge-quamba-test/no-such-tokenizer"]
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "edge_quamba", "run", *model, "--prompt", "hi"], capture_output=True,
                          text=True, env=env, timeout=240)
    print(f"{time.perf_counter() - start:.1f} s")
    line = one_error_line(proc)
    assert f"{flag} edge-quamba-test/no-such-" in line and url in line
    assert len(proc.stderr.strip().splitlines()) == 1


def test_lm_eval_task_data_offline_is_one_line_without_retries(folders, tmp_path):
    url = f"http://127.0.0.1:{closed_port()}"
    env = env_without_offline(HTTPS_PROXY=url, HTTP_PROXY=url, HF_HOME=str(tmp_path / "hf"),
                              HF_DATASETS_CACHE=str(tmp_path / "datasets"))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", "from edge_quamba.eval.harness import main; main()", "run", "--model",
                           "edge-quamba", "--model_args", f"path={folders['fp']}", "--tasks", "lambada_openai"],
                          capture_output=True, text=True, env=env, timeout=600)
    print(f"{time.perf_counter() - start:.1f} s")
    line = one_error_line(proc, prog="edge-quamba-lm-eval")
    assert "--tasks lambada_openai: a task's data cannot be loaded (offline" in line
    assert "running offline" in proc.stderr and "Retrying" not in proc.stderr


# -- a closed stdout -----------------------------------------------------------------------------------------------

LM_EVAL = [sys.executable, "-c", "from edge_quamba.eval.harness import main; main()"]


@pytest.mark.parametrize("command", ["run", "run --json", "--help", "lm-eval"])
def test_a_closed_stdout_is_one_line(folders, command):
    if command == "lm-eval":
        argv = [*LM_EVAL, "run", "--model", "edge-quamba", "--model_args", f"path={folders['fp']}", "--tasks",
                "lambada_openai"]
        prog = "edge-quamba-lm-eval"
    else:
        prog = "edge-quamba"
        argv = [sys.executable, "-m", "edge_quamba", *command.split()[:1]]
        if command != "--help":
            argv += ["--model", str(folders["fp"]), "--prompt", "hi", "--max-new-tokens", "2", *command.split()[1:]]
    proc = subprocess.run(["sh", "-c", 'exec "$@" >&-', "sh", *argv], capture_output=False, stderr=subprocess.PIPE,
                          text=True, env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},
                          timeout=300)
    proc.stdout = ""
    assert "stdout is closed" in one_error_line(proc, prog=prog)


@pytest.mark.parametrize("command", ["run", "--help", "lm-eval --help"])
def test_a_reader_that_goes_away_ends_quietly(folders, command):
    argv = {"run": [sys.executable, "-m", "edge_quamba", "run", "--model", str(folders["fp"]), "--prompt", "hi",
                    "--max-new-tokens", "40", "--temperature", "0"],
            "--help": [sys.executable, "-m", "edge_quamba", "--help"],
            "lm-eval --help": [sys.executable, "-c", "import sys; from edge_quamba.eval.harness import main; "
                               "sys.argv = ['edge-quamba-lm-eval', '--help']; main()"]}[command]
    if command.startswith("lm-eval"):
        pytest.importorskip("lm_eval")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    proc.stdout.close()  # the reader is gone before the first write: every write is EPIPE
    stderr = proc.stderr.read()
    proc.wait(timeout=300)
    print(stderr[-2000:])
    assert proc.returncode == 1 and "Traceback" not in stderr and "Exception ignored" not in stderr


# -- signals: an inherited SIG_IGN stays -----------------------------------------------------------------------------

def test_an_ignored_signal_stays_ignored_while_an_output_is_written(tmp_path):
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGHUP, signal.SIGINT)}
    try:
        with atomic_output_dir(tmp_path / "out") as tmp:
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_IGN, signal.SIG_DFL)  # still cleaned up
            (tmp / "a").write_text("a")
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _ignore_hup_and_int():
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # what nohup does
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what a shell does for a background job (cmd &)


def test_export_under_nohup_in_the_background_survives_sighup_and_sigint(folders, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_quamba", "export", "--model", str(folders["fp"]), "--out", str(out),
         "--calib-data", str(folders["calib"]), "--calib-samples", "32", "--calib-seq-len", "64", "--target", "ort",
         "--validate-prompt-len", "8", "--validate-decode-steps", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_ignore_hup_and_int,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(".out.tmp-") and (p / MARKER).is_file() for p in tmp_path.iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    assert proc.poll() is None  # mid-write
    proc.send_signal(signal.SIGHUP)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    print(stderr[-2000:])
    assert proc.returncode == 0 and "validation passed" in stdout
    assert sorted(os.listdir(tmp_path)) == ["out"] and (out / "export_config.json").is_file()
