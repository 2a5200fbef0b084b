"""Compare the plugin harness's outputs with the quantized reference, print one table, exit non-zero on a mismatch.

    python3 plugins/tensorrt/tests/check_cases.py CASE_DIR... [--detail FILE] [--jobs N]

Every step of every case (make_cases.py: the build-time run, the runtime shapes, the graph replays) is compared;
the table has one row per case, step kind and output (the worst step), --detail writes one row per step and output.
Rules (those of the CUDA kernel tests, OPS_CONTRACT.md):
    * int8 outputs are exact, except those of TIE_OUTPUTS (the convs' codes: CUDA's expf and torch's exp may differ
      in the last bit; the gated norms' codes: that, and the kernel's own order of the sum of squares), where a code
      may differ by one at a proven rounding tie: the reference's quotient within
      edge_quamba.onnx.validate.TIE_TOLERANCE codes of k + .5. The reference is rerun taking the plugin's side of
      exactly those ties (edge_quamba.onnx.validate.TieFollower); every other code must be equal.
      HadamardQuantize is bit-exact by contract (fixed float order): no tie rule.
    * float32 outputs (the scan's y and state) within |plugin - ref| <= RTOL * |ref| + ATOL_FRACTION * max|ref|
      (exp/log1p implementations and the order of the sum over n differ); a NaN (the harness's poison) fails.
    * the run with the states in place (FILE.alias: every output of that run) equals the out-of-place run bit for
      bit (same kernel, same inputs; for graph replays, the same state chain).
    * a graph replay r > 0 is compared with the reference's own state chain (its state input file), though the
      plugin read the state its previous replay left on the device: the float state's drift over the few replays
      stays inside the tolerance, and the int8 conv state is exact.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[3]
for path in (REPO, Path(__file__).resolve().parent):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from edge_quamba.onnx.validate import TieFollower  # noqa: E402
from edge_quamba.ops.specs import PLUGIN_SPECS  # noqa: E402
from edge_quamba.quant import qops  # noqa: E402
from edge_quamba.quant.primitives import code_label, quantize_hook  # noqa: E402
from make_cases import activation_inputs  # noqa: E402

RTOL = 1e-4
ATOL_FRACTION = 1e-4
TIE_OUTPUTS = {"Int8CausalConv1d": "u_q", "Int8CausalConv1dChannelScales": "out_q", "GatedRMSNormQuantize": "y_q",
               "GatedRMSNormHadamardQuantize": "y_q"}
"""The int8 output of each op whose codes follow the tie rule (one quantize call makes it, in the reference)."""
NUMPY = {"int8": np.int8, "float32": np.float32}


@dataclass(frozen=True)
class TensorLine:
    name: str
    dtype: str
    shape: tuple[int, ...]
    file: str


@dataclass(frozen=True)
class Step:
    mode: str  # build | shape | graph
    folder: Path
    inputs: tuple[TensorLine, ...]
    outputs: tuple[TensorLine, ...]


def _tensor_line(rest: list[str]) -> TensorLine:
    name, dtype, rank = rest[0], rest[1], int(rest[2])
    return TensorLine(name, dtype, tuple(int(v) for v in rest[3:3 + rank]), rest[3 + rank])


def read_case(folder: Path) -> dict:
    """case.txt and the steps' step.txt: {"plugin", "fields": {name: float or int}, "aliases": [(out, in)], "steps"}."""
    case = {"plugin": None, "fields": {}, "aliases": [], "steps": []}
    for line in (folder / "case.txt").read_text(encoding="utf-8").splitlines():
        key, *rest = line.split()
        if key == "plugin":
            case["plugin"] = rest[0]
        elif key == "field":
            case["fields"][rest[0]] = float.fromhex(rest[1])
        elif key == "intfield":
            case["fields"][rest[0]] = int(rest[1])
        elif key == "alias":
            case["aliases"].append((int(rest[0]), int(rest[1])))
        elif key == "step":
            step_dir = folder / rest[1]
            lines = [s.split() for s in (step_dir / "step.txt").read_text(encoding="utf-8").splitlines() if s.strip()]
            case["steps"].append(Step(rest[0], step_dir, tuple(_tensor_line(s[1:]) for s in lines if s[0] == "input"),
                                      tuple(_tensor_line(s[1:]) for s in lines if s[0] == "output")))
    return case


