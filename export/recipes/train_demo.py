"""Train the project's demo Mamba LMs with the public ``transformers`` models and save them in fp16.

Model (``--arch mamba``, the default): ``MambaForCausalLM``, Mamba1 blocks of the public shape (d_state 16, expand 2,
d_conv 4, conv bias, no projection bias, RMSNorm, residual in fp32, tied embeddings); hidden 384, 8 layers, so
d_inner = 768 = 12 * 64 (a non-power-of-two Hadamard size for the quantizer).

Model (``--arch mamba2``): ``Mamba2ForCausalLM``, Mamba2 blocks (headdim 64, so 12 heads of d_inner 768; d_state 64;
--n-groups groups of heads sharing B and C, 2 by default so that per-group B/C scales matter to the quantizer; SSD
chunk 64; d_conv 4, conv bias, no projection bias, residual in fp32, tied embeddings). Initialization as mamba_ssm's
recipe (weights std 0.02, out_proj rescaled by 1/sqrt(layers)) instead of transformers' default std 0.1.

Data: the tokenized train split (``.train_data/train.txt``, documents joined by ``<|endoftext|>``), sampled as
random windows of seq_len tokens (a power of two: mamba.py's scan pads to one) from a seeded
generator; labels are the inputs, shifted inside the model. Held-out loss: the evaluation split cut into
non-overlapping windows, every token after the first of a window predicted once.

Numerics: transformers' Mamba without mamba_ssm runs its pure-PyTorch path; training Mamba1 sets
``use_mambapy=True`` so the selective scan is mamba.py's parallel scan (the ``mambapy`` package must be importable:
this script refuses to fall back to the sequential per-token loop). Mamba2's PyTorch path is already the chunked SSD
(matrix products), so it needs no extra package. Matmuls in bf16 autocast, scan in fp32, AdamW, linear warm-up then
cosine decay, a fixed number of steps; ``--train-seconds`` may lower that number once, from the measured time of the
first steps (still inside the warm-up, so the schedule is whole), to fit a time budget; the log records both.

Outputs in --out: config.json (model_type "mamba" or "mamba2", bos/eos/pad = 0), model.safetensors (fp16),
tokenizer.json, train_log.json. The saved Mamba1 config has ``use_mambapy=False`` so that a reload runs the public
sequential scan, whether mambapy is installed or not.

Usage (the GPU runs, see export/recipes/README.md)::

    python3 export/recipes/train_demo.py --out edge_quamba/assets/demo_model --batch-size 32 --steps 400
    python3 export/recipes/train_demo.py --arch mamba2 --batch-size 32 --steps 400 --train-seconds 110
"""

from __future__ import annotations

import argparse
import datetime
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

REPO_ROOT = Path(__file__).resolve().parents[2]
EOT = "<|endoftext|>"
ARCHES = {"mamba": ("MambaForCausalLM", "demo_model"), "mamba2": ("Mamba2ForCausalLM", "demo_model_mamba2")}
"""--arch -> (transformers class, folder under edge_quamba/assets/ that the default --out names)."""


# ----------------------------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------------------------
def tokenize_documents(tokenizer, path: Path) -> torch.Tensor:
    """Token stream (n,) int64: <|endoftext|> doc_0 <|endoftext|> doc_1 ... <|endoftext|>."""
    eot = tokenizer.token_to_id(EOT)
    documents = path.read_text(encoding="utf-8").rstrip("\n").split("\n\n")
    ids = [eot]
    for encoding in tokenizer.encode_batch(documents, add_special_tokens=False):
        ids.extend(encoding.ids)
        ids.append(eot)
    return torch.tensor(ids, dtype=torch.int64)


