"""Write w4_harness's cases: the plugins of the 4-bit configs (W4A8Linear, W4A8LinearQuantize, W4A16Linear,
SelectiveScanF16) on seeded inputs, with the reference's outputs.

    python3 plugins/tensorrt/tests/make_w4_cases.py OUT_DIR [--set model|small] [--only NAME_SUBSTRING]

A case is one plugin object's life in TensorRT (w4Run.cpp says which call comes when). OUT_DIR/<case>/case.txt:

    plugin NAME
    field NAME float HEXFLOAT | field NAME int VALUE     the ONNX attributes (hex floats: exact)
    step build|shape|graph DIR...                       in order: the build-time run at the profile's opt shape,
                                                        runtime shapes on one object, then decode replays of one
                                                        captured CUDA graph (one DIR per replay)

and each DIR/step.txt lists, in the plugin's order, `input NAME DTYPE RANK DIMS... PATH const|act` and
`output NAME DTYPE RANK DIMS... PATH` (raw little-endian, row-major, the op spec's dtypes; the packed int4 weight
is the artifact's uint8 bytes, which the spec calls int8). Next to each output PATH: PATH.expected, the reference
(``edge_quamba.quant.qops.<the spec's reference>``; the scan's is models.mamba.selective_scan) on the same inputs, and for
W4A16Linear PATH.bound, the per-element tolerance (below); check_w4_cases.py compares.

What is compared (the kernels' own contracts, plugins/kernels/int4_linear.h and selective_scan.h):
    * W4A8Linear (float32) and W4A8LinearQuantize (int8): bit for bit;
    * W4A16Linear (float16): |got - ref| <= 2^-10 |ref| + 2^-15 (|x| @ |w|^T), one float16 rounding step plus
      float32 accumulation in another order (tests/test_cuda_int4.py's W4A16_ULP and W4A16_SUM);
    * SelectiveScanF16 y and state: max |got - ref| <= 1e-4 max |ref| + 1e-6 (tests/test_cuda_int4.py's SCAN_TOL).

Sets: `model` (Mamba-2.8B's layers: d_model 2560, d_inner 5120, dt_rank 160, n 16, group size 64: in_proj 2560 ->
10240, x_proj 5120 -> 192, dt_proj 160 -> 5120 with a partial last group, out_proj 5120 -> 2560, and the scan at
d_inner 5120), l through 1, 7, 512, then b 2 at l 130, then back to 7, and a CUDA-graph decode of 3 replays;
`small` (the same plugins at K, N <= 512 and l <= 17) is what run_w4_on_gpu.sh runs under compute-sanitizer. Case
data is made where it is used, never committed (`model`: about 0.5 GB).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from edge_quamba.ops.specs import SPECS, OpSpec  # noqa: E402
from edge_quamba.quant import primitives, qops  # noqa: E402

W4A16_ULP = 2.0**-10
W4A16_SUM = 2.0**-15


@dataclass(frozen=True)
class Case:
    """One plugin's life: ``k``, ``n`` a linear's in/out features (the scan: d_in and d_state), ``shapes`` the runtime
    (b, l) in order, ``opt`` the build-time (b, l), ``replays`` decode replays at b = 1."""

    name: str
    op: str
    k: int
    n: int
    shapes: tuple[tuple[int, int], ...]
    opt: tuple[int, int]
    group_size: int = 64
    bias: bool = False
    replays: int = 3
    seed: int = 0


def _cases(label: str, d_model: int, d_inner: int, dt_rank: int, lengths: tuple[int, int, int, int],
           group_size: int) -> tuple[Case, ...]:
    one, few, many, odd = lengths
    shapes = ((1, one), (1, few), (1, many), (2, odd), (1, few))
    opt = (1, many)
    linears = (("in_proj", d_model, 2 * d_inner, False), ("x_proj", d_inner, dt_rank + 32, False),
               ("dt_proj", dt_rank, d_inner, True), ("out_proj", d_inner, d_model, True))
    cases = []
    for name, k, n, bias in linears:  # W4A8: the requantizing in_proj, x_proj, dt_proj and the float-out out_proj
        w4a8 = "W4A8Linear" if name == "out_proj" else "W4A8LinearQuantize"
        for op in (w4a8, "W4A16Linear"):
            cases.append(Case(f"{op}-{name}-{label}", op, k, n, shapes, opt, group_size, bias, seed=len(cases)))
    cases.append(Case(f"SelectiveScanF16-{label}", "SelectiveScanF16", d_inner, 16, shapes, opt, seed=len(cases)))
    return tuple(cases)


SETS = {
    "model": _cases("2.8b", 2560, 5120, 160, (1, 7, 512, 130), 64),
    "small": _cases("small", 192, 384, 24, (1, 3, 17, 5), 32),
}
"""`model`: 2.8b's shapes; `small`: dt_proj K = 24 < the group size 32 (one partial group)."""


