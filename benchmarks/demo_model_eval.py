"""Held-out perplexity of a shipped demo model vs a unigram baseline on the same split and windows.

The model's number comes from running the command `edge-quamba eval --json` (recorded verbatim). The baseline is a
unigram model whose token frequencies are estimated on the calibration split (add-one smoothing over the
tokenizer's vocabulary), scored on exactly the tokens `eval` scores: non-overlapping windows of --seq-len, every
token but the first of each window.

    python benchmarks/demo_model_eval.py                       # writes benchmarks/results/demo_model_eval.json
    python benchmarks/demo_model_eval.py --model demo-mamba2   # writes benchmarks/results/demo_model_mamba2_eval.json
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from collections import Counter
from datetime import date
from pathlib import Path

from edge_quamba.eval.perplexity import make_windows, read_text
from edge_quamba.models.tokenizer import load_tokenizer
from edge_quamba.resources import DEMO_MODELS, default_calibration_file, default_evaluation_file, demo_model_dir

RESULTS = Path(__file__).parent / "results"
LABELS = {"demo": "demo Mamba (fp32 reference)", "demo-mamba2": "demo Mamba2 (fp32 reference)"}


def unigram_perplexity(tokenizer, train_text: str, windows) -> float:
    counts = Counter(tokenizer.encode(train_text))
    vocab, total = tokenizer.vocab_size, sum(counts.values())
    scored = windows[:, 1:].flatten().tolist()
    nll = -sum(math.log((counts[t] + 1) / (total + vocab)) for t in scored)
    return math.exp(nll / len(scored))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(DEMO_MODELS), default="demo", help="which shipped demo model")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--out", default=None, help="default: results/demo_model_eval.json (demo) or "
                        "results/demo_model_mamba2_eval.json (demo-mamba2)")
    args = parser.parse_args()
    out = args.out or str(RESULTS / f"{DEMO_MODELS[args.model]}_eval.json")

    eval_file = default_evaluation_file()
    command = ["edge-quamba", "eval", *(["--model", args.model] if args.model != "demo" else []), "--data",
               str(eval_file), "--seq-len", str(args.seq_len), "--json"]
    proc = subprocess.run([sys.executable, "-m", "edge_quamba", *command[1:]], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(proc.stderr.strip())
    model_report = json.loads(proc.stdout)
    tokenizer = load_tokenizer(demo_model_dir(args.model))
    windows = make_windows(tokenizer.encode(read_text(eval_file)), args.seq_len)
    unigram = unigram_perplexity(tokenizer, read_text(default_calibration_file()), windows)
    report = {"date": date.today().isoformat(), "command": " ".join(command), "model": model_report,
              "unigram_baseline": {"perplexity": unigram, "estimated_on": default_calibration_file().name,
                                   "smoothing": "add-one", "scored_tokens": int(windows[:, 1:].numel())}}
    print(f"{'model':<28}{'perplexity':>12}   ({model_report['scored_tokens']} tokens, windows of {args.seq_len})")
    print(f"{LABELS[args.model]:<28}{model_report['perplexity']:>12.2f}")
    print(f"{'unigram baseline':<28}{unigram:>12.2f}")
    Path(out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
