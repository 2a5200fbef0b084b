"""Write the plugin harness's test cases: seeded inputs, the op's fields and the quantized reference's outputs.

    python3 plugins/tensorrt/tests/make_cases.py OUT_DIR [--set model|small] [--only NAME_SUBSTRING] [--jobs N]

A case is one plugin object's life in TensorRT (trtOrder.cpp says which call comes when): one profile, a build-time
run at the profile's opt shape, runtime shape steps in a fixed order on the same object, then decode replays through
a CUDA graph. OUT_DIR/<case>/case.txt:

    plugin NAME                      the creator to use
    field NAME HEXFLOAT              the ONNX FLOAT attributes (hex: exact)
    intfield NAME INT                the ONNX INT attributes (the gated norm's group_size)
    profile SYMBOL MIN OPT MAX       the dynamic dims (b, l) of the optimization profile
    alias OUT IN                     output OUT (a state) may be written into input IN's buffer (run in place too)
    step MODE DIR                    in order; MODE build (the build-time plugin at opt), shape (the runtime plugin,
                                     one shape each), graph (decode replays of one captured graph: the states of
                                     replay r > 0 are the device's, carried from replay r - 1)

and each step folder DIR/step.txt lists `input|output NAME DTYPE RANK DIMS... FILE` (raw little-endian, row-major,
the op spec's dtypes); <FILE>.expected is edge_quamba.quant.qops on the same inputs (for a graph step: on the
reference's own state chain). The harness writes FILE (and FILE.alias from the in-place run); check_cases.py compares.

Inputs: every int8 activation input (all int8 inputs but the conv weight, which is quantized offline in [-127, 127]
and read as stored) holds -128 codes (about one in 64, at least one per tensor): TensorRT's saturating QuantizeLinear
can write -128 and every op reads it as -127 (edge_quamba.quant.primitives.read_codes), so the plugins are held to
that rule by every case. Statistics are those of a real layer (see _activations), so that SiLU, softplus and the
requantizations are exercised over their working range.

Sets: `model` (the Mamba1 ops at d_inner 768 as the demo model and 5120 as Mamba-2.8B; the Mamba2 ops, Int8CausalConv1d
ChannelScales, Int8SSDScan and GatedRMSNorm(Hadamard)Quantize, at the demo Mamba2's shapes (d_inner 768 = 12 heads of
64, d_state 64, ngroups 2, conv_dim 1024) and at Mamba2-2.7b's (d_model 2560: d_inner 5120 = 80 heads of 64, d_state
128, ngroups 1, conv_dim 5376); l 1, 7, 512, 2048, then back to 7; the demo sizes also change b between 1 and 2) is
what run_on_gpu.sh checks; `small` (the same cases with l <= 200) is what it runs under compute-sanitizer. Case data
is large (hundreds of MB for `model`): it is made where it is used, never committed. The Mamba2 cases have never run
on a GPU (their plugins compile and pass the host-side selftest and the dry run here).
"""

from __future__ import annotations

import argparse
import math
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from edge_quamba.ops.specs import PLUGIN_SPECS, OpSpec  # noqa: E402
from edge_quamba.quant import qops  # noqa: E402

DTYPES = {"int8": torch.int8, "float32": torch.float32}
WEIGHT_INPUTS = frozenset({"weight_q"})
"""int8 inputs that are weights, not activations: stored codes in [-127, 127], read as they are."""
MINUS_128_RATE = 1 / 64
"""Fraction of each int8 activation input set to -128 (at least one code per tensor)."""


@dataclass(frozen=True)
class Case:
    """One plugin object's life: ``shapes`` (b, l) are the runtime steps in order, ``opt`` the profile's opt (the
    build-time run), ``decode_b`` the batch of the ``replays`` graph replays (l = 1)."""

    name: str
    op: str  # ONNX op_type / plugin name
    d_in: int
    shapes: tuple[tuple[int, int], ...]
    opt: tuple[int, int]
    decode_b: int
    replays: int = 4
    n: int = 16
    k: int = 4
    seed: int = 0
    headdim: int = 64  # Mamba2: d_in = h * headdim
    ngroups: int = 1  # Mamba2: state groups of B and C (gn = ngroups * n) and RMS groups of the gated norm

    @property
    def conv_dim(self) -> int:
        """Mamba2's conv width: x | B | C."""
        return self.d_in + 2 * self.ngroups * self.n

    def profile(self) -> dict[str, tuple[int, int, int]]:
        """min, opt, max of b and l over every shape the case runs."""
        shapes = self.shapes + (self.opt, (self.decode_b, 1))
        return {sym: (min(s[i] for s in shapes), self.opt[i], max(s[i] for s in shapes))
                for i, sym in enumerate(("b", "l"))}


