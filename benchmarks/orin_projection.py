"""PROJECTION, NOT A MEASUREMENT: decode TPOT of our int8 Mamba1 (and an fp16 mamba_ssm decode, for comparison) on a
Jetson Orin Nano 8 GB (68 GB/s; 102 GB/s in its Super mode) and an AGX Orin 64 GB (204.8 GB/s), from the bytes and
launches of the decode step and the H200 measurements, beside Quamba's published Orin Nano figures for 2.8b.

Longer than our ~400-line rule: the model (bytes, launches, bandwidth fraction) and its cited inputs are one
argument to be read top to bottom; benchmarks/decode_plan.py reuses its pieces.

    python3 benchmarks/orin_projection.py [--kernel-timing benchmarks/results/kernel_timing.json]
        [--latency benchmarks/results/latency_h200.json] [--out benchmarks/results] [--json]
    -> prints a table (or, with --json, one JSON object), writes <out>/orin_projection.{json,png}

Nothing here ran on an Orin. The model, per shape and precision (batch 1, one decode step inside a CUDA graph):

    TPOT = bytes / (eta * peak)  +  launch/latency term
    bytes     every kernel's bytes (weights, activations, states, each read or written once), from the model shape
              and each kernel's reads and writes: :func:`int8_decode_step` counts as benchmarks/kernel_timing.py
              does (tests check its per-kernel bytes against kernel_timing.json's), :func:`fp16_decode_step` counts
              mamba_ssm's decode step. Their weight bytes are checked against the weight bytes measured on the H200
              (latency_h200.json ``weight_gb``), printed under "checks".
    peak      the device's LPDDR5 rate (data sheets, cited in ORIN_DEVICES).
    eta       the achievable fraction of the peak, a RANGE from two published numbers: 152.8 GB/s read on an AGX
              Orin (0.746 of 204.8; AGX_ORIN_READ) and the bandwidth Quamba's own fp16 2.8b Orin Nano figure implies
              (fp16 bytes / 103.6 ms / 68 GB/s; a lower bound on what that decode achieved). Assumption: the same
              fraction on all three settings (one T234 memory system).
    launches  per token, from the bytes model's kernel list; the int8 per-layer kernels are checked against the
              measured decode graph's profile (latency_h200.json), which lists the 12 costliest kernels only.
    launch/latency term, a RANGE:
              low  = launches * the shortest in-graph kernel time measured on the H200 (kernel_timing.json): a fixed
                     cost per launch that does not grow on Orin;
              high = (measured H200 graph time - bytes / H200 copy bandwidth) * H200 clock / Orin clock: all of the
                     H200's time that its bytes do not explain is latency, and latency scales with the GPU clock.
              For fp16 the high end uses mamba_ssm's measured H200 TPOT (its conv ran the PyTorch fallback there).
TPOT low pairs the high eta with the low term; TPOT high the low eta with the high term. The host time per token of
today's streaming loop (measured on the H200 machine's x86 host: TPOT - graph time) is reported beside, not added: an
Orin's Cortex-A78AE host is slower by an unmeasured factor, and DECODE_PLAN.md moves it off the critical path.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_latency import SHAPES, mamba_config  # noqa: E402  (the public shapes, defined once)

from edge_quamba.errors import InputError  # noqa: E402
from edge_quamba.models.config import MambaConfig  # noqa: E402

RESULTS = Path(__file__).parent / "results"
LABEL = "projection, not a measurement"


@dataclass(frozen=True)
class Cited:
    """A number typed into this script, with where it comes from. kind: datasheet, published measurement, paper
    figure, issue target or assumption (an assumption is ours, stated, and to be replaced by a measurement)."""
    value: float
    unit: str
    kind: str
    source: str


@dataclass(frozen=True)
class OrinDevice:
    name: str
    peak_gb_per_s: Cited
    gpu_mhz: Cited


ORIN_DEVICES = (
    OrinDevice("Orin Nano 8GB",
               Cited(68.0, "GB/s", "datasheet", "NVIDIA Jetson Orin Nano Series data sheet: 8GB module, 128-bit "
                     "LPDDR5, 68 GB/s"),
               Cited(625.0, "MHz", "datasheet", "NVIDIA Jetson Orin Nano Series data sheet: GPU maximum operating "
                     "frequency 625 MHz")),
    OrinDevice("Orin Nano 8GB Super",
               Cited(102.0, "GB/s", "datasheet", "NVIDIA Jetson Orin Nano Super Developer Kit data sheet (Dec 2024, "
                     "JetPack 6.1+ MAXN SUPER): 102 GB/s, up from 68"),
               Cited(1020.0, "MHz", "datasheet", "same data sheet: GPU 1020 MHz in MAXN SUPER (summarized at "
                     "https://www.brojogopalsapui.com/ai-foundations/sub_contents/AI_hardware/"
                     "jetson_orin_nano_light.html)")),
    OrinDevice("AGX Orin 64GB",
               Cited(204.8, "GB/s", "datasheet", "NVIDIA Jetson AGX Orin Series data sheet: 64GB module, 256-bit "
                     "LPDDR5, 204.8 GB/s"),
               Cited(1300.0, "MHz", "published measurement", "the AGX Orin of infinigence/ApxInf pull request #74 "
                     "(https://github.com/infinigence/ApxInf/pull/74) ran its GPU at 1300 MHz, 16 SMs")),
)
H200_MHZ = Cited(1980.0, "MHz", "datasheet", "NVIDIA H200 SXM boost clock 1980 MHz "
                 "(https://hmc-tech.com/gpu/nvidia-h100-vs-nvidia-h200-sxm-vs-nvidia-gb200)")
AGX_ORIN_READ = Cited(152.8, "GB/s", "published measurement", "infinigence/ApxInf pull request #74 "
                      "(https://github.com/infinigence/ApxInf/pull/74), scripts/bench_device_roofline.cu: a kernel "
                      "reading a 2 GB buffer (past the 4 MB L2) on a Jetson AGX Orin reached 152.8 GB/s of the 204.8 "
                      "GB/s LPDDR5 rate")
QUAMBA_SOURCE = ("Chiang et al., 'Quamba: A Post-Training Quantization Recipe for Selective State Space Models', "
                 "ICLR 2025, arXiv:2410.13229: Mamba 2.8B on an NVIDIA Orin Nano 8G, time per output token. Values as "
                 "quoted in issue 20; the paper's latency table could not be retrieved here, only its abstract "
                 "('1.72x lower generation latency on an Nvidia Orin Nano 8G'), which 103.6 / 60.2 = 1.72 matches")
QUAMBA_ORIN_NANO_2P8B_MS = {"int8": Cited(60.2, "ms", "paper figure", QUAMBA_SOURCE + " (W8A8)"),
                            "fp16": Cited(103.6, "ms", "paper figure", QUAMBA_SOURCE + " (FP16)")}
QUAMBA_SPEEDUP = Cited(1.72, "x", "paper figure", "abstract of arXiv:2410.13229v2")
INT8_OTHER_PER_TOKEN_LAUNCHES = Cited(9, "launches", "assumption", "counted by reading the code, not measured (the "
                                      "profile lists the 12 costliest kernels only): embedding gather and its cast to "
                                      "float32 (MambaLM.residual_stream), norm_f's pow, mean, add, rsqrt, mul, mul "
                                      "(Norm.forward), the cast to float16 before lm_head (Fp16Head)")
MAMBA_SSM_PER_TOKEN_LAUNCHES = Cited(4, "launches", "assumption", "read, not measured: embedding, final fused add + "
                                     "RMSNorm, lm_head, greedy argmax (mamba_ssm MambaLMHeadModel and "
                                     "utils/generation.py with top_k=1)")
MAMBA_SSM_SOURCE = ("state-spaces/mamba mamba_ssm/modules/mamba_simple.py Mamba.step (commit 000b310): in_proj, "
                    "causal_conv1d_update, x_proj, dt_proj without bias, A = -exp(A_log.float()), "
                    "selective_state_update, out_proj; fp16 conv and ssm states (allocate_inference_cache); the "
                    "block's fused add + RMSNorm with a float32 residual")


@dataclass(frozen=True)
class Kernel:
    """One kernel of a decode step (batch 1, l = 1): launches per token and the bytes they move per token (each input
    read once, each output written once), split into weights (parameters) and the rest (activations, states)."""
    name: str
    launches: int
    weight_bytes: int
    other_bytes: int

    @property
    def bytes(self) -> int:
        return self.weight_bytes + self.other_bytes


def dims(c: MambaConfig) -> tuple[int, int, int, int, int, int, int]:
    """(d, L, d_in, n, r, k, V): d_model, n_layer, d_inner, d_state, dt_rank, d_conv, embedding rows."""
    return c.d_model, c.n_layer, c.d_inner, c.d_state, c.dt_rank, c.d_conv, c.vocab_size


def int8_decode_step(c: MambaConfig) -> list[Kernel]:
    """Our int8 decode step as the CUDA graph runs it (runtime/cuda_backend.py, fused ops). Per layer, bytes counted
    as benchmarks/kernel_timing.py counts them (float32 residual, norm weight, conv bias, A, D, dt_bias and scan state;
    int8 codes; the out_proj output float32), plus the residual add; per token the fp16 tied lm_head with its float32
    logits, the two state copies back into the graph's static buffers, and the small ops (bytes O(d), left out)."""
    d, L, di, n, r, k, V = dims(c)
    e = r + 2 * n  # x_proj outputs: dt_r | B | C
    return [
        Kernel("rms_norm_quantize", L, L * 4 * d, L * 5 * d),
        Kernel("in_proj int8_linear_quantize", L, L * 2 * di * d, L * (d + 2 * di)),
        Kernel("int8_causal_conv1d", L, L * (di * k + 4 * di), L * (2 * di + 2 * di * k)),
        Kernel("x_proj int8_linear_quantize", L, L * e * di, L * (di + e)),
        Kernel("dt_proj int8_linear_quantize", L, L * di * r, L * (r + di)),
        Kernel("int8_selective_scan", L, L * (4 * di * n + 8 * di), L * (3 * di + 2 * n + 8 * di * n + 4 * di)),
        Kernel("hadamard_quantize", L, 0, L * 5 * di),
        Kernel("out_proj int8_linear", L, L * d * di, L * (di + 4 * d)),
        Kernel("residual add (float32)", L, 0, L * 12 * d),
        Kernel("lm_head fp16 GEMV (tied embedding)", 1, 2 * V * d, 2 * d + 2 * V),
        Kernel("logits to float32", 1, 0, 6 * V),
        Kernel("state copies (copy_states)", 2, 0, 2 * L * (di * k + 4 * di * n)),
        Kernel("small per-token ops (embedding, casts, norm_f)", int(INT8_OTHER_PER_TOKEN_LAUNCHES.value), 4 * d, 0),
    ]


