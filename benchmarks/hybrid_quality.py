"""Quality of the quantized hybrid demo model (or any hybrid checkpoint): activation scales, bit widths, KV cache.

Part 1, activation scales of the attention / MLP linears' inputs (the question of issue 23: static per-tensor or
per-token?). The fp model runs its attention and MLP blocks through their flows (edge_quamba.quant.hybrid_flow) with
the four linear-input sites (qkv_input, o_proj_input, mlp_input, down_proj_input) fake-quantized, Mamba2 blocks float:
    * per site, the SQNR of the int8 value against the float one: a static per-tensor scale (amax over the calibration
      windows / 127, what the library stores) against a per-token scale (each token's amax / 127);
    * held-out perplexity with all four sites fake-quantized one way or the other (weights float).
Part 2, the quality table: held-out perplexity of fp32 and of the library's recipe (edge_quamba.quant.hybrid_quant,
written as an artifact and loaded back) at w8a8, w4a8 and w4a16, each with the attention / MLP linears quantized
(the default) and float (--float-attn-mlp), and w8a8 with the int8 KV cache; bytes of model.safetensors.
Part 3, the per-layer SQNR (edge_quamba.eval.sqnr_hybrid) of the --sqnr-rows models (default w8a8) on the first
--sqnr-windows windows.

Perplexity: the first --eval-tokens tokens of --eval-data in non-overlapping windows of --seq-len (edge-quamba eval's
windows). Calibration: --calib-samples windows of --calib-seq-len tokens of the shipped calibration split.

    python benchmarks/hybrid_quality.py                      # the demo-hybrid model, the README's table

Prints the tables; writes benchmarks/results/hybrid_quality.json.
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
from torch import Tensor, nn

from edge_quamba import __version__
from edge_quamba.eval.perplexity import make_windows, read_text, window_nll
from edge_quamba.eval.sqnr_hybrid import hybrid_layer_sqnr
from edge_quamba.models.attention import Attention
from edge_quamba.models.loading import load_fp_model
from edge_quamba.models.locate import resolve_model
from edge_quamba.models.tokenizer import load_tokenizer
from edge_quamba.folders import load_quantized_model
from edge_quamba.kinds import WEIGHTS
from edge_quamba.quant.artifact import write_artifact
from edge_quamba.quant.calibrate import load_calibration_data
from edge_quamba.quant.hybrid_flow import HybridFloatOps, attention_flow, mlp_flow
from edge_quamba.quant.hybrid_quant import calibrate_hybrid, quantize_reordered_hybrid, reorder_hybrid
from edge_quamba.quant.primitives import fake_quantize, per_token_scale, scale_from_amax
from edge_quamba.quant.qmodel import QuantConfig
from edge_quamba.resources import default_calibration_file, default_evaluation_file

LINEAR_SITES = ("qkv_input", "o_proj_input", "mlp_input", "down_proj_input")
ROWS = {  # name: QuantConfig knobs (method quamba2)
    "w8a8": {}, "w8a8 float-attn-mlp": dict(quantize_attn_mlp=False), "w8a8 kv-int8": dict(kv_cache="int8"),
    "w4a8": dict(bits="w4a8"), "w4a8 float-attn-mlp": dict(bits="w4a8", quantize_attn_mlp=False),
    "w4a16": dict(bits="w4a16"), "w4a16 float-attn-mlp": dict(bits="w4a16", quantize_attn_mlp=False),
}


class FakeQuantOps(HybridFloatOps):
    """The float flow with the linear-input sites fake-quantized (``mode`` "static": the calibrated per-tensor scale,
    "token": one scale per token, None: float), and every site's int8 error under both scales accumulated."""

    def __init__(self, mixer, norm, amax: dict[str, Tensor], mode: str | None, stats: dict):
        super().__init__(mixer, norm, False, None)
        self.amax, self.mode, self.stats = amax, mode, stats

    def quantize(self, x: Tensor, site: str) -> Tensor:
        if site not in LINEAR_SITES:
            return x
        static = fake_quantize(x, scale_from_amax(self.amax[site]))
        token = fake_quantize(x, per_token_scale(x)[..., None])
        for kind, approx in (("static", static), ("token", token)):
            ref, err = self.stats.setdefault((site, kind), [0.0, 0.0]), (x.double() - approx.double())
            ref[0] += float(x.double().pow(2).sum())
            ref[1] += float(err.pow(2).sum())
        return {"static": static, "token": token, None: x}[self.mode]


class FakeQuantBlock(nn.Module):
    def __init__(self, block, amax, mode, stats):
        super().__init__()
        self.norm, self.mixer, self.amax, self.mode, self.stats = block.norm, block.mixer, amax, mode, stats

    def forward(self, resid, state, step=False):
        ops = FakeQuantOps(self.mixer, self.norm, self.amax, self.mode, self.stats)
        if isinstance(self.mixer, Attention):
            out, state = attention_flow(ops, resid, state)
        else:
            out = mlp_flow(ops, resid, self.mixer.config.mlp == "swiglu")
        return resid + out.to(resid.dtype), state


