"""CPU speed of the exported graph on ONNX Runtime against the PyTorch references and transformers, same model, same
prompt, batch 1, on this machine.

Rows (all float32 activations unless int8 is named):
    ort            the export folder's model.onnx on ONNX Runtime (CPUExecutionProvider), ORT's default threads
    ort 1 thread   the same with intra_op_num_threads = 1
    ref int8       the quantized reference (PyTorch, int8 emulated exactly) from the export folder's quantized/
    ref fp32       the fp reference Mamba (PyTorch)
    transformers   transformers' MambaForCausalLM fp32 (use_mambapy=False: the sequential torch path, as no CUDA
                   kernels exist on a CPU), timed through its own ``generate`` with cache, greedy

Prefill = the prompt's forward plus choosing the first token (TTFT); decode = one token step plus choosing the next
(TPOT); tokens/s never counts the prompt in decode. Our backends are timed by ``edge_quamba.runtime.bench.time_once``
(the code behind `edge-quamba bench`); transformers' TPOT is (generate(N) - generate(1)) / (N - 1) and its TTFT is
generate(1). One warm-up run is dropped, medians of --repeats runs are reported. GB/s = weight bytes read per token
/ TPOT, against the measured copy bandwidth (numpy copy of 256 MiB).

"greedy_agreement" records where greedy continuations first differ (null: all new tokens equal): ort against ref int8
can part after a rounding tie that the two round apart (the two agree on every int8 code once the reference follows
the graph's ties: edge_quamba/onnx/validate.py); ref fp32 against transformers should never differ.

    python benchmarks/ort_cpu.py                          # demo model: exports it to a scratch folder first
    python benchmarks/ort_cpu.py --export /tmp/demo-export  # an existing export folder of the same model
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from edge_quamba.folders import load_reference_model, open_model
from edge_quamba.models.loading import load_fp_model
from edge_quamba.models.tokenizer import load_tokenizer
from edge_quamba.quant.qmodel import QuantConfig
from edge_quamba.runtime.backends import TorchReferenceBackend
from edge_quamba.runtime.bench import bench_prompt, cpu_name, median_timings, package_version
from edge_quamba.runtime.ort_backend import OrtBackend

RESULTS = Path(__file__).parent / "results"


def time_transformers(model_dir: Path, prompt, new_tokens, repeats) -> tuple[tuple[float, float], list[int]]:
    import transformers

    model = transformers.MambaForCausalLM.from_pretrained(model_dir, dtype=torch.float32, use_mambapy=False).eval()
    ids = torch.tensor([prompt])

    def generate(n: int):
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        return time.perf_counter() - start, out[0, len(prompt):].tolist()

    generate(new_tokens)  # warm-up
    ttft = statistics.median(generate(1)[0] for _ in range(repeats))
    full = [generate(new_tokens) for _ in range(repeats)]
    total = statistics.median(f[0] for f in full)
    return (ttft, (total - ttft) / (new_tokens - 1)), full[0][1]


def greedy_tokens(backend, prompt, new_tokens) -> list[int]:
    logits, states = backend.prefill(prompt)
    tokens = [int(torch.argmax(logits))]
    for _ in range(new_tokens - 1):
        logits, states = backend.decode(tokens[-1], states)
        tokens.append(int(torch.argmax(logits)))
    return tokens


def first_difference(a: list[int], b: list[int]) -> int | None:
    """Index of the first differing token (None when the continuations are equal)."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None if len(a) == len(b) else min(len(a), len(b)))


