"""Where a decode step's GPU time goes, by kind of kernel, from a bench_latency.py record (CPU only; no GPU needed).

    python3 benchmarks/kernel_breakdown.py benchmarks/results/latency_quamba2_h100.json [--shapes 2.8b,m2-2.7b]
        [--out benchmarks/results/kernel_breakdown_quamba2_h100.json]

bench_latency.py profiles one decode-graph replay of each edge-quamba row (torch.profiler, its top 12 kernels by
GPU time: ``kernels`` in the row). This script sums those kernels by kind (the GEMVs of each width, lm_head,
Hadamard + quantize, the standalone quantize, scan, conv, norm, the state copies, PyTorch's own kernels) and sets
them against the row's graph time: what a width change can move (the GEMVs) and what it cannot (the rest of the
step). "outside the top 12" is the graph time the profile's top 12 do not account for. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from edge_quamba.streams import drop_stdout

KINDS = (
    ("int8 GEMV", r"int8_gemv_kernel"),
    ("W4A8 GEMV", r"w4a8_gemv_kernel"),
    ("W4A16 GEMV", r"w4a16_(gemv|generic)_kernel"),
    ("lm_head (cuBLAS fp16 GEMM)", r"nvjet"),
    ("cuBLAS GEMV (W4A16's float mixer)", r"gemvx"),
    ("Hadamard + quantize", r"hadamard_quantize_kernel"),
    ("quantize", r"::quantize_kernel<"),
    ("scan", r"selective_scan_kernel|ssd_scan_kernel"),
    ("conv", r"causal_conv1d_kernel"),
    ("RMSNorm + quantize", r"rms_norm_quantize_kernel"),
    ("state copies", r"multi_tensor_apply_kernel"),
    ("PyTorch elementwise / reduce", r"at::native"),
)
"""(kind, regular expression on the profiler's kernel name); the first that matches names the kind."""


def kind_of(kernel: str) -> str:
    for kind, pattern in KINDS:
        if re.search(pattern, kernel):
            return kind
    return "other"


def breakdown(row: dict) -> dict:
    """One edge-quamba row -> {kind: {"us_per_token", "launches_per_token"}}, graph µs, and what the top 12 miss."""
    kinds: dict[str, dict] = {}
    for k in row["kernels"]:
        entry = kinds.setdefault(kind_of(k["kernel"]), {"us_per_token": 0.0, "launches_per_token": 0.0})
        entry["us_per_token"] += k["us_per_token"]
        entry["launches_per_token"] += k["launches_per_token"]
    graph_us = 1e3 * row["graph_ms"]
    listed = sum(e["us_per_token"] for e in kinds.values())
    return {"shape": row["shape"], "impl": row["impl"], "graph_us": graph_us, "kinds": kinds,
            "outside_top_12_us": graph_us - listed}


def profiled_rows(rows: list[dict], shapes: list[str] | None) -> list[dict]:
    return [r for r in rows if isinstance(r.get("kernels"), list) and "graph_ms" in r
            and (shapes is None or r["shape"] in shapes)]


def print_table(items: list[dict]) -> None:
    for item in items:
        print(f"\n[{item['shape']}] {item['impl']}: decode graph {item['graph_us']:.0f} us per token")
        for kind, e in sorted(item["kinds"].items(), key=lambda kv: -kv[1]["us_per_token"]):
            share = e["us_per_token"] / item["graph_us"]
            print(f"  {kind:<36}{e['us_per_token']:9.1f} us {share:6.1%}  x{e['launches_per_token']:<5.0f}")
        print(f"  {'outside the top 12':<36}{item['outside_top_12_us']:9.1f} us "
              f"{item['outside_top_12_us'] / item['graph_us']:6.1%}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("record", help="a bench_latency.py JSON record")
    parser.add_argument("--shapes", default=None, help="comma-separated shapes (default: every profiled row)")
    parser.add_argument("--out", default=None, help="JSON output (default: none)")
    args = parser.parse_args(argv)
    try:
        report = json.loads(Path(args.record).read_text())
        rows = report["rows"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        parser.error(f"{args.record} is not a readable bench_latency.py record ({type(exc).__name__}: {exc})")
    shapes = [s.strip() for s in args.shapes.split(",")] if args.shapes else None
    items = [breakdown(r) for r in profiled_rows(rows, shapes)]
    if not items:
        parser.error(f"{args.record} has no profiled edge-quamba rows" + (f" for {args.shapes}" if shapes else ""))
    if args.out:  # before the table: a reader that stops early (`| head`) must not cost the record
        out = {"source": args.record, "command": "python3 benchmarks/kernel_breakdown.py " + " ".join(
            argv if argv is not None else sys.argv[1:]), "rows": items}
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    try:
        print_table(items)
        if args.out:
            print(f"\nwrote {args.out}")
        sys.stdout.flush()  # a pipe buffers: the error comes here, not at the interpreter's exit
    except BrokenPipeError:  # stdout closed early (piped into head): stop quietly, no traceback
        drop_stdout()


if __name__ == "__main__":
    main()