def load(path: Path, dtype: str, shape: tuple[int, ...]) -> torch.Tensor:
    data = np.fromfile(path, dtype=NUMPY[dtype])
    if data.size != int(np.prod(shape)):
        raise SystemExit(f"{path}: {data.size} elements, expected {shape}")
    return torch.from_numpy(data.reshape(shape))


def compare_float(got: torch.Tensor, want: torch.Tensor) -> tuple[bool, float, float]:
    diff = (got.double() - want.double()).abs()
    bound = RTOL * want.abs().double() + ATOL_FRACTION * float(want.abs().max())
    ok = bool(torch.isfinite(got).all()) and bool((diff <= bound).all())
    return ok, float(diff.max()), float(diff.mean())


def compare(got: torch.Tensor, want: torch.Tensor, dtype: str) -> tuple[bool, float, float]:
    """(equal within the rules, max |diff|, mean |diff|) of one output."""
    if dtype == "int8":
        diff = (got.int() - want.int()).abs()
        return bool((diff == 0).all()), float(diff.max()), float(diff.float().mean())
    return compare_float(got, want)


def minus_128_count(step: Step, spec, carried: set[str]) -> int:
    """-128 codes in the step's int8 activation inputs that the plugin read from the file."""
    names = set(activation_inputs(spec)) - carried
    return sum(int((load(step.folder / t.file, t.dtype, t.shape) == -128).sum()) for t in step.inputs
               if t.name in names)


def check_step(case: dict, step: Step) -> list[dict]:
    spec = PLUGIN_SPECS[case["plugin"]]
    inputs = {t.name: load(step.folder / t.file, t.dtype, t.shape) for t in step.inputs}
    expected = {t.name: load(step.folder / f"{t.file}.expected", t.dtype, t.shape) for t in step.outputs}
    label = {"case": step.folder.parent.name, "step": step.folder.name, "mode": step.mode}
    missing = [t.name for t in step.outputs if not (step.folder / t.file).is_file()]
    if missing:
        return [{**label, "output": name, "shape": "-", "max": float("nan"), "mean": float("nan"), "ties": 0,
                 "ok": False, "note": "not written by the harness"} for name in missing]
    outputs = {t.name: load(step.folder / t.file, t.dtype, t.shape) for t in step.outputs}
    ties = 0
    tie_output = TIE_OUTPUTS.get(spec.name)
    if tie_output:  # rerun the reference following the plugin's side of proven ties
        follower = TieFollower()
        follower.expect({tie_output: outputs[tie_output].numpy()})
        with quantize_hook(follower), code_label(tie_output):
            followed = getattr(qops, spec.reference)(*(inputs[t.name] for t in spec.inputs),
                                                     *(case["fields"][a.name] for a in spec.attributes))
        follower.finish()
        ties = follower.ties
        followed = followed if isinstance(followed, tuple) else (followed,)
        expected[tie_output] = followed[[t.name for t in spec.outputs].index(tie_output)]
    rows = []
    for t in step.outputs:
        ok, max_diff, mean_diff = compare(outputs[t.name], expected[t.name], t.dtype)
        rows.append({**label, "output": t.name, "shape": "x".join(map(str, t.shape)), "max": max_diff,
                     "mean": mean_diff, "ties": ties if t.name == tie_output else 0, "ok": ok, "note": ""})
    if case["aliases"] and step.mode != "build":  # the in-place run: every output equals the out-of-place one
        for t in step.outputs:
            path = step.folder / f"{t.file}.alias"
            if not path.is_file():
                rows.append({**label, "output": f"{t.name} (in place)", "shape": "-", "max": float("nan"),
                             "mean": float("nan"), "ties": 0, "ok": False, "note": "not written by the harness"})
                continue
            aliased = load(path, t.dtype, t.shape)
            same = aliased.numpy().tobytes() == outputs[t.name].numpy().tobytes()
            diff = float((aliased.double() - outputs[t.name].double()).abs().nan_to_num(float("inf")).max())
            rows.append({**label, "output": f"{t.name} (in place)", "shape": "x".join(map(str, t.shape)),
                         "max": diff, "mean": 0.0, "ties": 0, "ok": same, "note": ""})
    return rows