MAMBA1_OPS = ("Int8CausalConv1d", "Int8SelectiveScan", "HadamardQuantize")
MAMBA2_OPS = ("Int8CausalConv1dChannelScales", "Int8SSDScan", "GatedRMSNormHadamardQuantize", "GatedRMSNormQuantize")
MAMBA2_SHAPES = {768: (64, 2), 5120: (128, 1)}
"""d_inner -> (d_state, ngroups) of the Mamba2 cases: the demo Mamba2 model and Mamba2-2.7b (headdim 64 both)."""


def _cases(label: str, lengths: tuple[int, int, int, int], opt_l: int) -> tuple[Case, ...]:
    """Every op at d_inner 768 (b changing between 1 and 2) and 5120 (b = 1), l through ``lengths`` then back to
    lengths[1]: a shape smaller than one already run on the same object. Mamba1's ops at n 16; Mamba2's at
    MAMBA2_SHAPES."""
    one, few, mid, big = lengths
    sizes = ((768, ((1, one), (2, few), (1, mid), (2, big), (1, few)), 2),
             (5120, ((1, one), (1, few), (1, mid), (1, big), (1, few)), 1))
    mamba1 = tuple(Case(f"{op}-{d}-{label}", op, d, shapes, (1, opt_l), decode_b, seed=10 * i + j)
                   for i, op in enumerate(MAMBA1_OPS) for j, (d, shapes, decode_b) in enumerate(sizes))
    mamba2 = tuple(Case(f"{op}-{d}-{label}", op, d, shapes, (1, opt_l), decode_b, n=MAMBA2_SHAPES[d][0],
                        ngroups=MAMBA2_SHAPES[d][1], seed=100 + 10 * i + j)
                   for i, op in enumerate(MAMBA2_OPS) for j, (d, shapes, decode_b) in enumerate(sizes))
    return mamba1 + mamba2


SETS = {
    "model": _cases("model", (1, 7, 512, 2048), opt_l=512),
    "small": _cases("small", (1, 7, 130, 200), opt_l=130),
}
"""`model`: 14 cases, l up to 2048 (200 and 130 are not multiples of the kernels' 64-step chunks: `small`)."""


def _codes(g: torch.Generator, *shape: int) -> torch.Tensor:
    """Activation codes: uniform in [-127, 127], then about MINUS_128_RATE of them (at least one) set to -128."""
    q = torch.randint(-127, 128, shape, generator=g, dtype=torch.int8)
    q[torch.rand(shape, generator=g) < MINUS_128_RATE] = -128
    q.view(-1)[int(torch.randint(0, q.numel(), (1,), generator=g))] = -128
    return q


