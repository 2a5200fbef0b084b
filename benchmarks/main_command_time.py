"""Wall and CPU time of the README's main job on this machine (after `pip install`): export the demo model, then
stream a greedy continuation from ONNX Runtime.

    python benchmarks/main_command_time.py      # writes benchmarks/results/main_command_time.json

The commands are MAIN_JOB below; tests/test_readme.py checks that the README's set-up line runs exactly these after
its pip installs, so this measures what a new user runs. Each command runs in a fresh process in a temporary
folder; CPU time is the children's user + system time (getrusage), wall time includes Python start-up. A machine
busy with other work inflates wall time, so the load average before and after is recorded with the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from edge_quamba.runtime.bench import cpu_name

RESULTS = Path(__file__).parent / "results"
MAIN_JOB = (
    "edge-quamba export --out demo-export",
    'edge-quamba run --model demo-export --backend ort --prompt "The Python interpreter" --max-new-tokens 48 '
    "--temperature 0",
)
"""The README's main job after its two pip installs (tests/test_readme.py holds the README to it)."""


def time_command(command: str, cwd: Path) -> dict:
    """Run one command (its first word is our console script, run as ``python -m edge_quamba``)."""
    args = shlex.split(command)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "edge_quamba", *args[1:]], cwd=cwd, capture_output=True,
                          text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"{command} failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"command": command, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "stdout": proc.stdout.splitlines()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(RESULTS / "main_command_time.json"))
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as scratch:
        steps = [time_command(command, Path(scratch)) for command in MAIN_JOB]
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()},
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "steps": steps,
        "total_wall_s": round(sum(s["wall_s"] for s in steps), 2),
        "total_cpu_s": round(sum(s["cpu_s"] for s in steps), 2),
    }
    print(f"{'step':<70}{'wall s':>9}{'cpu s':>9}")
    for s in steps:
        print(f"{s['command'][:68]:<70}{s['wall_s']:>9.1f}{s['cpu_s']:>9.1f}")
    print(f"{'total':<70}{report['total_wall_s']:>9.1f}{report['total_cpu_s']:>9.1f}")
    print(f"load average before {report['load_average_before']}, after {report['load_average_after']}")
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