INT8_PER_LAYER_KERNELS = 9
"""How many kernels of int8_decode_step run once per layer (checked against the measured profile)."""


def fp16_decode_step(c: MambaConfig) -> list[Kernel]:
    """mamba_ssm's fp16 decode step (MAMBA_SSM_SOURCE): fp16 weights except float32 A_log and D (as mamba_ssm keeps
    them; latency_h200.json's measured fp16 weight bytes agree), fp16 activations and states, float32 residual."""
    d, L, di, n, r, k, V = dims(c)
    e = r + 2 * n
    return [
        Kernel("fused add + rms_norm", L, L * 2 * d, L * 12 * d),
        Kernel("in_proj", L, L * 4 * di * d, L * (2 * d + 4 * di)),
        Kernel("causal_conv1d_update", L, L * (2 * di * k + 2 * di), L * (4 * di + 4 * di * k)),
        Kernel("x_proj", L, L * 2 * e * di, L * (2 * di + 2 * e)),
        Kernel("dt_proj (no bias)", L, L * 2 * di * r, L * (2 * r + 2 * di)),
        Kernel("A = -exp(A_log.float())", 2 * L, L * 4 * di * n, L * 12 * di * n),
        Kernel("selective_state_update", L, L * (4 * di + 2 * di), L * (4 * di * n + 4 * di * n + 8 * di + 4 * n)),
        Kernel("out_proj", L, L * 2 * d * di, L * (2 * di + 2 * d)),
        Kernel("lm_head fp16 GEMV (tied embedding)", 1, 2 * V * d, 2 * d + 2 * V),
        Kernel("small per-token ops (embedding, final norm, argmax)", int(MAMBA_SSM_PER_TOKEN_LAUNCHES.value) - 1,
               2 * d, 0),
    ]


