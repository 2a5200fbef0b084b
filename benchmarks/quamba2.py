"""Quamba2 on a Mamba2 model: held-out perplexity and size of fp16, W8A8, W4A8, W4A16, and the W8A8 ablations.

Rows (every quantized row is the library's Quamba2 recipe, :func:`edge_quamba.quant.quamba2.quamba2_quantize`,
written as an artifact with :func:`edge_quamba.quant.artifact.write_artifact`, then loaded back):
    fp16                          the fp reference in float16 (SSD state float32)
    w8a8                          Quamba2: sort-and-cluster x, per-state-group B/C, Hadamard on out_proj's input
    w8a8 -sort-cluster            ablation: one x scale
    w8a8 -group-bc                ablation: one scale each for B and C
    w8a8 -both                    ablation: both off (Quamba's per-tensor scales, without its percentile clipping)
    w4a8, w4a16                   int4 group-wise in_proj/out_proj with GPTQ (group --group-size); w4a8 keeps w8a8's
                                  activation path
    <bits> g128|g64 natural|act-order  ablation: int4 groups of 128 or 64 columns, GPTQ's columns in natural
                                  order or by decreasing Hessian diagonal (static group scales)
Per row: perplexity on the first --eval-tokens tokens of --eval-data (non-overlapping windows of --seq-len), its
change against fp16 with the issue's targets (W8A8 within +1.5 %, 4-bit within +3 %), and bytes (model.safetensors;
fp16: the checkpoint's tensors at 2 bytes each).

CPU speed (--speed, written to <out>_speed.json, e.g. quamba2_speed.json): batch 1, --prompt-len prompt tokens and --new-tokens decoded,
medians of --repeats after one dropped warm-up (edge_quamba.runtime.bench): the W8A8, W4A8 and W4A16 exports'
model.onnx on ONNX Runtime (made by export_model, which validates each against the reference first) against two
float baselines: the fp checkpoint's float32 graph on ONNX Runtime (export_fp32_model, `export --bits fp32`: ORT
against ORT, the ``*_vs_ort_fp32`` ratios) and the fp32 PyTorch reference (the ``*_vs_ref_fp32`` ratios).

Per-layer SQNR (edge_quamba.eval.sqnr, on by default, --sqnr-windows 0 skips it): for each --sqnr-rows config (default
w8a8), every Mamba2 site (fp value vs dequantized int8 codes, ssm_input at its per-group scales) and the mixer output,
per layer, on the first --sqnr-windows eval windows; the fp32 reference is the model in that config's sort-and-cluster
channel order (the same model). w4a16 has no int8 site: its table is the mixer output only. Printed, in the JSON
under "sqnr" and a panel of the PNG; --sqnr measures only it (written to <out>_sqnr.json and .png).

    python benchmarks/quamba2.py --model edge_quamba/assets/demo_model_mamba2
    python benchmarks/quamba2.py --model DIR --eval-tokens 8192 --calib-samples 16 --rows fp16,w8a8
    python benchmarks/quamba2.py --model DIR --speed          # only the CPU speed
    python benchmarks/quamba2.py --model demo-mamba2 --sqnr --sqnr-rows w8a8,w4a8,w4a16   # only per-layer SQNR

Prints a table; writes benchmarks/results/quamba2.json and quamba2.png (perplexity per row, per-layer SQNR).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from edge_quamba import __version__
from edge_quamba.eval.perplexity import make_windows, read_text, window_nll
from edge_quamba.eval.sqnr import layer_sqnr, sqnr_tensors
from edge_quamba.integrity import file_sha256
from edge_quamba.models.loading import load_fp_model
from edge_quamba.models.locate import resolve_model, weights_file
from edge_quamba.models.tokenizer import load_tokenizer
from edge_quamba.folders import load_quantized_model
from edge_quamba.kinds import WEIGHTS
from edge_quamba.quant.artifact import write_artifact
from edge_quamba.quant.calibrate import load_calibration_data
from edge_quamba.quant.qmodel import QuantConfig
from edge_quamba.quant.quamba2 import quamba2_quantize, quantize_reordered, reorder_for_quamba2
from edge_quamba.resources import default_calibration_file, default_evaluation_file
from edge_quamba.runtime.bench import cpu_name

RESULTS = Path(__file__).parent / "results"
ROWS = {
    "w8a8": dict(bits="w8a8"),
    "w8a8 -sort-cluster": dict(bits="w8a8", sort_cluster=False),
    "w8a8 -group-bc": dict(bits="w8a8", per_group_bc=False),
    "w8a8 -both": dict(bits="w8a8", sort_cluster=False, per_group_bc=False),
    "w4a8": dict(bits="w4a8"),
    "w4a16": dict(bits="w4a16"),
    **{f"{bits} g{group} {order}": dict(bits=bits, group_size=group, gptq_act_order=order == "act-order")
       for bits in ("w4a8", "w4a16") for group in (128, 64) for order in ("natural", "act-order")},
}
TARGET_PERCENT = {"w8a8": 1.5, "w4a8": 3.0, "w4a16": 3.0}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="fp Mamba2 checkpoint folder")
    parser.add_argument("--rows", default=",".join(["fp16", *ROWS]), help="comma-separated rows to measure")
    parser.add_argument("--eval-data", default=str(default_evaluation_file()))
    parser.add_argument("--calib-data", default=str(default_calibration_file()))
    parser.add_argument("--calib-samples", type=int, default=16)
    parser.add_argument("--calib-seq-len", type=int, default=512)
    parser.add_argument("--calib-seed", type=int, default=None,
                        help="draw the calibration windows at random offsets with this seed (default: the first ones)")
    parser.add_argument("--eval-tokens", type=int, default=8192)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=QuantConfig().group_size,
                        help="int4 group size of the w4a8/w4a16 rows (default: the library's)")
    parser.add_argument("--out", default=str(RESULTS / "quamba2.json"))
    parser.add_argument("--speed", action="store_true", help="measure CPU speed only (written to <out>_speed.json)")
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sqnr", action="store_true",
                        help="measure the per-layer SQNR only (written to <out>_sqnr.json and .png)")
    parser.add_argument("--sqnr-rows", default="w8a8", help="comma-separated quantized rows with a per-layer SQNR table")
    parser.add_argument("--sqnr-windows", type=int, default=2,
                        help="eval windows (of --seq-len tokens) for the SQNR tables; 0: no SQNR tables")
    return parser.parse_args()


def cpu_speed(args: argparse.Namespace, path: Path, tok) -> dict:
    """W8A8, W4A8 and W4A16 on ONNX Runtime (exported and validated here) vs the fp32 graph on ONNX Runtime and the
    fp32 PyTorch reference, batch 1."""
    from edge_quamba.onnx.export import export_fp32_model, export_model
    from edge_quamba.folders import open_model
    from edge_quamba.runtime.backends import make_backend
    from edge_quamba.runtime.bench import bench_prompt, median_timings

    torch.set_num_threads(args.threads)
    prompt = bench_prompt(tok, args.prompt_len)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        runs = [("fp32 reference (torch)", "ref", path)]
        export_fp32_model(model=str(path), out=Path(tmp) / "fp32", calib_data=args.calib_data,
                          prompt_len=args.prompt_len, decode_steps=4, threads=args.threads, progress=False, echo=print)
        runs.append(("fp32 onnxruntime", "ort", Path(tmp) / "fp32"))
        for bits in ("w8a8", "w4a8", "w4a16"):
            qconfig = QuantConfig(method="quamba2", bits=bits, group_size=args.group_size,
                                  calib_samples=args.calib_samples, calib_seq_len=args.calib_seq_len)
            export_model(model=str(path), out=Path(tmp) / bits, target="ort", calib_data=args.calib_data,
                         qconfig=qconfig, prompt_len=args.prompt_len, decode_steps=4, threads=args.threads,
                         progress=False, echo=print)
            runs.append((f"{bits} onnxruntime", "ort", Path(tmp) / bits))
        for name, backend, folder in runs:
            runner = make_backend(backend, open_model(str(folder)), threads=args.threads)
            ttft, tpot = median_timings(runner, prompt, args.new_tokens, args.repeats)
            rows.append({"row": name, "ttft_ms": ttft * 1e3, "prefill_tokens_per_s": args.prompt_len / ttft,
                         "tpot_ms": tpot * 1e3, "decode_tokens_per_s": 1 / tpot})
            print(f"{name:24s} TTFT {ttft * 1e3:8.1f} ms  TPOT {tpot * 1e3:7.1f} ms  "
                  f"decode {1 / tpot:6.1f} tokens/s", flush=True)
    ref, ort = rows[0], rows[1]  # the two float baselines: torch fp32 reference, fp32 graph on ONNX Runtime
    for row in rows:
        for base, suffix in ((ort, "ort_fp32"), (ref, "ref_fp32")):
            row[f"decode_vs_{suffix}"] = row["decode_tokens_per_s"] / base["decode_tokens_per_s"]
            row[f"prefill_vs_{suffix}"] = row["prefill_tokens_per_s"] / base["prefill_tokens_per_s"]
        print(f"{row['row']:24s} decode {row['decode_vs_ort_fp32']:5.2f}x fp32 ort, {row['decode_vs_ref_fp32']:5.2f}x "
              f"fp32 torch; prefill {row['prefill_vs_ort_fp32']:5.2f}x fp32 ort", flush=True)
    return {"command": "python " + " ".join(sys.argv), "date_utc": datetime.now(timezone.utc).isoformat(
        timespec="seconds"), "cpu": cpu_name(), "threads": args.threads, "batch": 1, "prompt_len": args.prompt_len,
        "new_tokens": args.new_tokens, "repeats": args.repeats,
        "note": "shared 2-core CPU with other jobs running: indicative only", "rows": rows}


def sqnr_tables(args: argparse.Namespace, rows: list[str], fp32, data, windows: torch.Tensor) -> dict:
    """Per config of ``rows``, the per-layer SQNR table (dB) of the quantized model against its fp32 reference in
    the same channel order (reorder_for_quamba2: the model quamba2_quantize quantizes; the recipe is deterministic,
    so the model is the row's), on the first --sqnr-windows windows; printed."""
    tokens = windows[:args.sqnr_windows]
    tables = {}
    for row in rows:
        qconfig = QuantConfig(method="quamba2", group_size=args.group_size, calib_samples=args.calib_samples,
                              calib_seq_len=args.calib_seq_len, **ROWS[row])
        reference, plans = reorder_for_quamba2(fp32, data, qconfig, batch_size=args.batch_size, progress=False)
        qmodel = quantize_reordered(reference, plans, data, qconfig, batch_size=args.batch_size, progress=False)
        tensors = sqnr_tensors(qmodel)
        table = layer_sqnr(reference, qmodel, tokens)
        tables[row] = {"tensors": list(tensors), "layers": table}
        print(f"\nper-layer SQNR (dB) of {row} vs fp32, {tokens.numel()} tokens:")
        print(f"{'layer':<7}" + "".join(f"{t:>16}" for t in tensors))
        for i, layer in enumerate(table):
            print(f"{i:<7}" + "".join(f"{layer[t]:>16.1f}" for t in tensors), flush=True)
    return {"windows": int(tokens.shape[0]), "seq_len": int(tokens.shape[1]), "tokens": int(tokens.numel()),
            "tables": tables}


def plot_sqnr(ax, row: str, table: dict, tokens: int) -> None:
    """One line per tensor of ``row``'s table: SQNR per layer."""
    for tensor in table["tensors"]:
        ax.plot([layer[tensor] for layer in table["layers"]], marker="o", label=tensor)
    ax.set_xticks(range(len(table["layers"])))
    ax.set_xlabel("layer")
    ax.set_ylabel("SQNR vs fp32 (dB)")
    ax.set_title(f"{row}: per-layer SQNR ({tokens} tokens)")
    ax.legend(fontsize=7)


def perplexity(model, windows: torch.Tensor, batch_size: int) -> float:
    total, count = window_nll(model, windows, batch_size, progress=False)
    return math.exp(total / count)


def main() -> int:
    args = parse_args()
    rows = [r.strip() for r in args.rows.split(",")]
    unknown = [r for r in rows if r != "fp16" and r not in ROWS]
    if unknown:
        sys.exit(f"unknown rows {unknown}; choose from fp16, {', '.join(ROWS)}")
    sqnr_rows = [r.strip() for r in args.sqnr_rows.split(",")]
    if [r for r in sqnr_rows if r not in ROWS]:
        sys.exit(f"--sqnr-rows {args.sqnr_rows!r}: choose from {', '.join(ROWS)}")
    if args.sqnr and args.sqnr_windows < 1:
        sys.exit("--sqnr needs --sqnr-windows >= 1")
    path = resolve_model(args.model)
    fp32 = load_fp_model(path, dtype=torch.float32)
    tok = load_tokenizer(path, None, eos_token_id=fp32.config.eos_token_id, model_vocab_size=fp32.config.vocab_size)
    windows = make_windows(tok.encode(read_text(args.eval_data))[:args.eval_tokens], args.seq_len)
    if args.speed:
        out = Path(args.out).with_name(Path(args.out).stem + "_speed.json")
        out.write_text(json.dumps(cpu_speed(args, path, tok), indent=2) + "\n")
        print(f"wrote {out}")
        return 0
    data = load_calibration_data(Path(args.calib_data), tok, args.calib_samples, args.calib_seq_len, args.calib_seed)
    if args.sqnr:
        out = Path(args.out).with_name(Path(args.out).stem + "_sqnr.json")
        report = {"command": "python " + " ".join(sys.argv),
                  "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "machine": {"cpu": cpu_name(), "platform": platform.platform(), "torch": torch.__version__},
                  "package_version": __version__, "model": str(path),
                  "model_sha256": file_sha256(weights_file(path)), "eval_data": Path(args.eval_data).name,
                  "calibration": data.manifest(), "group_size": args.group_size,
                  "sqnr": sqnr_tables(args, sqnr_rows, fp32, data, windows)}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {out}")
        plot(None, out.with_suffix(".png"), 0, report["sqnr"])
        return 0
    results = []
    for row in rows:
        start = time.time()
        if row == "fp16":
            model = load_fp_model(path, dtype=torch.float16)
            size = 2 * sum(t.numel() for t in model.state_dict().values()) - (
                2 * model.lm_head.weight.numel() if model.config.tie_embeddings else 0)
            bits = "fp16"
        else:
            qconfig = QuantConfig(method="quamba2", calib_samples=args.calib_samples, calib_seq_len=args.calib_seq_len,
                                  calib_seed=args.calib_seed, **{"group_size": args.group_size, **ROWS[row]})
            qmodel = quamba2_quantize(fp32, data, qconfig, batch_size=args.batch_size, progress=False)
            with tempfile.TemporaryDirectory() as tmp:
                write_artifact(Path(tmp), qmodel, qconfig, data.manifest(), {"model": str(path)},
                               Path(tok.source))
                size = (Path(tmp) / WEIGHTS).stat().st_size
                model = load_quantized_model(Path(tmp))  # what a user gets: the artifact, read back and verified
            bits = qconfig.bits
        ppl = perplexity(model, windows, args.batch_size)
        results.append({"row": row, "bits": bits, "perplexity": ppl, "bytes": size,
                        "group_size": None if row == "fp16" else qconfig.group_size,
                        "gptq_act_order": None if row == "fp16" else qconfig.gptq_act_order,
                        "seconds": round(time.time() - start, 1)})
        print(f"{row:20s} ppl {ppl:9.3f}  bytes {size:>10,d}  ({results[-1]['seconds']} s)", flush=True)
    base = next((r["perplexity"] for r in results if r["row"] == "fp16"), None)
    print(f"\n{'row':20s} {'perplexity':>10s} {'vs fp16':>8s} {'target':>7s} {'bytes':>11s}")
    for r in results:
        if base is not None and r["bits"] != "fp16":
            r["vs_fp16_percent"] = 100 * (r["perplexity"] / base - 1)
            r["target_percent"] = TARGET_PERCENT[r["bits"]]
            r["meets_target"] = r["vs_fp16_percent"] <= r["target_percent"]
        change = f"{r['vs_fp16_percent']:+7.2f}%" if "vs_fp16_percent" in r else ""
        target = f"+{r['target_percent']}%" if "target_percent" in r else ""
        print(f"{r['row']:20s} {r['perplexity']:10.3f} {change:>8s} {target:>7s} {r['bytes']:>11,d}")
    sqnr = sqnr_tables(args, sqnr_rows, fp32, data, windows) if args.sqnr_windows > 0 else None
    report = {
        "command": "python " + " ".join(sys.argv),
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_name(), "platform": platform.platform(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(),
                    "note": "shared CPU: the seconds per row are not timings to compare"},
        "package_version": __version__,
        "model": str(path), "model_sha256": file_sha256(weights_file(path)), "model_config": fp32.config.to_dict(),
        "eval": {"data": Path(args.eval_data).name, "tokens": int(windows.numel()), "seq_len": args.seq_len},
        "calibration": data.manifest(), "group_size": args.group_size,
        "rows": results, "sqnr": sqnr,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    plot(results, out.with_suffix(".png"), report["eval"]["tokens"], sqnr)
    return 0


def plot(results: list[dict] | None, file: Path, tokens: int, sqnr: dict | None = None) -> None:
    """The perplexity bars (``results``, if any), then one panel per SQNR table (``sqnr``, if any)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tables = [] if sqnr is None else list(sqnr["tables"].items())
    panels = (results is not None) + len(tables)
    columns = min(panels, 2)
    fig, axes = plt.subplots(math.ceil(panels / columns), columns, figsize=(8 * columns, 3.5 * math.ceil(
        panels / columns)), squeeze=False)
    axes = axes.flatten()
    for ax in axes[panels:]:
        ax.set_visible(False)
    for ax, (row, table) in zip(axes[panels - len(tables):], tables):
        plot_sqnr(ax, row, table, sqnr["tokens"])
    if results is not None:
        ax = axes[0]
        names = [r["row"] for r in results]
        ax.bar(names, [r["perplexity"] for r in results], color=["grey" if r["bits"] == "fp16" else "tab:blue"
                                                                  for r in results])
        ax.set_ylabel("perplexity")
        ax.set_title(f"Quamba2 on Mamba2: held-out perplexity ({tokens} tokens)")
        low = min(r["perplexity"] for r in results)
        ax.set_ylim(low * 0.95, max(r["perplexity"] for r in results) * 1.02)
        plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    fig.tight_layout()
    fig.savefig(file, dpi=120)
    print(f"wrote {file}")

if __name__ == "__main__":
    sys.exit(main())
