"""GPU time of a static vs a per-token (dynamic) out_proj input scale: Hadamard + quantize, out_proj, and the two
together, for d_inner 1536 (the 370m/790m width class) and 5120 (2.8b), decode (l = 1) and prefill (l = 512), batch 1.

    python3 benchmarks/dynscale_timing.py [--out benchmarks/results/dynscale_timing_h200.json]

static:  hadamard_quantize(y, s) -> int8_linear(y_q, W, s, s_w)                 (s a constant)
dynamic: hadamard_quantize_dynamic(y) -> (y_q, s_tok) -> int8_linear_per_token   (s_tok (b, l) float32 on the GPU)
out_proj is (d_inner -> d_inner / 2); its weight cycles through copies totalling > 200 MiB so that it comes from HBM.
Each kernel is called many times inside one CUDA graph that is replayed, timed with CUDA events
(benchmarks/kernel_timing.py's graph_time_us): GPU time per call without Python or launch overhead. The linears run
what the binding dispatches: the GEMV kernel at l = 1, torch._int_mm + its epilogue at l = 512.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from edge_quamba.ops.cuda_ops import load_extension  # noqa: E402
from kernel_timing import REPS, cycling, graph_time_us  # noqa: E402

D_INNERS = (1536, 5120)
SEQLENS = (1, 512)


def cases(ext, d_in: int, l: int):
    """(what, mode, fn, calls per graph): Hadamard, out_proj and the chain, static and dynamic."""
    d = d_in // 2
    y = torch.randn(1, l, d_in, device="cuda")
    w = cycling(lambda: torch.randint(-127, 128, (d, d_in), dtype=torch.int8, device="cuda"), d * d_in)
    y_q, s_tok = ext.hadamard_quantize_dynamic(y)
    s, s_w = 0.02, 0.003
    reps = max(REPS, w.count)

    def dynamic_chain():
        codes, token_scales = ext.hadamard_quantize_dynamic(y)
        return ext.int8_linear_per_token(codes, w(), None, token_scales, s_w)

    return [
        ("hadamard_quantize", "static", lambda: ext.hadamard_quantize(y, s), REPS),
        ("hadamard_quantize", "dynamic", lambda: ext.hadamard_quantize_dynamic(y), REPS),
        ("out_proj", "static", lambda: ext.int8_linear(y_q, w(), None, s, s_w), reps),
        ("out_proj", "dynamic", lambda: ext.int8_linear_per_token(y_q, w(), None, s_tok, s_w), reps),
        ("hadamard + out_proj", "static", lambda: ext.int8_linear(ext.hadamard_quantize(y, s), w(), None, s, s_w),
         reps),
        ("hadamard + out_proj", "dynamic", dynamic_chain, reps),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/dynscale_timing_h200.json"))
    args = parser.parse_args()
    ext = load_extension()
    rows = []
    for d_in in D_INNERS:
        for l in SEQLENS:
            for what, mode, fn, reps in cases(ext, d_in, l):
                us = graph_time_us(fn, reps)
                rows.append(dict(d_inner=d_in, seqlen=l, what=what, mode=mode, time_us=round(us, 3)))
    print(f"{'d_inner':>7} {'l':>4}  {'what':<20} {'static us':>10} {'dynamic us':>10} {'dyn - stat':>10} {'ratio':>6}")
    table = []
    for d_in in D_INNERS:
        for l in SEQLENS:
            for what in ("hadamard_quantize", "out_proj", "hadamard + out_proj"):
                t = {r["mode"]: r["time_us"] for r in rows
                     if (r["d_inner"], r["seqlen"], r["what"]) == (d_in, l, what)}
                table.append(dict(d_inner=d_in, seqlen=l, what=what, static_us=t["static"], dynamic_us=t["dynamic"],
                                  delta_us=round(t["dynamic"] - t["static"], 3),
                                  ratio=round(t["dynamic"] / t["static"], 3)))
                print(f"{d_in:>7} {l:>4}  {what:<20} {t['static']:>10.2f} {t['dynamic']:>10.2f} "
                      f"{t['dynamic'] - t['static']:>10.2f} {t['dynamic'] / t['static']:>6.2f}")
    result = {
        "command": "python3 benchmarks/dynscale_timing.py",
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "batch": 1,
        "method": "CUDA graph of many calls replayed, CUDA events; out_proj weights cycling through > 200 MiB",
        "table": table, "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
