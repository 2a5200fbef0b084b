"""Why Quamba: the outliers of a Mamba model's activations, per layer, on held-out text.

For each layer, on the fp32 reference, it measures:
    u               the selective-scan input (SiLU of the causal conv)  — Quamba clips it at a percentile
    out_proj_input  y = scan * silu(z), the input of out_proj             — Quamba rotates it with a Hadamard
    H y             the same after the orthonormal Hadamard transform
and reports max|x| / std (the dynamic range a per-tensor int8 scale must cover; ~3-5 for a Gaussian of this many
samples would be benign), max|x|, the 99.999th percentile of |x|, and the largest per-channel max / median
per-channel max (how concentrated the outliers are in a few channels).

    python benchmarks/activation_stats.py            # the demo model on the shipped evaluation split

Prints a table, writes benchmarks/results/activation_stats.json and .png.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from collections import defaultdict
from datetime import date
from pathlib import Path

import torch

from edge_quamba import __version__
from edge_quamba.eval.perplexity import make_windows, read_text
from edge_quamba.models.loading import load_fp_model
from edge_quamba.models.locate import resolve_model
from edge_quamba.models.tokenizer import load_tokenizer
from edge_quamba.quant.flow import float_flow
from edge_quamba.quant.hadamard import hadamard_transform
from edge_quamba.resources import default_evaluation_file

RESULTS = Path(__file__).parent / "results"


def stats(x: torch.Tensor) -> dict:
    """x: (b, l, channels) -> range statistics of the flattened tensor and of its per-channel maxima."""
    flat = x.double().reshape(-1, x.shape[-1])
    absx = flat.abs()
    channel_max = absx.amax(0)
    k = max(1, int(absx.numel() * 1e-5))
    return {
        "max_over_std": float(absx.max() / flat.std()),
        "max": float(absx.max()),
        "std": float(flat.std()),
        "p99999": float(torch.topk(absx.flatten(), k).values[-1]),
        "channel_max_over_median": float(channel_max.max() / channel_max.median()),
    }


@torch.inference_mode()
def collect(model, windows: torch.Tensor) -> list[dict]:
    """Statistics of the scan input u, the out_proj input y and H y per layer, seen at the quantization sites of
    the one data flow (edge_quamba.quant.flow) running the fp model."""
    captured = defaultdict(dict)

    def tap(layer: int, site: str, value: torch.Tensor) -> None:
        if site in ("u", "out_proj_input"):
            captured[layer][site] = value

    with float_flow(model, hadamard=False, tap=tap):  # unrotated: the out_proj input site then sees y itself
        model(windows)
    return [{"u": stats(c["u"]), "out_proj_input": stats(c["out_proj_input"]),
             "hadamard_out_proj_input": stats(hadamard_transform(c["out_proj_input"]))}
            for _, c in sorted(captured.items())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--data", default=str(default_evaluation_file()))
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--out", default=str(RESULTS / "activation_stats"))
    args = parser.parse_args()

    path = resolve_model(args.model)
    model = load_fp_model(path, torch.float32)
    tok = load_tokenizer(path, eos_token_id=model.config.eos_token_id)
    windows = make_windows(tok.encode(read_text(args.data)), args.seq_len)[: args.windows]
    layers = collect(model, windows)
    report = {"command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "date": date.today().isoformat(),
              "machine": {"processor": platform.processor() or platform.machine(), "torch": torch.__version__,
                          "edge_quamba": __version__},
              "model": str(path), "data": args.data, "tokens": int(windows.numel()), "layers": layers}
    print(f"{'layer':<6}{'u max/std':>11}{'u max':>9}{'u p99.999':>11}{'u ch max/med':>13}"
          f"{'y max/std':>11}{'y ch max/med':>13}{'Hy max/std':>12}")
    for i, layer in enumerate(layers):
        u, y, hy = layer["u"], layer["out_proj_input"], layer["hadamard_out_proj_input"]
        print(f"{i:<6}{u['max_over_std']:>11.1f}{u['max']:>9.2f}{u['p99999']:>11.2f}"
              f"{u['channel_max_over_median']:>13.1f}{y['max_over_std']:>11.1f}{y['channel_max_over_median']:>13.1f}"
              f"{hy['max_over_std']:>12.1f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.json')}\nwrote {out.with_suffix('.png')}")


def plot(report: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = report["layers"]
    x = range(len(layers))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for key, label, color in (("u", "scan input u", "#e93"), ("out_proj_input", "out_proj input y", "#c44"),
                              ("hadamard_out_proj_input", "H y (after Hadamard)", "#39c")):
        ax.plot(x, [layer[key]["max_over_std"] for layer in layers], "o-", color=color, label=label)
    ax.set_xlabel("layer")
    ax.set_ylabel("max|x| / std")
    ax.set_yscale("log")
    ax.set_title(f"Activation range per layer, {Path(report['model']).name}, {report['tokens']} tokens")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=110)


if __name__ == "__main__":
    main()
