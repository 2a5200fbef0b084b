"""What is byte-identical: `edge-quamba quantize` run with different CPU thread counts and calibration seeds.

Each run is a fresh process with OMP_NUM_THREADS and torch's intra-op threads set to the same count; the table lists
the sha256 of the artifact's model.safetensors and quant_config.json per (calibration draw, threads), and whether the
files are identical across thread counts. Only this machine's CPU is measured: CPU against GPU is not (the GPU's
float reductions differ, so nothing is claimed there).

    python benchmarks/determinism.py                         # the demo model, 32 calibration windows of 512
    python benchmarks/determinism.py --threads 1,2 --seeds file,0,1

Writes benchmarks/results/determinism.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"
FILES = ("model.safetensors", "quant_config.json")


def quantize(out: Path, threads: int, seed: str, args) -> dict[str, str]:
    """Run `edge-quamba quantize` in a fresh process with ``threads`` threads; sha256 of each artifact file."""
    code = ("import sys, torch; torch.set_num_threads(int(sys.argv[1])); from edge_quamba.cli import main; "
            "main(sys.argv[2:])")
    cmd = [sys.executable, "-c", code, str(threads), "quantize", "--out", str(out),
           "--calib-samples", str(args.calib_samples), *([] if seed == "file" else ["--calib-seed", seed])]
    if args.model:
        cmd += ["--model", args.model]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    subprocess.run(cmd, check=True, env=env, cwd=Path(__file__).parents[1], stdout=subprocess.DEVNULL)
    return {name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in FILES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="fp checkpoint (default: the demo model)")
    parser.add_argument("--calib-samples", type=int, default=32)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--seeds", default="file,0,1", help="calibration draws: 'file' or integers")
    parser.add_argument("--out", default=str(RESULTS / "determinism.json"))
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    seeds = args.seeds.split(",")
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            runs[seed] = {str(t): quantize(Path(tmp) / f"{seed}-{t}", t, seed, args) for t in threads}
            print(f"seed {seed}: " + "  ".join(f"{t} threads {h['model.safetensors'][:16]}"
                                              for t, h in runs[seed].items()), file=sys.stderr)
    identical = {seed: len({json.dumps(h, sort_keys=True) for h in by_threads.values()}) == 1
                 for seed, by_threads in runs.items()}
    distinct_draws = len({by_threads[str(threads[0])]["model.safetensors"] for by_threads in runs.values()})
    report = {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "date": date.today().isoformat(),
        "machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "torch": torch.__version__},
        "model": args.model or "demo", "calib_samples": args.calib_samples, "threads": threads,
        "sha256": runs, "identical_across_threads": identical,
        "distinct_artifacts_across_draws": distinct_draws, "cpu_vs_gpu": "not measured",
    }
    print(f"{'draw':<8}" + "".join(f"{str(t) + ' threads':>20}" for t in threads) + f"{'identical':>12}")
    for seed, by_threads in runs.items():
        print(f"{seed:<8}" + "".join(f"{h['model.safetensors'][:16]:>20}" for h in by_threads.values())
              + f"{str(identical[seed]):>12}")
    print(f"{distinct_draws} distinct model.safetensors over {len(seeds)} calibration draws")
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