STEPS = {"int8": int8_decode_step, "fp16": fp16_decode_step}
MEASURED_IMPL = {"int8": "edge-quamba cuda int8", "fp16": "mamba_ssm fp16 cg"}


def totals(kernels: list[Kernel]) -> tuple[int, int, int]:
    """(bytes, weight bytes, launches) per token."""
    return (sum(k.bytes for k in kernels), sum(k.weight_bytes for k in kernels), sum(k.launches for k in kernels))


@dataclass(frozen=True)
class H200:
    """What the projection takes from the H200 runs: the copy bandwidth of the latency run, the shortest in-graph
    kernel time (kernel_timing.json, l = 1), and per (shape, precision) the measured time per token (graph replay for
    int8, TPOT for mamba_ssm fp16), weight bytes, TPOT, and the profile's per-layer kernel count."""
    copy_gb_per_s: float
    floor_us: float
    floor_kernel: str
    rows: dict  # (shape, precision) -> dict(time_ms, tpot_ms, weight_bytes, per_layer_kernels | None)
    sources: dict


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not JSON ({exc.msg} at line {exc.lineno})") from None


def shown(path: Path) -> str:
    """A path as the report records it: relative to the repository when inside it."""
    resolved = path.resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(path)


def load_h200(kernel_timing: Path, latency: Path) -> H200:
    """Read the two H200 result files (benchmarks/kernel_timing.py, benchmarks/bench_latency.py outputs)."""
    kt, lat = read_json(kernel_timing), read_json(latency)
    try:
        decode = [r for r in kt["kernels"] if r["seqlen"] == 1]
        fastest = min(decode, key=lambda r: r["time_us"])
        rows = {}
        for r in lat["rows"]:
            precision = next((p for p, impl in MEASURED_IMPL.items() if impl == r["impl"]), None)
            if precision is None or r.get("status") != "ok":
                continue
            n_layer = mamba_config(r["shape"]).n_layer
            per_layer = None
            if isinstance(r.get("kernels"), list):
                per_layer = sum(1 for k in r["kernels"] if round(k["launches_per_token"]) == n_layer)
            rows[(r["shape"], precision)] = dict(time_ms=r["graph_ms"] if precision == "int8" else r["tpot_ms"],
                                                 tpot_ms=r["tpot_ms"], weight_bytes=round(r["weight_gb"] * 1e9),
                                                 per_layer_kernels=per_layer)
        copy = float(lat["copy_bandwidth_gb_per_s"])
        sources = {"kernel_timing": {"path": shown(kernel_timing), "command": kt.get("command"), "date": kt.get("date"),
                                     "gpu": kt.get("gpu")},
                   "latency": {"path": shown(latency), "command": lat.get("command"), "date": lat.get("date"),
                               "gpu": lat.get("environment", {}).get("gpu")}}
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{kernel_timing} / {latency}: not the output of kernel_timing.py / bench_latency.py "
                         f"({type(exc).__name__}: {exc})") from None
    if not decode or not rows:
        raise InputError(f"{kernel_timing} has no l = 1 kernel or {latency} no measured int8/fp16 row")
    return H200(copy, float(fastest["time_us"]), fastest["kernel"], rows, sources)


