"""Builders shared by the tests: tiny random Mamba checkpoints in both public layouts, a tokenizer, the CLI."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers

TEXT = (
    "The quick brown fox jumps over the lazy dog. State space models scan a sequence once. "
    "Quantization maps real numbers to a small set of integers with a scale. "
    "Jetson boards run small language models at the edge, one token at a time. "
) * 4


def make_tokenizer(vocab_size: int = 120) -> Tokenizer:
    """A byte-level BPE trained on TEXT; id 0 is <|endoftext|>."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([TEXT], trainer)
    return tok


def random_hf_model(seed: int = 0, noise: float = 0.1, **overrides) -> transformers.MambaForCausalLM:
    """A transformers MambaForCausalLM with random weights (init + noise so that every parameter matters)."""
    torch.manual_seed(seed)
    kwargs = dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, state_size=8, expand=2, conv_kernel=4,
                  eos_token_id=0, bos_token_id=0, pad_token_id=0)
    kwargs.update(overrides)
    model = transformers.MambaForCausalLM(transformers.MambaConfig(**kwargs)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * noise)
    return model


def random_hf_mamba2(seed: int = 0, noise: float = 0.1, **overrides) -> transformers.Mamba2ForCausalLM:
    """A transformers Mamba2ForCausalLM with random weights (init + noise so that every parameter matters).
    Default: d_model 32, 8 heads of 8 channels, 2 groups, d_state 8, chunk 5 (17 tokens span 4 chunks)."""
    torch.manual_seed(seed)
    kwargs = dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, state_size=8, expand=2, num_heads=8,
                  head_dim=8, n_groups=2, conv_kernel=4, chunk_size=5, tie_word_embeddings=True,
                  eos_token_id=0, bos_token_id=0, pad_token_id=0)
    kwargs.update(overrides)
    model = transformers.Mamba2ForCausalLM(transformers.Mamba2Config(**kwargs)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * noise)
    return model


def save_transformers_layout(model, folder: Path, tokenizer: Tokenizer | None = None) -> Path:
    model.save_pretrained(folder, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save(str(folder / "tokenizer.json"))
    return folder


def save_mamba_ssm_layout(model, folder: Path, pad_vocab_size_multiple: int = 8) -> Path:
    """The same weights as mamba_ssm's MambaLMHeadModel would save them: its config keys and pytorch_model.bin.

    The config's vocab_size is left unpadded (as in the public checkpoints); padding recovers the embedding rows.
    """
    cfg = model.config
    rows = cfg.vocab_size
    if rows % pad_vocab_size_multiple:
        pad_vocab_size_multiple = 1  # mamba_ssm embeddings always hold a whole number of multiples
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "d_model": cfg.hidden_size, "n_layer": cfg.num_hidden_layers,
        "vocab_size": rows - (pad_vocab_size_multiple - 1 if rows % pad_vocab_size_multiple == 0 else 0),
        "ssm_cfg": {"d_state": cfg.state_size, "d_conv": cfg.conv_kernel, "expand": cfg.expand,
                    "dt_rank": cfg.time_step_rank, "conv_bias": cfg.use_conv_bias, "bias": cfg.use_bias},
        "rms_norm": True, "residual_in_fp32": cfg.residual_in_fp32, "fused_add_norm": True,
        "pad_vocab_size_multiple": pad_vocab_size_multiple, "tie_embeddings": cfg.tie_word_embeddings,
    }
    (folder / "config.json").write_text(json.dumps(config))
    state = {k.replace("backbone.embeddings.", "backbone.embedding."): v.clone() for k, v in model.state_dict().items()}
    torch.save(state, folder / "pytorch_model.bin")
    return folder


def save_mamba_ssm_mamba2_layout(model, folder: Path) -> Path:
    """A transformers Mamba2ForCausalLM's weights as mamba_ssm's MambaLMHeadModel (Mamba2 blocks) would save them:
    config.json with ``ssm_cfg.layer = "Mamba2"`` and pytorch_model.bin with mamba_ssm's names. The config's
    vocab_size is left unpadded (one row less than the embedding, rounded up by pad_vocab_size_multiple)."""
    cfg = model.config
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "d_model": cfg.hidden_size, "d_intermediate": 0, "n_layer": cfg.num_hidden_layers,
        "vocab_size": cfg.vocab_size - 1,
        "ssm_cfg": {"layer": "Mamba2", "d_state": cfg.state_size, "d_conv": cfg.conv_kernel, "expand": cfg.expand,
                    "headdim": cfg.head_dim, "ngroups": cfg.n_groups, "chunk_size": cfg.chunk_size,
                    "bias": cfg.use_bias, "conv_bias": cfg.use_conv_bias, "A_init_range": [1, 16]},
        "attn_layer_idx": [], "attn_cfg": {}, "rms_norm": True, "residual_in_fp32": cfg.residual_in_fp32,
        "norm_epsilon": cfg.layer_norm_epsilon, "fused_add_norm": True, "pad_vocab_size_multiple": cfg.vocab_size,
        "tie_embeddings": cfg.tie_word_embeddings,
    }
    (folder / "config.json").write_text(json.dumps(config))
    state = {k.replace("backbone.embeddings.", "backbone.embedding."): v.clone() for k, v in model.state_dict().items()}
    torch.save(state, folder / "pytorch_model.bin")
    return folder