def random_windows(stream: torch.Tensor, batch: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """(batch, length) windows starting at seeded random offsets."""
    starts = torch.randint(0, stream.numel() - length, (batch,), generator=generator)
    return torch.stack([stream[s : s + length] for s in starts.tolist()])


def heldout_windows(stream: torch.Tensor, length: int) -> torch.Tensor:
    """(n, length) windows overlapping by one token, so each token after the first is a target exactly once."""
    n = (stream.numel() - 1) // (length - 1)
    return torch.stack([stream[i * (length - 1) : i * (length - 1) + length] for i in range(n)])


@torch.no_grad()
def heldout_loss(model, windows: torch.Tensor, batch: int, device: torch.device, autocast_dtype) -> float:
    """Mean next-token cross-entropy (nats/token) over all windows."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, windows.shape[0], batch):
        ids = windows[i : i + batch].to(device)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = model(input_ids=ids[:, :-1], use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum"
        )
        total += loss.item()
        count += ids[:, 1:].numel()
    model.train(was_training)
    return total / count


# ----------------------------------------------------------------------------------------------------------------
# model and optimizer
# ----------------------------------------------------------------------------------------------------------------
def make_config(args, *, vocab_size: int, eot_id: int):
    """The transformers config of --arch at --hidden-size / --layers (the rest of the shape is fixed above)."""
    if args.arch == "mamba2":
        return make_mamba2_config(vocab_size=vocab_size, hidden_size=args.hidden_size, layers=args.layers,
                                  d_state=args.d_state, n_groups=args.n_groups, eot_id=eot_id)
    return make_mamba_config(vocab_size=vocab_size, hidden_size=args.hidden_size, layers=args.layers, eot_id=eot_id,
                             use_mambapy=True)


MAMBA2_HEADDIM = 64
MAMBA2_CHUNK = 64


def make_mamba2_config(*, vocab_size: int, hidden_size: int, layers: int, d_state: int, n_groups: int, eot_id: int):
    from transformers import Mamba2Config

    return Mamba2Config(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        expand=2,
        head_dim=MAMBA2_HEADDIM,
        num_heads=2 * hidden_size // MAMBA2_HEADDIM,
        state_size=d_state,
        n_groups=n_groups,
        conv_kernel=4,
        chunk_size=MAMBA2_CHUNK,
        use_bias=False,
        use_conv_bias=True,
        residual_in_fp32=True,
        tie_word_embeddings=True,
        layer_norm_epsilon=1e-5,
        initializer_range=0.02,
        rescale_prenorm_residual=True,
        bos_token_id=eot_id,
        eos_token_id=eot_id,
        pad_token_id=eot_id,
    )


def make_mamba_config(*, vocab_size: int, hidden_size: int, layers: int, eot_id: int, use_mambapy: bool):
    from transformers import MambaConfig

    return MambaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        state_size=16,
        expand=2,
        conv_kernel=4,
        time_step_rank="auto",
        use_bias=False,
        use_conv_bias=True,
        residual_in_fp32=True,
        tie_word_embeddings=True,
        layer_norm_epsilon=1e-5,
        bos_token_id=eot_id,
        eos_token_id=eot_id,
        pad_token_id=eot_id,
        use_mambapy=use_mambapy,
    )


def make_optimizer(model, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (not on A_log, D, norms, biases), as in mamba_ssm's recipes."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (decay if param.ndim >= 2 and not name.endswith("A_log") else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = next(model.parameters()).device.type == "cuda"
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8, fused=fused)


def lr_at(step: int, *, steps: int, warmup: int, lr: float, min_lr: float) -> float:
    """Linear warm-up to lr over `warmup` steps, then cosine decay to min_lr at `steps`."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * min(1.0, progress)))


def train_step(forward, model, optimizer, ids: torch.Tensor, autocast_dtype, clip: float) -> torch.Tensor:
    """One AdamW step on the batch `ids` (b, l); `forward` is `model` or its torch.compile wrapper."""
    with torch.autocast(ids.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        loss = forward(input_ids=ids, labels=ids, use_cache=False).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------------------------------------------
# throughput probe
# ----------------------------------------------------------------------------------------------------------------
def model_class(arch: str):
    import transformers

    return getattr(transformers, ARCHES[arch][0])


def probe(args, config, stream, device, autocast_dtype) -> None:
    """Time train steps for each batch size in --probe-batch-sizes (warm-up steps dropped), then return."""
    for batch in args.probe_batch_sizes:
        torch.manual_seed(args.seed)
        model = model_class(args.arch)(config).to(device)
        model.train()
        forward = torch.compile(model) if args.compile else model
        optimizer = make_optimizer(model, args.lr, args.weight_decay)
        generator = torch.Generator().manual_seed(args.seed)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t_start = time.perf_counter()
        try:
            for i in range(args.probe_warmup + args.probe_steps):
                if i == args.probe_warmup:
                    _sync(device)
                    t0 = time.perf_counter()
                    warm_s = t0 - t_start
                ids = random_windows(stream, batch, args.seq_len, generator).to(device, non_blocking=True)
                loss = train_step(forward, model, optimizer, ids, autocast_dtype, args.clip)
            _sync(device)
        except torch.OutOfMemoryError:
            print(f"probe batch={batch} seq_len={args.seq_len}: out of memory", flush=True)
            del model, optimizer, forward
            torch.cuda.empty_cache()
            continue
        dt = time.perf_counter() - t0
        tokens = args.probe_steps * batch * args.seq_len
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
        print(
            f"probe batch={batch} seq_len={args.seq_len} compile={args.compile}: "
            f"{dt / args.probe_steps * 1e3:.1f} ms/step, {tokens / dt:,.0f} tokens/s, "
            f"warm-up {args.probe_warmup} steps {warm_s:.1f} s, peak {peak:.1f} GiB, last loss {loss.item():.3f}",
            flush=True,
        )
        del model, optimizer, forward
        if device.type == "cuda":
            torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------------------------
BUDGET_SKIP_STEPS = 2
"""Steps left out of the --train-seconds measurement (the first ones pay for CUDA and allocator warm-up)."""


def train_demo(args) -> dict:
    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    from tokenizers import Tokenizer
    from transformers.utils.import_utils import is_mambapy_available

    if args.arch == "mamba" and not is_mambapy_available():
        raise SystemExit("mambapy is not importable: pip install mambapy (no silent fallback to the per-token loop)")
    t_begin = time.perf_counter()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    autocast_dtype = {"bf16": torch.bfloat16, "fp32": None}[args.precision]
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True

    tokenizer = Tokenizer.from_file(str(args.tokenizer))
    eot_id = tokenizer.token_to_id(EOT)
    train_stream = tokenize_documents(tokenizer, args.train_text)
    eval_stream = tokenize_documents(tokenizer, args.eval_text)
    print(f"train tokens {train_stream.numel():,}  eval tokens {eval_stream.numel():,}", flush=True)

    config = make_config(args, vocab_size=tokenizer.get_vocab_size(), eot_id=eot_id)
    if args.probe_batch_sizes:
        probe(args, config, train_stream, device, autocast_dtype)
        return {}

    torch.manual_seed(args.seed)
    model = model_class(args.arch)(config).to(device)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"params {n_params:,} (tied embedding counted once)  device {device}", flush=True)
    optimizer = make_optimizer(model, args.lr, args.weight_decay)
    forward = torch.compile(model) if args.compile else model
    generator = torch.Generator().manual_seed(args.seed)
    eval_windows = heldout_windows(eval_stream, args.seq_len + 1)

    log = {"steps": [], "loss": [], "lr": [], "tokens_seen": [], "elapsed_s": []}
    eval_log = {"steps": [], "heldout_loss": []}
    window_losses: list[torch.Tensor] = []
    tokens_per_step = args.batch_size * args.seq_len
    steps = args.steps  # may be lowered once by --train-seconds, inside the warm-up
    budget_note = None
    _sync(device)
    t_train = time.perf_counter()
    step = 0
    while step < steps:
        if args.train_seconds and step == BUDGET_SKIP_STEPS:
            _sync(device)
            t_probe = time.perf_counter()
        if args.train_seconds and step == args.budget_probe_steps:
            _sync(device)
            now = time.perf_counter()
            step_s = (now - t_probe) / (args.budget_probe_steps - BUDGET_SKIP_STEPS)
            fit = step + int((args.train_seconds - (now - t_train)) / step_s)
            steps = max(step + 1, min(args.steps, fit))
            budget_note = {"measured_step_seconds": round(step_s, 4), "steps_requested": args.steps,
                           "steps_run": steps, "train_seconds_budget": args.train_seconds}
            print(f"time budget: {step_s * 1e3:.1f} ms/step -> {steps} steps (asked {args.steps})", flush=True)
        lr = lr_at(step, steps=steps, warmup=args.warmup, lr=args.lr, min_lr=args.lr * args.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        ids = random_windows(train_stream, args.batch_size, args.seq_len, generator).to(device, non_blocking=True)
        window_losses.append(train_step(forward, model, optimizer, ids, autocast_dtype, args.clip))
        if (step + 1) % args.log_every == 0 or step + 1 == steps:
            loss = torch.stack(window_losses).mean().item()
            window_losses.clear()
            elapsed = time.perf_counter() - t_train
            tokens = (step + 1) * tokens_per_step
            for key, value in zip(log, (step + 1, loss, lr, tokens, round(elapsed, 2))):
                log[key].append(value)
            print(
                f"step {step + 1:5d}/{steps}  loss {loss:.4f}  lr {lr:.2e}  "
                f"tokens {tokens:,}  {tokens / elapsed:,.0f} tok/s  {elapsed:.0f} s",
                flush=True,
            )
        if args.eval_every and (step + 1) % args.eval_every == 0 and step + 1 < steps:
            t_eval = time.perf_counter()
            loss = heldout_loss(model, eval_windows, args.eval_batch_size, device, autocast_dtype)
            t_train += time.perf_counter() - t_eval  # evaluation time is not training time
            eval_log["steps"].append(step + 1)
            eval_log["heldout_loss"].append(round(loss, 4))
            print(f"step {step + 1:5d}/{steps}  held-out loss {loss:.4f}", flush=True)
        step += 1
    _sync(device)
    train_s = time.perf_counter() - t_train

    heldout = heldout_loss(model, eval_windows, args.eval_batch_size, device, autocast_dtype)
    print(f"held-out loss (evaluation split, training weights, {args.precision}): {heldout:.4f}  "
          f"ppl {math.exp(heldout):.2f}", flush=True)

    # save fp16, transformers layout; a saved Mamba1 config runs the public sequential scan on reload
    args.out.mkdir(parents=True, exist_ok=True)
    if args.arch == "mamba":
        model.config.use_mambapy = False
    model.to(torch.float16).save_pretrained(args.out)
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

    # validate the artifact: reload fp16 weights into an fp32 model, held-out loss without autocast
    reloaded = model_class(args.arch).from_pretrained(args.out, dtype=torch.float32).to(device)
    heldout_saved = heldout_loss(reloaded, eval_windows, args.eval_batch_size, device, None)
    print(f"held-out loss (evaluation split, saved fp16 weights run in fp32): {heldout_saved:.4f}  "
          f"ppl {math.exp(heldout_saved):.2f}", flush=True)

    train_log = {
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
            "tokenizers": __import__("tokenizers").__version__,
            **({"mambapy": __import__("importlib.metadata").metadata.version("mambapy")} if args.arch == "mamba"
               else {}),
        },
        "hyperparameters": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "probe_batch_sizes"
        },
        "parameters": n_params,
        "model_safetensors_bytes": size,
        "train_tokens_in_split": train_stream.numel(),
        "eval_tokens_in_split": eval_stream.numel(),
        "tokens_per_step": tokens_per_step,
        "steps": steps,
        "time_budget": budget_note,
        "tokens_seen": steps * tokens_per_step,
        "train_seconds": round(train_s, 2),
        "train_tokens_per_second": round(steps * tokens_per_step / train_s),
        "total_seconds": round(time.perf_counter() - t_begin, 2),
        "heldout_loss_training_weights": round(heldout, 4),
        "heldout_loss_saved_fp16_in_fp32": round(heldout_saved, 4),
        "heldout_tokens": eval_windows.shape[0] * args.seq_len,
        "log": log,
        "heldout_log": eval_log,
    }
    log_path = args.out / "train_log.json"
    log_path.write_text(json.dumps(train_log, indent=2) + "\n")
    for name in ("config.json", "model.safetensors", "tokenizer.json", "train_log.json"):
        print(f"wrote {args.out / name}")
    return train_log


