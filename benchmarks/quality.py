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

Prints a table and writes <out-prefix>.json and <out-prefix>.png (default benchmarks/results/quality).
--device cuda runs the same Python reference ops on the GPU (edge_quamba.ops.reference_cuda: explicit opt-in; not
our CUDA kernels, which have no per-channel or dynamic-scale variant).
"""

from __future__ import annotations

import argparse
import hashlib
import json
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
from edge_quamba.models.locate import resolve_model, weights_file
from edge_quamba.models.tokenizer import load_tokenizer
from edge_quamba.quant.calibrate import LinearHessians, calibrate_many, load_calibration_data
from edge_quamba.quant.qmodel import QuantConfig, quantize_model
from edge_quamba.resources import default_calibration_file, default_evaluation_file

RESULTS = Path(__file__).parent / "results"
FP_VARIANTS = ("fp32", "fp16")
PAPER_VARIANT = "w8a8 quamba"
DEFAULT_VARIANT = "quamba +clip out_proj"
"""What `edge-quamba quantize` makes by default (QuantConfig()); every variant names its clipped sites explicitly,
so a row means the same whatever the default is."""
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


def summary(values: list[float]) -> dict:
    """mean, min, max and half the range (the table's +-) of per-seed values."""
    return {"mean": sum(values) / len(values), "min": min(values), "max": max(values),
            "half_range": (max(values) - min(values)) / 2, "n": len(values)}


class Report:
    """The JSON report, rewritten after every variant."""

    def __init__(self, args, started: float, header: dict):
        self.args, self.started, self.data = args, started, header

    def variant(self, name: str, runs: dict, config: dict | None, quant_config: dict | None = None) -> None:
        """runs: seed label -> {"perplexity": {seq_len: ppl}, optional "last_word": {...}}; config: the variant's
        QuantConfig keywords; quant_config: the whole QuantConfig of its last run (defaults of this checkout)."""
        self.data["variants"][name] = {"config": config, "runs": runs, "quant_config": quant_config}
        self.write()

    def summarize(self, entry: dict) -> None:
        """Mean and spread over seeds of each perplexity, its change vs fp16 and the last-word accuracy."""
        fp16 = self.data["variants"].get("fp16")
        entry["perplexity"], entry["vs_fp16_percent"] = {}, {}
        for seq_len in map(str, self.args.seq_lens):
            values = [run["perplexity"][seq_len] for run in entry["runs"].values()]
            entry["perplexity"][seq_len] = summary(values)
            if fp16 is not None:
                base = fp16["runs"]["-"]["perplexity"][seq_len]
                entry["vs_fp16_percent"][seq_len] = summary([100 * (v / base - 1) for v in values])
        accs = [run["last_word"]["acc"] for run in entry["runs"].values() if "last_word" in run]
        if accs:
            entry["last_word_acc"] = summary(accs)

    def write(self) -> None:
        for entry in self.data["variants"].values():
            self.summarize(entry)
        self.data["seconds"] = round(time.time() - self.started, 1)
        out = Path(self.args.out_prefix).with_suffix(".json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(self.data, indent=2) + "\n")


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


def seed_label(seed: int | None) -> str:
    """How a calibration seed is named in the JSON: "file" (first windows in file order) or the integer's digits."""
    return "file" if seed is None else str(seed)


def model_sha256(path: Path) -> str:
    """sha256 over the checkpoint's config.json and weight file(s) (shards too): what --resume compares, since a
    retrained model may live at the same path."""
    weights = weights_file(path)
    files = [path / "config.json", weights]
    if weights.name.endswith(".index.json"):
        files += sorted({path / shard for shard in json.loads(weights.read_text())["weight_map"].values()})
    return hashlib.sha256("".join(f"{f.name}:{file_sha256(f)}\n" for f in files).encode()).hexdigest()


RESUME_MUST_MATCH = ("model_sha256", "eval_data", "windows", "last_word_task")
"""Header fields a resumed JSON must share with this run (and the calibration file, window count and length)."""


def resume_into(header: dict, source: Path) -> None:
    """Merge a previous JSON's runs into ``header`` after checking that it measured the same thing; a one-line
    SystemExit naming the first difference otherwise."""
    try:
        previous = json.loads(source.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"--resume {source}: not a readable JSON ({exc})") from None
    calib_keys = ("file", "sha256", "samples", "seq_len")
    pairs = [(k, previous.get(k), header[k]) for k in RESUME_MUST_MATCH]
    pairs += [(f"calibration.{k}", previous.get("calibration", {}).get(k), header["calibration"][k])
              for k in calib_keys]
    pairs.append(("machine.device", previous.get("machine", {}).get("device"), header["machine"]["device"]))
    for key, before, now in pairs:
        if before != now:
            raise SystemExit(f"--resume {source}: {key} differs ({before!r} there, {now!r} here); a resumed table "
                             "must measure the same model, data and device")
    header["variants"] = previous["variants"]
    header["sqnr_db"] = previous["sqnr_db"]
    header["calibration"]["windows"] = previous["calibration"].get("windows", {})
    header["calibration"]["seeds"] = list(dict.fromkeys([*previous["calibration"]["seeds"],
                                                         *header["calibration"]["seeds"]]))
    header["resumed"] = {"from": source.name, "commands": [*previous.get("resumed", {}).get("commands", []),
                                                           {"command": previous["command"],
                                                            "date": previous["date"],
                                                            "seconds": previous.get("seconds")}]}


def log(report: Report, what: str, run: dict) -> None:
    ppl = "  ".join(f"ppl@{n} {v:.3f}" for n, v in run["perplexity"].items())
    acc = f"  last-word acc {run['last_word']['acc']:.3f}" if "last_word" in run else ""
    print(f"[{time.time() - report.started:6.0f} s] {what}: {ppl}{acc}", file=sys.stderr, flush=True)


def print_table(data: dict) -> None:
    seq_lens = list(data["windows"])
    print(f"\n{data['model']}: held-out perplexity on {data['eval_data']['file']} "
          f"(sha256 {data['eval_data']['sha256'][:12]}, first {data['eval_data']['tokens']} tokens), windows "
          + ", ".join(f"{n} ({w['count']} windows)" for n, w in data["windows"].items()))
    calib = data["calibration"]
    print(f"calibration: {calib['file']} (sha256 {calib['sha256'][:12]}), {calib['samples']} windows of "
          f"{calib['seq_len']} tokens, seeds {calib['seeds']}; mean over seeds +- half the min-max range")
    head = "".join(f"{'ppl@' + n:>18}{'vs fp16':>16}" for n in seq_lens)
    print(f"{'variant':<26}{head}{'last-word acc':>16}")
    for name, entry in data["variants"].items():
        cells = ""
        for n in seq_lens:
            p, d = entry["perplexity"][n], entry["vs_fp16_percent"].get(n)
            cells += f"{p['mean']:>11.3f} +-{p['half_range']:<5.3f}"
            cells += f"{d['mean']:>+9.2f}% +-{d['half_range']:<4.2f}" if d else f"{'':>16}"
        acc = entry.get("last_word_acc")
        cells += f"{acc['mean']:>16.3f}" if acc else ""
        print(f"{name:<26}{cells}")
    lw = data["last_word_task"]
    print(f"last-word task: {lw['examples']} passages of {lw['source']} (lm-eval, acc = every target token greedy)")
    if data["skipped"]:
        print(f"skipped at the deadline: {', '.join(data['skipped'])}")
    if PAPER_VARIANT in data["sqnr_db"]:
        print(f"\nper-layer SQNR (dB) of {PAPER_VARIANT}, first seed:")
        print(f"{'layer':<7}" + "".join(f"{t:>16}" for t in TENSORS))
        for i, layer in enumerate(data["sqnr_db"][PAPER_VARIANT]):
            print(f"{i:<7}" + "".join(f"{layer[t]:>16.1f}" for t in TENSORS))


def plot(data: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 5), gridspec_kw={"width_ratios": [1.6, 1]})
    names = [n for n in data["variants"] if n not in FP_VARIANTS]
    seq_lens = list(data["windows"])
    width = 0.8 / max(len(seq_lens), 1)
    for j, n in enumerate(seq_lens):
        stats = [data["variants"][v]["vs_fp16_percent"].get(n) for v in names]
        means = [s["mean"] if s else math.nan for s in stats]
        errors = [[s["mean"] - s["min"] if s else 0 for s in stats], [s["max"] - s["mean"] if s else 0 for s in stats]]
        xs = [i + (j - (len(seq_lens) - 1) / 2) * width for i in range(len(names))]
        ax1.bar(xs, means, width, yerr=errors, capsize=2, label=f"windows of {n}")
    ax1.axhline(1.0, color="#c44", lw=0.8, ls="--", label="+1% target")
    ax1.set_yscale("symlog", linthresh=2)
    ax1.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
    ax1.set_ylabel("perplexity vs fp16 (%), bars: min-max over seeds")
    ax1.legend(fontsize=8)
    for name, style in (("w8a8 naive", "--"), (PAPER_VARIANT, ":"), (DEFAULT_VARIANT, "-")):
        for tensor, color in (("u", "#e93"), ("out_proj_input", "#39c"), ("mixer_output", "#2a2")):
            if name in data["sqnr_db"]:
                ax2.plot([layer[tensor] for layer in data["sqnr_db"][name]], style, color=color,
                         label=f"{tensor} ({name})")
    ax2.set_xlabel("layer")
    ax2.set_ylabel("SQNR vs fp32 (dB), first seed")
    ax2.legend(fontsize=7)
    fig.suptitle(f"W8A8 variants on {Path(data['model']).name}, {data['eval_data']['tokens']} eval tokens, "
                 f"{data['machine']['device']} ({data['date']})")
    fig.tight_layout()
    fig.savefig(png, dpi=110)


if __name__ == "__main__":
    main()
