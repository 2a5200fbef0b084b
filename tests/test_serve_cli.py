"""`edge-quamba serve` as a user runs it: a subprocess that stops on SIGTERM within its bound and exits 0, and
one-line errors for what cannot be served."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx

from helpers import cli_in_process, one_error_line

SHUTDOWN_TIMEOUT = 1.0


def start_server(*args: str, preexec_fn=None) -> tuple[subprocess.Popen, str, list[str]]:
    """Start `edge-quamba serve --port 0 ARGS`; returns the process, its base URL and its stderr lines so far
    (a thread keeps reading them, so the pipe never fills)."""
    proc = subprocess.Popen([sys.executable, "-m", "edge_quamba", "serve", "--port", "0", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=preexec_fn,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    lines: list[str] = []
    ready = threading.Event()

    def read():
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("edge-quamba serve: http://"):
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(timeout=90):
        proc.kill()
        raise AssertionError(f"the server did not start: {''.join(lines)}")
    url = re.search(r"(http://\S+)/v1", next(line for line in lines if line.startswith("edge-quamba serve:")))[1]
    return proc, url, lines


def test_sigterm_stops_accepting_ends_the_work_within_the_bound_and_exits_0():
    proc, url, log = start_server("--shutdown-timeout", str(SHUTDOWN_TIMEOUT), "--no-access-log")
    events, first_piece, results = [], threading.Event(), {}

    def stream():  # greedy demo text has no EOS for well over 1000 tokens: this runs until it is cancelled
        body = {"model": "demo", "prompt": "The Python interpreter", "max_tokens": 1024, "temperature": 0,
                "stream": True}
        with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=60) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
                    first_piece.set()

    def queued():
        results["queued"] = httpx.post(f"{url}/v1/completions", timeout=60,
                                       json={"model": "demo", "prompt": "The", "max_tokens": 4})

    streamer = threading.Thread(target=stream)
    streamer.start()
    assert first_piece.wait(timeout=60)
    waiter = threading.Thread(target=queued)
    waiter.start()
    deadline = time.monotonic() + 10
    while httpx.get(f"{url}/health").json()["queued"] != 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)

    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=30)
    elapsed = time.monotonic() - sent
    streamer.join(timeout=10)
    waiter.join(timeout=10)
    print("".join(log[-6:]), f"exit {code} after {elapsed:.2f} s, {len(events)} stream events")

    assert code == 0
    # the bound: --shutdown-timeout, uvicorn's one more second, one model call, and the interpreter's exit
    assert elapsed < SHUTDOWN_TIMEOUT + 1 + 6
    assert events[-1] == "[DONE]"  # the running stream was cut, and ended properly
    last = json.loads(events[-2])
    assert last["choices"][0]["finish_reason"] == "length"
    assert len(events) < 1024
    assert results["queued"].status_code == 503  # the queued request was refused at once
    assert results["queued"].json()["error"]["code"] == "shutting_down"
    try:
        httpx.get(f"{url}/health", timeout=2)
        raise AssertionError("the server still accepts connections")
    except httpx.ConnectError:
        pass
    assert not any("Traceback" in line for line in log)


def _ignore_sigint():
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what a shell does for a background job (`serve &`)


def test_an_inherited_sigint_ignore_is_kept_and_sigterm_still_stops():
    proc, url, log = start_server("--shutdown-timeout", str(SHUTDOWN_TIMEOUT), "--no-access-log",
                                  preexec_fn=_ignore_sigint)
    try:
        proc.send_signal(signal.SIGINT)
        time.sleep(1.0)
        assert proc.poll() is None, "".join(log)
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
    assert not any("Traceback" in line for line in log)


def test_serve_errors_are_one_line():
    line = one_error_line(cli_in_process("serve", "--backend", "ort", "--port", "0"))
    assert "--backend ort runs an export folder" in line
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_error_line(cli_in_process("serve", "--port", str(port)))
    assert f"cannot listen on 127.0.0.1:{port}" in line
