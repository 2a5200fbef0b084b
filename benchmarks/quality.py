"""Quality of the Quamba recipe on a model: held-out perplexity of each variant, and per-layer SQNR.

Variants (the Quamba paper's ablation, all W8A8 per-tensor static):
    fp32, fp16                    the fp reference (fp16: weights and activations in half, scan state fp32)
    w8a8 naive                    abs-max scales everywhere, no Hadamard
    w8a8 +percentile              percentile clipping on the scan input u
    w8a8 +hadamard                Hadamard-rotated out_proj only (abs-max on u)
    w8a8 quamba (both)            the full recipe: percentile + Hadamard (what `edge-quamba quantize` makes)
  and two variants beyond the paper (the gap analysis in the README):
    quamba +clip in_proj          the same percentile also on in_proj's input (the normed residual stream)
    quamba +clip all inputs       ... and on out_proj's (rotated) input

    python benchmarks/quality.py                       # the shipped demo model, shipped eval/calibration splits
    python benchmarks/quality.py --model DIR --max-eval-tokens 50000

Prints a table and writes benchmarks/results/quality.json and quality.png (perplexity bars, SQNR per layer).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from datetime import date
from pathlib import Path

import torch

from edge_quamba import __version__
from edge_quamba.eval.perplexity import make_windows, read_text, window_nll
from edge_quamba.eval.sqnr import TENSORS, layer_sqnr
from edge_quamba.models.loading import load_fp_model, resolve_model
from edge_quamba.models.tokenizer import load_tokenizer
from edge_quamba.quant.calibrate import calibrate, load_calibration_data
from edge_quamba.quant.qmodel import QuantConfig, quantize_model
from edge_quamba.resources import default_calibration_file, default_evaluation_file

RESULTS = Path(__file__).parent / "results"
VARIANTS = {
    "w8a8 naive": dict(percentile=None, hadamard=False),
    "w8a8 +percentile": dict(percentile=0.99999, hadamard=False),
    "w8a8 +hadamard": dict(percentile=None, hadamard=True),
    "w8a8 quamba": dict(percentile=0.99999, hadamard=True),
    # beyond the paper: the same percentile also on the in_proj input (the normed residual stream)
    "quamba +clip in_proj": dict(percentile=0.99999, hadamard=True, percentile_activations=("u", "in_proj_input")),
    "quamba +clip all inputs": dict(percentile=0.99999, hadamard=True,
                                    percentile_activations=("in_proj_input", "u", "out_proj_input")),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="fp checkpoint folder or hub id (default: the demo model)")
    parser.add_argument("--eval-data", default=str(default_evaluation_file()))
    parser.add_argument("--calib-data", default=str(default_calibration_file()))
    parser.add_argument("--calib-samples", type=int, default=256)
    parser.add_argument("--calib-seq-len", type=int, default=512)
    parser.add_argument("--seq-len", type=int, default=512, help="eval window (stride = window)")
    parser.add_argument("--max-eval-tokens", type=int, default=None)
    parser.add_argument("--sqnr-windows", type=int, default=4, help="eval windows used for the SQNR table")
    parser.add_argument("--out", default=str(RESULTS / "quality"), help="path prefix for .json and .png")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where the reference models run (default: cuda if available); the integer arithmetic is "
                             "emulated exactly on either, so the numbers do not depend on it beyond float rounding")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: this machine has no CUDA GPU (use --device cpu)")
    return args


def perplexity(model, windows) -> float:
    total, count = window_nll(model, windows, batch_size=8, progress=False)
    return math.exp(total / count)


def main() -> None:
    args = parse_args()
    started = time.time()
    if args.device.startswith("cuda"):  # the quantized models' ops then run as our CUDA kernels (edge_quamba.ops)
        from edge_quamba.ops import cuda_ops

        cuda_ops.register_cuda_kernels()
    path = resolve_model(args.model)
    fp32 = load_fp_model(path, torch.float32).to(args.device)
    tok = load_tokenizer(path, eos_token_id=fp32.config.eos_token_id)
    ids = tok.encode(read_text(args.eval_data))
    if args.max_eval_tokens:
        ids = ids[: args.max_eval_tokens]
    windows = make_windows(ids, args.seq_len)
    calib = load_calibration_data(Path(args.calib_data), tok, args.calib_samples, args.calib_seq_len)

    fp16 = load_fp_model(path, torch.float16).to(args.device)
    rows = {"fp32": perplexity(fp32, windows), "fp16": perplexity(fp16, windows)}
    print(f"fp32 {rows['fp32']:.3f}  fp16 {rows['fp16']:.3f}", file=sys.stderr)
    sqnr = {}
    for name, knobs in VARIANTS.items():
        qconfig = QuantConfig(calib_samples=args.calib_samples, calib_seq_len=args.calib_seq_len, **knobs)
        qmodel = quantize_model(fp32, calibrate(fp32, calib, qconfig, progress=False), qconfig).to(args.device)
        rows[name] = perplexity(qmodel, windows)
        sqnr[name] = layer_sqnr(fp32, qmodel, windows[: args.sqnr_windows])
        print(f"{name}: {rows[name]:.3f}", file=sys.stderr)

    report = {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "date": date.today().isoformat(), "seconds": round(time.time() - started, 1),
        "machine": {"processor": platform.processor() or platform.machine(), "python": platform.python_version(),
                    "torch": torch.__version__, "edge_quamba": __version__,
                    "device": torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu",
                    "int8_ops": "edge_quamba CUDA kernels" if args.device.startswith("cuda") else "CPU references"},
        "model": str(path), "eval_data": args.eval_data, "eval_tokens": len(ids), "windows": int(windows.shape[0]),
        "seq_len": args.seq_len, "calibration": calib.manifest(),
        "perplexity": rows,
        "perplexity_vs_fp16_percent": {k: 100 * (v / rows["fp16"] - 1) for k, v in rows.items()},
        "sqnr_db": sqnr, "sqnr_tensors": list(TENSORS),
    }
    print_table(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.json')}\nwrote {out.with_suffix('.png')}")


def print_table(report: dict) -> None:
    print(f"\nheld-out perplexity, {report['eval_tokens']} tokens, windows of {report['seq_len']}:")
    print(f"{'variant':<20}{'perplexity':>12}{'vs fp16':>10}")
    for name, ppl in report["perplexity"].items():
        print(f"{name:<20}{ppl:>12.3f}{report['perplexity_vs_fp16_percent'][name]:>+9.2f}%")
    print("\nper-layer SQNR (dB) of the full recipe (w8a8 quamba):")
    print(f"{'layer':<7}" + "".join(f"{t:>16}" for t in TENSORS))
    for i, layer in enumerate(report["sqnr_db"]["w8a8 quamba"]):
        print(f"{i:<7}" + "".join(f"{layer[t]:>16.1f}" for t in TENSORS))


def plot(report: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5))
    names = list(report["perplexity"])
    bars = ax1.bar(names, [report["perplexity"][n] for n in names],
                   color=["#555", "#888", "#c44", "#e93", "#39c", "#2a2", "#7b5", "#9c7"][: len(names)])
    ax1.bar_label(bars, fmt="%.1f", fontsize=7)
    ax1.set_yscale("log")
    ax1.set_ylabel("held-out perplexity")
    ax1.tick_params(axis="x", rotation=30)
    for name, style in (("w8a8 naive", "--"), ("w8a8 quamba", "-")):
        for tensor, color in (("u", "#e93"), ("out_proj_input", "#39c"), ("mixer_output", "#2a2")):
            values = [layer[tensor] for layer in report["sqnr_db"][name]]
            ax2.plot(values, style, color=color, label=f"{tensor} ({name})")
    ax2.set_xlabel("layer")
    ax2.set_ylabel("SQNR vs fp32 (dB)")
    ax2.legend(fontsize=7)
    fig.suptitle(f"Quamba W8A8 on {Path(report['model']).name} ({report['date']})")
    fig.tight_layout()
    fig.savefig(png, dpi=110)


if __name__ == "__main__":
    main()
