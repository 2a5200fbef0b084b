"""The demo trainer's optimization (export/recipes/train_demo.py): AdamW with weight decay on matrices only, linear
warm-up then cosine decay (over steps, or over the elapsed fraction of a wall-clock budget), one bf16-autocast step
with gradient clipping, and the throughput probe that times train steps per batch size.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_data import random_windows  # noqa: E402  (the recipe folder is not a package)
from train_models import build_model  # noqa: E402


def make_optimizer(model, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (not on A_log, D, norms, biases), as in mamba_ssm's recipes."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (decay if param.ndim >= 2 and not name.endswith("A_log") else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = next(model.parameters()).device.type == "cuda"
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8, fused=fused)


def lr_at(step: int, *, steps: int, warmup: int, lr: float, min_lr: float, progress: float | None = None) -> float:
    """Linear warm-up to lr over `warmup` steps, then cosine decay to min_lr at progress 1; progress defaults to
    (step - warmup) / (steps - warmup) and is the elapsed fraction of the time budget under --max-seconds."""
    if step < warmup:
        return lr * (step + 1) / warmup
    if progress is None:
        progress = (step - warmup) / max(1, steps - warmup)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * min(1.0, max(0.0, progress))))


def train_step(forward, model, optimizer, ids: torch.Tensor, autocast_dtype, clip: float) -> torch.Tensor:
    """One AdamW step on the batch `ids` (b, l); `forward` is `model` or its torch.compile wrapper."""
    with torch.autocast(ids.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        loss = forward(input_ids=ids, labels=ids, use_cache=False).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def sync_device(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------------------------------------------
# throughput probe
# ----------------------------------------------------------------------------------------------------------------
def probe(args, vocab_size, eot_id, stream, device, autocast_dtype) -> list[dict]:
    """Time train steps for each batch size in --probe-batch-sizes (warm-up steps dropped); returns the rows."""
    rows = []
    for batch in args.probe_batch_sizes:
        model, _ = build_model(args, vocab_size, eot_id, device)
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
                    sync_device(device)
                    t0 = time.perf_counter()
                    warm_s = t0 - t_start
                ids = random_windows(stream, batch, args.seq_len, generator).to(device, non_blocking=True)
                loss = train_step(forward, model, optimizer, ids, autocast_dtype, args.clip)
            sync_device(device)
            out_of_memory = False
        except torch.OutOfMemoryError:
            out_of_memory = True
        dt = time.perf_counter() - t0 if not out_of_memory else 0.0
        del model, optimizer, forward
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(device) / 2**30
            torch.cuda.empty_cache()
        else:
            peak = float("nan")
        if out_of_memory:
            print(f"probe batch={batch} seq_len={args.seq_len}: out of memory", flush=True)
            rows.append({"batch_size": batch, "seq_len": args.seq_len, "out_of_memory": True})
            continue
        tokens = args.probe_steps * batch * args.seq_len
        row = {"batch_size": batch, "seq_len": args.seq_len, "ms_per_step": round(dt / args.probe_steps * 1e3, 1),
               "tokens_per_second": round(tokens / dt), "warmup_steps": args.probe_warmup,
               "warmup_seconds": round(warm_s, 1), "peak_gib": round(peak, 1), "last_loss": round(loss.item(), 3)}
        rows.append(row)
        print(
            f"probe backend={args.backend} batch={batch} seq_len={args.seq_len} compile={args.compile}: "
            f"{row['ms_per_step']} ms/step, {row['tokens_per_second']:,} tokens/s, "
            f"warm-up {args.probe_warmup} steps {warm_s:.1f} s, peak {peak:.1f} GiB, last loss {loss.item():.3f}",
            flush=True,
        )
    return rows