def _int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", choices=sorted(ARCHES), default="mamba",
                   help="mamba: MambaForCausalLM (the shipped demo model); mamba2: Mamba2ForCausalLM")
    p.add_argument("--out", type=Path, default=None,
                   help="default: edge_quamba/assets/demo_model (mamba) or demo_model_mamba2 (mamba2)")
    p.add_argument("--tokenizer", type=Path, default=REPO_ROOT / "edge_quamba/assets/demo_model/tokenizer.json")
    p.add_argument("--train-text", type=Path, default=REPO_ROOT / ".train_data/train.txt")
    p.add_argument("--eval-text", type=Path, default=REPO_ROOT / "calib_data/evaluation.txt")
    p.add_argument("--hidden-size", type=int, default=384)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--d-state", type=int, default=64, help="mamba2 only: SSM state size per head")
    p.add_argument("--n-groups", type=int, default=2, help="mamba2 only: groups of heads sharing B and C")
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--eval-batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--min-lr-ratio", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", choices=("bf16", "fp32"), default="bf16", help="autocast dtype of matmuls")
    p.add_argument("--compile", action="store_true", help="torch.compile the model forward")
    p.add_argument("--device", default=None, help="default: cuda if available")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--eval-every", type=int, default=100, help="held-out loss every N steps (0: only at the end)")
    p.add_argument("--max-bytes", type=int, default=25_000_000, help="fail if model.safetensors is larger")
    p.add_argument("--probe-batch-sizes", type=_int_list, default=[], metavar="B1,B2",
                   help="only time train steps at these batch sizes and exit")
    p.add_argument("--probe-steps", type=int, default=10)
    p.add_argument("--probe-warmup", type=int, default=3)
    p.add_argument("--train-seconds", type=float, default=None,
                   help="time budget for the training steps (evaluations excluded): after --budget-probe-steps "
                   "steps, lower --steps once to what fits, inside the warm-up so the schedule stays whole")
    p.add_argument("--budget-probe-steps", type=int, default=12)
    args = p.parse_args(argv)
    if args.out is None:
        args.out = REPO_ROOT / "edge_quamba/assets" / ARCHES[args.arch][1]
    if args.train_seconds is not None and not BUDGET_SKIP_STEPS < args.budget_probe_steps < args.warmup:
        p.error(f"--budget-probe-steps must lie between {BUDGET_SKIP_STEPS} and --warmup")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for path in (args.tokenizer, args.train_text, args.eval_text):
        if not path.is_file():
            raise SystemExit(f"{path} not found (run build_corpus.py and train_tokenizer.py first)")
    train_demo(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
