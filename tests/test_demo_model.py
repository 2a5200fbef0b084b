"""The shipped demo models: what they are, that they are the public Mamba / Mamba2, that they learned English, and
that the CLI runs the Mamba1 one without --model and the Mamba2 one with --model demo-mamba2."""

import json

import pytest
import torch
import transformers

from edge_quamba.folders import open_model
from edge_quamba.models.config import Mamba2Config
from edge_quamba.models.loading import load_fp_model
from edge_quamba.resources import default_evaluation_file, demo_model_dir
from helpers import run_cli

PPL_SLICE_TOKENS = 4096
PPL_BOUND = 120.0
"""Bound on the demo model's perplexity over the first 4096 scored tokens of the evaluation split (8 windows of 512).
Measured: 77.5 on this slice (the test prints it) and 92.0 on the whole split, against 1025.6 for a unigram
baseline (benchmarks/results/demo_model_eval.json); a uniform guess over this vocabulary scores 8192."""


def test_demo_model_is_shipped_with_the_public_block_shape():
    folder = demo_model_dir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (folder / name).is_file(), name
    assert (folder / "model.safetensors").stat().st_size <= 25_000_000
    config = open_model(str(folder)).config
    assert (config.d_state, config.expand, config.d_conv) == (16, 2, 4)
    assert config.d_inner == 768 and config.d_inner % 64 == 0 and config.d_inner & (config.d_inner - 1) != 0


def test_demo_model_reference_matches_transformers():
    """The reference and transformers' MambaForCausalLM agree on the trained weights (fp32, realistic activations)."""
    tokens = torch.tensor([[0, 17, 250, 1031, 42, 7, 8000, 5, 99, 1000, 3, 64]])
    hf = transformers.MambaForCausalLM.from_pretrained(demo_model_dir(), dtype=torch.float32).eval()
    with torch.no_grad():
        expected = hf(input_ids=tokens).logits
        logits, _ = load_fp_model(demo_model_dir())(tokens)
    assert (logits - expected).abs().max() <= 1e-3 * expected.abs().max()


def test_demo_model_perplexity_under_bound():
    proc = run_cli("eval", "--data", str(default_evaluation_file()), "--max-tokens", str(PPL_SLICE_TOKENS),
                   "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    print("demo model perplexity on the slice:", report["perplexity"])
    assert report["scored_tokens"] >= PPL_SLICE_TOKENS - report["windows"]
    assert report["perplexity"] < PPL_BOUND


@pytest.mark.parametrize("sampling", [["--temperature", "0"], ["--temperature", "0.8", "--top-p", "0.9", "--seed", "3"]])
def test_run_without_model_uses_the_demo_model(sampling):
    prompt = "The function returns"
    args = ("run", "--prompt", prompt, "--max-new-tokens", "16", *sampling, "--json")
    default = run_cli(*args)
    explicit = run_cli(*args, "--model", str(demo_model_dir()))
    assert default.returncode == 0, default.stderr
    assert explicit.returncode == 0, explicit.stderr
    out, out_explicit = json.loads(default.stdout), json.loads(explicit.stdout)
    assert out["tokens"] == out_explicit["tokens"]
    assert len(out["tokens"]) == 16 and out["text"].strip()


# -- the Mamba2 demo model (`--model demo-mamba2`) -------------------------------------------------------------------

MAMBA2_PPL_BOUND = 75.0
"""Same slice as the Mamba1 demo. Measured: 60.0 on this slice (the test prints it) and 67.04 on the whole split
(benchmarks/results/demo_model_mamba2_eval.json), against 1025.6 for the unigram baseline. The bound is tight enough
to catch the gated norm scored ungrouped or grouped against how the weights were trained (the first demo, trained
ungrouped and scored grouped, measured 84.0 on this slice)."""


def test_mamba2_demo_model_is_shipped_with_its_shape():
    folder = demo_model_dir("demo-mamba2")
    for name in ("config.json", "model.safetensors", "tokenizer.json", "train_log.json"):
        assert (folder / name).is_file(), name
    assert (folder / "model.safetensors").stat().st_size <= 25_000_000
    assert (folder / "tokenizer.json").read_bytes() == (demo_model_dir() / "tokenizer.json").read_bytes()
    config = open_model(str(folder)).config
    assert isinstance(config, Mamba2Config)
    assert (config.d_model, config.n_layer, config.d_inner, config.nheads, config.headdim, config.d_state,
            config.ngroups, config.chunk_size, config.vocab_size) == (384, 8, 768, 12, 64, 64, 2, 64, 8192)


def test_mamba2_demo_model_reference_matches_transformers():
    """The reference and transformers' Mamba2ForCausalLM agree on the trained weights (fp32, 144 tokens: three
    chunks of 64)."""
    tokens = torch.tensor([[0, 17, 250, 1031, 42, 7, 8000, 5, 99, 1000, 3, 64] * 12])
    hf = transformers.Mamba2ForCausalLM.from_pretrained(demo_model_dir("demo-mamba2"), dtype=torch.float32).eval()
    with torch.no_grad():
        expected = hf(input_ids=tokens).logits
        logits, _ = load_fp_model(demo_model_dir("demo-mamba2"))(tokens)
    print("max diff", (logits - expected).abs().max().item(), "max |logit|", expected.abs().max().item())
    assert (logits - expected).abs().max() <= 1e-3 * expected.abs().max()


def test_mamba2_demo_model_perplexity_under_bound():
    proc = run_cli("eval", "--model", "demo-mamba2", "--data", str(default_evaluation_file()), "--max-tokens",
                   str(PPL_SLICE_TOKENS), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    print("Mamba2 demo model perplexity on the slice:", report["perplexity"])
    assert report["model"] == str(demo_model_dir("demo-mamba2"))
    assert report["scored_tokens"] >= PPL_SLICE_TOKENS - report["windows"]
    assert report["perplexity"] < MAMBA2_PPL_BOUND


def test_demo_mamba2_name_selects_the_mamba2_demo():
    args = ("run", "--prompt", "The function returns", "--max-new-tokens", "8", "--temperature", "0", "--json")
    by_name = run_cli(*args, "--model", "demo-mamba2")
    by_path = run_cli(*args, "--model", str(demo_model_dir("demo-mamba2")))
    default = run_cli(*args)
    for proc in (by_name, by_path, default):
        assert proc.returncode == 0, proc.stderr
    tokens = [json.loads(p.stdout)["tokens"] for p in (by_name, by_path, default)]
    print(tokens)
    assert tokens[0] == tokens[1] and len(tokens[0]) == 8
    assert tokens[0] != tokens[2]  # no --model is still the Mamba1 demo
