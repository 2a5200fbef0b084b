"""What the latency rows of benchmarks/bench_latency.py (Mamba1) and benchmarks/latency_mamba2.py (Mamba2) share:
the row names, the device copy bandwidth, timing a call or a decode-graph replay, the per-kernel profile, a row's
derived columns (achieved GB/s against the copy bandwidth, host time per token), the edge-quamba rows of one cuda
backend (one per --token-choice), the baselines' generate-based row, mamba_ssm's row (Mamba1 or Mamba2), and the
outputs (JSON, CSV with a fixed header, PNG, the printed table, the README's markdown table).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from edge_quamba.runtime.bench import median_timings, package_version

CSV_FIELDS = ("shape", "impl", "status", "ttft_ms", "tpot_ms", "graph_ms", "host_ms_per_token", "host_fraction_of_tpot",
              "token_choice", "decode_tokens_per_s", "peak_memory_gb", "weight_gb", "achieved_gb_per_s",
              "fraction_of_copy_bandwidth")
IMPLS = ("edge-quamba cuda int8", "mamba_ssm fp16 cg", "transformers fp16", "edge-quamba cuda w4a8",
         "edge-quamba cuda w4a16")
TOKEN_CHOICES = ("device", "host")
"""--token-choice: where the edge-quamba rows choose the greedy token (bench_latency's docstring); "both" times
each."""
HOST_ARGMAX_SUFFIX = " host-argmax"
"""Appended to an edge-quamba row's name when its tokens were chosen on the host."""
FOUR_BIT_IMPLS = {"edge-quamba-w4a8": ("w4a8", IMPLS[3]), "edge-quamba-w4a16": ("w4a16", IMPLS[4])}
"""--impls name of a 4-bit edge-quamba row -> (QuantConfig.bits, row name)."""


def copy_bandwidth_gb_per_s(device: torch.device, nbytes: int = 2**30, iters: int = 10) -> float:
    """Device copy bandwidth: read + write bytes of ``dst.copy_(src)`` per second (median-free: one long run)."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        dst.copy_(src)
    end.record()
    torch.cuda.synchronize(device)
    seconds = start.elapsed_time(end) / 1e3
    del src, dst
    return 2 * nbytes * iters / seconds / 1e9


def graph_replay_ms(graph: torch.cuda.CUDAGraph, replays: int = 64) -> float:
    """Mean time of one decode-graph replay, back to back (the sequence just advances; the logits graph reads a fixed
    token, the greedy graph the token it chose)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    graph.replay()
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / replays


def kernel_table(graph: torch.cuda.CUDAGraph, steps: int = 8, top: int = 12) -> list[dict]:
    """GPU time per decode step by kernel name, from torch.profiler over ``steps`` replays of ``graph``."""
    from torch.profiler import ProfilerActivity, profile

    graph.replay()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            graph.replay()
        torch.cuda.synchronize()
    rows = []
    for event in prof.key_averages():
        device_us = getattr(event, "device_time_total", None)
        if device_us is None:
            device_us = getattr(event, "cuda_time_total", 0.0)
        if device_us > 0:
            rows.append({"kernel": event.key[:90], "us_per_token": device_us / steps,
                         "launches_per_token": event.count / steps})
    rows.sort(key=lambda r: -r["us_per_token"])
    return rows[:top]


def weight_bytes_fp16_model(model: torch.nn.Module) -> int:
    """Bytes of the unique parameters (a tied embedding table once)."""
    seen = {}
    for p in model.parameters():
        seen[p.data_ptr()] = p.numel() * p.element_size()
    return sum(seen.values())


def timed(fn) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def row(shape: str, impl: str, ttft: float, tpot: float, peak: int, weight_bytes: int, copy_bw: float,
        **extra) -> dict:
    gb_per_s = weight_bytes / tpot / 1e9
    result = {"shape": shape, "impl": impl, "status": "ok", "ttft_ms": ttft * 1e3, "tpot_ms": tpot * 1e3,
              "decode_tokens_per_s": 1 / tpot, "peak_memory_gb": peak / 1e9, "weight_gb": weight_bytes / 1e9,
              "achieved_gb_per_s": gb_per_s, "fraction_of_copy_bandwidth": gb_per_s / copy_bw, **extra}
    if "graph_ms" in extra:  # wall time per token the GPU spends outside the decode graph
        result["host_ms_per_token"] = result["tpot_ms"] - extra["graph_ms"]
        result["host_fraction_of_tpot"] = result["host_ms_per_token"] / result["tpot_ms"]
    return result


def edge_quamba_rows(backend, shape: str, impl: str, prompt, new_tokens: int, repeats: int, copy_bw: float,
                     profile_kernels: bool, token_choices=TOKEN_CHOICES) -> list[dict]:
    """The rows of one cuda backend, one per token choice (bench_latency's docstring), timed on the same backend and
    GPU; the per-kernel table (of that row's graph) on the first row timed. Peak memory: since the backend was
    built."""
    from edge_quamba.runtime.cuda_backend import weight_bytes_per_token
    from edge_quamba.runtime.sampling import NumericsError

    weight_bytes = weight_bytes_per_token(backend.model)
    rows = []
    for choice in token_choices:
        decoder = backend.device_greedy(None) if choice == "device" else None  # None: argmax over every logit
        graph = backend.graph if decoder is None else decoder.graph
        name = impl if choice == "device" else impl + HOST_ARGMAX_SUFFIX
        try:
            ttft, tpot = median_timings(backend, prompt, new_tokens, repeats, decoder)
        except NumericsError as exc:  # the device path checks the logits (NaN, all -Inf); the host argmax does not
            rows.append(skipped(shape, name, f"failed: NumericsError: {exc}"))
            continue
        graph_ms = statistics.median(graph_replay_ms(graph) for _ in range(repeats))
        rows.append(row(shape, name, ttft, tpot, torch.cuda.max_memory_allocated(), weight_bytes, copy_bw,
                        graph_ms=graph_ms,
                        graph_achieved_gb_per_s=weight_bytes / graph_ms / 1e6, token_choice=choice))
        if profile_kernels and not any("kernels" in r for r in rows):
            try:
                rows[-1]["kernels"] = kernel_table(graph)
            except RuntimeError as exc:  # a profiler that cannot see inside graphs: say so, keep the timings
                rows[-1]["kernels"] = f"profiler failed: {str(exc).splitlines()[0]}"
    return rows


def skipped(shape: str, impl: str, status: str) -> dict:
    return {"shape": shape, "impl": impl, "status": status}


def generate_row(generate, shape, impl, weight_bytes, new_tokens, repeats, copy_bw) -> dict:
    """A baseline's row from ``generate(n)`` (seconds to generate n tokens after the prompt): one warm-up run (for
    mamba_ssm it also captures the decode graph for this length), TTFT = median of 1-token runs, TPOT = the median
    full run minus TTFT over the remaining tokens."""
    generate(new_tokens)
    ttft = statistics.median(generate(1) for _ in range(repeats))
    total = statistics.median(generate(new_tokens) for _ in range(repeats))
    return row(shape, impl, ttft, (total - ttft) / (new_tokens - 1), torch.cuda.max_memory_allocated(), weight_bytes,
               copy_bw)


def bench_mamba_ssm(shape: str, d_model: int, n_layer: int, vocab: int, ssm_cfg: dict, prompt, new_tokens: int,
                    repeats: int, seed: int, copy_bw: float) -> dict:
    """mamba_ssm's row: its MambaLMHeadModel in float16 with random weights (seeded), ``ssm_cfg`` choosing Mamba1 or
    Mamba2 and its shape, generating with its CUDA-graph decode (cg=True) and greedy tokens (top_k=1). Not installed,
    failing to import, or failing inside its own code (e.g. a path that needs causal_conv1d): the row records why and
    the run goes on to the other rows."""
    impl = IMPLS[1]
    if importlib.util.find_spec("mamba_ssm") is None:
        return skipped(shape, impl, "not installed")
    try:
        from mamba_ssm.models.config_mamba import MambaConfig as SsmConfig
        from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel
    except ImportError as exc:
        return skipped(shape, impl, f"import failed: {str(exc).splitlines()[0]}")
    torch.manual_seed(seed)
    config = SsmConfig(d_model=d_model, n_layer=n_layer, vocab_size=vocab, ssm_cfg=ssm_cfg, rms_norm=True,
                       residual_in_fp32=True, fused_add_norm=True, pad_vocab_size_multiple=8)
    model = MambaLMHeadModel(config, device="cuda", dtype=torch.float16).eval()
    ids = torch.tensor([prompt], dtype=torch.long, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()

    def generate(n: int) -> float:
        return timed(lambda: model.generate(ids, max_length=len(prompt) + n, cg=True, top_k=1))

    try:
        result = generate_row(generate, shape, impl, weight_bytes_fp16_model(model), new_tokens, repeats, copy_bw)
    except Exception as exc:  # noqa: BLE001 (a third-party failure is the row's status; see above)
        first_line = (str(exc).splitlines() or [""])[0]
        result = skipped(shape, impl, f"failed: {type(exc).__name__}: {first_line}")
    del model
    return result


def free_memory() -> None:
    import gc

    gc.collect()
    torch.cuda.empty_cache()


RUNTIME_SWITCHES = ("EDGE_QUAMBA_PDL", "EDGE_QUAMBA_FUSED_DECODE")
"""The environment switches of the cuda backend that a record notes when they are set."""


def environment() -> dict:
    props = torch.cuda.get_device_properties(0)
    names = ("torch", "transformers", "mamba_ssm", "causal_conv1d", "triton", "edge-quamba")
    switches = {name: os.environ[name] for name in RUNTIME_SWITCHES if name in os.environ}
    return {"gpu": props.name, "gpu_memory_gb": props.total_memory / 1e9, "sm_count": props.multi_processor_count,
            "capability": f"{props.major}.{props.minor}", "cuda": torch.version.cuda,
            "python": platform.python_version(), **{name: package_version(name) for name in names},
            "switches": switches}


def write_outputs(report: dict, out: Path, name: str, shape_order: tuple[str, ...] = ()) -> list[Path]:
    """<out>/<name>.json, .csv and .png; the plot's shapes follow ``shape_order`` (architecture and size), then any
    other shape in row order."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.json", out / f"{name}.csv", out / f"{name}.png"]
    paths[0].write_text(json.dumps(report, indent=2) + "\n")
    with paths[1].open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for r in report["rows"]:
            writer.writerow(r)
    plot(report, paths[2], shape_order)
    return paths


def plot(report: dict, path: Path, shape_order: tuple[str, ...] = ()) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    in_rows = list(dict.fromkeys(r["shape"] for r in report["rows"]))
    shapes = [s for s in shape_order if s in in_rows] + [s for s in in_rows if s not in shape_order]
    impls = list(dict.fromkeys(r["impl"] for r in report["rows"]))
    panels = (("ttft_ms", "TTFT ms (512-token prompt)"), ("tpot_ms", "TPOT ms"), ("peak_memory_gb", "peak memory GB"))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    width = 0.8 / len(impls)
    for ax, (key, label) in zip(axes, panels):
        for i, impl in enumerate(impls):
            values = [next((r.get(key) for r in report["rows"] if r["shape"] == s and r["impl"] == impl), None)
                      for s in shapes]
            xs = [j + i * width for j, v in enumerate(values) if v is not None]
            ys = [v for v in values if v is not None]
            bars = ax.bar(xs, ys, width, label=impl)
            ax.bar_label(bars, fmt="%.3g", fontsize=7, padding=2)
        ax.set_xticks([j + width * (len(impls) - 1) / 2 for j in range(len(shapes))], shapes)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(label, fontsize=10)
    axes[0].legend(fontsize=8)
    env = report["environment"]
    fig.suptitle(f"Random weights, batch 1, prompt {report['prompt_len']}, {report['new_tokens']} new tokens, "
                 f"median of {report['repeats']}; {env['gpu']}, copy {report['copy_bandwidth_gb_per_s']:.0f} GB/s",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_table(report: dict) -> None:
    print(f"{'shape':<8}{'impl':<36}{'TTFT ms':>9}{'TPOT ms':>9}{'graph ms':>9}{'host ms':>9}{'host %':>7}"
          f"{'peak GB':>9}{'weights GB':>11}{'GB/s':>8}{'of copy':>8}  status")
    for r in report["rows"]:
        if r["status"] != "ok":
            print(f"{r['shape']:<8}{r['impl']:<36}{'':>88}  {r['status']}")
            continue
        graph = f"{r['graph_ms']:.3f}" if "graph_ms" in r else "-"
        host = f"{r['host_ms_per_token']:.3f}" if "host_ms_per_token" in r else "-"
        share = f"{100 * r['host_fraction_of_tpot']:.1f}" if "host_fraction_of_tpot" in r else "-"
        print(f"{r['shape']:<8}{r['impl']:<36}{r['ttft_ms']:>9.2f}{r['tpot_ms']:>9.3f}{graph:>9}{host:>9}{share:>7}"
              f"{r['peak_memory_gb']:>9.2f}{r['weight_gb']:>11.3f}{r['achieved_gb_per_s']:>8.0f}"
              f"{r['fraction_of_copy_bandwidth']:>8.2f}  ok")


def markdown_table(report: dict, shape_names: dict[str, str]) -> str:
    """The README's table of a run: one line per implementation and shape, an edge-quamba row's TPOT with the token
    chosen on the GPU beside its host-argmax twin's (when the run timed both); rows that did not run say why."""
    host = {(r["shape"], r["impl"][: -len(HOST_ARGMAX_SUFFIX)]): r for r in report["rows"]
            if r["impl"].endswith(HOST_ARGMAX_SUFFIX)}
    lines = ["| shape | implementation | TTFT ms | TPOT ms | TPOT ms, host argmax | peak memory GB | "
             "weight GB/s per token (of copy) |", "|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        if r["impl"].endswith(HOST_ARGMAX_SUFFIX):
            continue
        twin = host.get((r["shape"], r["impl"]))
        twin_tpot = f"{twin['tpot_ms']:.3f}" if twin is not None and twin["status"] == "ok" else "-"
        name = shape_names.get(r["shape"], r["shape"])
        if r["status"] != "ok":
            lines.append(f"| {name} | {r['impl']} | - | {r['status']} | {twin_tpot} | - | - |")
            continue
        lines.append(f"| {name} | {r['impl']} | {r['ttft_ms']:.1f} | {r['tpot_ms']:.3f} | {twin_tpot} | "
                     f"{r['peak_memory_gb']:.2f} | {r['achieved_gb_per_s']:.0f} "
                     f"({r['fraction_of_copy_bandwidth']:.2f}) |")
    return "\n".join(lines)

