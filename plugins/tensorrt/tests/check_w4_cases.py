"""Compare w4_harness's outputs with the reference's (make_w4_cases.py says what is compared and why).

    python3 plugins/tensorrt/tests/check_w4_cases.py CASE_DIR...

One line per output of every run (step and replay), then a summary; exits 1 if any output is missing, holds unwritten
values (the harness poisons outputs: int8 -128, float NaN) or is off its contract:
    W4A8Linear, W4A8LinearQuantize    bit for bit
    W4A16Linear                       |got - ref| <= 2^-10 |ref| + bound (PATH.bound: 2^-15 (|x| @ |w|^T))
    SelectiveScanF16                  max |got - ref| <= 1e-4 max |ref| + 1e-6, for y and the state
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

NUMPY = {"int8": np.int8, "float16": np.float16, "float32": np.float32}
W4A16_ULP = 2.0**-10
SCAN_TOL = 1e-4


def _outputs(case: Path) -> tuple[str, list[tuple[str, str, str, tuple[int, ...]]]]:
    """The case's plugin and every (step dir, output name, dtype, shape) it wrote."""
    plugin, found = "", []
    for line in (case / "case.txt").read_text(encoding="utf-8").splitlines():
        words = line.split()
        if words and words[0] == "plugin":
            plugin = words[1]
        elif words and words[0] == "step":
            for step in words[2:]:
                for text in (case / step / "step.txt").read_text(encoding="utf-8").splitlines():
                    w = text.split()
                    if w and w[0] == "output":
                        rank = int(w[3])
                        found.append((step, w[1], w[2], tuple(int(v) for v in w[4:4 + rank])))
    return plugin, found


def compare(plugin: str, got: np.ndarray, ref: np.ndarray, bound: np.ndarray | None) -> tuple[bool, str]:
    """(passed, what was seen) for one output under its plugin's contract."""
    if got.dtype == np.int8:
        if (got == -128).any():
            return False, f"{int((got == -128).sum())} codes unwritten (-128)"
        differ = int((got != ref).sum())
        return differ == 0, f"{differ} of {got.size} codes differ"
    if np.isnan(got).any():
        return False, f"{int(np.isnan(got).sum())} values unwritten (NaN)"
    diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    if plugin == "W4A8Linear":
        differ = int((got != ref).sum())
        return differ == 0, f"{differ} of {got.size} differ (max {diff.max():.3e})"
    if plugin == "W4A16Linear":
        limit = W4A16_ULP * np.abs(ref.astype(np.float64)) + bound
        worst = float((diff / np.maximum(limit, 1e-30)).max())
        return worst <= 1.0, f"max diff {diff.max():.3e}, worst diff / tolerance {worst:.3f}"
    tolerance = SCAN_TOL * float(np.abs(ref).max()) + 1e-6
    return float(diff.max()) <= tolerance, f"max diff {diff.max():.3e} (tolerance {tolerance:.3e})"


def main(argv: list[str]) -> int:
    failures = checked = 0
    for case in map(Path, argv):
        plugin, outputs = _outputs(case)
        for step, name, dtype, shape in outputs:
            path = case / step / f"{name}.bin"
            checked += 1
            if not path.is_file():
                print(f"FAIL {case.name} {step} {name}: no output (the harness did not run it)")
                failures += 1
                continue
            got = np.fromfile(path, NUMPY[dtype]).reshape(shape)
            ref = np.fromfile(f"{path}.expected", NUMPY[dtype]).reshape(shape)
            bound_file = Path(f"{path}.bound")
            bound = np.fromfile(bound_file, np.float32).reshape(shape) if bound_file.is_file() else None
            ok, seen = compare(plugin, got, ref, bound)
            failures += not ok
            print(f"{'pass' if ok else 'FAIL'} {case.name:<36} {step} {name:<14} {str(shape):<18} {seen}")
    print(f"{checked - failures} of {checked} outputs match")
    return 1 if failures or checked == 0 else 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__.split("\n\n")[1])
    sys.exit(main(sys.argv[1:]))