def activation_scales(fp, amaxes, windows, batch) -> dict:
    """Part 1: per-site SQNR (static vs per-token, on the float model's activations) and perplexity with the four
    sites fake-quantized each way."""
    layers, originals, result = fp.backbone.layers, list(fp.backbone.layers), {}
    for mode in (None, "static", "token"):
        stats: dict = {}
        for i, block in enumerate(originals):
            if fp.config.kind(i) != "M":
                layers[i] = FakeQuantBlock(block, amaxes[i], mode, stats)
        try:
            total, count = window_nll(fp, windows, batch, progress=False)
        finally:
            for i, block in enumerate(originals):
                layers[i] = block
        if mode is None:
            result["site_sqnr_db"] = {f"{site} {kind}": round(10 * math.log10(s[0] / s[1]), 2)
                                      for (site, kind), s in sorted(stats.items())}
        else:
            result[f"perplexity_{mode}"] = math.exp(total / count)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="demo-hybrid")
    parser.add_argument("--eval-data", type=Path, default=default_evaluation_file())
    parser.add_argument("--eval-tokens", type=int, default=65536)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--calib-samples", type=int, default=64)
    parser.add_argument("--calib-seq-len", type=int, default=512)
    parser.add_argument("--sqnr-windows", type=int, default=4)
    parser.add_argument("--sqnr-rows", default="w8a8")
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/hybrid_quality.json"))
    args = parser.parse_args()
    torch.manual_seed(0)
    path = resolve_model(args.model)
    tok = load_tokenizer(path)
    fp = load_fp_model(path, torch.float32)
    windows = make_windows(tok.encode(read_text(args.eval_data))[:args.eval_tokens], args.seq_len)
    data = load_calibration_data(default_calibration_file(), tok, args.calib_samples, args.calib_seq_len)
    started = time.perf_counter()
    total, count = window_nll(fp, windows, args.batch_size, progress=False)
    report = {"command": "python benchmarks/hybrid_quality.py " + " ".join(sys.argv[1:]), "model": args.model,
              "pattern": fp.config.pattern, "eval_data": args.eval_data.name,
              "eval_tokens": count + windows.shape[0], "seq_len": args.seq_len, "calib_samples": args.calib_samples,
              "calib_seq_len": args.calib_seq_len, "fp32_perplexity": math.exp(total / count),
              "fp16_bytes": 2 * sum(t.numel() for t in fp.state_dict().values()),
              "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
              "package_version": __version__, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d")}
    print(f"fp32: perplexity {report['fp32_perplexity']:.3f} on {report['eval_tokens']} tokens", flush=True)

    amaxes = calibrate_hybrid(fp, data, hadamard=False, progress=False)
    report["activation_scales"] = activation_scales(fp, amaxes, windows, args.batch_size)
    print(json.dumps(report["activation_scales"], indent=1), flush=True)

    report["rows"] = {}
    for name in args.rows.split(","):
        qconfig = QuantConfig(method="quamba2", calib_samples=args.calib_samples, calib_seq_len=args.calib_seq_len,
                              **ROWS[name])
        reordered, plans = reorder_hybrid(fp, data, qconfig, progress=False)
        q = quantize_reordered_hybrid(reordered, plans, data, qconfig, progress=False)
        with tempfile.TemporaryDirectory() as scratch:
            write_artifact(Path(scratch), q, qconfig, data.manifest(), {"model": args.model}, path / "tokenizer.json")
            size = (Path(scratch) / WEIGHTS).stat().st_size
            q = load_quantized_model(Path(scratch))
        total, count = window_nll(q, windows, args.batch_size, progress=False)
        row = {"perplexity": math.exp(total / count), "bytes": size}
        row["change_vs_fp32_percent"] = 100 * (row["perplexity"] / report["fp32_perplexity"] - 1)
        if name in args.sqnr_rows.split(",") and args.sqnr_windows:
            table = hybrid_layer_sqnr(reordered, q, windows[:args.sqnr_windows])
            sqnr_key = "w8a8_layer_sqnr_db" if name == "w8a8" else f"{name}_layer_sqnr_db"  # (the first run's key)
            report[sqnr_key] = [{k: round(v, 2) for k, v in r.items()} for r in table]
        report["rows"][name] = row
        print(f"{name:<22} perplexity {row['perplexity']:9.3f} ({row['change_vs_fp32_percent']:+6.2f} %)  "
              f"{size / 1e6:6.2f} MB", flush=True)
    report["seconds"] = round(time.perf_counter() - started, 1)
    for key in [k for k in report if k.endswith("_layer_sqnr_db")]:
        for i, row in enumerate(report[key]):
            print(f"{key} block {i} ({fp.config.kind(i)}): " + ", ".join(f"{k} {v:.1f}" for k, v in row.items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