def copy_bandwidth_gb_per_s() -> float:
    src = np.ones(256 * 2**20 // 8)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    start = time.perf_counter()
    for _ in range(5):
        np.copyto(dst, src)
    return 2 * src.nbytes * 5 / (time.perf_counter() - start) / 1e9  # read + write


def versions() -> dict:
    names = ("torch", "onnxruntime", "onnx", "transformers", "numpy", "edge-quamba")
    return {"python": platform.python_version(), **{name: package_version(name) for name in names}}


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["name"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, label in ((axes[0], "prefill_tokens_per_s", "prefill tokens/s"),
                           (axes[1], "decode_tokens_per_s", "decode tokens/s")):
        values = [r[key] for r in rows]
        bars = ax.barh(names, values, color=["tab:green" if n.startswith("ort") else "tab:gray" for n in names])
        ax.bar_label(bars, fmt="%.0f", padding=3)
        ax.set_xlim(0, max(values) * 1.15)
        ax.set_xlabel(label)
        ax.invert_yaxis()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="fp checkpoint (default: the demo model)")
    parser.add_argument("--export", default=None, help="export folder of --model (default: export to a scratch "
                                                       "folder with --calib-samples windows)")
    parser.add_argument("--calib-samples", type=int, default=16)
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(RESULTS / "ort_cpu.json"))
    args = parser.parse_args()

    load_before = os.getloadavg()
    fp_folder = open_model(args.model)
    fp_dir = fp_folder.path
    if fp_folder.kind != "fp":
        sys.exit(f"--model {fp_dir} must be an fp checkpoint (the transformers row needs it)")
    scratch = None
    if args.export is None:
        from edge_quamba.onnx.export import export_model

        scratch = tempfile.TemporaryDirectory()
        export_dir = Path(scratch.name) / "export"
        export_model(model=args.model, out=export_dir, qconfig=QuantConfig(calib_samples=args.calib_samples),
                     progress=False, echo=lambda _: None)
    else:
        export_dir = Path(args.export)
    export = open_model(str(export_dir))
    tokenizer = load_tokenizer(fp_dir)
    prompt = bench_prompt(tokenizer, args.prompt_len)

    weights = {"ort": (export_dir / "model.onnx").stat().st_size,
               "ref int8": (export_dir / "quantized" / "model.safetensors").stat().st_size}
    fp_model = load_fp_model(fp_folder.checkpoint)
    fp32_bytes = sum(p.numel() * 4 for p in fp_model.parameters())  # tied embeddings counted once
    ort_default = OrtBackend(export)
    candidates = [
        ("ort", lambda: median_timings(ort_default, prompt, args.new_tokens, args.repeats), weights["ort"]),
        ("ort 1 thread", lambda: median_timings(OrtBackend(export, threads=1), prompt, args.new_tokens,
                                              args.repeats), weights["ort"]),
        ("ref int8", lambda: median_timings(TorchReferenceBackend(load_reference_model(export)), prompt,
                                          args.new_tokens, args.repeats), weights["ref int8"]),
        ("ref fp32", lambda: median_timings(TorchReferenceBackend(fp_model), prompt, args.new_tokens, args.repeats),
         fp32_bytes),
    ]
    rows = []
    for name, measure, size in candidates:
        print(f"timing {name} ...", file=sys.stderr, flush=True)
        ttft, tpot = measure()
        rows.append({"name": name, "ttft_ms": ttft * 1e3, "tpot_ms": tpot * 1e3,
                     "prefill_tokens_per_s": args.prompt_len / ttft, "decode_tokens_per_s": 1 / tpot,
                     "weight_bytes": size, "decode_weight_gb_per_s": size / tpot / 1e9})
    print("timing transformers ...", file=sys.stderr, flush=True)
    (ttft, tpot), hf_tokens = time_transformers(fp_dir, prompt, args.new_tokens, args.repeats)
    rows.append({"name": "transformers fp32", "ttft_ms": ttft * 1e3, "tpot_ms": tpot * 1e3,
                 "prefill_tokens_per_s": args.prompt_len / ttft, "decode_tokens_per_s": 1 / tpot,
                 "weight_bytes": fp32_bytes, "decode_weight_gb_per_s": fp32_bytes / tpot / 1e9})
    baseline = rows[-1]["decode_tokens_per_s"]
    for row in rows:
        row["decode_speedup_vs_transformers"] = row["decode_tokens_per_s"] / baseline

    agreement = {  # greedy continuations: every row ran the same model (None: all new tokens equal)
        "ort_vs_ref_int8_first_difference": first_difference(
            greedy_tokens(ort_default, prompt, args.new_tokens),
            greedy_tokens(TorchReferenceBackend(load_reference_model(export)), prompt, args.new_tokens)),
        "ref_fp32_vs_transformers_first_difference": first_difference(
            greedy_tokens(TorchReferenceBackend(fp_model), prompt, args.new_tokens), hf_tokens),
    }
    bandwidth = copy_bandwidth_gb_per_s()
    machine = {"processor": cpu_name(), "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
               "platform": platform.platform(), "copy_bandwidth_gb_per_s": bandwidth,
               "load_average_before": load_before, "load_average_after": os.getloadavg()}
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "model": str(fp_dir), "export": str(export_dir) if scratch is None else f"scratch export "
        f"(calib_samples={args.calib_samples})", "batch": 1, "prompt_len": args.prompt_len,
        "new_tokens": args.new_tokens, "repeats": args.repeats, "machine": machine, "versions": versions(),
        "greedy_agreement": agreement, "rows": rows,
        "target": {"ort_decode_over_transformers_fp32": rows[0]["decode_speedup_vs_transformers"], "wanted": 2.0},
    }

    header = f"{'backend':<20}{'TTFT ms':>10}{'prefill tok/s':>15}{'TPOT ms':>10}{'decode tok/s':>14}" \
             f"{'x transformers':>16}{'GB/s':>8}"
    print(f"batch 1, prompt {args.prompt_len}, {args.new_tokens} new tokens, median of {args.repeats}; "
          f"{machine['processor']}, {machine['logical_cpus']} CPUs, copy bandwidth {bandwidth:.1f} GB/s")
    print(header)
    for r in rows:
        print(f"{r['name']:<20}{r['ttft_ms']:>10.1f}{r['prefill_tokens_per_s']:>15.0f}{r['tpot_ms']:>10.2f}"
              f"{r['decode_tokens_per_s']:>14.0f}{r['decode_speedup_vs_transformers']:>16.2f}"
              f"{r['decode_weight_gb_per_s']:>8.2f}")
    print(f"greedy agreement: {agreement}")
    out = Path(args.out)
    out.write_text(json.dumps(report, indent=2) + "\n")
    png = out.with_suffix(".png")
    c = fp_model.config
    plot(rows, png, f"Mamba {c.n_layer}x{c.d_model} ({fp_dir.name}), batch 1, prompt {args.prompt_len}, "
                    f"{args.new_tokens} new tokens, {machine['processor']} ({machine['logical_cpus']} CPUs)")
    print(f"wrote {out}")
    print(f"wrote {png}")
    if scratch is not None:
        scratch.cleanup()


if __name__ == "__main__":
    main()
