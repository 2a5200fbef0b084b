"""What float16 "float parts" (the residual stream stored in float16 between blocks, ``export --float-parts float16``)
do to a W8A8 Mamba1 model: how many int8 codes change, and the held-out perplexity, against float32 float parts.

Both are the quantized reference (:func:`edge_quamba.quant.qmodel.use_float_parts`); the TensorRT graph of each
setting equals its reference on ONNX Runtime (export validation; tests/test_tensorrt_graph.py), so these numbers are
what the exported graphs compute. Code agreement is measured on the same windows, teacher-forced (both settings read
the same tokens), per site; perplexity on non-overlapping windows of the evaluation split.

    python3 benchmarks/float_parts.py --model QUANTIZED_OR_EXPORT_DIR [--max-tokens 32768] [--seq-len 512]
        -> prints a table, writes benchmarks/results/float_parts.json
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import platform
import sys
import time
from datetime import date
from pathlib import Path

import torch

from edge_quamba.eval.perplexity import make_windows, read_text, window_nll
from edge_quamba.folders import load_reference_model, open_model
from edge_quamba.models.tokenizer import load_tokenizer
from edge_quamba.quant.primitives import quantize_hook
from edge_quamba.quant.qmodel import use_float_parts
from edge_quamba.resources import default_evaluation_file

RESULTS = Path(__file__).parent / "results"


def record_codes(model, windows: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every labelled int8 code tensor the reference makes on ``windows`` (one batch), by label."""
    codes: dict[str, torch.Tensor] = {}

    def hook(label, quotient, q):
        codes[label] = q.clone()
        return q

    with torch.inference_mode(), quantize_hook(hook):
        model(windows)
    return codes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a quantized artifact or export folder (W8A8 Mamba1)")
    parser.add_argument("--data", default=str(default_evaluation_file()), help="evaluation text")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--max-tokens", type=int, default=32768, help="tokens of the evaluation text used")
    parser.add_argument("--code-windows", type=int, default=4, help="windows whose codes are compared")
    parser.add_argument("--out", default=str(RESULTS / "float_parts.json"))
    args = parser.parse_args()

    folder = open_model(args.model)
    model = load_reference_model(folder)
    ids = load_tokenizer(folder.path).encode(read_text(args.data))[: args.max_tokens]
    windows = make_windows(ids, args.seq_len)

    started = time.time()
    rows, codes = {}, {}
    for parts in ("float32", "float16"):
        use_float_parts(model, parts)
        total, count = window_nll(model, windows, batch_size=4, progress=False)
        rows[parts] = {"perplexity": math.exp(total / count), "scored_tokens": count}
        codes[parts] = record_codes(model, windows[: args.code_windows])
    per_site: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0, 0])  # differing, total, max |diff|
    for label, reference in codes["float32"].items():
        site = label.rsplit(".", 1)[-1]
        diff = (codes["float16"][label].int() - reference.int()).abs()
        entry = per_site[site]
        entry[0] += int((diff > 0).sum())
        entry[1] += diff.numel()
        entry[2] = max(entry[2], int(diff.max()))
    delta = rows["float16"]["perplexity"] / rows["float32"]["perplexity"] - 1
    report = {
        "date": date.today().isoformat(), "command": "python3 " + " ".join(sys.argv),
        "machine": f"{platform.machine()} CPU, torch {torch.__version__}", "model": str(folder.path),
        "data": args.data, "seq_len": args.seq_len, "windows": int(windows.shape[0]),
        "perplexity": rows, "perplexity_change": delta,
        "codes": {site: {"differing": d, "total": t, "fraction": d / t, "max_abs_diff": m}
                  for site, (d, t, m) in sorted(per_site.items())},
        "code_windows": args.code_windows, "seconds": round(time.time() - started, 1),
    }
    print(f"{'float parts':<12} {'perplexity':>12}")
    for parts, row in rows.items():
        print(f"{parts:<12} {row['perplexity']:>12.4f}")
    print(f"change: {100 * delta:+.3f}%  ({report['windows']} windows of {args.seq_len})")
    print(f"\n{'site codes':<14} {'differ':>10} {'of':>10} {'fraction':>10} {'max |diff|':>10}")
    for site, row in report["codes"].items():
        print(f"{site:<14} {row['differing']:>10} {row['total']:>10} {row['fraction']:>10.2e} {row['max_abs_diff']:>10}")
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