def bandwidth_fraction_range(fp16_bytes_2p8b: int) -> dict:
    """The achievable fraction of the LPDDR5 rate: the AGX Orin read measurement, and the fraction Quamba's fp16
    Orin Nano TPOT implies for the fp16 2.8b step's bytes (a lower bound: that TPOT includes its launches too)."""
    agx = AGX_ORIN_READ.value / ORIN_DEVICES[2].peak_gb_per_s.value
    nano_gb_per_s = (fp16_bytes_2p8b / 1e9) / (QUAMBA_ORIN_NANO_2P8B_MS["fp16"].value / 1e3)
    nano = nano_gb_per_s / ORIN_DEVICES[0].peak_gb_per_s.value
    return {"agx_orin_read": agx, "quamba_fp16_nano_implied": nano, "low": min(agx, nano), "high": max(agx, nano)}


def project(kernels: list[Kernel], h200_time_ms: float, h200: H200, device: OrinDevice, eta: tuple[float, float]
            ) -> dict:
    """One (shape, precision, device) projection; eta = (low, high) fractions of the device's peak."""
    nbytes, _, launches = totals(kernels)
    peak = device.peak_gb_per_s.value
    clock_ratio = H200_MHZ.value / device.gpu_mhz.value
    bw_ms = {side: nbytes / (f * peak * 1e9) * 1e3 for side, f in zip(("low", "high"), (eta[1], eta[0]))}
    h200_excess_ms = h200_time_ms - nbytes / (h200.copy_gb_per_s * 1e9) * 1e3
    launch_ms = {"low": launches * h200.floor_us / 1e3, "high": max(h200_excess_ms, 0.0) * clock_ratio}
    tpot = {side: bw_ms[side] + launch_ms[side] for side in ("low", "high")}
    return {"device": device.name, "bytes": nbytes, "launches": launches, "bandwidth_ms": bw_ms,
            "launch_ms": launch_ms, "tpot_ms": tpot, "tokens_per_s": {s: 1e3 / t for s, t in tpot.items()},
            "floor_ms_at_peak": nbytes / (peak * 1e9) * 1e3, "h200_excess_ms": h200_excess_ms,
            "clock_ratio": clock_ratio}


