"""Load on `edge-quamba serve` over loopback: many concurrent streaming clients against one server process.

    python3 benchmarks/serve_load.py                      # exports the demo model first (ort target, quick calibration)
    python3 benchmarks/serve_load.py --model demo-export  # an existing export folder

It starts `edge-quamba serve --backend ort --port 0` as a subprocess, sends one warm-up request, then runs --clients
concurrent clients (asyncio + httpx), each sending --requests-per-client streamed completions (greedy, --max-tokens
tokens, a different prompt from the shipped evaluation text each). A client refused with 429 waits the server's
Retry-After and retries: 429s are the server's queue limit working as designed and are counted, not failed. Any
other non-200 answer, broken stream or missing [DONE] is a failure, and the script exits non-zero on any failure.
Everything is bounded: --time-limit seconds for the whole run (a request still unserved then counts as failed), and
the server is stopped with SIGTERM at the end (its exit code is recorded).

Reported (JSON in benchmarks/results/, and the printed table next to it as .txt), with the machine, its load average
and the date:
  TTFT     time from sending the request that was served to its first text piece: the server's queue wait plus
           prefill (with one sequence at a time and N clients, mostly queue wait), p50 / p99;
  latency  first attempt to last piece, retries after 429 included, p50 / p99;
  tokens/s generated tokens (never the prompt) of all clients / wall time of the run: the server's throughput;
  per-request decode tokens/s: (tokens - 1) / (last piece - first piece), median.
The server's own TTFT / TPOT histograms from /metrics are recorded too. One sequence runs at a time (no batching),
so throughput cannot exceed one sequence's decode speed; the run shows what queueing does to TTFT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx

from edge_quamba.resources import default_evaluation_file
from edge_quamba.runtime.bench import cpu_name, package_version

RESULTS = Path(__file__).parent / "results"
QUICK_EXPORT = ("export", "--target", "ort", "--calib-samples", "4", "--calib-seq-len", "128")
"""Calibration size does not change the graph's speed, only its scales: a quick export is enough for timing."""


def prompts(count: int) -> list[str]:
    """``count`` different prompts: the first eight words of the evaluation text's longer lines."""
    lines = [line.split() for line in default_evaluation_file().read_text(encoding="utf-8").splitlines()]
    lines = [" ".join(words[:8]) for words in lines if len(words) >= 8]
    return [lines[i % len(lines)] for i in range(count)]