def check_case(folder: Path) -> tuple[list[dict], dict]:
    """All rows of one case, and its facts: -128 codes read, timings (result.txt, when the harness timed)."""
    case = read_case(folder)
    spec = PLUGIN_SPECS[case["plugin"]]
    carried_names = {spec.inputs[i].name for _, i in case["aliases"]}
    rows, minus_128, replay = [], 0, 0
    for step in case["steps"]:
        carried = carried_names if step.mode == "graph" and replay > 0 else set()
        minus_128 += minus_128_count(step, spec, carried)
        rows += check_step(case, step)
        replay += step.mode == "graph"
    timing = {}
    result = folder / "result.txt"
    if result.is_file():
        for line in result.read_text(encoding="utf-8").splitlines():
            *key, value = line.split()
            timing[" ".join(key)] = float(value)
    return rows, {"case": folder.name, "plugin": case["plugin"], "minus_128": minus_128, "timing": timing,
                  "steps": case["steps"], "int8_inputs": bool(activation_inputs(spec))}


def _steps_label(mode: str, steps: list[Step]) -> str:
    shapes = [s.outputs[0].shape for s in steps if s.mode == mode]
    if mode == "graph":
        return f"graph x{len(shapes)} b{shapes[0][0]} l1"
    return f"{mode} l" + ",".join(str(s[1]) for s in shapes)


def summarize(rows: list[dict], facts: list[dict]) -> list[dict]:
    """One row per case, step kind and output: the worst step."""
    by_case = {f["case"]: f for f in facts}
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["case"], r["mode"], r["output"]), []).append(r)
    summary = []
    for (case, mode, output), group in groups.items():
        summary.append({"case": case, "steps": _steps_label(mode, by_case[case]["steps"]), "output": output,
                        "max": max(g["max"] for g in group), "mean": max(g["mean"] for g in group),
                        "ties": sum(g["ties"] for g in group), "ok": all(g["ok"] for g in group),
                        "failed": [g["step"] + (f" ({g['note']})" if g["note"] else "") for g in group if not g["ok"]]})
    return summary


def print_table(summary: list[dict], facts: list[dict], out=sys.stdout) -> None:
    print(f"{'case':30} {'steps':26} {'output':26} {'max|diff|':>10} {'mean|diff|':>11} {'ties':>5}  result", file=out)
    for r in summary:
        result = "PASS" if r["ok"] else "FAIL " + ", ".join(r["failed"])
        print(f"{r['case']:30} {r['steps']:26} {r['output']:26} {r['max']:10.3g} {r['mean']:11.3g} {r['ties']:5d}  "
              f"{result}", file=out)
    print("\n-128 codes in the int8 activation inputs the plugins read (each must read as -127), and timings "
          "(median of 21; us):", file=out)
    for f in facts:
        t = f["timing"]
        shapes = " ".join(f"{k.split()[0]}={v:.1f}" for k, v in t.items()
                          if k.endswith(" enqueue_us") and k.startswith("s"))
        graph = (f"; decode graph launch {t['graph_launch_us']:.2f} vs eager enqueue {t['decode_enqueue_us']:.2f}"
                 if "graph_launch_us" in t else "")
        codes = f"{f['minus_128']:8d}" if f["int8_inputs"] else "  (no int8 input)"
        print(f"  {f['case']:30} -128 codes {codes}" + (f"; enqueue {shapes}{graph}" if t else ""), file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="+", type=Path, help="case folders (make_cases.py) the harness ran")
    parser.add_argument("--detail", type=Path, help="also write one row per step and output here")
    parser.add_argument("--jobs", type=int, default=1, help="cases checked in parallel processes")
    args = parser.parse_args(argv)
    if args.jobs <= 1:
        checked = [check_case(folder) for folder in args.cases]
    else:
        with ProcessPoolExecutor(args.jobs, initializer=torch.set_num_threads, initargs=(2,)) as pool:
            checked = list(pool.map(check_case, args.cases))
    rows = [row for case_rows, _ in checked for row in case_rows]
    facts = [case_facts for _, case_facts in checked]
    summary = summarize(rows, facts)
    print_table(summary, facts)
    if args.detail:
        with args.detail.open("w", encoding="utf-8") as f:
            for r in rows:
                print(f"{r['case']:30} {r['step']:16} {r['mode']:6} {r['output']:26} {r['shape']:14} "
                      f"{r['max']:10.3g} {r['mean']:11.3g} {r['ties']:5d}  {'PASS' if r['ok'] else 'FAIL'} {r['note']}",
                      file=f)
        print(f"wrote {args.detail}")
    failed = sum(not r["ok"] for r in rows)
    print(f"{len(rows) - failed} of {len(rows)} step outputs of {len(facts)} cases match the quantized reference "
          f"(int8 exact, conv and gated-norm codes off by 1 only at proven .5 ties, float32 rtol {RTOL} + "
          f"{ATOL_FRACTION} * max|ref|, in-place runs bit-identical)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