def build(h200: H200) -> dict:
    """Every projection row, the checks, the Quamba comparison and the constants, as one JSON-ready dict."""
    eta = bandwidth_fraction_range(totals(fp16_decode_step(mamba_config("2.8b")))[0])
    rows, checks = [], []
    for shape in SHAPES:
        config = mamba_config(shape)
        for precision, step in STEPS.items():
            measured = h200.rows.get((shape, precision))
            if measured is None:
                continue
            kernels = step(config)
            nbytes, weights, launches = totals(kernels)
            checks.append({"shape": shape, "precision": precision, "model_weight_bytes": weights,
                           "measured_weight_bytes": measured["weight_bytes"],
                           "difference_bytes": measured["weight_bytes"] - weights})
            if precision == "int8" and measured["per_layer_kernels"] not in (None, INT8_PER_LAYER_KERNELS):
                raise InputError(f"the measured {shape} decode graph has {measured['per_layer_kernels']} kernels per "
                                 f"layer and this bytes model {INT8_PER_LAYER_KERNELS}: the chain changed, update "
                                 f"int8_decode_step")
            host_ms = measured["tpot_ms"] - measured["time_ms"] if precision == "int8" else None
            for device in ORIN_DEVICES:
                row = project(kernels, measured["time_ms"], h200, device, (eta["low"], eta["high"]))
                row.update(shape=shape, precision=precision, h200_time_ms=measured["time_ms"],
                           h200_host_ms=host_ms, kernels=[asdict(k) | {"bytes": k.bytes} for k in kernels])
                quamba = QUAMBA_ORIN_NANO_2P8B_MS.get(precision)
                if shape == "2.8b" and device is ORIN_DEVICES[0] and quamba is not None:
                    row["quamba_published_ms"] = quamba.value
                rows.append(row)
    constants = {"orin_devices": [asdict(d) for d in ORIN_DEVICES], "h200_mhz": asdict(H200_MHZ),
                 "agx_orin_read": asdict(AGX_ORIN_READ), "quamba_orin_nano_2p8b_ms":
                 {k: asdict(v) for k, v in QUAMBA_ORIN_NANO_2P8B_MS.items()}, "quamba_speedup": asdict(QUAMBA_SPEEDUP),
                 "int8_other_per_token_launches": asdict(INT8_OTHER_PER_TOKEN_LAUNCHES),
                 "mamba_ssm_per_token_launches": asdict(MAMBA_SSM_PER_TOKEN_LAUNCHES),
                 "mamba_ssm_step": MAMBA_SSM_SOURCE}
    return {"kind": LABEL, "command": "python3 benchmarks/orin_projection.py",
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "inputs": h200.sources,
            "model": __doc__.split("\n\n", 2)[2].strip(), "bandwidth_fraction": eta,
            "h200": {"copy_gb_per_s": h200.copy_gb_per_s, "floor_us": h200.floor_us,
                     "floor_kernel": h200.floor_kernel},
            "quamba_speedup_check": {"published": QUAMBA_SPEEDUP.value, "from_figures": round(
                QUAMBA_ORIN_NANO_2P8B_MS["fp16"].value / QUAMBA_ORIN_NANO_2P8B_MS["int8"].value, 2)},
            "checks": checks, "constants": constants, "rows": rows}