def _codes(g: torch.Generator, *shape: int) -> torch.Tensor:
    """int8 activation codes in [-127, 127]: what a GEMM input holds in the graph (the readers of a saturating
    QuantizeLinear are clamped requantizations, and the plugins' epilogues clamp)."""
    return torch.randint(-127, 128, shape, generator=g, dtype=torch.int8)


def _constants(case: Case, g: torch.Generator) -> tuple[dict[str, torch.Tensor], dict[str, float | int]]:
    """The constant inputs (graph initializers) by spec name, and the fields."""
    if case.op == "SelectiveScanF16":
        d, n = case.k, case.n
        return {"A": -torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1),  # S4D-real, as Mamba's init
                "D": (torch.ones(d) + 0.1 * torch.randn(d, generator=g)).half()}, {}
    codes = torch.randint(-8, 8, (case.n, case.k), generator=g, dtype=torch.int8)  # every nibble
    groups = primitives.int4_group_count(case.k, case.group_size)
    constants = {"weight_packed": primitives.pack_int4(codes),
                 "weight_scale": torch.rand(case.n, groups, generator=g) * 0.01 + 1e-4,
                 "bias": torch.randn(case.n, generator=g) if case.bias else torch.zeros(case.n)}
    fields: dict[str, float | int] = {"group_size": case.group_size}
    if case.op != "W4A16Linear":
        fields["x_scale"] = float(torch.tensor(0.0173, dtype=torch.float32))
    return constants, fields


