"""Before and after of a kernel change: two records of ``benchmarks/kernel_timing.py`` (the same kernels timed on one
GPU, e.g. the two runs of ``quamba2_gpu_call.sh`` with BASELINE_KERNELS) -> one table and one JSON (CPU only).

    python3 benchmarks/kernel_timing_ab.py BEFORE.json AFTER.json --what "..." --out benchmarks/results/X.json

The JSON keeps both records' commands, GPUs and dates and, per kernel, both times, the ratio and the fractions of the
copy bandwidth; the table (printed and written beside it as .txt) adds the l = 1 sum of the rows whose name contains
``--sum`` (default w4a8). Records of different GPUs or kernel lists are refused in one line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def combine(before: dict, after: dict, what: str) -> dict:
    """The two records -> the comparison record (ValueError when they are not the same kernels on the same GPU)."""
    keys = [(k["kernel"], k["seqlen"]) for k in before["kernels"]]
    if keys != [(k["kernel"], k["seqlen"]) for k in after["kernels"]]:
        raise ValueError("the two records time different kernels")
    if before["gpu"] != after["gpu"]:
        raise ValueError(f"the records come from different GPUs ({before['gpu']} and {after['gpu']})")
    rows = [dict(kernel=a["kernel"], seqlen=a["seqlen"], before_us=b["time_us"], after_us=a["time_us"],
                 before_fraction_of_copy=b["fraction_of_copy"], after_fraction_of_copy=a["fraction_of_copy"],
                 speedup=round(b["time_us"] / a["time_us"], 3))
            for b, a in zip(before["kernels"], after["kernels"])]
    return dict(what=what, gpu=after["gpu"], torch=after["torch"], copy_gb_per_s=after["copy_gb_per_s"],
                before=dict(command=before["command"], date=before["date"]),
                after=dict(command=after["command"], date=after["date"]), shape=after["shape"], kernels=rows)


def table(record: dict, sum_filter: str) -> str:
    lines = [f"# {record['what']}", f"# GPU {record['gpu']}, torch {record['torch']}; before {record['before']['date']}, "
             f"after {record['after']['date']}; copy bandwidth {record['copy_gb_per_s']} GB/s",
             f"{'kernel':30s} {'l':>4s} {'before us':>10s} {'after us':>9s} {'speedup':>8s} {'of copy after':>14s}"]
    for r in record["kernels"]:
        lines.append(f"{r['kernel']:30s} {r['seqlen']:4d} {r['before_us']:10.2f} {r['after_us']:9.2f} "
                     f"{r['speedup']:8.2f} {r['after_fraction_of_copy']:14.2f}")
    summed = [r for r in record["kernels"] if r["seqlen"] == 1 and sum_filter in r["kernel"]]
    if summed:
        lines.append(f"l = 1, the {len(summed)} rows with '{sum_filter}': {sum(r['before_us'] for r in summed):.2f} -> "
                     f"{sum(r['after_us'] for r in summed):.2f} us")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--what", required=True, help="what changed between the two records (one sentence)")
    parser.add_argument("--sum", default="w4a8", help="sum the l = 1 rows whose kernel name contains this")
    parser.add_argument("--out", type=Path, required=True, help="the comparison JSON (the table goes beside it)")
    args = parser.parse_args(argv)
    try:
        records = [json.loads(path.read_text()) for path in (args.before, args.after)]
        record = combine(*records, args.what)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        sys.exit(f"kernel_timing_ab.py: {type(exc).__name__}: {exc}")
    text = table(record, args.sum)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    args.out.with_suffix(".txt").write_text(text)
    print(text + f"wrote {args.out} and {args.out.with_suffix('.txt')}")


if __name__ == "__main__":
    main()