def print_table(report: dict) -> None:
    eta = report["bandwidth_fraction"]
    h = report["h200"]
    print(f"Orin decode TPOT, batch 1 -- {LABEL.upper()}")
    print(f"achievable fraction of peak {eta['low']:.3f}-{eta['high']:.3f} (AGX Orin read {eta['agx_orin_read']:.3f}, "
          f"Quamba fp16 Nano implied {eta['quamba_fp16_nano_implied']:.3f}); per launch >= {h['floor_us']:.3f} us "
          f"(H200, {h['floor_kernel']}); H200 copy {h['copy_gb_per_s']:.0f} GB/s")
    print(f"{'device':<20}{'shape':>5} {'prec':<5}{'GB/tok':>7}{'launch':>7}{'bw ms':>14}{'launch ms':>13}"
          f"{'TPOT ms':>16}{'tok/s':>12}{'Quamba ms':>10}{'H200 ms':>8}{'host ms':>8}")
    for r in report["rows"]:
        host = f"{r['h200_host_ms']:.3f}" if r["h200_host_ms"] is not None else "-"
        quamba = f"{r['quamba_published_ms']:.1f}" if "quamba_published_ms" in r else "-"
        print(f"{r['device']:<20}{r['shape']:>5} {r['precision']:<5}{r['bytes'] / 1e9:>7.3f}{r['launches']:>7d}"
              f"{r['bandwidth_ms']['low']:>7.2f}-{r['bandwidth_ms']['high']:<6.2f}"
              f"{r['launch_ms']['low']:>6.2f}-{r['launch_ms']['high']:<6.2f}"
              f"{r['tpot_ms']['low']:>8.2f}-{r['tpot_ms']['high']:<7.2f}"
              f"{r['tokens_per_s']['high']:>5.0f}-{r['tokens_per_s']['low']:<6.0f}{quamba:>10}"
              f"{r['h200_time_ms']:>8.3f}{host:>8}")
    print("checks (bytes model vs measured weight bytes):",
          "; ".join(f"{c['shape']} {c['precision']} {c['difference_bytes']:+d} B" for c in report["checks"]))
    q = report["quamba_speedup_check"]
    print(f"Quamba's figures: fp16 / W8A8 = {q['from_figures']} (abstract: {q['published']}x)")


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    shapes = [s for s in SHAPES if any(r["shape"] == s for r in report["rows"])]
    fig, axes = plt.subplots(1, len(ORIN_DEVICES), figsize=(15, 4.8), sharey=True)
    for ax, device in zip(axes, ORIN_DEVICES):
        for i, precision in enumerate(STEPS):
            rows = {r["shape"]: r for r in report["rows"] if r["device"] == device.name and r["precision"] == precision}
            xs = [j + (i - 0.5) * 0.38 for j, s in enumerate(shapes) if s in rows]
            lo = [rows[s]["tpot_ms"]["low"] for s in shapes if s in rows]
            hi = [rows[s]["tpot_ms"]["high"] for s in shapes if s in rows]
            ax.bar(xs, [h - low for low, h in zip(lo, hi)], 0.36, bottom=lo, alpha=0.75,
                   label=f"{precision} projected (low-high)")
            for x, low, h in zip(xs, lo, hi):
                ax.text(x, h * 1.04, f"{low:.3g}-{h:.3g}", ha="center", fontsize=6)
            quamba = [(j, rows[s]["quamba_published_ms"]) for j, s in enumerate(shapes)
                      if s in rows and "quamba_published_ms" in rows[s]]
            for j, ms in quamba:
                ax.plot([j + (i - 0.5) * 0.38], [ms], marker="*", markersize=12, color="black", linestyle="none",
                        label="Quamba, published (W8A8 / fp16)" if i == 0 else None)
        ax.set_xticks(range(len(shapes)), shapes)
        ax.set_yscale("log")
        ax.set_ylim(bottom=0.7 * min(r["tpot_ms"]["low"] for r in report["rows"]))
        ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.set_title(f"{device.name}, {device.peak_gb_per_s.value:g} GB/s", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("TPOT ms (batch 1, decode in a CUDA graph)")
    axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"{LABEL.upper()}: from H200 measurements, bytes per token and launches "
                 f"(benchmarks/orin_projection.py); nothing ran on an Orin", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()),
                                     epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--kernel-timing", type=Path, default=RESULTS / "kernel_timing.json",
                        help="benchmarks/kernel_timing.py's JSON (the per-launch floor)")
    parser.add_argument("--latency", type=Path, default=RESULTS / "latency_h200.json",
                        help="benchmarks/bench_latency.py's JSON (graph times, weight bytes, profile)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for orin_projection.{json,png}")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object instead of a table")
    args = parser.parse_args(argv)
    try:
        report = build(load_h200(args.kernel_timing, args.latency))
    except InputError as exc:
        sys.exit(f"error: {exc}")
    args.out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = args.out / "orin_projection.json", args.out / "orin_projection.png"
    json_path.write_text(json.dumps(report, indent=1) + "\n")
    plot(report, png_path)
    if args.json:
        print(json.dumps(report))
        return
    print_table(report)
    print(json_path)
    print(png_path)


if __name__ == "__main__":
    main()