def _activations(case: Case, b: int, l: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """The per-call inputs at (b, l)."""
    if case.op == "SelectiveScanF16":
        d, n = case.k, case.n
        dt = torch.exp(torch.rand(b, l, d, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        return {"u": torch.randn(b, l, d, generator=g).half(), "delta": dt,  # delta as Mamba's dt_init range
                "B": torch.randn(b, l, n, generator=g).half(), "C": torch.randn(b, l, n, generator=g).half(),
                "ssm_state": 0.5 * torch.randn(b, d, n, generator=g)}
    if case.op == "W4A16Linear":
        return {"x": torch.randn(b, l, case.k, generator=g).half()}
    return {"x_q": _codes(g, b, l, case.k)}


def _out_scale(case: Case, constants: dict[str, torch.Tensor], x_scale: float) -> float:
    """W4A8LinearQuantize's out_scale: the largest |y| of a probe input over 150, so that some codes saturate."""
    x = _codes(torch.Generator().manual_seed(7 + case.seed), 1, 16, case.k)
    y = qops.w4a8_linear(x, constants["weight_packed"], constants["weight_scale"], constants["bias"], x_scale,
                         case.group_size)
    return float(torch.tensor(float(y.abs().max()) / 150, dtype=torch.float32))


def _reference(spec: OpSpec, inputs: dict[str, torch.Tensor], fields: dict[str, float | int]):
    """The op's reference (qops.<spec.reference>; the scan's is models.mamba.selective_scan) as a tuple."""
    out = getattr(qops, spec.reference)(*(inputs[t.name] for t in spec.inputs),
                                        *(fields[a.name] for a in spec.attributes))
    return out if isinstance(out, tuple) else (out,)


def _w4a16_bound(inputs: dict[str, torch.Tensor], group_size: int) -> torch.Tensor:
    """Per element: W4A16_ULP |ref| is added by the checker; this is W4A16_SUM * (|x| @ |w|^T) (float32)."""
    w = primitives.dequantize_int4(primitives.unpack_int4(inputs["weight_packed"], inputs["x"].shape[-1]),
                                   inputs["weight_scale"], group_size)
    return W4A16_SUM * (inputs["x"].float().abs() @ w.abs().T)


def _raw(t: torch.Tensor) -> bytes:
    if t.dtype == torch.uint8:  # the packed int4 weight: the same bytes, called int8 by the spec
        t = t.view(torch.int8)
    return t.contiguous().numpy().tobytes()


def _line(kind: str, name: str, dtype: str, t: torch.Tensor, path: str, extra: str = "") -> str:
    return f"{kind} {name} {dtype} {t.dim()} {' '.join(map(str, t.shape))} {path}{extra}"


def write_case(case: Case, out: Path) -> Path:
    spec = SPECS[case.op]
    folder = out / case.name
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(1000 + case.seed)
    constants, fields = _constants(case, g)
    if case.op == "W4A8LinearQuantize":
        fields["out_scale"] = _out_scale(case, constants, fields["x_scale"])
    for name, t in constants.items():
        (folder / f"{name}.bin").write_bytes(_raw(t))
    lines = [f"plugin {spec.name}"]
    for a in spec.attributes:
        value = fields[a.name]
        lines.append(f"field {a.name} int {value}" if a.kind == "int" else f"field {a.name} float {value.hex()}")

    steps = [("build", [case.opt])] + [("shape", [s]) for s in case.shapes] + [("graph", [(1, 1)] * case.replays)]
    index = 0
    for mode, shapes in steps:
        dirs = []
        for b, l in shapes:
            step = f"s{index:02d}"
            index += 1
            dirs.append(step)
            (folder / step).mkdir(exist_ok=True)
            inputs = {**constants, **_activations(case, b, l, g)}
            outputs = _reference(spec, inputs, fields)
            text = []
            for t in spec.inputs:
                if t.name in constants:
                    text.append(_line("input", t.name, t.dtype, inputs[t.name], f"{t.name}.bin", " const"))
                else:
                    (folder / step / f"{t.name}.bin").write_bytes(_raw(inputs[t.name]))
                    text.append(_line("input", t.name, t.dtype, inputs[t.name], f"{step}/{t.name}.bin", " act"))
            for t, value in zip(spec.outputs, outputs, strict=True):
                assert str(value.dtype) == f"torch.{t.dtype}", (t.name, value.dtype)
                (folder / step / f"{t.name}.bin.expected").write_bytes(_raw(value))
                text.append(_line("output", t.name, t.dtype, value, f"{step}/{t.name}.bin"))
            if case.op == "W4A16Linear":
                (folder / step / "y.bin.bound").write_bytes(_raw(_w4a16_bound(inputs, case.group_size)))
            (folder / step / "step.txt").write_text("\n".join(text) + "\n", encoding="utf-8")
        lines.append(f"step {mode} {' '.join(dirs)}")
    (folder / "case.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write the case folders into")
    parser.add_argument("--set", choices=sorted(SETS), default="model", help="model sizes or small ones")
    parser.add_argument("--only", default="", help="only cases whose name contains this")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(16, torch.get_num_threads()))
    for case in SETS[args.set]:
        if args.only in case.name:
            print(f"wrote {write_case(case, args.out)}")


if __name__ == "__main__":
    main()
