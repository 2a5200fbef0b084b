"""Train the project's demo Mamba LMs (or the larger prose model) and save them in fp16, transformers layout.

Model (``--arch mamba``, the default): Mamba1 blocks of the public shape (d_state 16, expand 2, d_conv 4, conv bias,
no projection bias, RMSNorm, residual in fp32, tied embeddings); hidden 384, 8 layers, so d_inner = 768 = 12 * 64 (a
non-power-of-two Hadamard size for the quantizer).

Model (``--arch mamba2``, the Mamba2 demo): Mamba2 blocks (headdim 64, so 12 heads of d_inner 768; d_state 64;
--n-groups groups of heads sharing B and C, 2 by default so that per-group B/C scales matter to the quantizer; SSD
chunk 64; d_conv 4, conv bias, no projection bias, residual in fp32, tied embeddings), saved as ``Mamba2ForCausalLM``.
Initialized by ``Mamba2ForCausalLM`` with mamba_ssm's recipe (weights std 0.02, out_proj rescaled by 1/sqrt(layers))
instead of transformers' default std 0.1, then trained through this project's fp reference
(``edge_quamba.models.mamba2``, so run from the repository root with PYTHONPATH=. or installed): transformers up to
5.17 normalizes the gated RMSNorm over all of d_inner, where mamba_ssm, later transformers and the reference normalize
each of the n_groups groups, so weights trained by one score worse in the other (the shipped Mamba2 demo, trained
through transformers 5.17: held-out loss 4.43 there, 4.54 under grouped normalization). Training the reference trains
exactly what ships. ``--backend`` applies to Mamba1 only.

Data: the tokenized train split (``.train_data/train.txt``, documents joined by ``<|endoftext|>``), sampled as
random windows of seq_len tokens (a power of two: mamba.py's scan pads to one) from a seeded
generator; labels are the inputs, shifted inside the model. Held-out loss: the evaluation split cut into
non-overlapping windows, every token after the first of a window predicted once.

Numerics: transformers' Mamba without mamba_ssm runs its pure-PyTorch path; training sets ``use_mambapy=True`` so
the selective scan is mamba.py's parallel scan (the ``mambapy`` package must be importable: this script refuses to
fall back to the sequential per-token loop). Matmuls in bf16 autocast, scan in fp32, AdamW, linear warm-up then
cosine decay, a fixed number of steps.

Backends (``--backend``):

* ``transformers`` (default; the demo model): ``MambaForCausalLM`` with mamba.py's parallel scan, as above.
* ``mamba_ssm``: mamba_ssm's ``MambaLMHeadModel`` (its init, its CUDA selective scan, Triton fused add + RMSNorm).
  Without the ``causal_conv1d`` package its Mamba block runs ``nn.Conv1d`` + ``selective_scan_fn`` (the unfused
  path of mamba_ssm/modules/mamba_simple.py); this script says which path runs. The trained weights are renamed to
  transformers' names (export/recipes/mamba_ssm_names.py) and saved through ``MambaForCausalLM``, so the output is
  the same folder either way. Needs a CUDA GPU.

Budget: ``--steps`` fixes the schedule's length; ``--max-seconds`` instead bounds the training loop's wall clock
(held-out evaluations included): the cosine runs over the time budget (progress = elapsed / max-seconds) and
training stops when it is spent, so a run always ends with a fully decayed learning rate.

Held-out perplexity at the end: the saved fp16 weights, run in fp32 (transformers; or mamba_ssm's kernels, checked
against transformers on one window), on the evaluation text cut into windows of each ``--eval-seq-lens``.

Outputs in --out: config.json (model_type "mamba", bos/eos/pad = 0), model.safetensors (fp16), tokenizer.json,
train_log.json. The saved config has ``use_mambapy=False`` so that a reload runs the public sequential scan,
whether mambapy is installed or not.

This file is the run (the training loop, saving, the final evaluation and train_log.json) and its arguments; the
pieces are train_data.py (windows, held-out loss, token cache), train_models.py (configs, the model per backend,
saving and reading back) and train_loop.py (optimizer, schedule, one step, the throughput probe).

Usage (the GPU runs; see export/recipes/README.md)::

    python3 export/recipes/train_demo.py --out edge_quamba/assets/demo_model --batch-size 32 --steps 1000
    bash benchmarks/gpu/big_model_train.sh     # --backend mamba_ssm at the 130m shape, on the prose corpus
    PYTHONPATH=. python3 export/recipes/train_demo.py --arch mamba2 --batch-size 32 --steps 400 --warmup 40 \
        --max-seconds 95                     # the Mamba2 demo model (edge_quamba/assets/demo_model_mamba2)
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.metadata
import json
import math
import os
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
# the recipe folder is not a package: its modules import each other by name
from train_data import EOT, heldout_loss, heldout_windows, load_streams, random_windows  # noqa: E402
from train_loop import sync_device, lr_at, make_optimizer, probe, train_step  # noqa: E402
from train_models import (ARCHES, MAMBA2_HEADDIM, as_transformers, build_model, check_conversion,  # noqa: E402
                          mamba_ssm_conv_path, reload_saved, save_mamba2)

REPO_ROOT = Path(__file__).resolve().parents[2]
BACKENDS = ("transformers", "mamba_ssm")


def train_demo(args) -> dict:
    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    from tokenizers import Tokenizer

    t_begin = time.perf_counter()
    tokenizer = Tokenizer.from_file(str(args.tokenizer))
    eot_id = tokenizer.token_to_id(EOT)
    train_stream, eval_stream = load_streams(args, tokenizer)
    print(f"train tokens {train_stream.numel():,}  eval tokens {eval_stream.numel():,}", flush=True)
    if args.tokenize_only:
        return {}

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.backend == "mamba_ssm":
        if device.type != "cuda":
            raise SystemExit("--backend mamba_ssm needs a CUDA GPU (its selective scan is a CUDA kernel)")
        try:
            importlib.import_module("mamba_ssm")
        except ImportError as exc:
            raise SystemExit(f"--backend mamba_ssm: mamba_ssm is not importable ({exc}); "
                             "bash benchmarks/gpu/build_mamba_ssm.sh builds it") from None
        print(f"mamba_ssm conv path: {mamba_ssm_conv_path()}", flush=True)
    elif args.arch == "mamba":
        from transformers.utils.import_utils import is_mambapy_available

        if not is_mambapy_available():
            raise SystemExit("mambapy is not importable: pip install mambapy (no silent fallback to the per-token "
                             "loop)")
    autocast_dtype = {"bf16": torch.bfloat16, "fp32": None}[args.precision]
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    vocab_size = tokenizer.get_vocab_size()

    probe_rows = []
    if args.probe_batch_sizes:
        probe_rows = probe(args, vocab_size, eot_id, train_stream, device, autocast_dtype)
        if not args.train_after_probe:
            return {"probe": probe_rows}

    model, config = build_model(args, vocab_size, eot_id, device)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"arch {args.arch}  backend {args.backend if args.arch == 'mamba' else 'reference'}  params {n_params:,} (tied embedding counted once)  device {device}", flush=True)
    optimizer = make_optimizer(model, args.lr, args.weight_decay)
    forward = torch.compile(model) if args.compile else model
    generator = torch.Generator().manual_seed(args.seed)
    eval_windows = heldout_windows(eval_stream, args.seq_len + 1)

    log = {"steps": [], "loss": [], "lr": [], "tokens_seen": [], "elapsed_s": []}
    eval_log = {"steps": [], "heldout_loss": []}
    window_losses: list[torch.Tensor] = []
    tokens_per_step = args.batch_size * args.seq_len
    budget = f"{args.max_seconds:g} s" if args.max_seconds else f"{args.steps} steps"
    stopped_by = "steps"
    sync_device(device)
    t_wall = t_train = time.perf_counter()
    step = 0
    while step < args.steps:
        wall = time.perf_counter() - t_wall
        if args.max_seconds and wall >= args.max_seconds:
            stopped_by = "max_seconds"
            break
        progress = wall / args.max_seconds if args.max_seconds else None
        lr = lr_at(step, steps=args.steps, warmup=args.warmup, lr=args.lr, min_lr=args.lr * args.min_lr_ratio,
                   progress=progress)
        for group in optimizer.param_groups:
            group["lr"] = lr
        ids = random_windows(train_stream, args.batch_size, args.seq_len, generator).to(device, non_blocking=True)
        window_losses.append(train_step(forward, model, optimizer, ids, autocast_dtype, args.clip))
        step += 1
        if step % args.log_every == 0 or step == args.steps:
            loss = torch.stack(window_losses).mean().item()
            window_losses.clear()
            elapsed = time.perf_counter() - t_train
            tokens = step * tokens_per_step
            for key, value in zip(log, (step, loss, lr, tokens, round(elapsed, 2))):
                log[key].append(value)
            print(
                f"step {step:5d} ({budget})  loss {loss:.4f}  lr {lr:.2e}  "
                f"tokens {tokens:,}  {tokens / elapsed:,.0f} tok/s  {time.perf_counter() - t_wall:.0f} s",
                flush=True,
            )
        if args.eval_every and step % args.eval_every == 0 and step < args.steps:
            t_eval = time.perf_counter()
            loss = heldout_loss(model, eval_windows, args.eval_batch_size, device, autocast_dtype)
            t_train += time.perf_counter() - t_eval  # evaluation time is not training time (it is wall time)
            eval_log["steps"].append(step)
            eval_log["heldout_loss"].append(round(loss, 4))
            print(f"step {step:5d}  held-out loss {loss:.4f}", flush=True)
    sync_device(device)
    train_s = time.perf_counter() - t_train
    if step == 0:
        raise SystemExit("no training step ran within --max-seconds")

    heldout = heldout_loss(model, eval_windows, args.eval_batch_size, device, autocast_dtype)
    print(f"held-out loss (evaluation text, training weights, {args.precision}, windows of {args.seq_len}): "
          f"{heldout:.4f}  ppl {math.exp(heldout):.2f}", flush=True)

    # save fp16, transformers layout; a saved Mamba1 config runs the public sequential scan on reload
    args.out.mkdir(parents=True, exist_ok=True)
    if args.arch == "mamba2":
        save_mamba2(model, config, args.out)
    else:
        hf_model = as_transformers(model, config)
        hf_model.config.use_mambapy = False
        hf_model.to(torch.float16).save_pretrained(args.out)
        del hf_model
    del optimizer, forward, model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    config_path = args.out / "config.json"
    saved = json.loads(config_path.read_text())
    if saved.get("model_type") != args.arch:
        raise RuntimeError(f"config.json model_type is {saved.get('model_type')!r}, expected {args.arch!r}")
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        saved[key] = eot_id
    config_path.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")
    if args.tokenizer.resolve() != (args.out / "tokenizer.json").resolve():
        shutil.copyfile(args.tokenizer, args.out / "tokenizer.json")
    weights = args.out / "model.safetensors"
    size = weights.stat().st_size
    if size > args.max_bytes:
        raise SystemExit(f"{weights} is {size:,} bytes > {args.max_bytes:,}: use fewer layers")

    # validate the artifact: reload the fp16 weights into an fp32 model, held-out loss without autocast and with
    # TF32 matmuls (on for training) off, so that "fp32" is fp32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    reloaded = reload_saved(args, device)
    conversion = check_conversion(args, reloaded, eval_stream, device) if args.arch == "mamba" and \
        args.backend == "mamba_ssm" else None
    heldout_saved = {}
    for length in args.eval_seq_lens:
        windows = heldout_windows(eval_stream, length + 1)
        loss = heldout_loss(reloaded, windows, max(1, args.eval_batch_size * args.seq_len // length), device, None)
        heldout_saved[str(length)] = {"loss": round(loss, 4), "perplexity": round(math.exp(loss), 3),
                                      "windows": windows.shape[0], "scored_tokens": windows.shape[0] * length}
        print(f"held-out loss (evaluation text, saved fp16 weights run in fp32, windows of {length}): {loss:.4f}  "
              f"ppl {math.exp(loss):.2f}", flush=True)

    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "tokenizers": __import__("tokenizers").__version__,
    }
    packages = () if args.arch == "mamba2" else ("mambapy",) if args.backend == "transformers" else ("mamba_ssm",
                                                                                                      "triton")
    for package in packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:  # importable, but installed without metadata
            versions[package] = getattr(importlib.import_module(package), "__version__", None)
    train_log = {
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "arch": args.arch,
        "backend": args.backend if args.arch == "mamba" else "reference",
        "mamba_ssm_conv_path": mamba_ssm_conv_path() if args.backend == "mamba_ssm" else None,
        "versions": versions,
        "hyperparameters": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "probe_batch_sizes"
        },
        "parameters": n_params,
        "model_safetensors_bytes": size,
        "train_tokens_in_split": train_stream.numel(),
        "eval_tokens_in_split": eval_stream.numel(),
        "tokens_per_step": tokens_per_step,
        "steps": step,
        "stopped_by": stopped_by,
        "tokens_seen": step * tokens_per_step,
        "epochs_of_train_split": round(step * tokens_per_step / train_stream.numel(), 2),
        "train_seconds": round(train_s, 2),
        "train_tokens_per_second": round(step * tokens_per_step / train_s),
        "total_seconds": round(time.perf_counter() - t_begin, 2),
        "heldout_loss_training_weights": round(heldout, 4),
        "heldout_loss_saved_fp16_in_fp32": heldout_saved[str(args.seq_len)]["loss"]
        if str(args.seq_len) in heldout_saved else None,
        "heldout_saved_fp16_in_fp32_by_window": heldout_saved,
        "heldout_tokens": eval_windows.shape[0] * args.seq_len,
        "conversion_check": conversion,
        "probe": probe_rows,
        "log": log,
        "heldout_log": eval_log,
    }
    log_path = args.out / "train_log.json"
    log_path.write_text(json.dumps(train_log, indent=2) + "\n")
    for name in ("config.json", "model.safetensors", "tokenizer.json", "train_log.json"):
        print(f"wrote {args.out / name}")
    return train_log


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", choices=sorted(ARCHES), default="mamba",
                   help="mamba: Mamba1 (the demo model, the prose model); mamba2: Mamba2 trained through "
                        "edge_quamba's reference, saved as Mamba2ForCausalLM (the Mamba2 demo model)")
    p.add_argument("--backend", choices=BACKENDS, default="transformers",
                   help="Mamba1 only. transformers: MambaForCausalLM + mambapy scan (the demo model); mamba_ssm: "
                        "mamba_ssm's MambaLMHeadModel and CUDA kernels (GPU only), saved in transformers layout")
    p.add_argument("--out", type=Path, default=None,
                   help="default: edge_quamba/assets/demo_model (mamba) or demo_model_mamba2 (mamba2)")
    p.add_argument("--tokenizer", type=Path, default=REPO_ROOT / "edge_quamba/assets/demo_model/tokenizer.json")
    p.add_argument("--train-text", type=Path, default=REPO_ROOT / ".train_data/train.txt",
                   help="documents separated by blank lines; a name ending .xz is read xz-compressed")
    p.add_argument("--eval-text", type=Path, default=REPO_ROOT / "calib_data/evaluation.txt")
    p.add_argument("--tokens-cache", type=Path, default=None,
                   help="read the token streams from this file if it was made from the same tokenizer and texts, "
                        "else write them there")
    p.add_argument("--tokenize-only", action="store_true", help="stop after tokenizing (fills --tokens-cache)")
    p.add_argument("--hidden-size", type=int, default=384)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--d-state", type=int, default=64, help="mamba2 only: SSM state size per head")
    p.add_argument("--n-groups", type=int, default=2, help="mamba2 only: groups of heads sharing B and C")
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--eval-batch-size", type=int, default=32, help="windows per held-out batch at --seq-len "
                   "(scaled inversely with the window length for --eval-seq-lens)")
    p.add_argument("--eval-seq-lens", type=_int_list, default=None, metavar="L1,L2",
                   help="window lengths of the final held-out evaluation of the saved weights (default: --seq-len)")
    p.add_argument("--steps", type=int, default=1000,
                   help="number of steps; with --max-seconds an upper bound only")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="wall-clock budget of the training loop: the cosine follows elapsed / max-seconds and "
                        "training stops when it is spent")
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--min-lr-ratio", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", choices=("bf16", "fp32"), default="bf16", help="autocast dtype of matmuls")
    p.add_argument("--compile", action="store_true", help="torch.compile the model forward (transformers only)")
    p.add_argument("--device", default=None, help="default: cuda if available")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--eval-every", type=int, default=100, help="held-out loss every N steps (0: only at the end)")
    p.add_argument("--max-bytes", type=int, default=25_000_000, help="fail if model.safetensors is larger")
    p.add_argument("--probe-batch-sizes", type=_int_list, default=[], metavar="B1,B2",
                   help="time train steps at these batch sizes, then exit (or train, with --train-after-probe)")
    p.add_argument("--train-after-probe", action="store_true")
    p.add_argument("--probe-steps", type=int, default=10)
    p.add_argument("--probe-warmup", type=int, default=3)
    args = p.parse_args(argv)
    problems = []
    if args.backend == "mamba_ssm" and args.compile:
        problems.append("--compile is for --backend transformers only (mamba_ssm's kernels are custom ops)")
    if args.max_seconds is not None and not args.max_seconds > 0:
        problems.append("--max-seconds must be > 0")
    if not 0 <= args.warmup < args.steps:
        problems.append("--warmup must be >= 0 and < --steps")
    for name in ("hidden_size", "layers", "seq_len", "batch_size", "eval_batch_size", "steps", "log_every"):
        if getattr(args, name) < 1:
            problems.append(f"--{name.replace('_', '-')} must be >= 1")
    if args.arch == "mamba" and args.hidden_size % 16:
        problems.append("--hidden-size must be a multiple of 16 (dt_rank = hidden / 16)")
    if args.arch == "mamba2":
        heads = 2 * args.hidden_size // MAMBA2_HEADDIM
        if args.backend != "transformers":
            problems.append("--backend is for --arch mamba only (Mamba2 trains through the reference)")
        if 2 * args.hidden_size % MAMBA2_HEADDIM or args.n_groups < 1 or heads % args.n_groups:
            problems.append(f"--arch mamba2 needs 2 x --hidden-size a multiple of {MAMBA2_HEADDIM} (the head size) "
                            "and a head count that --n-groups divides")
    if args.out is None:
        args.out = REPO_ROOT / "edge_quamba/assets" / ARCHES[args.arch][1]
    if args.eval_seq_lens is None:
        args.eval_seq_lens = [args.seq_len]
    if problems:
        p.error("; ".join(problems))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for path in (args.tokenizer, args.train_text, args.eval_text):
        if not path.is_file():
            raise SystemExit(f"{path} not found (run build_corpus.py / build_prose_corpus.py and "
                             "train_tokenizer.py first)")
    train_demo(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
