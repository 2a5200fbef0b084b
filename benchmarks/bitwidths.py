"""The bit-width configs side by side (issue 13): fp16, W8A8, W4A8, W4A16 on one fp checkpoint.

Per config:
    perplexity   held-out, on --eval-data (non-overlapping windows of --seq-len, the first --eval-tokens tokens),
                 computed by the PyTorch reference of the config (fp16: the fp model in float16; quantized: the
                 artifact's reference, integer arithmetic emulated exactly), and its change against fp16 with the
                 issue's targets (W8A8 within +1.5%, 4-bit within +3%)
    bytes        the artifact's model.safetensors (fp16: the checkpoint's tensors at 2 bytes each), its mixer
                 linear weights alone (the part 4 bits shrink), and the exported model.onnx where one exists
    CPU speed    batch 1, --prompt-len prompt tokens, --new-tokens decoded: the export's model.onnx on ONNX Runtime
                 (CPUExecutionProvider, --threads intra-op threads) for each config's default row, against two
                 float baselines: the fp checkpoint's float32 graph on ONNX Runtime (`export --bits fp32`, the fp
                 row's ort columns: ORT against ORT) and the fp32 PyTorch reference (benchmarks/ort_cpu.py times the
                 same); medians of --repeats after one dropped warm-up (edge_quamba.runtime.bench)
Ablation rows (--no-ablations skips them): "<bits> rtn" rounds the int4 weights to nearest instead of GPTQ;
"<bits> g<N>" uses int4 groups of --alt-group-size columns instead of --group-size;
"<bits> natural" / "<bits> act-order" run GPTQ in the other column order than the default row (QuantConfig's
gptq_act_order; "g<N> natural" / "g<N> act-order" the same at --alt-group-size);
"<bits> +clip" (int8-activation configs) clips the activations of --clip-sites at the percentile instead of the
paper's u only (the recipe README's quality table measured best for W8A8: `--percentile-on` of quantize/export).

Every artifact is made by the library's own `quantize` path (quantize_checkpoint) and every export by `export`
(export_model, which validates the graph against the reference before it is written), in a scratch folder.
The Mamba2 demo model, once it ships, is one --model away: nothing here depends on the architecture.

    python benchmarks/bitwidths.py                               # demo model, the defaults below
    python benchmarks/bitwidths.py --model DIR --eval-tokens 65536
    python benchmarks/bitwidths.py --configs w4a8,w4a16 --no-speed --rows 'w4a8,w4a8 natural'   # some rows only
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors import safe_open

from edge_quamba.eval.perplexity import make_windows, read_text, window_nll
from edge_quamba.models.loading import load_fp_model
from edge_quamba.models.locate import resolve_model
from edge_quamba.models.tokenizer import load_tokenizer
from edge_quamba.folders import load_quantized_model, open_model
from edge_quamba.kinds import WEIGHTS
from edge_quamba.quant.qmodel import QuantConfig
from edge_quamba.resources import default_calibration_file, default_evaluation_file
from edge_quamba.runtime.backends import TorchReferenceBackend
from edge_quamba.runtime.bench import bench_prompt, cpu_name, median_timings, package_version

RESULTS = Path(__file__).parent / "results"
LINEARS = ("in_proj", "x_proj", "dt_proj", "out_proj")
TARGET_PERCENT = {"w8a8": 1.5, "w4a8": 3.0, "w4a16": 3.0}
"""The issue's perplexity targets against fp16, in percent."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="fp checkpoint (default: the demo model)")
    parser.add_argument("--configs", default="w8a8,w4a8,w4a16", help="quantized configs (fp16 is always measured)")
    parser.add_argument("--no-ablations", action="store_true", help="skip the ablation rows")
    parser.add_argument("--rows", default=None, metavar="NAMES",
                        help="comma-separated row names to measure (default: every row of --configs; fp16 always)")
    parser.add_argument("--no-speed", action="store_true",
                        help="perplexity and bytes only: no export and no CPU timing")
    parser.add_argument("--alt-group-size", type=int, default=128, help="group size of the g<N> rows")
    parser.add_argument("--clip-sites", default="in_proj_input,u,out_proj_input",
                        help="sites clipped at the percentile in the +clip rows")
    parser.add_argument("--calib-data", default=str(default_calibration_file()))
    parser.add_argument("--calib-samples", type=int, default=32)
    parser.add_argument("--calib-seed", type=int, default=None,
                        help="draw the calibration windows at random offsets with this seed (default: the first ones)")
    parser.add_argument("--calib-seq-len", type=int, default=512)
    parser.add_argument("--group-size", type=int, default=QuantConfig().group_size,
                        help="int4 group size of the default rows (default: the library's)")
    parser.add_argument("--eval-data", default=str(default_evaluation_file()))
    parser.add_argument("--eval-tokens", type=int, default=16384)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime intra-op threads")
    parser.add_argument("--out", default=str(RESULTS / "bitwidths"), help="path prefix for .json and .png")
    return parser.parse_args()


