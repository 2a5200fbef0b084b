"""Compare the plugin harness's outputs with the quantized reference, print one table, exit non-zero on a mismatch.

    python3 plugins/tensorrt/tests/check_cases.py CASE_DIR...

Rules (those of the CUDA kernel tests, OPS_CONTRACT.md):
    * int8 outputs are exact, except Int8CausalConv1d's u_q, where a code may differ by one at a proven rounding
      tie: the reference's quotient u / out_scale within edge_quamba.onnx.validate.TIE_TOLERANCE codes of k + .5
      (CUDA's expf and torch's exp may differ in the last bit). The reference is rerun taking the plugin's side of
      exactly those ties (edge_quamba.onnx.validate.TieFollower); every other code must be equal.
      HadamardQuantize is bit-exact by contract (fixed float order): no tie rule.
    * float32 outputs (the scan's y and state) within |plugin - ref| <= RTOL * |ref| + ATOL_FRACTION * max|ref|
      (exp/log1p implementations and the order of the sum over n differ).
    * a state output run in place (output pointer = input buffer, "<file>.alias") equals the out-of-place output
      bit for bit (same kernel, same inputs).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from edge_quamba.onnx.validate import TieFollower  # noqa: E402
from edge_quamba.ops.specs import SPECS  # noqa: E402
from edge_quamba.quant import qops  # noqa: E402
from edge_quamba.quant.primitives import code_label, quantize_hook  # noqa: E402

RTOL = 1e-4
ATOL_FRACTION = 1e-4
NUMPY = {"int8": np.int8, "float32": np.float32}


def read_case(folder: Path) -> dict:
    """case.txt as {"plugin", "fields": {name: float}, "inputs"/"outputs": [(name, dtype, shape, file)], "aliases"}."""
    case = {"plugin": None, "fields": {}, "inputs": [], "outputs": [], "aliases": []}
    for line in (folder / "case.txt").read_text(encoding="utf-8").splitlines():
        key, *rest = line.split()
        if key == "plugin":
            case["plugin"] = rest[0]
        elif key == "field":
            case["fields"][rest[0]] = float.fromhex(rest[1])
        elif key in ("input", "output"):
            name, dtype, rank = rest[0], rest[1], int(rest[2])
            case[key + "s"].append((name, dtype, tuple(int(v) for v in rest[3:3 + rank]), rest[3 + rank]))
        elif key == "alias":
            case["aliases"].append((int(rest[0]), int(rest[1])))
    return case


def load(path: Path, dtype: str, shape: tuple[int, ...]) -> torch.Tensor:
    data = np.fromfile(path, dtype=NUMPY[dtype])
    if data.size != int(np.prod(shape)):
        raise SystemExit(f"{path}: {data.size} elements, expected {shape}")
    return torch.from_numpy(data.reshape(shape))


def compare_float(got: torch.Tensor, want: torch.Tensor) -> tuple[bool, float, float]:
    diff = (got - want).abs()
    bound = RTOL * want.abs() + ATOL_FRACTION * float(want.abs().max())
    ok = bool(torch.isfinite(got).all()) and bool((diff <= bound).all())
    return ok, float(diff.max()), float(diff.mean())


def check_case(folder: Path) -> list[dict]:
    case = read_case(folder)
    spec = SPECS[case["plugin"]]
    inputs = {name: load(folder / file, dtype, shape) for name, dtype, shape, file in case["inputs"]}
    outputs = {name: load(folder / file, dtype, shape) for name, dtype, shape, file in case["outputs"]}
    expected = {name: load(folder / f"{name}.expected.bin", dtype, shape) for name, dtype, shape, _ in case["outputs"]}
    timing = (folder / "result.txt").read_text(encoding="utf-8").split()
    enqueue_us = float(timing[timing.index("enqueue_us") + 1])
    rows = []
    ties = 0
    if spec.name == "Int8CausalConv1d":  # rerun the reference following the plugin's side of proven ties
        follower = TieFollower()
        follower.expect({"u_q": outputs["u_q"].numpy()})
        with quantize_hook(follower), code_label("u_q"):
            followed, _ = qops.int8_causal_conv1d(*(inputs[t.name] for t in spec.inputs),
                                                  *(case["fields"][a.name] for a in spec.attributes))
        follower.finish()
        ties = follower.ties
        expected["u_q"] = followed
    for (name, dtype, shape, file), out in zip(case["outputs"], spec.outputs):
        got, want = outputs[name], expected[name]
        if dtype == "int8":
            diff = (got.int() - want.int()).abs()
            ok, max_diff, mean_diff = bool((diff == 0).all()), float(diff.max()), float(diff.float().mean())
        else:
            ok, max_diff, mean_diff = compare_float(got, want)
        rows.append({"case": folder.name, "output": name, "shape": "x".join(map(str, shape)), "max": max_diff,
                     "mean": mean_diff, "ties": ties if name == "u_q" else 0, "us": enqueue_us, "ok": ok})
    for out_index, _ in case["aliases"]:
        name, dtype, shape, file = case["outputs"][out_index]
        aliased = load(folder / f"{file}.alias", dtype, shape)
        same = bool(torch.equal(aliased, outputs[name]))
        diff = float((aliased.double() - outputs[name].double()).abs().max())
        rows.append({"case": folder.name, "output": f"{name} (in place)", "shape": "x".join(map(str, shape)),
                     "max": diff, "mean": 0.0, "ties": 0, "us": enqueue_us, "ok": same})
    return rows


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: check_cases.py CASE_DIR...", file=sys.stderr)
        return 2
    rows = [row for folder in argv for row in check_case(Path(folder))]
    print(f"{'case':34} {'output':26} {'shape':16} {'max|diff|':>10} {'mean|diff|':>11} {'ties':>5} "
          f"{'enqueue us':>10}  result")
    for r in rows:
        print(f"{r['case']:34} {r['output']:26} {r['shape']:16} {r['max']:10.3g} {r['mean']:11.3g} {r['ties']:5d} "
              f"{r['us']:10.2f}  {'PASS' if r['ok'] else 'FAIL'}")
    failed = sum(not r["ok"] for r in rows)
    print(f"{len(rows) - failed} of {len(rows)} outputs match the quantized reference "
          f"(int8 exact, conv1d ties <= 1 code at proven .5 ties, float32 rtol {RTOL} + {ATOL_FRACTION} * max|ref|)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