def start_server(model: str, backend: str, max_queue: int, threads: int | None) -> tuple[subprocess.Popen, str]:
    args = [sys.executable, "-m", "edge_quamba", "serve", "--model", model, "--backend", backend, "--port", "0",
            "--max-queue", str(max_queue), "--served-model-name", "bench", "--no-access-log", "--log-level", "warning"]
    if threads is not None:
        args += ["--threads", str(threads)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ready, url = threading.Event(), []

    def read():
        for line in proc.stderr:
            sys.stderr.write(line)
            if match := re.match(r"edge-quamba serve: (http://\S+)/v1", line):
                url.append(match[1])
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(timeout=120):
        proc.kill()
        sys.exit("the server did not start")
    return proc, url[0]


async def one_request(http: httpx.AsyncClient, url: str, prompt: str, max_tokens: int, deadline: float) -> dict:
    """One streamed completion, retried after 429 until ``deadline`` (time.monotonic)."""
    body = {"model": "bench", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    first_attempt, refused = time.monotonic(), 0
    while time.monotonic() < deadline:
        sent = time.monotonic()
        pieces, usage, done = [], None, False
        async with http.stream("POST", f"{url}/v1/completions", json=body) as response:
            if response.status_code == 429:
                refused += 1
                wait = float(response.headers.get("retry-after", "1"))
                await asyncio.sleep(min(wait, max(0.0, deadline - time.monotonic())))
                continue
            if response.status_code != 200:
                return {"ok": False, "refused": refused, "error": f"status {response.status_code}: "
                        f"{(await response.aread())[:200]!r}"}
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    done = True
                    break
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    return {"ok": False, "refused": refused, "error": chunk["error"]["message"]}
                if chunk.get("usage"):
                    usage = chunk["usage"]
                if chunk["choices"] and chunk["choices"][0]["text"]:
                    pieces.append(time.monotonic())
        if not done or usage is None or not pieces:
            return {"ok": False, "refused": refused, "error": "stream ended without text, usage or [DONE]"}
        tokens = usage["completion_tokens"]
        return {"ok": True, "refused": refused, "tokens": tokens, "ttft_s": pieces[0] - sent,
                "latency_s": pieces[-1] - first_attempt,
                "decode_tokens_per_s": (tokens - 1) / (pieces[-1] - pieces[0]) if pieces[-1] > pieces[0] else None}
    return {"ok": False, "refused": refused, "error": f"not served within --time-limit (refused {refused} times)"}


async def run_clients(url: str, clients: int, per_client: int, max_tokens: int, time_limit: float
                      ) -> tuple[list, float]:
    texts = prompts(clients * per_client)
    deadline = time.monotonic() + time_limit
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(timeout=httpx.Timeout(time_limit), limits=limits) as http:
        async def client(index: int) -> list[dict]:
            return [await one_request(http, url, texts[index * per_client + r], max_tokens, deadline)
                    for r in range(per_client)]

        start = time.monotonic()
        results = await asyncio.gather(*(client(i) for i in range(clients)))
        return [r for rs in results for r in rs], time.monotonic() - start


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of a non-empty list, None for an empty one."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def server_histograms(url: str) -> dict:
    """count and mean of the server's TTFT and TPOT histograms."""
    text = httpx.get(f"{url}/metrics").text
    found = {}
    for name in ("time_to_first_token_seconds", "time_per_output_token_seconds"):
        count = float(re.search(rf"^edge_quamba_{name}_count (\S+)$", text, re.M)[1])
        total = float(re.search(rf"^edge_quamba_{name}_sum (\S+)$", text, re.M)[1])
        found[name] = {"count": count, "mean_s": total / count if count else None}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="Export folder (default: export the demo model first).")
    parser.add_argument("--backend", default="ort")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--requests-per-client", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--max-queue", type=int, default=16, help="The server's --max-queue.")
    parser.add_argument("--threads", type=int, default=None, help="The server's --threads.")
    parser.add_argument("--time-limit", type=float, default=120.0, help="Seconds for the whole run.")
    parser.add_argument("--out", default=str(RESULTS / "serve_load.json"))
    args = parser.parse_args()

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as scratch:
        model, export_command = args.model, None
        if model is None:
            model = str(Path(scratch) / "demo-export")
            export_command = ["edge-quamba", *QUICK_EXPORT, "--out", "demo-export"]
            subprocess.run([sys.executable, "-m", "edge_quamba", *QUICK_EXPORT, "--out", model], check=True,
                           stdout=subprocess.DEVNULL)
        server, url = start_server(model, args.backend, args.max_queue, args.threads)
        try:
            warm = httpx.post(f"{url}/v1/completions", timeout=60,
                              json={"model": "bench", "prompt": "The", "max_tokens": args.max_tokens})
            warm.raise_for_status()
            results, wall = asyncio.run(run_clients(url, args.clients, args.requests_per_client, args.max_tokens,
                                                    args.time_limit))
            histograms = server_histograms(url)
        finally:
            server.send_signal(signal.SIGTERM)
            server_exit = server.wait(timeout=60)

    ok = [r for r in results if r["ok"]]
    failed = [r for r in results if not r["ok"]]
    tokens = sum(r["tokens"] for r in ok)
    ttft = [r["ttft_s"] for r in ok]
    latency = [r["latency_s"] for r in ok]
    decode = [r["decode_tokens_per_s"] for r in ok if r["decode_tokens_per_s"]]
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python3", "benchmarks/serve_load.py", *sys.argv[1:]]),
        "model": args.model or "demo export made by export_command", "export_command": export_command,
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "platform": platform.platform(),
                    "load_average_before": [round(x, 2) for x in load_before],
                    "load_average_after": [round(x, 2) for x in os.getloadavg()]},
        "versions": {p: package_version(p) for p in ("edge-quamba", "onnxruntime", "torch", "uvicorn", "starlette",
                                                     "httpx")},
        "config": {"backend": args.backend, "clients": args.clients, "requests_per_client": args.requests_per_client,
                   "max_tokens": args.max_tokens, "max_queue": args.max_queue, "threads": args.threads,
                   "time_limit_s": args.time_limit, "greedy": True, "batching": "none (one sequence at a time)"},
        "requests": len(results), "served": len(ok), "failed": len(failed), "responses_429": sum(
            r["refused"] for r in results),
        "failures": [r["error"] for r in failed][:10],
        "wall_s": wall, "generated_tokens": tokens, "tokens_per_s": tokens / wall if wall else None,
        "ttft_p50_s": percentile(ttft, 50), "ttft_p99_s": percentile(ttft, 99),
        "latency_p50_s": percentile(latency, 50), "latency_p99_s": percentile(latency, 99),
        "decode_tokens_per_s_median": statistics.median(decode) if decode else None,
        "server_histograms": histograms, "server_exit_code": server_exit,
    }
    lines = [f"{report['date']}: {args.clients} clients x {args.requests_per_client} streamed requests of "
             f"{args.max_tokens} tokens, backend {args.backend}, --max-queue {args.max_queue}, --threads "
             f"{args.threads}, {report['machine']['cpu']} ({os.cpu_count()} cores, load average "
             f"{report['machine']['load_average_before'][0]} before)"]
    def ms(low: float | None, high: float | None) -> str:
        return "n/a" if low is None else f"{low * 1e3:.0f} / {high * 1e3:.0f} ms"

    rows = [("requests served / failed", f"{len(ok)} / {len(failed)}"),
            ("429 answers (retried)", f"{report['responses_429']}"),
            ("wall time", f"{wall:.2f} s"),
            ("generated tokens/s (all clients)", f"{tokens / wall:.1f}"),
            ("TTFT p50 / p99", ms(report["ttft_p50_s"], report["ttft_p99_s"])),
            ("latency p50 / p99 (retries incl.)", ms(report["latency_p50_s"], report["latency_p99_s"])),
            ("decode tokens/s per request (median)", f"{report['decode_tokens_per_s_median'] or 0:.1f}"),
            ("server exit code after SIGTERM", f"{server_exit}")]
    lines += [f"  {name:<40}{value:>20}" for name, value in rows]
    print("\n" + "\n".join(lines))
    out = Path(args.out)
    out.write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".txt").write_text(f"{report['command']}\n" + "\n".join(lines) + "\n")
    print(f"wrote {out} and {out.with_suffix('.txt')}")
    if failed or server_exit != 0:
        sys.exit(f"{len(failed)} requests failed (server exit {server_exit}): {report['failures'][:3]}")


if __name__ == "__main__":
    main()
