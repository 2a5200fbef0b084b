"""PREDICTIONS, NOT MEASUREMENTS: the two numbers (bytes and launches per token, before -> after) of each step of the
decode-fusion plan (benchmarks/DECODE_PLAN.md) at the 2.8b shape, and its predicted gain: on the H200 from the
measured per-kernel table, on Orin through benchmarks/orin_projection.py's model.

    python3 benchmarks/decode_plan.py [--kernel-timing benchmarks/results/kernel_timing.json]
        [--latency benchmarks/results/latency_h200.json] [--out benchmarks/results] [--json]
    -> prints the plan's tables (markdown; DECODE_PLAN.md quotes them), writes <out>/decode_plan.json

How a step is predicted (per token, batch 1; steps apply in order, each on top of the ones before):
    removed   the measured H200 time of the kernels the step deletes (kernel_timing.json at l = 1 x n_layer; the
              residual add, the state copies and lm_head from latency_h200.json's decode-graph profile), or the host
              time per token (TPOT - graph replay) for GPU-side sampling;
    added     each new kernel's predicted H200 time: launches x the shortest in-graph kernel time (the launch floor)
              + its bytes / the copy bandwidth (low) or / (copy x the best fraction of copy any measured l = 1 kernel
              reached: high), + a stated per-launch allowance where the kernel does more than stream (ASSUMPTIONS);
    Orin      orin_projection.project on the step's kernel list (bytes, launches) with the predicted H200 graph time.
Decode steps change no int8 code of the mixers and no state (each says why); S7 sums norm_f's squares in another
order (float32, within rounding), S1's seeded sampling matches the host's up to float64 near-ties; prefill step P2
changes the scan's float order and keeps the project's tie rule.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from orin_projection import (ORIN_DEVICES, RESULTS, SHAPES, Cited, Kernel, bandwidth_fraction_range,  # noqa: E402
                             fp16_decode_step, int8_decode_step, load_h200, mamba_config, project, read_json, totals)

from edge_quamba.errors import InputError  # noqa: E402
from edge_quamba.models.config import MambaConfig  # noqa: E402

SHAPE = "2.8b"
LABEL = "prediction, not a measurement"
GEMV_TARGET = Cited(0.85, "of copy bandwidth", "issue target", "issue 20: GEMVs at >= 85% of copy bandwidth")
GRID_BARRIER_US = (Cited(1.0, "us", "assumption", "low: one software grid barrier (arrive on a global counter, spin "
                         "until every block arrived; grid no larger than the co-resident blocks) inside a kernel at "
                         "l = 1 on the H200; not measured here: DECODE_PLAN.md step 0 measures it"),
                   Cited(3.0, "us", "assumption", "high: the same barrier"))
HADAMARD_STAGE_US = (Cited(0.0, "us", "assumption", "low: the H_(2^k) butterflies of a 2^k-channel group added to the "
                           "producer's epilogue (scan or fused kernel) hide under its memory time"),
                     Cited(1.0, "us", "assumption", "high: they add 1 us per layer"))
SCAN_FRACTION = (Cited(0.25, "of copy bandwidth", "assumption", "high time: a chunked parallel scan at l = 512 "
                       "reaches a quarter of the copy bandwidth (today's sequential scan: 0.03)"),
                 Cited(1.0, "of copy bandwidth", "assumption", "low time: it streams its bytes at copy bandwidth"))
INT8_GEMM_FRACTION = (Cited(0.5, "of int8 peak", "assumption", "high time: prefill int8 GEMMs with fused epilogues "
                            "at half the H200's dense int8 tensor rate"),
                      Cited(1.0, "of int8 peak", "assumption", "low time: at the dense int8 rate"))
H200_INT8_DENSE_TOPS = Cited(1979.0, "TOPS", "datasheet", "NVIDIA H200 SXM: 3958 int8 TOPS with sparsity, half dense "
                             "(https://hmc-tech.com/gpu/nvidia-h100-vs-nvidia-h200-sxm-vs-nvidia-gb200)")


@dataclass(frozen=True)
class Context:
    """The measured H200 numbers a prediction uses (2.8b, batch 1)."""
    n_layer: int
    floor_us: float
    copy_gb_per_s: float  # kernel_timing.json's run (its per-kernel times)
    best_fraction: float  # best fraction of copy any l = 1 kernel reached
    measured_us: dict  # kernel name of int8_decode_step -> measured us per token (None: not in the tables)
    graph_ms: float
    tpot_ms: float
    prefill: dict  # kernel_timing.json at l = 512 and the fused layer chain


def measured_table(kt: dict, lat_row: dict, n_layer: int) -> dict:
    """us per token of the kernels of int8_decode_step that the H200 runs timed: kernel_timing.json (l = 1, the fused
    chain's kernels) x n_layer, and from the decode-graph profile the residual add, the two state copies and lm_head
    (the costliest once-per-token kernel)."""
    table = {r["kernel"]: r["time_us"] * n_layer for r in kt["kernels"]
             if r["seqlen"] == 1 and r["chain"] in ("fused", "both")}
    profile = lat_row.get("kernels")
    if not isinstance(profile, list):
        raise InputError("the latency JSON's int8 2.8b row has no kernel profile (run bench_latency.py without "
                         "--no-profile)")
    once = [k for k in profile if round(k["launches_per_token"]) <= 2 and "multi_tensor_apply" not in k["kernel"]]
    table["residual add (float32)"] = sum(k["us_per_token"] for k in profile if "CUDAFunctor_add" in k["kernel"])
    table["state copies (copy_states)"] = sum(k["us_per_token"] for k in profile if "multi_tensor_apply" in k["kernel"])
    table["lm_head fp16 GEMV (tied embedding)"] = max(k["us_per_token"] for k in once)
    return table


def load_context(kernel_timing: Path, latency: Path) -> Context:
    kt, lat = read_json(kernel_timing), read_json(latency)
    config = mamba_config(SHAPE)
    try:
        if kt["shape"]["d_model"] != config.d_model or kt["shape"]["n_layer"] != config.n_layer:
            raise InputError(f"{kernel_timing} timed the shape {kt['shape']}, not {SHAPE}")
        row = next(r for r in lat["rows"] if r["shape"] == SHAPE and r["impl"] == "edge-quamba cuda int8")
        decode = [r for r in kt["kernels"] if r["seqlen"] == 1]
        fused_512 = next(x for x in kt["layers"] if x["seqlen"] == 512 and x["chain"] == "fused")
        at_512 = {r["kernel"]: r for r in kt["kernels"] if r["seqlen"] == 512 and r["chain"] in ("fused", "both")}
        linears = ("in_proj int8_linear_quantize", "x_proj int8_linear_quantize", "dt_proj int8_linear_quantize",
                   "out_proj int8_linear")
        prefill = {"scan_us": at_512["int8_selective_scan"]["time_us"],
                   "scan_bytes": at_512["int8_selective_scan"]["bytes"],
                   "gemm_us": sum(at_512[name]["time_us"] for name in linears),
                   "layer_chain_us": fused_512["layer_us"], "ttft_ms": row["ttft_ms"]}
        return Context(config.n_layer, min(r["time_us"] for r in decode), float(kt["copy_gb_per_s"]),
                       max(r["fraction_of_copy"] for r in decode), measured_table(kt, row, config.n_layer),
                       row["graph_ms"], row["tpot_ms"], prefill)
    except (KeyError, StopIteration, TypeError, ValueError) as exc:
        raise InputError(f"{kernel_timing} / {latency}: missing the 2.8b measurements this plan needs "
                         f"({type(exc).__name__}: {exc})") from None


def predicted_us(k: Kernel, ctx: Context, extra: tuple[float, float] = (0.0, 0.0)) -> tuple[float, float]:
    """(low, high) H200 us per token of a new kernel: launch floor + bytes at copy (or best measured fraction of
    copy) + a per-launch allowance."""
    stream = k.bytes / (ctx.copy_gb_per_s * 1e3)  # us
    return (k.launches * (ctx.floor_us + extra[0]) + stream,
            k.launches * (ctx.floor_us + extra[1]) + stream / ctx.best_fraction)


@dataclass(frozen=True)
class Step:
    key: str
    title: str
    removes: tuple[str, ...]
    adds: tuple[Kernel, ...]
    added_us: tuple[float, float]
    removed_us: float
    host_ms: float  # host time per token taken off the critical path
    exactness: str
    detail: str = ""


def steps(ctx: Context, c: MambaConfig | None = None) -> list[Step]:
    """The decode steps, in the order DECODE_PLAN.md gives them, each on the chain the earlier ones leave. Their times
    are the 2.8b measurements of ``ctx``; another shape ``c`` gives the same kernel changes (bytes, launches) only."""
    c = c or mamba_config(SHAPE)
    d, L, di, n, r, k, V = c.d_model, c.n_layer, c.d_inner, c.d_state, c.dt_rank, c.d_conv, c.vocab_size
    e = r + 2 * n
    base = {x.name: x for x in int8_decode_step(c)}
    m = ctx.measured_us
    out = []

    sampler = Kernel("greedy argmax + token copy to pinned memory", 2, 0, 4 * V + 8)
    out.append(Step("S1", "sample on the GPU inside the graph; the token id to pinned memory asynchronously", (),
                    (sampler,), predicted_us(sampler, ctx), 0.0, ctx.tpot_ms - ctx.graph_ms,
                    "greedy: argmax of the same logits, first index on ties as torch.argmax; seeded sampling: "
                    "torch.multinomial(p, 1) = argmax(p / q), q ~ Exp(1) from the same CPU generator, so the host "
                    "draws q ahead and the GPU takes the argmax: the same tokens up to float64 near-ties of p / q"))
    out.append(Step("S2", "conv and scan write their states in place (no copy back)", ("state copies (copy_states)",),
                    (), (0.0, 0.0), m["state copies (copy_states)"], 0.0,
                    "the same values land in the static buffers without the copy"))
    four = ("int8_causal_conv1d", "x_proj int8_linear_quantize", "dt_proj int8_linear_quantize", "int8_selective_scan")
    fused = Kernel("conv + x_proj + dt_proj + scan step (one kernel, one grid barrier)", L,
                   sum(base[x].weight_bytes for x in four), L * (2 * di + 2 * di * k + 8 * di * n + 4 * di + 8 * e))
    out.append(Step("S3", "one kernel per layer for conv + x_proj + dt_proj + scan step", four, (fused,),
                    predicted_us(fused, ctx, (GRID_BARRIER_US[0].value, GRID_BARRIER_US[1].value)),
                    sum(m[x] for x in four), 0.0,
                    "x_proj's int32 sums by integer atomics (associative: exact), its epilogue, dt_proj, the conv "
                    "window and the scan step in the reference's float order: bit-identical codes and state"))
    hadamard = Kernel("Hadamard H_m stage + quantize over many blocks", L, 0, L * 5 * di)
    out.append(Step("S4", "Hadamard + quantize over many SMs (the 2^k stages in the producer's epilogue)",
                    ("hadamard_quantize",), (hadamard,),
                    predicted_us(hadamard, ctx, (HADAMARD_STAGE_US[0].value, HADAMARD_STAGE_US[1].value)),
                    m["hadamard_quantize"], 0.0,
                    "the contract's order (stages h = 1, 2, ..., then H_m rows summed r = 0..m-1, one multiply by "
                    "1/sqrt(n)) split between kernels, not reordered: bit-exact"))
    out_resid = Kernel("out_proj int8_linear + residual add epilogue", L, base["out_proj int8_linear"].weight_bytes,
                       base["out_proj int8_linear"].other_bytes + L * 4 * d)
    extra = Kernel("", 0, 0, L * 4 * d)
    out.append(Step("S5", "the residual add in out_proj's epilogue", ("residual add (float32)", "out_proj int8_linear"),
                    (out_resid,), tuple(x + m["out_proj int8_linear"] for x in predicted_us(extra, ctx)),
                    m["residual add (float32)"] + m["out_proj int8_linear"], 0.0,
                    "resid + float32(acc * alpha), the same two rounded operations on the same operands"))
    gemv_removed = m["in_proj int8_linear_quantize"] + m["out_proj int8_linear"]
    gemv_after = (base["in_proj int8_linear_quantize"].bytes + base["out_proj int8_linear"].bytes) / (
        GEMV_TARGET.value * ctx.copy_gb_per_s * 1e3)
    out.append(Step("S6", "in_proj and out_proj GEMVs at >= 85% of copy bandwidth", (), (),
                    (gemv_after, gemv_after), gemv_removed, 0.0, "integer sums in any order: exact",
                    "targets a layer: in_proj {:.2f} us (measured {:.2f}), out_proj {:.2f} us (measured {:.2f})".format(
                        base["in_proj int8_linear_quantize"].bytes / L / (GEMV_TARGET.value * ctx.copy_gb_per_s * 1e3),
                        m["in_proj int8_linear_quantize"] / L,
                        base["out_proj int8_linear"].bytes / L / (GEMV_TARGET.value * ctx.copy_gb_per_s * 1e3),
                        m["out_proj int8_linear"] / L)))
    head_in = Kernel("embedding gather + cast (one kernel)", 1, 0, 6 * d)
    head_norm = Kernel("norm_f + cast to float16 (one kernel)", 1, 4 * d, 6 * d)
    small = "small per-token ops (embedding, casts, norm_f)"
    out.append(Step("S7", "the per-token head ops as two kernels", (small,), (head_in, head_norm),
                    tuple(a + b for a, b in zip(predicted_us(head_in, ctx), predicted_us(head_norm, ctx))),
                    base[small].launches * ctx.floor_us, 0.0,
                    "norm_f's sum of squares in the kernel's tree order, not torch's: float32 within rounding, feeding "
                    "the fp16 lm_head that is already compared to the reference at a tolerance"))
    in_proj = base["in_proj int8_linear_quantize"]
    normed = Kernel("in_proj with an RMSNorm + quantize prologue", L, in_proj.weight_bytes + L * 4 * d,
                    in_proj.other_bytes - L * d + L * 4 * d)
    out.append(Step("S8", "RMSNorm + quantize in in_proj's prologue", ("rms_norm_quantize", in_proj.name), (normed,),
                    (L * 8 * d / (ctx.copy_gb_per_s * 1e3), m["rms_norm_quantize"]), m["rms_norm_quantize"], 0.0,
                    "every block computes the row's sum of squares in rms_norm_quantize's tree order: the same "
                    "codes (ties counted as today)"))
    return out


def apply(chain: list[Kernel], step: Step) -> list[Kernel]:
    kept = [x for x in chain if x.name not in step.removes]
    missing = set(step.removes) - {x.name for x in chain}
    if missing:
        raise InputError(f"step {step.key} removes kernels the chain does not have: {sorted(missing)}")
    return kept + list(step.adds)


def prefill_steps(ctx: Context) -> list[dict]:
    """TTFT of a 512-token prompt at 2.8b: the measured eager TTFT, then the whole prefill as CUDA graphs (the
    measured fused layer chain in one graph x n_layer + lm_head on the last position), a chunked parallel scan, int8
    tensor-core GEMMs with fused epilogues at a fraction of the dense int8 rate."""
    c = mamba_config(SHAPE)
    p, L = ctx.prefill, ctx.n_layer
    head_ms = ctx.measured_us["lm_head fp16 GEMV (tied embedding)"] / 1e3
    graphs = L * p["layer_chain_us"] / 1e3 + head_ms
    scan_new = [p["scan_bytes"] / (f.value * ctx.copy_gb_per_s * 1e3) + ctx.floor_us for f in SCAN_FRACTION]
    scan_gain = [L * (p["scan_us"] - t) / 1e3 for t in scan_new]  # high time first
    macs = 512 * (2 * c.d_inner * c.d_model + (c.dt_rank + 2 * c.d_state) * c.d_inner + c.d_inner * c.dt_rank
                  + c.d_model * c.d_inner)
    gemm_new = [2 * macs / (f.value * H200_INT8_DENSE_TOPS.value * 1e12) * 1e6 for f in INT8_GEMM_FRACTION]
    gemm_gain = [L * (p["gemm_us"] - t) / 1e3 for t in gemm_new]
    rows = [{"key": "P0", "title": "today: eager prefill from Python (measured)", "ttft_ms": (p["ttft_ms"],) * 2,
             "detail": ""}]
    rows.append({"key": "P1", "title": "the whole prefill in CUDA graphs, one per power-of-two chunk",
                 "ttft_ms": (graphs, graphs), "detail": f"fused layer chain {p['layer_chain_us']:.1f} us x {L} "
                                                        f"+ lm_head {head_ms:.3f} ms"})
    rows.append({"key": "P2", "title": "chunked parallel selective scan",
                 "ttft_ms": (graphs - scan_gain[1], graphs - scan_gain[0]),
                 "detail": f"scan {p['scan_us']:.1f} -> {scan_new[1]:.1f}-{scan_new[0]:.1f} us a layer"})
    rows.append({"key": "P3", "title": "int8 tensor-core GEMMs with fused epilogues",
                 "ttft_ms": (graphs - scan_gain[1] - gemm_gain[1], graphs - scan_gain[0] - gemm_gain[0]),
                 "detail": f"linears {p['gemm_us']:.1f} -> {gemm_new[1]:.1f}-{gemm_new[0]:.1f} us a layer "
                           f"({2 * macs * L / 1e12:.2f} int8 TOP a prompt)"})
    return rows


def launch_floors(ctx: Context, h200_rows: dict) -> list[dict]:
    """Per public shape: launches per token today and after S1-S8, times the H200 launch floor, beside the bytes at
    the H200 copy bandwidth and the measured graph replay: where launches alone exceed a TPOT target."""
    out = []
    for shape in SHAPES:
        c = mamba_config(shape)
        chain = int8_decode_step(c)
        today = totals(chain)
        for step in steps(ctx, c):
            chain = apply(chain, step)
        after = totals(chain)
        measured = h200_rows.get((shape, "int8"))
        out.append({"shape": shape, "launches": (today[2], after[2]),
                    "launch_floor_ms": (today[2] * ctx.floor_us / 1e3, after[2] * ctx.floor_us / 1e3),
                    "bytes_at_copy_ms": (today[0] / (ctx.copy_gb_per_s * 1e9) * 1e3,
                                         after[0] / (ctx.copy_gb_per_s * 1e9) * 1e3),
                    "h200_graph_ms": measured["time_ms"] if measured else None})
    return out


def build(ctx: Context, kernel_timing: Path, latency: Path) -> dict:
    c = mamba_config(SHAPE)
    h200 = load_h200(kernel_timing, latency)
    eta = bandwidth_fraction_range(totals(fp16_decode_step(c))[0])
    chain = int8_decode_step(c)
    graph, host = (ctx.graph_ms, ctx.graph_ms), ctx.tpot_ms - ctx.graph_ms

    def orin(chain_now: list[Kernel], graph_high_ms: float) -> dict:
        return {dev.name: tuple(project(chain_now, graph_high_ms, h200, dev, (eta["low"], eta["high"]))["tpot_ms"]
                                [side] for side in ("low", "high")) for dev in ORIN_DEVICES}

    rows = [{"key": "S0", "title": "today (measured on the H200; Orin projected)", "bytes": totals(chain)[0],
             "launches": totals(chain)[2], "h200_gain_ms": (0.0, 0.0), "h200_graph_ms": graph,
             "h200_tpot_ms": (ctx.tpot_ms,) * 2, "orin_tpot_ms": orin(chain, graph[1]), "exactness": "-",
             "removes": [], "adds": []}]
    for step in steps(ctx):
        before = totals(chain)
        chain = apply(chain, step)
        gain = tuple((step.removed_us - a) / 1e3 for a in step.added_us)  # (low added -> high gain, ...)
        graph = (graph[0] - gain[0], graph[1] - gain[1])
        host -= step.host_ms
        rows.append({"key": step.key, "title": step.title, "bytes_before": before[0], "launches_before": before[2],
                     "bytes": totals(chain)[0], "launches": totals(chain)[2],
                     "h200_gain_ms": (gain[1], gain[0]), "host_gain_ms": step.host_ms, "h200_graph_ms": graph,
                     "h200_tpot_ms": (graph[0] + host, graph[1] + host), "orin_tpot_ms": orin(chain, graph[1]),
                     "exactness": step.exactness, "detail": step.detail, "removes": list(step.removes),
                     "adds": [asdict(x) for x in step.adds]})
    floor_left = totals(chain)[2] * ctx.floor_us / 1e3
    assumptions = {"gemv_target": asdict(GEMV_TARGET), "grid_barrier_us": [asdict(x) for x in GRID_BARRIER_US],
                   "hadamard_stage_us": [asdict(x) for x in HADAMARD_STAGE_US],
                   "scan_fraction": [asdict(x) for x in SCAN_FRACTION],
                   "int8_gemm_fraction": [asdict(x) for x in INT8_GEMM_FRACTION],
                   "h200_int8_dense_tops": asdict(H200_INT8_DENSE_TOPS)}
    return {"kind": LABEL, "command": "python3 benchmarks/decode_plan.py", "shape": SHAPE,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "inputs": h200.sources,
            "h200": {"floor_us": ctx.floor_us, "copy_gb_per_s": ctx.copy_gb_per_s, "best_fraction": ctx.best_fraction,
                     "measured_us_per_token": ctx.measured_us},
            "decode": rows, "launch_floor_left_ms": floor_left,
            "bandwidth_floor_ms": totals(chain)[0] / (ctx.copy_gb_per_s * 1e9) * 1e3,
            "prefill": prefill_steps(ctx), "launch_floors": launch_floors(ctx, h200.rows),
            "assumptions": assumptions, "final_chain": [asdict(x) for x in chain]}


def rng(pair, fmt="{:.3f}") -> str:
    lo, hi = sorted(pair)
    return fmt.format(lo) if abs(hi - lo) < 5e-4 else f"{fmt.format(lo)}-{fmt.format(hi)}"


def print_markdown(report: dict) -> None:
    print(f"Decode, {report['shape']}, batch 1, per token -- {LABEL.upper()} (H200 from measured per-kernel times; "
          f"Orin via orin_projection.py)\n")
    names = [dev.name for dev in ORIN_DEVICES]
    print("| step | change | MB before -> after | launches before -> after | H200 gain ms | H200 graph ms | "
          "H200 TPOT ms | " + " | ".join(f"{x} TPOT ms" for x in names) + " |")
    print("|---" * (7 + len(names)) + "|")
    for r in report["decode"]:
        moved = (f"{r['bytes_before'] / 1e6:.1f} -> {r['bytes'] / 1e6:.1f}" if "bytes_before" in r
                 else f"{r['bytes'] / 1e6:.1f}")
        launched = f"{r['launches_before']} -> {r['launches']}" if "launches_before" in r else f"{r['launches']}"
        gain = rng(r["h200_gain_ms"]) + (f" (+{r['host_gain_ms']:.3f} host)" if r.get("host_gain_ms") else "")
        orin = " | ".join(rng(r["orin_tpot_ms"][x], "{:.1f}") for x in names)
        print(f"| {r['key']} | {r['title']} | {moved} | {launched} | {gain} | {rng(r['h200_graph_ms'])} | "
              f"{rng(r['h200_tpot_ms'])} | {orin} |")
    for r in report["decode"]:
        if r.get("detail"):
            print(f"\n{r['key']}: {r['detail']}")
    print(f"\nAfter S1-S8: {report['launch_floor_left_ms']:.3f} ms of launch floor left "
          f"({report['decode'][-1]['launches']} launches x {report['h200']['floor_us']:.3f} us); bytes at copy "
          f"bandwidth {report['bandwidth_floor_ms']:.3f} ms.\n")
    print("Launch floor by shape (H200 floor per launch x launches; bytes at the copy bandwidth; measured graph):\n")
    print("| shape | launches today -> after S1-S8 | launch floor ms | bytes at copy ms | H200 graph ms (measured) |")
    print("|---|---|---|---|---|")
    for f in report["launch_floors"]:
        graph = f"{f['h200_graph_ms']:.3f}" if f["h200_graph_ms"] is not None else "-"
        print(f"| {f['shape']} | {f['launches'][0]} -> {f['launches'][1]} | {f['launch_floor_ms'][0]:.3f} -> "
              f"{f['launch_floor_ms'][1]:.3f} | {f['bytes_at_copy_ms'][0]:.3f} -> {f['bytes_at_copy_ms'][1]:.3f} | "
              f"{graph} |")
    print(f"\nPrefill, {report['shape']}, 512-token prompt -- {LABEL.upper()}\n")
    print("| step | change | H200 TTFT ms | how |")
    print("|---|---|---|---|")
    for p in report["prefill"]:
        print(f"| {p['key']} | {p['title']} | {rng(p['ttft_ms'], '{:.1f}')} | {p['detail']} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()),
                                     epilog=__doc__.split("\n\n", 2)[2],
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--kernel-timing", type=Path, default=RESULTS / "kernel_timing.json",
                        help="benchmarks/kernel_timing.py's JSON (2.8b per-kernel times)")
    parser.add_argument("--latency", type=Path, default=RESULTS / "latency_h200.json",
                        help="benchmarks/bench_latency.py's JSON (graph time, TPOT, decode-graph profile)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for decode_plan.json")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object instead of tables")
    args = parser.parse_args(argv)
    try:
        report = build(load_context(args.kernel_timing, args.latency), args.kernel_timing, args.latency)
    except InputError as exc:
        sys.exit(f"error: {exc}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "decode_plan.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    if args.json:
        print(json.dumps(report))
        return
    print_markdown(report)
    print(f"\n{path}")


if __name__ == "__main__":
    main()
