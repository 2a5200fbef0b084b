"""Do bench_latency.py's random quantized models give finite logits? A CPU check of the quantized reference (no GPU).

    python3 benchmarks/random_model_finite.py [--shapes 1.4b,2.8b] [--bits w4a16] [--prompt-len 32]
        [--out benchmarks/results/random_model_finite.json]

Random weights only time the kernels, but a model whose activations overflow float16 gives NaN logits: greedy
decoding on the GPU then stops on its NaN check (as `run` would) and a timing of it is a timing of NaNs. For each
shape this runs the random model's reference forward on a prompt of random tokens and prints whether the logits are
finite, and otherwise the first module (in execution order) whose output was not. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_latency  # noqa: E402  (the random models; beside this file)


def first_non_finite(model: torch.nn.Module, tokens: torch.Tensor) -> tuple[bool, str | None]:
    """(logits finite, the first module whose floating output had a NaN or an Inf, or None)."""
    found: list[str] = []

    def hook(name):
        def check(module, inputs, output):
            outputs = output if isinstance(output, (tuple, list)) else (output,)
            if not found and any(isinstance(o, torch.Tensor) and o.is_floating_point() and not torch.isfinite(o).all()
                                 for o in outputs):
                found.append(name)
        return check

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    try:
        with torch.inference_mode():
            logits, _ = model(tokens)
    finally:
        for h in handles:
            h.remove()
    return bool(torch.isfinite(logits).all()), (found[0] if found else None)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="1.4b,2.8b", help=f"comma-separated, of {', '.join(bench_latency.SHAPES)}")
    parser.add_argument("--bits", default="w4a16", choices=("w8a8", "w4a8", "w4a16"))
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="JSON output (default: none)")
    args = parser.parse_args(argv)
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    bad = [s for s in shapes if s not in bench_latency.SHAPES]
    if bad or not shapes:
        parser.error(f"unknown or empty --shapes entries: {bad}")
    if args.prompt_len < 1:
        parser.error("--prompt-len must be >= 1")
    tokens = torch.randint(0, bench_latency.VOCAB, (1, args.prompt_len),
                           generator=torch.Generator().manual_seed(args.seed))
    rows = []
    for shape in shapes:
        start = time.perf_counter()
        model = bench_latency.random_quantized_model(bench_latency.mamba_config(shape), args.seed, "cpu", args.bits)
        finite, first = first_non_finite(model, tokens)
        rows.append({"shape": shape, "bits": args.bits, "logits_finite": finite, "first_non_finite_module": first,
                     "seconds": time.perf_counter() - start})
        print(f"{shape:6} {args.bits:6} logits finite: {finite}" + (f"  (first non-finite: {first})" if first else ""),
              flush=True)
        del model
    if args.out:
        command = "python3 benchmarks/random_model_finite.py " + " ".join(argv if argv is not None else sys.argv[1:])
        Path(args.out).write_text(json.dumps({"command": command, "prompt_len": args.prompt_len, "seed": args.seed,
                                              "rows": rows}, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