def _mamba_dt_bias(count: int, g: torch.Generator) -> torch.Tensor:
    """Mamba's dt_bias initialization: the inverse softplus of Δ log-uniform in [1e-3, 0.1]."""
    dt_init = torch.exp(torch.rand(count, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    return dt_init + torch.log(-torch.expm1(-dt_init))


def _weights(case: Case, g: torch.Generator) -> tuple[dict[str, torch.Tensor], dict[str, float | int]]:
    """The inputs that stay fixed for a plugin (graph constants), and the fields: scales (float32-representable) and
    the int ones (group_size)."""
    d, n, k = case.d_in, case.n, case.k
    heads = d // case.headdim
    if case.op == "Int8CausalConv1dChannelScales":
        # the Mamba1 conv's statistics; per-channel output scales spanning 4x, some below SiLU's range (saturating)
        c = case.conv_dim
        tensors = {"weight_q": torch.randint(-127, 128, (c, k), generator=g, dtype=torch.int8),
                   "bias": 0.1 * torch.randn(c, generator=g),
                   "out_scales": (torch.rand(c, generator=g) * 3 + 1) * 0.01}
        return tensors, _fields(case, {"x_scale": 0.02, "weight_scale": 0.005})
    if case.op == "Int8SSDScan":  # mamba_ssm's A_log ~ log U(1, 16), D, dt_bias; per-channel x, per-group B/C scales
        tensors = {"A": -torch.exp(torch.rand(heads, generator=g) * math.log(16)),
                   "D": torch.ones(heads) + 0.1 * torch.randn(heads, generator=g),
                   "dt_bias": _mamba_dt_bias(heads, g),
                   "x_scales": (torch.rand(d, generator=g) * 3 + 1) * (2.0 / 127),
                   "B_scales": ((torch.rand(case.ngroups, generator=g) + 0.5) * (2.0 / 127)).repeat_interleave(n),
                   "C_scales": ((torch.rand(case.ngroups, generator=g) + 0.5) * (2.0 / 127)).repeat_interleave(n)}
        return tensors, _fields(case, {"dt_scale": 1.5 / 127})
    if case.op.startswith("GatedRMSNorm"):  # normed values ~ N(0, 1) * weight: the largest saturate at 0.03 * 127
        tensors = {"weight": torch.rand(d, generator=g) + 0.5}
        return tensors, _fields(case, {"z_scale": 0.02, "eps": 1e-5, "group_size": d // case.ngroups,
                                       "out_scale": 0.03})
    if case.op == "Int8CausalConv1d":
        # acc of k products of uniform codes has std ~ 2 * 127^2 / 3; times x_scale * weight_scale ~ 1 (SiLU's range)
        tensors = {"weight_q": torch.randint(-127, 128, (d, k), generator=g, dtype=torch.int8),
                   "bias": 0.1 * torch.randn(d, generator=g)}
        scales = {"x_scale": 0.02, "weight_scale": 0.005, "out_scale": 0.03}
    elif case.op == "Int8SelectiveScan":
        dt_bias = _mamba_dt_bias(d, g)
        tensors = {"A": -torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1),  # S4D-real init, as Mamba's
                   "D": torch.ones(d) + 0.1 * torch.randn(d, generator=g), "dt_bias": dt_bias}
        scales = {"u_scale": 0.05, "dt_scale": 0.02, "B_scale": 0.02, "C_scale": 0.02, "z_scale": 0.05}
    else:
        tensors, scales = {}, {"out_scale": 0.05}
    return tensors, _fields(case, scales)


def _fields(case: Case, values: dict[str, float | int]) -> dict[str, float | int]:
    """The op's attributes in spec order: FLOAT ones rounded to float32 (what the plugin field holds), INT ones as
    they are."""
    spec = PLUGIN_SPECS[case.op]
    return {a.name: int(values[a.name]) if a.kind == "int" else float(torch.tensor(values[a.name],
                                                                                 dtype=torch.float32))
            for a in spec.attributes}


def _activations(case: Case, b: int, l: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """The per-call inputs at (b, l): activations and the incoming state."""
    d, n, k = case.d_in, case.n, case.k
    if case.op == "Int8CausalConv1d":
        return {"x_q": _codes(g, b, l, d), "conv_state_q": _codes(g, b, d, k)}
    if case.op == "Int8CausalConv1dChannelScales":
        return {"x_q": _codes(g, b, l, case.conv_dim), "conv_state_q": _codes(g, b, case.conv_dim, k)}
    if case.op == "Int8SSDScan":
        heads, gn = d // case.headdim, case.ngroups * n
        return {"x_q": _codes(g, b, l, d), "dt_q": _codes(g, b, l, heads), "B_q": _codes(g, b, l, gn),
                "C_q": _codes(g, b, l, gn), "ssm_state": 0.5 * torch.randn(b, heads, case.headdim, n, generator=g)}
    if case.op.startswith("GatedRMSNorm"):
        y = 2 * torch.randn(b, l, d, generator=g)
        y[..., :: max(d // 8, 1)] *= 20.0  # outlier channels, as the scan output has
        return {"y": y, "z_q": _codes(g, b, l, d)}
    if case.op == "Int8SelectiveScan":
        return {"u_q": _codes(g, b, l, d), "dt_q": _codes(g, b, l, d), "B_q": _codes(g, b, l, n),
                "C_q": _codes(g, b, l, n), "z_q": _codes(g, b, l, d),
                "ssm_state": 0.5 * torch.randn(b, d, n, generator=g)}
    y = torch.randn(b, l, d, generator=g)
    y[..., :: max(d // 8, 1)] *= 20.0  # a few outlier channels, which the rotation spreads
    return {"y": y}


def state_aliases(spec: OpSpec) -> list[tuple[int, int]]:
    """(output, input) index pairs: each state output (name ending in _out) and the input of the same shape, whose
    buffer it may be written into."""
    aliases = []
    for j, t in enumerate(spec.outputs):
        if t.name.endswith("_out"):
            aliases.append((j, next(i for i, s in enumerate(spec.inputs) if s.shape == t.shape)))
    return aliases


def activation_inputs(spec: OpSpec) -> list[str]:
    """The spec's int8 inputs that carry activation codes (and so must be read with -128 as -127)."""
    return [t.name for t in spec.inputs if t.dtype == "int8" and t.name not in WEIGHT_INPUTS]


def _tensor_line(kind: str, name: str, t: torch.Tensor, dtype: str, file: str) -> str:
    return f"{kind} {name} {dtype} {t.dim()} {' '.join(str(s) for s in t.shape)} {file}"


def _write_step(folder: Path, spec: OpSpec, inputs: dict[str, torch.Tensor], scales: dict[str, float],
                carried: frozenset[str] = frozenset()) -> tuple:
    """Write one step's inputs, the reference's outputs and step.txt; return the reference's outputs. ``carried``
    inputs are a previous step's outputs (the harness uses the device's own), exempt from the -128 rule of inputs."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in activation_inputs(spec):
        assert name in carried or bool((inputs[name] == -128).any()), f"{folder}: {name} holds no -128"
    expected = getattr(qops, spec.reference)(*(inputs[t.name] for t in spec.inputs),
                                             *(scales[a.name] for a in spec.attributes))
    expected = expected if isinstance(expected, tuple) else (expected,)
    lines = []
    for t in spec.inputs:
        value = inputs[t.name].to(DTYPES[t.dtype]).contiguous()
        assert value.dim() == len(t.shape), (t.name, value.shape, t.shape)
        (folder / f"{t.name}.bin").write_bytes(value.numpy().tobytes())
        lines.append(_tensor_line("input", t.name, value, t.dtype, f"{t.name}.bin"))
    for t, value in zip(spec.outputs, expected, strict=True):
        assert value.dtype == DTYPES[t.dtype], (t.name, value.dtype)
        (folder / f"{t.name}.bin.expected").write_bytes(value.contiguous().numpy().tobytes())
        lines.append(_tensor_line("output", t.name, value, t.dtype, f"{t.name}.bin"))
    (folder / "step.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return expected


def write_case(case: Case, out: Path) -> Path:
    spec = PLUGIN_SPECS[case.op]
    folder = out / case.name
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(1000 + case.seed)
    weights, scales = _weights(case, g)
    lines = [f"plugin {spec.name}"]
    lines += [f"intfield {a.name} {scales[a.name]}" if a.kind == "int" else f"field {a.name} {scales[a.name].hex()}"
              for a in spec.attributes]
    lines += [f"profile {sym} {lo} {opt} {hi}" for sym, (lo, opt, hi) in case.profile().items()]
    aliases = state_aliases(spec)
    lines += [f"alias {o} {i}" for o, i in aliases]

    steps = [("build", "build", case.opt)]
    steps += [("shape", f"s{j}-b{b}-l{l}", (b, l)) for j, (b, l) in enumerate(case.shapes)]
    for mode, name, (b, l) in steps:
        _write_step(folder / name, spec, {**weights, **_activations(case, b, l, g)}, scales)
        lines.append(f"step {mode} {name}")
    # Decode replays: new activations each time; the state is the previous replay's (the reference's own chain).
    carried: dict[str, torch.Tensor] = {}
    for r in range(case.replays):
        name = f"g{r}-b{case.decode_b}-l1"
        inputs = {**weights, **_activations(case, case.decode_b, 1, g), **carried}
        expected = _write_step(folder / name, spec, inputs, scales, frozenset(carried))
        carried = {spec.inputs[i].name: expected[o] for o, i in aliases}
        lines.append(f"step graph {name}")
    (folder / "case.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def _write_with_threads(case: Case, out: Path, threads: int) -> Path:
    torch.set_num_threads(threads)
    return write_case(case, out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write the case folders into")
    parser.add_argument("--set", dest="case_set", choices=sorted(SETS), default="model",
                        help="model: l up to 2048 (the GPU check); small: l up to 200 (compute-sanitizer)")
    parser.add_argument("--only", default="", help="only cases whose name contains this")
    parser.add_argument("--jobs", type=int, default=1,
                        help="cases made in parallel processes, 2 torch threads each (the reference scan is a "
                             "sequential loop over l)")
    args = parser.parse_args(argv)
    cases = [case for case in SETS[args.case_set] if args.only in case.name]
    if args.jobs <= 1:
        torch.set_num_threads(min(8, torch.get_num_threads()))
        folders = [write_case(case, args.out) for case in cases]
    else:
        with ProcessPoolExecutor(args.jobs) as pool:
            folders = list(pool.map(_write_with_threads, cases, [args.out] * len(cases), [2] * len(cases)))
    for folder in folders:
        print(f"wrote {folder}")


if __name__ == "__main__":
    main()