@contextlib.contextmanager
def transformers_keeps_float64():
    """transformers' slow Mamba path casts to float32 inside (``.float()``, RMSNorm's ``.to(torch.float32)``,
    ``residual.to(torch.float32)``), which in a float64 comparison would measure float32 rounding, not the math.
    Within this block those float64 -> float32 casts are no-ops; every other conversion is untouched."""
    orig_to, orig_float = torch.Tensor.to, torch.Tensor.float

    def to(self, *args, **kwargs):
        if self.dtype == torch.float64 and (torch.float32 in args or kwargs.get("dtype") == torch.float32):
            return self
        return orig_to(self, *args, **kwargs)

    def float_(self, *args, **kwargs):
        return self if self.dtype == torch.float64 else orig_float(self, *args, **kwargs)

    torch.Tensor.to, torch.Tensor.float = to, float_
    try:
        yield
    finally:
        torch.Tensor.to, torch.Tensor.float = orig_to, orig_float


def run_cli(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``python -m edge_quamba ARGS`` in a subprocess, as a user would (exit code, stdout, stderr)."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "edge_quamba", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout)


def cli_in_process(*args: str) -> subprocess.CompletedProcess:
    """Run ``edge-quamba ARGS`` through ``edge_quamba.cli.main`` in this process (no interpreter and torch start-up,
    about a second faster than :func:`run_cli`); returns the exit code, stdout and stderr like run_cli."""
    import io

    from edge_quamba.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def one_error_line(proc: subprocess.CompletedProcess, prog: str = "edge-quamba") -> str:
    """The single error line of a failed command: non-zero exit, no traceback, exactly one line on stderr that
    starts with "PROG: error:" (progress output before it is allowed only when it is not an error line)."""
    print(proc.stdout, proc.stderr)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith(f"{prog}: error:")]
    assert len(errors) == 1, f"expected one error line, got: {proc.stderr!r}"
    assert proc.stderr.rstrip("\n").splitlines()[-1] == errors[0]
    return errors[0]


def report(name: str, diff: torch.Tensor) -> float:
    """Print max and mean absolute difference (house style: print before asserting); return the max."""
    diff = diff.abs().double()
    print(f"{name}: max abs diff {diff.max().item():.3e}, mean {diff.mean().item():.3e}")
    return diff.max().item()


@torch.no_grad()
def decode_stepwise(model, tokens: torch.Tensor):
    """Teacher-forced decode with ``model.step`` from empty states: tokens (b, l) -> logits (b, l, v), final states."""
    states = model.empty_states(tokens.shape[0])
    stepped = []
    for t in range(tokens.shape[1]):
        logits, states = model.step(tokens[:, t], states)
        stepped.append(logits)
    return torch.stack(stepped, 1), states


QUICK_CALIB = ("--calib-samples", "2", "--calib-seq-len", "32")
"""The smallest calibration the CLI accepts quickly (tests that need an artifact, not its quality)."""


def fp_quantized_export_folders(root: Path) -> dict:
    """An fp checkpoint (transformers layout), its quantized artifact and its export folder, and calibration text,
    under ``root``: {"fp", "q", "x", "calib", "hf"}."""
    tokenizer = make_tokenizer(120)
    hf = random_hf_model(seed=21, vocab_size=tokenizer.get_vocab_size())
    fp = save_transformers_layout(hf, root / "fp", tokenizer)
    calib = root / "calib.txt"
    calib.write_text(TEXT * 4)
    proc = cli_in_process("quantize", "--model", str(fp), "--out", str(root / "q"), "--calib-data", str(calib),
                          *QUICK_CALIB)
    assert proc.returncode == 0, proc.stderr
    proc = cli_in_process("export", "--model", str(root / "q"), "--out", str(root / "x"), "--calib-data", str(calib),
                          "--target", "ort", "--validate-prompt-len", "8", "--validate-decode-steps", "1")
    assert proc.returncode == 0, proc.stderr
    return {"fp": fp, "q": root / "q", "x": root / "x", "calib": calib, "hf": hf}


def default_signals() -> None:
    """A subprocess's ``preexec_fn``: SIGINT and SIGTERM back to their defaults in the child, whatever this test run
    inherited (a shell starts a background job, ``pytest ... &``, with SIGINT ignored, and the child would keep it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)

