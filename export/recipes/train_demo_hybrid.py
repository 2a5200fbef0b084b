"""Train the hybrid demo model (``--model demo-hybrid``): a tiny Nemotron-H, on one CPU core, in about 12 minutes.

Model: ``NemotronHForCausalLM`` with the block pattern ``M-M*-M-`` (three Mamba2 mixers, one grouped-query attention,
three relu² MLPs): d_model 128; Mamba2 8 heads of 32 (d_inner 256), d_state 32, 2 groups of heads sharing B and C
(so that the quantizer meets per-group B/C scales), chunk 64, d_conv 4; attention 4 query heads of 32 over 2 key/value
heads, no positional encoding (Nemotron-H's); MLP width 512; untied lm_head (transformers' Nemotron-H never ties).
Vocabulary: the Mamba demo model's tokenizer (edge_quamba/assets/demo_model/tokenizer.json, byte-level BPE 8192),
copied into the output folder.

Data: the corpus's training split is not in the repository, so the demo trains on the shipped calibration split
(``calib_data/calibration.txt``, Python documentation pages) as random windows of --seq-len tokens; the shipped
evaluation split (``calib_data/evaluation.txt``, other pages) stays held out: the log scores its first --eval-tokens
tokens, and ``edge-quamba eval`` scores all of it. Quantizing with the default calibration data therefore calibrates
on training text (as calibrating on a model's pretraining distribution does).

Initialization: transformers' (weights std 0.02, A_log = log(1..H), Δ bias from Δ in [1e-3, 0.1], out_proj divided by
sqrt(blocks)); then trained through this project's fp reference (``edge_quamba.models.hybrid``), float32, one thread,
AdamW (betas 0.9 / 0.95, weight decay 0.1 on matrices), linear warm-up then cosine to 0.1 x lr over the budget.
The budget is CPU time of the one thread (--max-cpu-seconds, ``time.process_time``), not wall-clock time: the machine
this ran on is shared, so the same budget gives the same number of steps whatever else runs (progress = CPU seconds
used / budget, so a run always ends fully decayed; held-out evaluations count too).

Outputs in --out: config.json (model_type nemotron_h, dtype float16, bos = eos = pad = <|endoftext|>),
model.safetensors (fp16, Nemotron-H's checkpoint names), tokenizer.json, train_log.json (command, versions, losses).

Usage (the shipped run, see export/recipes/README.md)::

    PYTHONPATH=. python3 export/recipes/train_demo_hybrid.py --out edge_quamba/assets/demo_model_hybrid
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_data import heldout_windows, random_windows, tokenize_documents  # noqa: E402

PATTERN = "M-M*-M-"


def make_config(vocab_size: int, eot_id: int):
    from transformers import NemotronHConfig

    return NemotronHConfig(
        vocab_size=vocab_size, hidden_size=128, hybrid_override_pattern=PATTERN, num_attention_heads=4,
        num_key_value_heads=2, head_dim=32, mamba_num_heads=8, mamba_head_dim=32, n_groups=2, ssm_state_size=32,
        conv_kernel=4, chunk_size=64, intermediate_size=512, mlp_hidden_act="relu2", layer_norm_epsilon=1e-5,
        tie_word_embeddings=False, bos_token_id=eot_id, eos_token_id=eot_id, pad_token_id=eot_id)


def loss_of(model, ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of windows ids (b, l)."""
    logits, _ = model(ids[:, :-1])
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


@torch.no_grad()
def heldout_loss(model, windows: torch.Tensor, batch: int = 16) -> float:
    model.eval()
    total = sum(float(loss_of(model, windows[i:i + batch])) * windows[i:i + batch, 1:].numel()
                for i in range(0, windows.shape[0], batch))
    model.train()
    return total / windows[:, 1:].numel()