def linear_weight_bytes(weights: Path) -> int:
    """Bytes of the mixer linears' weights (and their scales) in a safetensors file."""
    total = 0
    with safe_open(str(weights), "pt") as f:
        for key in f.keys():
            if ".mixer." in key and any(f".{name}.weight" in key for name in LINEARS):
                t = f.get_tensor(key)
                total += t.numel() * t.element_size()
    return total


def timing_row(name: str, backend, prompt: list[int], args) -> dict:
    print(f"timing {name} ...", file=sys.stderr, flush=True)
    ttft, tpot = median_timings(backend, prompt, args.new_tokens, args.repeats)
    return {"ttft_ms": ttft * 1e3, "tpot_ms": tpot * 1e3, "prefill_tokens_per_s": args.prompt_len / ttft,
            "decode_tokens_per_s": 1 / tpot}


def main() -> None:
    args = parse_args()
    started, load_before = time.time(), os.getloadavg()
    torch.set_num_threads(args.threads)
    fp_dir = resolve_model(args.model)
    fp32 = load_fp_model(fp_dir, torch.float32)
    tok = load_tokenizer(fp_dir, eos_token_id=fp32.config.eos_token_id)
    windows = make_windows(tok.encode(read_text(args.eval_data))[: args.eval_tokens], args.seq_len)
    prompt = bench_prompt(tok, args.prompt_len)

    def perplexity(model) -> float:
        total, count = window_nll(model, windows, batch_size=8, progress=False)
        return math.exp(total / count)

    rows: dict[str, dict] = {}
    print("fp16 ...", file=sys.stderr, flush=True)
    fp16 = load_fp_model(fp_dir, torch.float16)
    fp_params = {id(p): p for p in fp32.parameters()}.values()  # tied embeddings counted once
    rows["fp16"] = {"bits": "fp16", "gptq": None, "perplexity": perplexity(fp16),
                    "artifact_bytes": sum(p.numel() * 2 for p in fp_params),
                    "linear_weight_bytes": sum(getattr(b.mixer, n).weight.numel() * 2
                                               for b in fp32.backbone.layers for n in LINEARS),
                    "onnx_bytes": None, "ort": None}

    default_sites = QuantConfig().percentile_activations
    clip_sites = tuple(args.clip_sites.split(","))
    act_order = QuantConfig().gptq_act_order
    other_order = "natural" if act_order else "act-order"
    alt = f"g{args.alt_group_size}"
    variants = []  # (row name, bits, gptq, percentile sites, group size, GPTQ act order)
    for bits in args.configs.split(","):
        variants.append((bits, bits, True, default_sites, args.group_size, act_order))
        if not args.no_ablations and bits != "w4a16":
            variants.append((f"{bits} +clip", bits, True, clip_sites, args.group_size, act_order))
        if not args.no_ablations and bits != "w8a8":
            variants.append((f"{bits} rtn", bits, False, default_sites, args.group_size, act_order))
            variants.append((f"{bits} {other_order}", bits, True, default_sites, args.group_size, not act_order))
            variants.append((f"{bits} {alt}", bits, True, default_sites, args.alt_group_size, act_order))
            variants.append((f"{bits} {alt} {other_order}", bits, True, default_sites, args.alt_group_size,
                             not act_order))
    if args.rows is not None:
        wanted = [name.strip() for name in args.rows.split(",")]
        unknown = sorted(set(wanted) - {v[0] for v in variants} - {"fp16"})
        if unknown:
            sys.exit(f"--rows: unknown rows {unknown}; these --configs have {', '.join(v[0] for v in variants)}")
        variants = [v for v in variants if v[0] in wanted]

    from edge_quamba.onnx.export import export_fp32_model, export_model
    from edge_quamba.quant.pipeline import quantize_checkpoint
    from edge_quamba.runtime.ort_backend import OrtBackend

    exports: dict[str, Path] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, bits, gptq, sites, group_size, gptq_act_order in variants:
            print(f"{name}: quantizing ...", file=sys.stderr, flush=True)
            qconfig = QuantConfig(bits=bits, gptq=gptq, group_size=group_size, calib_samples=args.calib_samples,
                                  calib_seq_len=args.calib_seq_len, calib_seed=args.calib_seed,
                                  percentile_activations=sites,
                                  gptq_act_order=gptq_act_order)
            folder = Path(scratch) / name.replace(" ", "-").replace("+", "")
            t0 = time.time()
            quantize_checkpoint(model=args.model, out=folder, calib_data=args.calib_data, qconfig=qconfig,
                                progress=False)
            four_bit_gptq = gptq and bits != "w8a8"
            row = {"bits": bits, "gptq": gptq if bits != "w8a8" else None, "quantize_seconds": time.time() - t0,
                   "gptq_act_order": gptq_act_order if four_bit_gptq else None,
                   "percentile_sites": list(sites) if bits != "w4a16" else None,
                   "group_size": group_size if bits != "w8a8" else None,
                   "artifact_bytes": (folder / WEIGHTS).stat().st_size,
                   "linear_weight_bytes": linear_weight_bytes(folder / WEIGHTS), "onnx_bytes": None, "ort": None}
            print(f"{name}: perplexity ...", file=sys.stderr, flush=True)
            row["perplexity"] = perplexity(load_quantized_model(folder))
            # a graph's speed does not depend on the scales: one export per config
            if not args.no_speed and name in ("w8a8", "w4a8", "w4a16"):
                print(f"{name}: exporting ...", file=sys.stderr, flush=True)
                export = Path(scratch) / f"{folder.name}-export"
                result = export_model(model=str(folder), out=export, target="ort", prompt_len=64, decode_steps=4,
                                      threads=args.threads, progress=False, echo=lambda _: None)
                row["onnx_bytes"] = (export / "model.onnx").stat().st_size
                row["validation"] = {k: v for k, v in result.validation["ort"].to_dict().items() if k != "checks"}
                exports[name] = export
            rows[name] = row
            print(f"{name}: perplexity {row['perplexity']:.3f}", file=sys.stderr, flush=True)
        rows["fp16"]["ref_fp32_speed"] = None  # --no-speed: no fp32 graph and no timing
        if not args.no_speed:
            print("fp32: exporting the float32 graph ...", file=sys.stderr, flush=True)
            fp32_export = Path(scratch) / "fp32-export"
            result = export_fp32_model(model=args.model, out=fp32_export, prompt_len=64, decode_steps=4,
                                       threads=args.threads, progress=False, echo=lambda _: None)
            rows["fp16"]["onnx_bytes"] = (fp32_export / "model.onnx").stat().st_size  # the fp32 graph's
            rows["fp16"]["validation"] = {k: v for k, v in result.validation["ort"].to_dict().items() if k != "checks"}
            # all timings back to back at the end, so that they share one stretch of the (shared) machine's load
            rows["fp16"]["ref_fp32_speed"] = timing_row("ref fp32", TorchReferenceBackend(fp32), prompt, args)
            rows["fp16"]["ort"] = timing_row("fp32 ort", OrtBackend(open_model(str(fp32_export)), threads=args.threads), prompt, args)
            for name, export in exports.items():
                rows[name]["ort"] = timing_row(f"{name} ort", OrtBackend(open_model(str(export)), threads=args.threads), prompt, args)

    base = rows["fp16"]["perplexity"]
    for name, row in rows.items():
        row["perplexity_vs_fp16_percent"] = 100 * (row["perplexity"] / base - 1)
        target = TARGET_PERCENT.get(row["bits"])
        row["target_percent"] = target
        row["within_target"] = None if target is None else row["perplexity_vs_fp16_percent"] <= target
        if row["ort"] is not None:
            fp_speed, fp_ort = rows["fp16"]["ref_fp32_speed"], rows["fp16"]["ort"]  # the second: the fp32 graph
            row["ort"]["decode_vs_ref_fp32"] = row["ort"]["decode_tokens_per_s"] / fp_speed["decode_tokens_per_s"]
            row["ort"]["prefill_vs_ref_fp32"] = row["ort"]["prefill_tokens_per_s"] / fp_speed["prefill_tokens_per_s"]
            row["ort"]["decode_vs_ort_fp32"] = row["ort"]["decode_tokens_per_s"] / fp_ort["decode_tokens_per_s"]
            row["ort"]["prefill_vs_ort_fp32"] = row["ort"]["prefill_tokens_per_s"] / fp_ort["prefill_tokens_per_s"]

    c = fp32.config
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "seconds": round(time.time() - started, 1),
        "model": str(fp_dir), "model_shape": {"n_layer": c.n_layer, "d_model": c.d_model, "d_inner": c.d_inner,
                                              "vocab_size": c.vocab_size},
        "eval": {"data": Path(args.eval_data).name, "tokens": int(windows.numel()), "windows": int(windows.shape[0]),
                 "seq_len": args.seq_len},
        "calibration": {"data": Path(args.calib_data).name, "samples": args.calib_samples,
                        "seq_len": args.calib_seq_len, "seed": args.calib_seed},
        "group_size": args.group_size, "speed": {"batch": 1, "prompt_len": args.prompt_len,
                                                 "new_tokens": args.new_tokens, "repeats": args.repeats,
                                                 "threads": args.threads},
        "machine": {"processor": cpu_name(), "logical_cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average_before": load_before, "load_average_after": os.getloadavg(),
                    "note": "shared CPU: timings are indicative only"},
        "versions": {"python": platform.python_version(),
                     **{p: package_version(p) for p in ("torch", "onnxruntime", "onnx", "edge-quamba")}},
        "rows": rows,
    }
    print_table(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.json')}\nwrote {out.with_suffix('.png')}")


def print_table(report: dict) -> None:
    e, s = report["eval"], report["speed"]
    print(f"\n{report['model']}: perplexity on {e['tokens']} tokens ({e['windows']} windows of {e['seq_len']}); "
          f"speed batch 1, prompt {s['prompt_len']}, {s['new_tokens']} new tokens, {s['threads']} thread(s), "
          f"{report['machine']['processor']}")
    width = max(13, 1 + max(map(len, report["rows"])))
    print(f"{'config':<{width}}{'ppl':>9}{'vs fp16':>9}{'target':>8}{'artifact B':>12}{'linears B':>11}{'onnx B':>11}"
          f"{'ort prefill t/s':>16}{'ort decode t/s':>15}{'decode x fp32 ort':>18}")
    for name, r in report["rows"].items():
        ort = r["ort"]
        target = "" if r["target_percent"] is None else f"{r['target_percent']:+.1f}%"
        prefill = f"{ort['prefill_tokens_per_s']:.0f}" if ort else "-"
        decode = f"{ort['decode_tokens_per_s']:.0f}" if ort else "-"
        ratio = f"{ort['decode_vs_ort_fp32']:.2f}x" if ort and "decode_vs_ort_fp32" in ort else "-"
        print(f"{name:<{width}}{r['perplexity']:>9.3f}{r['perplexity_vs_fp16_percent']:>+8.2f}%{target:>8}"
              f"{r['artifact_bytes']:>12}{r['linear_weight_bytes']:>11}{r['onnx_bytes'] or '-':>11}"
              f"{prefill:>16}{decode:>15}{ratio:>18}")
    fp = report["rows"]["fp16"]["ref_fp32_speed"]
    if fp is None:
        return
    print("fp16 row: perplexity of the float16 reference; onnx B and ort columns: the float32 graph (export --bits "
          "fp32), the ORT baseline")
    print(f"second float baseline (PyTorch fp32 reference): prefill {fp['prefill_tokens_per_s']:.0f} tokens/s, "
          f"decode {fp['decode_tokens_per_s']:.0f} tokens/s")


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    names = list(rows)
    speed = rows["fp16"]["ref_fp32_speed"] is not None
    fig, axes = plt.subplots(1, 3 if speed else 2, figsize=(14 if speed else 10, 4))
    ppl = [rows[n]["perplexity"] for n in names]
    axes[0].barh(names, ppl, color=["tab:gray" if n == "fp16" else "tab:blue" for n in names])
    axes[0].axvline(rows["fp16"]["perplexity"], color="k", lw=0.8)
    axes[0].set_xlim(min(ppl) * 0.95, max(ppl) * 1.03)
    axes[0].set_xlabel("held-out perplexity")
    sizes = [rows[n]["linear_weight_bytes"] / 2**20 for n in names]
    bars = axes[1].barh(names, sizes, color="tab:orange")
    axes[1].bar_label(bars, fmt="%.2f", padding=3)
    axes[1].set_xlabel("mixer linear weights (MiB)")
    if speed:
        timed = [n for n in names if rows[n]["ort"] is not None]
        decode = [rows[n]["ort"]["decode_tokens_per_s"] for n in timed]
        labels = [f"{'fp32' if n == 'fp16' else n} (ort)" for n in timed] + ["fp32 (torch ref)"]
        decode.append(rows["fp16"]["ref_fp32_speed"]["decode_tokens_per_s"])
        colors = ["tab:gray" if n == "fp16" else "tab:green" for n in timed] + ["tab:gray"]  # gray: float baselines
        bars = axes[2].barh(labels, decode, color=colors)
        axes[2].bar_label(bars, fmt="%.0f", padding=3)
        axes[2].set_xlabel(f"CPU decode tokens/s ({report['speed']['threads']} thread, shared CPU)")
    for ax in axes:
        ax.invert_yaxis()
    e = report["eval"]
    fig.suptitle(f"{Path(report['model']).name}: {e['tokens']} eval tokens, {report['machine']['processor']}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
