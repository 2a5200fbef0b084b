"""Quality of the Quamba recipe and its variants: held-out perplexity at two window lengths, a LAMBADA-style
last-word accuracy through lm-eval, per-layer SQNR, each quantized variant calibrated with several seeds.

Variants are data (:data:`VARIANTS`: name -> QuantConfig keyword arguments), all W8A8 with static activation scales:
    fp32, fp16                    the fp reference (fp16: weights and activations in half, scan state fp32)
  the Quamba paper's ablation:
    w8a8 naive                    abs-max scales everywhere, no Hadamard
    w8a8 +percentile              percentile clipping of the scan input u
    w8a8 +hadamard                Hadamard-rotated out_proj input (abs-max on u)
    w8a8 quamba                   both: the paper's recipe (the default until the table below changed it)
  beyond it (options, measured here; defaults change only with evidence):
    quamba +clip out_proj         the percentile also on the rotated out_proj input: the default since 2026-12-01
    quamba +clip in_proj          ... on the in_proj input (the normed residual stream) instead
    quamba +clip all inputs       ... on both
    quamba per-channel w          one weight scale per output channel of each linear (QuantConfig.weight_scales)
    clip all + per-channel w      both options together
    quamba p=<P>                  the paper recipe's percentile swept (0.99999 is `w8a8 quamba` itself)
    quamba dynamic out_proj       a per-token out_proj input scale (QuantConfig.out_proj_scale)
  the 4-bit configs (issue 13; GPTQ weights from Hessians gathered in the same calibration pass):
    w4a8 g128, w4a8 g64           int4 weights in groups of 128 / 64 columns (64: the library default since
                                  2026-12-01), int8 activations, the default recipe's clipped sites
    w4a16 g128, w4a16 g64         int4 weights, float16 activations
  (benchmarks/results/quality_big_h200.json names its group-128 rows "w4a8" and "w4a16": each row records its
  whole QuantConfig)

Each quantized variant is calibrated once per --seeds entry (calibration windows drawn with that seed, "file" for
the first windows in file order); the table reports the mean over seeds and half the min-max range (+-). Variants
that share a Hadamard setting are calibrated from ONE pass over the data per seed (every observer statistic any of
them needs is kept side by side; the amaxes equal separate passes'); all seeds are calibrated first, then each
variant runs all its seeds. JSON is rewritten after every run, so --deadline-seconds (or a kill) leaves what was
measured, whole variants first, and --resume continues such a JSON: the same command plus ``--resume <json>``
(checked to be the same model bytes, evaluation and calibration data) measures only the (variant, seed) runs the
file lacks, e.g. more seeds or variants in a second call.

    python benchmarks/quality.py                                   # the demo model, shipped eval/calibration splits
    python benchmarks/quality.py --max-eval-tokens 40000 --variants fp32,fp16,"w8a8 naive","w8a8 quamba"
    python benchmarks/quality.py --model DIR --device cuda --deadline-seconds 480     # a GPU: reference ops on CUDA
    python benchmarks/quality.py --model DIR --device cuda --seeds 0,1 --resume OUT.json  # add seed 1 to OUT.json

Prints a table and writes <out-prefix>.json and <out-prefix>.png (default benchmarks/results/quality; the report,
--resume, the table and the plot: benchmarks/quality_report.py).
--device cuda runs the same Python reference ops on the GPU (edge_quamba.ops.reference_cuda: explicit opt-in; not
our CUDA kernels, which have no per-channel or dynamic-scale variant).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

from edge_quamba import __version__
from edge_quamba.eval.last_word import LastWordTask, build_examples, write_task
from edge_quamba.eval.perplexity import make_windows, read_text, window_nll
from edge_quamba.eval.sqnr import TENSORS, layer_sqnr
from edge_quamba.integrity import file_sha256
from edge_quamba.models.loading import load_fp_model
from edge_quamba.models.locate import resolve_model
from edge_quamba.models.tokenizer import load_tokenizer
from edge_quamba.quant.calibrate import LinearHessians, calibrate_many, load_calibration_data
from edge_quamba.quant.config import QuantConfig
from edge_quamba.quant.qmodel import quantize_model
from edge_quamba.resources import default_calibration_file, default_evaluation_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality_report import (DEFAULT_VARIANT, FP_VARIANTS, PAPER_VARIANT, Report, log, model_sha256,  # noqa: E402
                            plot, print_table, resume_into, seed_label)

RESULTS = Path(__file__).parent / "results"
U_ONLY = ("u",)
CLIP_ALL = ("in_proj_input", "u", "out_proj_input")
VARIANTS: dict[str, dict] = {
    "w8a8 naive": dict(percentile=None, hadamard=False),
    "w8a8 +percentile": dict(hadamard=False, percentile_activations=U_ONLY),
    "w8a8 +hadamard": dict(percentile=None),
    PAPER_VARIANT: dict(percentile_activations=U_ONLY),
    DEFAULT_VARIANT: dict(percentile_activations=("u", "out_proj_input")),
    "quamba +clip in_proj": dict(percentile_activations=("in_proj_input", "u")),
    "quamba +clip all inputs": dict(percentile_activations=CLIP_ALL),
    "quamba per-channel w": dict(weight_scales="channel", percentile_activations=U_ONLY),
    "clip all + per-channel w": dict(percentile_activations=CLIP_ALL, weight_scales="channel"),
    "quamba p=0.999": dict(percentile=0.999, percentile_activations=U_ONLY),
    "quamba p=0.9999": dict(percentile=0.9999, percentile_activations=U_ONLY),
    "quamba p=0.999999": dict(percentile=0.999999, percentile_activations=U_ONLY),
    "quamba dynamic out_proj": dict(out_proj_scale="dynamic", percentile_activations=U_ONLY),
    "w4a8 g128": dict(bits="w4a8", group_size=128, percentile_activations=("u", "out_proj_input")),
    "w4a8 g64": dict(bits="w4a8", group_size=64, percentile_activations=("u", "out_proj_input")),
    "w4a16 g128": dict(bits="w4a16", group_size=128),
    "w4a16 g64": dict(bits="w4a16", group_size=64),
}
"""Quantized variants: name -> QuantConfig keyword arguments (on top of the calibration size and seed)."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="fp checkpoint folder or hub id (default: the demo model)")
    parser.add_argument("--eval-data", default=str(default_evaluation_file()), help="held-out UTF-8 text")
    parser.add_argument("--calib-data", default=str(default_calibration_file()), help="calibration text")
    parser.add_argument("--calib-samples", type=int, default=256)
    parser.add_argument("--calib-seq-len", type=int, default=512)
    parser.add_argument("--seeds", default="0,1",
                        help="calibration draws, comma-separated: integers (QuantConfig.calib_seed) or 'file' (the "
                             "first windows in file order, the CLI's default)")
    parser.add_argument("--seq-lens", default="512,2048", help="perplexity window lengths (stride = window)")
    parser.add_argument("--max-eval-tokens", type=int, default=None, help="use only the first N evaluation tokens")
    parser.add_argument("--variants", default=None,
                        help=f"comma-separated names (default: all): {', '.join([*FP_VARIANTS, *VARIANTS])}")
    parser.add_argument("--last-word-variants", default=f"fp16,{DEFAULT_VARIANT}",
                        help="variants also scored on the last-word task through lm-eval ('' for none)")
    parser.add_argument("--last-word-examples", type=int, default=200,
                        help="passages of the last-word task (the adapter scores one passage per forward, batch 1)")
    parser.add_argument("--sqnr-windows", type=int, default=4, help="512-token eval windows for the SQNR table")
    parser.add_argument("--calib-batch-size", type=int, default=None,
                        help="calibration sequences per forward (default 8 on cpu, 32 on cuda); the amaxes do not "
                             "depend on it (each sequence is observed in order)")
    parser.add_argument("--batch-tokens", type=int, default=None,
                        help="tokens per perplexity batch (default 4096 on cpu, 65536 on cuda)")
    parser.add_argument("--deadline-seconds", type=float, default=None,
                        help="start no new variant after this many seconds (the JSON then says what was skipped)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                        help="cuda: fp models and the quantized references on the GPU (reference ops registered "
                             "for CUDA tensors, edge_quamba.ops.reference_cuda)")
    parser.add_argument("--out-prefix", default=str(RESULTS / "quality"), help="path prefix of the .json and .png")
    parser.add_argument("--resume", default=None, metavar="JSON",
                        help="a JSON this script wrote for the same model, data and device: keep its runs and "
                             "measure only the (variant, seed) runs it lacks (the result is written to --out-prefix)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: this machine has no CUDA GPU (use --device cpu)")
    names = [*FP_VARIANTS, *VARIANTS]
    args.variants = names if args.variants is None else [v.strip() for v in args.variants.split(",") if v.strip()]
    args.last_word_variants = [v.strip() for v in args.last_word_variants.split(",") if v.strip()]
    for option, chosen in (("--variants", args.variants), ("--last-word-variants", args.last_word_variants)):
        unknown = [v for v in chosen if v not in names]
        if unknown:
            parser.error(f"{option}: unknown variant(s) {unknown}; known: {names}")
    try:
        args.seeds = [None if s.strip() == "file" else int(s) for s in args.seeds.split(",")]
        args.seq_lens = [int(s) for s in args.seq_lens.split(",")]
    except ValueError as exc:
        parser.error(f"--seeds / --seq-lens: {exc}")
    args.configs = {}
    for name in args.variants:
        if name in VARIANTS:
            try:
                args.configs[name] = {seed: QuantConfig(calib_samples=args.calib_samples,
                                                        calib_seq_len=args.calib_seq_len, calib_seed=seed,
                                                        **VARIANTS[name]) for seed in args.seeds}
            except TypeError as exc:  # a QuantConfig field this checkout does not have yet
                parser.error(f"variant {name!r}: {exc} (leave it out with --variants)")
    args.batch_tokens = args.batch_tokens or (65536 if args.device == "cuda" else 4096)
    args.calib_batch_size = args.calib_batch_size or (32 if args.device == "cuda" else 8)
    return args


def perplexity(model, windows: torch.Tensor, batch_tokens: int) -> float:
    total, count = window_nll(model, windows, batch_size=max(1, batch_tokens // windows.shape[1]), progress=False)
    return math.exp(total / count)


def last_word(model, tok, task: LastWordTask, task_manager) -> dict:
    """Accuracy (all target tokens greedy) and target perplexity on the last-word task, through lm-eval and the
    edge-quamba adapter; stderr of the accuracy is the binomial sqrt(acc (1 - acc) / (n - 1))."""
    import lm_eval

    from edge_quamba.eval.harness import EdgeQuambaLM

    out = lm_eval.simple_evaluate(model=EdgeQuambaLM.from_model(model, tok), tasks=[task.name],
                                  task_manager=task_manager, bootstrap_iters=0, verbosity="ERROR")
    result = out["results"][task.name]
    acc, n = float(result["acc,none"]), task.manifest["examples"]
    return {"acc": acc, "acc_stderr": math.sqrt(acc * (1 - acc) / max(n - 1, 1)),
            "target_perplexity": float(result["perplexity,none"]), "examples": n}


def main() -> None:
    args = parse_args()
    started = time.time()
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # lm-eval reads the local JSONL task; nothing is downloaded
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device = torch.device(args.device)
    if device.type == "cuda":
        from edge_quamba.ops.reference_cuda import register_reference_for_cuda

        register_reference_for_cuda()
    path = resolve_model(args.model)
    fp32 = load_fp_model(path, torch.float32).to(device)
    tok = load_tokenizer(path, eos_token_id=fp32.config.eos_token_id)
    eval_text = read_text(args.eval_data)
    ids = tok.encode(eval_text)[: args.max_eval_tokens]
    windows = {str(n): make_windows(ids, n) for n in args.seq_lens}
    sqnr_tokens = make_windows(ids, 512)[: args.sqnr_windows]

    task_dir = Path(tempfile.mkdtemp(prefix="edge_quamba_last_word_"))
    task = write_task(task_dir, build_examples(eval_text, max_examples=args.last_word_examples), Path(args.eval_data))
    task_manager = None
    if args.last_word_variants:
        from lm_eval.tasks import TaskManager

        task_manager = TaskManager(include_path=str(task_dir))

    header = {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "date": date.today().isoformat(),
        "machine": {"processor": platform.processor() or platform.machine(), "python": platform.python_version(),
                    "torch": torch.__version__, "edge_quamba": __version__, "threads": torch.get_num_threads(),
                    "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                    "int8_ops": "Python reference ops" + (" on CUDA tensors (reference_cuda)"
                                                          if device.type == "cuda" else " (CPU)")},
        "model": str(path),
        "eval_data": {"file": Path(args.eval_data).name, "sha256": file_sha256(Path(args.eval_data)),
                      "tokens": len(ids), "max_eval_tokens": args.max_eval_tokens},
        "windows": {n: {"count": int(w.shape[0]), "scored_tokens": int(w.shape[0] * (w.shape[1] - 1))}
                    for n, w in windows.items()},
        "calibration": {"file": Path(args.calib_data).name, "sha256": file_sha256(Path(args.calib_data)),
                        "samples": args.calib_samples, "seq_len": args.calib_seq_len,
                        "seeds": ["file" if s is None else s for s in args.seeds]},
        "last_word_task": task.manifest,
        "variants": {}, "sqnr_db": {}, "sqnr_tensors": list(TENSORS), "skipped": [], "complete": False,
    }
    header["model_sha256"] = model_sha256(path)
    if args.resume:
        resume_into(header, Path(args.resume))
    report = Report(args, started, header)

    def past_deadline() -> bool:
        return args.deadline_seconds is not None and time.time() - started > args.deadline_seconds

    measured = report.data["variants"]  # resumed runs are kept, not measured again
    for name in [v for v in FP_VARIANTS if v in args.variants and v not in measured]:  # fp rows have no seeds
        model = fp32 if name == "fp32" else load_fp_model(path, torch.float16).to(device)
        run = {"perplexity": {n: perplexity(model, w, args.batch_tokens) for n, w in windows.items()}}
        if name in args.last_word_variants:
            run["last_word"] = last_word(model, tok, task, task_manager)
        report.variant(name, {"-": run}, None)
        log(report, name, run)
        del model

    quantized = [name for name in args.variants if name in VARIANTS]

    def missing(name: str, seed) -> bool:
        return seed_label(seed) not in measured.get(name, {}).get("runs", {})

    amaxes: dict[tuple[str, str], list] = {}  # (variant, seed label) -> per-layer amaxes
    hessians: dict[tuple[str, str], list] = {}  # (variant, seed label) -> per-layer GPTQ Hessians (4-bit only)
    for seed in args.seeds:  # all calibration first (small), so that each variant then runs all its seeds
        label = seed_label(seed)
        todo = [n for n in quantized if missing(n, seed)]
        if not todo:
            continue
        calib = load_calibration_data(Path(args.calib_data), tok, args.calib_samples, args.calib_seq_len, seed)
        report.data["calibration"].setdefault("windows", {})[label] = {
            k: v for k, v in calib.manifest().items() if k in ("seed", "window_offsets")}
        for hadamard in (False, True):
            group = [n for n in todo if args.configs[n][seed].hadamard == hadamard]
            if not group:
                continue
            gptq = any(args.configs[n][seed].four_bit and args.configs[n][seed].gptq for n in group)
            taps = LinearHessians(fp32.config.n_layer, fp32.config.dt_rank) if gptq else None
            shared = calibrate_many(fp32, calib, [args.configs[n][seed] for n in group],
                                    batch_size=args.calib_batch_size, progress=False, hessians=taps)
            amaxes.update({(name, label): amax for name, amax in zip(group, shared, strict=True)})
            if taps is not None:  # the same Hessians serve every 4-bit config of this pass
                pass_hessians = taps.hessians()
                hessians.update({(name, label): pass_hessians for name in group})
        print(f"[{time.time() - started:6.0f} s] calibrated seed {label}", file=sys.stderr, flush=True)
    for name in quantized:
        runs: dict[str, dict] = dict(measured.get(name, {}).get("runs", {}))
        for seed in args.seeds:
            label = seed_label(seed)
            if label in runs:
                continue
            if past_deadline():
                report.data["skipped"].append(f"{name} seed {label}")
                continue
            config = args.configs[name][seed]
            qmodel = quantize_model(fp32, amaxes[(name, label)], config,
                                    hessians.get((name, label)) if config.four_bit and config.gptq else None
                                    ).to(device)
            run = {"perplexity": {n: perplexity(qmodel, w, args.batch_tokens) for n, w in windows.items()}}
            if name in args.last_word_variants:
                run["last_word"] = last_word(qmodel, tok, task, task_manager)
            if name not in report.data["sqnr_db"] and config.bits != "w4a16":  # first seed's; w4a16: no int8 site
                report.data["sqnr_db"][name] = layer_sqnr(fp32, qmodel, sqnr_tokens)
            runs[label] = run
            report.variant(name, runs, VARIANTS[name], config.to_dict())
            log(report, f"{name} seed {label}", run)
            del qmodel
    report.data["complete"] = not report.data["skipped"]
    report.write()
    print_table(report.data)
    png = Path(args.out_prefix).with_suffix(".png")
    plot(report.data, png)
    print(f"wrote {Path(args.out_prefix).with_suffix('.json')}\nwrote {png}")


if __name__ == "__main__":
    main()