def main() -> None:
    from tokenizers import Tokenizer
    from transformers import NemotronHForCausalLM

    from edge_quamba.models.config_dispatch import parse_model_config
    from edge_quamba.models.hybrid import HybridLM, hybrid_reference_keys

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tokenizer", type=Path, default=REPO_ROOT / "edge_quamba/assets/demo_model/tokenizer.json")
    parser.add_argument("--train-text", type=Path, default=REPO_ROOT / "calib_data/calibration.txt")
    parser.add_argument("--eval-text", type=Path, default=REPO_ROOT / "calib_data/evaluation.txt")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--max-cpu-seconds", type=float, default=720.0)
    parser.add_argument("--eval-tokens", type=int, default=16384)
    parser.add_argument("--eval-every", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)

    tokenizer = Tokenizer.from_file(str(args.tokenizer))
    eot = tokenizer.token_to_id("<|endoftext|>")
    train = tokenize_documents(tokenizer, args.train_text)
    held = heldout_windows(tokenize_documents(tokenizer, args.eval_text)[:args.eval_tokens], args.seq_len + 1)
    print(f"train tokens {train.numel()}, held-out windows {held.shape[0]} x {held.shape[1]}", flush=True)

    hf = NemotronHForCausalLM(make_config(tokenizer.get_vocab_size(), eot))
    config = parse_model_config(hf.config.to_dict(), "demo config")
    model = HybridLM(config, dtype=torch.float32)
    model.load_state_dict({hybrid_reference_keys(k, config): v for k, v in hf.state_dict().items()}, strict=True)
    model.train()
    params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=args.lr, betas=(0.9, 0.95))
    generator = torch.Generator().manual_seed(args.seed)
    log = {"command": "PYTHONPATH=. python3 " + shlex.join(["export/recipes/train_demo_hybrid.py", *sys.argv[1:]]),
           "torch": torch.__version__, "machine": platform.processor() or platform.machine(), "threads": 1,
           "parameters": params, "train_tokens": int(train.numel()), "pattern": PATTERN, "steps": [], "heldout": []}
    print(f"{params} parameters, pattern {PATTERN}", flush=True)
    start, wall_start, step = time.process_time(), time.perf_counter(), 0
    while (elapsed := time.process_time() - start) < args.max_cpu_seconds:
        progress = elapsed / args.max_cpu_seconds
        lr = args.lr * min(1.0, (step + 1) / args.warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = loss_of(model, random_windows(train, args.batch_size, args.seq_len + 1, generator))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        if step % 25 == 0:
            log["steps"].append({"step": step, "cpu_seconds": round(elapsed, 1), "lr": lr, "loss": loss.item()})
            print(f"step {step} {elapsed:.0f} cpu-s lr {lr:.2e} loss {loss.item():.3f}", flush=True)
        if step % args.eval_every == 0:
            log["heldout"].append({"step": step, "loss": heldout_loss(model, held)})
            print(f"  held-out loss {log['heldout'][-1]['loss']:.3f}", flush=True)
    log["heldout"].append({"step": step, "loss": heldout_loss(model, held), "final": True})
    log["training_cpu_seconds"] = round(time.process_time() - start, 1)
    log["training_wall_seconds"] = round(time.perf_counter() - wall_start, 1)
    print(f"done: {step} steps, held-out loss {log['heldout'][-1]['loss']:.3f}", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    hf.load_state_dict({"model." + k[len("backbone."):] if k.startswith("backbone.") else k: v
                        for k, v in model.state_dict().items()},
                       strict=True)  # transformers' in-memory prefix; it saves the checkpoint's backbone.*
    hf.to(torch.float16).save_pretrained(args.out, safe_serialization=True)
    (args.out / "generation_config.json").unlink()  # written by save_pretrained; nothing here reads it
    shutil.copyfile(args.tokenizer, args.out / "tokenizer.json")
    (args.out / "train_log.json").write_text(json.dumps(log, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}", flush=True)


if __name__ == "__main__":
    main()
