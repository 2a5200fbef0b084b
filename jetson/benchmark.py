"""On-device benchmark (Jetson): one backend, one model, batch 1; appends one row to a CSV with a fixed header.

    python3 jetson/benchmark.py --model ENGINE_OR_FOLDER --backend tensorrt [--prompt-len 128] [--new-tokens 64]
                                [--repeats 5] [--csv benchmarks/results/jetson.csv]

NEVER RUN: no Jetson was available where this was written. It records the platform (L4T release, JetPack,
CUDA, TensorRT, torch, the nvpmodel power mode and whether jetson_clocks pinned the clocks), drops one warm-up run
(edge_quamba.runtime.bench.median_timings), and reports prefill (TTFT, prompt tokens/s) and decode (TPOT, tokens/s,
GB/s of weights read per token) separately, with peak memory: the process's peak RSS, and the largest drop of the
system's MemAvailable during the runs (Jetson memory is shared by CPU and GPU, so GPU allocations show there).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import subprocess
import sys
import threading
from pathlib import Path

CSV_HEADER = ("date", "l4t", "jetpack", "cuda", "tensorrt", "torch", "edge_quamba", "nvpmodel", "jetson_clocks",
              "model", "backend", "batch", "prompt_len", "new_tokens", "repeats", "ttft_ms", "prefill_tokens_per_s",
              "tpot_ms", "decode_tokens_per_s", "model_bytes", "decode_weight_gb_per_s", "peak_rss_mib",
              "peak_mem_available_drop_mib")


def command_output(*args: str) -> str:
    """First line of a command's output, or "n/a" where the command is missing or fails."""
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "n/a"
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0].strip() if out.returncode == 0 and lines else "n/a"


def platform_versions() -> dict[str, str]:
    try:
        l4t = Path("/etc/nv_tegra_release").read_text(encoding="utf-8").splitlines()[0].strip("# ")
    except OSError:
        l4t = "n/a"
    try:
        import tensorrt

        trt_version = tensorrt.__version__
    except ImportError:
        trt_version = "n/a"
    import torch

    from edge_quamba import __version__

    clocks = command_output("jetson_clocks", "--show")
    return {
        "l4t": l4t,
        "jetpack": command_output("dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"),
        "cuda": str(torch.version.cuda),
        "tensorrt": trt_version,
        "torch": torch.__version__,
        "edge_quamba": __version__,
        "nvpmodel": command_output("nvpmodel", "-q"),
        "jetson_clocks": clocks if clocks == "n/a" else "shown (see jetson_clocks --show)",
    }


def mem_available_mib() -> float:
    for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class MemoryWatch:
    """Samples MemAvailable every 50 ms in a thread; ``peak_drop`` is the largest drop from the start value."""

    def __init__(self):
        self.start = mem_available_mib()
        self.lowest = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.05):
            self.lowest = min(self.lowest, mem_available_mib())

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def peak_drop(self) -> float:
        return self.start - self.lowest


def append_row(path: Path, row: dict) -> None:
    """Append ``row`` (keys = CSV_HEADER) to ``path``, writing the header first; refuse a file with another header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size > 0:
        with open(path, newline="", encoding="utf-8") as f:
            header = tuple(next(csv.reader(f)))
        if header != CSV_HEADER:
            sys.exit(f"benchmark.py: {path} has another header; write to a new --csv file")
        write_header = False
    else:
        write_header = True
    with open(path, "a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_HEADER)
        if write_header:
            writer.writeheader()
        writer.writerow(row)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="engine folder (tensorrt) or any model folder (ref/cuda)")
    parser.add_argument("--backend", default="tensorrt", choices=("tensorrt", "cuda", "ref", "ort"))
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--csv", type=Path, default=Path("benchmarks/results/jetson.csv"))
    args = parser.parse_args(argv)

    from edge_quamba.runtime.bench import benchmark

    versions = platform_versions()
    with MemoryWatch() as watch:
        report = benchmark(model=args.model, backend=args.backend, prompt_len=args.prompt_len,
                           new_tokens=args.new_tokens, repeats=args.repeats)
    row = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), **versions,
        "model": args.model, "backend": args.backend, "batch": 1, "prompt_len": args.prompt_len,
        "new_tokens": args.new_tokens, "repeats": args.repeats,
        "ttft_ms": f"{report['ttft_ms']:.3f}", "prefill_tokens_per_s": f"{report['prefill_tokens_per_s']:.1f}",
        "tpot_ms": f"{report['tpot_ms']:.3f}", "decode_tokens_per_s": f"{report['decode_tokens_per_s']:.1f}",
        "model_bytes": report["model_bytes"], "decode_weight_gb_per_s": f"{report['decode_weight_gb_per_s']:.3f}",
        "peak_rss_mib": f"{report['peak_memory_bytes'] / 2**20:.0f}",
        "peak_mem_available_drop_mib": f"{watch.peak_drop:.0f}",
    }
    append_row(args.csv, row)
    print(f"{args.backend}: prefill {row['prefill_tokens_per_s']} tokens/s (TTFT {row['ttft_ms']} ms), decode "
          f"{row['decode_tokens_per_s']} tokens/s ({row['decode_weight_gb_per_s']} GB/s), peak RSS "
          f"{row['peak_rss_mib']} MiB; appended to {args.csv}")


if __name__ == "__main__":
    main()
