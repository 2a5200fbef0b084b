"""Write the plugin harness's test cases: seeded inputs, the op's fields and the quantized reference's outputs.

    python3 plugins/tensorrt/tests/make_cases.py OUT_DIR [--only NAME_SUBSTRING]

Each case is a folder OUT_DIR/<name>/ with
    case.txt               what the harness reads: plugin, fields (hex floats: exact), inputs and outputs (name,
                           dtype, dims, file), and which state outputs to also run in place ("alias OUT IN")
    <input>.bin            raw little-endian tensors, row-major, in the op spec's dtypes
    <output>.expected.bin  edge_quamba.quant.qops on the same inputs (the harness writes <output>.bin next to them)
check_cases.py compares. Shapes follow the CUDA kernel tests: the demo model (d_inner 768, n 16, k 4) and a
Mamba-2.8B-sized layer (d_inner 5120), each in decode (l = 1) and prefill; input statistics are those of a real
layer (see _inputs), so that SiLU, softplus and the requantizations are exercised over their working range.
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

from edge_quamba.ops.specs import SPECS  # noqa: E402
from edge_quamba.quant import qops  # noqa: E402

DTYPES = {"int8": torch.int8, "float32": torch.float32}


@dataclass(frozen=True)
class Case:
    name: str
    op: str  # ONNX op_type / plugin name
    b: int
    l: int
    d_in: int
    n: int = 16
    k: int = 4
    seed: int = 0


CASES = tuple(
    Case(f"{op}-{label}", op, b, l, d, seed=i)
    for i, (op, label, b, l, d) in enumerate(
        (op, label, b, l, d)
        for op in ("Int8CausalConv1d", "Int8SelectiveScan", "HadamardQuantize")
        for label, b, l, d in (("demo-decode", 1, 1, 768), ("demo-prefill", 2, 200, 768),
                               ("5120-decode", 1, 1, 5120), ("5120-prefill", 1, 512, 5120))
    )
)
"""12 cases: every op at the demo size and at d_inner 5120, decode and prefill (l = 200 is not a multiple of the
kernels' 64-step chunks; b = 2 checks the batch strides)."""


def _ints(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randint(-127, 128, shape, generator=g, dtype=torch.int8)


def _inputs(case: Case, g: torch.Generator) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Inputs by spec name, and the scales (float32-representable) by attribute name."""
    b, l, d, n, k = case.b, case.l, case.d_in, case.n, case.k
    if case.op == "Int8CausalConv1d":
        # acc of k products of uniform codes has std ~ 2 * 127^2 / 3; times x_scale * weight_scale ~ 1 (SiLU's range)
        tensors = {"x_q": _ints(g, b, l, d), "conv_state_q": _ints(g, b, d, k), "weight_q": _ints(g, d, k),
                   "bias": 0.1 * torch.randn(d, generator=g)}
        scales = {"x_scale": 0.02, "weight_scale": 0.005, "out_scale": 0.03}
    elif case.op == "Int8SelectiveScan":
        dt_init = torch.exp(torch.rand(d, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        tensors = {"u_q": _ints(g, b, l, d), "dt_q": _ints(g, b, l, d), "B_q": _ints(g, b, l, n),
                   "C_q": _ints(g, b, l, n), "z_q": _ints(g, b, l, d),
                   "ssm_state": 0.5 * torch.randn(b, d, n, generator=g),
                   "A": -torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1),  # S4D-real init, as Mamba's
                   "D": torch.ones(d) + 0.1 * torch.randn(d, generator=g),
                   "dt_bias": dt_init + torch.log(-torch.expm1(-dt_init))}  # inverse softplus, as Mamba's init
        scales = {"u_scale": 0.05, "dt_scale": 0.02, "B_scale": 0.02, "C_scale": 0.02, "z_scale": 0.05}
    else:
        y = torch.randn(b, l, d, generator=g)
        y[..., :: max(d // 8, 1)] *= 20.0  # a few outlier channels, which the rotation spreads
        tensors = {"y": y}
        scales = {"out_scale": 0.05}
    scales = {name: float(torch.tensor(v, dtype=torch.float32)) for name, v in scales.items()}
    return tensors, scales


def _tensor_line(kind: str, name: str, t: torch.Tensor, dtype: str, file: str) -> str:
    return f"{kind} {name} {dtype} {t.dim()} {' '.join(str(s) for s in t.shape)} {file}"


def _write(path: Path, t: torch.Tensor) -> None:
    path.write_bytes(t.contiguous().numpy().tobytes())


def write_case(case: Case, out: Path) -> Path:
    spec = SPECS[case.op]
    folder = out / case.name
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(1000 + case.seed)
    tensors, scales = _inputs(case, g)
    expected = getattr(qops, spec.reference)(*(tensors[t.name] for t in spec.inputs),
                                             *(scales[a.name] for a in spec.attributes))
    expected = expected if isinstance(expected, tuple) else (expected,)
    lines = [f"plugin {spec.name}"]
    lines += [f"field {a.name} {scales[a.name].hex()}" for a in spec.attributes]
    for t in spec.inputs:
        value = tensors[t.name].to(DTYPES[t.dtype])
        assert value.dim() == len(t.shape), (t.name, value.shape, t.shape)
        _write(folder / f"{t.name}.bin", value)
        lines.append(_tensor_line("input", t.name, value, t.dtype, f"{t.name}.bin"))
    for t, value in zip(spec.outputs, expected):
        assert value.dtype == DTYPES[t.dtype], (t.name, value.dtype)
        _write(folder / f"{t.name}.expected.bin", value)
        lines.append(_tensor_line("output", t.name, value, t.dtype, f"{t.name}.bin"))
    # The state outputs also run in place (the kernels allow it): output j aliases the input of the same shape.
    input_names = [t.name for t in spec.inputs]
    for j, t in enumerate(spec.outputs):
        if t.name.endswith("_out"):
            source = next(i for i, s in enumerate(spec.inputs) if s.shape == t.shape)
            lines.append(f"alias {j} {source}")
            assert input_names[source] in ("conv_state_q", "ssm_state")
    (folder / "case.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write the case folders into")
    parser.add_argument("--only", default="", help="only cases whose name contains this")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(8, torch.get_num_threads()))
    for case in CASES:
        if args.only in case.name:
            print(f"wrote {write_case(case, args.out)}")


if __name__ == "__main__":
    main()
