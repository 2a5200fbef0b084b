"""The commands on an fp Mamba2 folder: `run` and `eval` agree with transformers' Mamba2ForCausalLM, `bench --backend
ref` measures it, and `quantize` / `export` without --method quamba2 refuse it in one line."""

import json

import pytest
import torch

from helpers import (TEXT, cli_in_process, make_tokenizer, one_error_line, random_hf_mamba2,
                     save_mamba_ssm_mamba2_layout, save_transformers_layout)

PROMPT = "The quick brown fox"


@pytest.fixture(scope="module")
def tiny_mamba2(tmp_path_factory):
    """A random tiny Mamba2 (2 groups, chunk 5) in transformers layout with a tokenizer.json made here."""
    tokenizer = make_tokenizer(120)
    hf = random_hf_mamba2(seed=11, vocab_size=tokenizer.get_vocab_size(), noise=0.3)
    folder = save_transformers_layout(hf, tmp_path_factory.mktemp("tiny_mamba2"), tokenizer)
    return folder, hf, tokenizer


def test_greedy_run_matches_transformers_generate(tiny_mamba2):
    folder, hf, tokenizer = tiny_mamba2
    proc = cli_in_process("run", "--model", str(folder), "--prompt", PROMPT, "--temperature", "0",
                          "--max-new-tokens", "12", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    prompt_ids = tokenizer.encode(PROMPT).ids
    with torch.no_grad():
        expected = hf.float().generate(torch.tensor([prompt_ids]), max_new_tokens=12, do_sample=False,
                                       eos_token_id=0, pad_token_id=0)[0, len(prompt_ids):].tolist()
    print("ours", out["tokens"], "\ntransformers", expected)
    assert out["prompt_tokens"] == prompt_ids and out["tokens"] == expected


def test_eval_matches_transformers_loss(tiny_mamba2, tmp_path):
    """Three windows of 16 tokens: the perplexity `eval` reports is transformers' mean next-token loss."""
    folder, hf, tokenizer = tiny_mamba2
    data = tmp_path / "text.txt"
    data.write_text(TEXT)
    proc = cli_in_process("eval", "--model", str(folder), "--data", str(data), "--seq-len", "16", "--max-tokens",
                          "48", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    windows = torch.tensor(tokenizer.encode(TEXT).ids[:48]).view(3, 16)
    with torch.no_grad():
        expected = hf.float()(windows, labels=windows).loss.item()
    print("eval nll", report["nll_per_token"], "transformers loss", expected)
    assert report["windows"] == 3 and report["scored_tokens"] == 45
    assert abs(report["nll_per_token"] - expected) <= 1e-5


def test_mamba_ssm_layout_runs_like_transformers_layout(tiny_mamba2, tmp_path):
    folder, hf, _ = tiny_mamba2
    ssm = save_mamba_ssm_mamba2_layout(hf, tmp_path / "ssm")
    args = ("run", "--prompt", PROMPT, "--temperature", "0", "--max-new-tokens", "8", "--json")
    ours = cli_in_process(*args, "--model", str(ssm), "--tokenizer", str(folder / "tokenizer.json"))
    theirs = cli_in_process(*args, "--model", str(folder))
    assert ours.returncode == 0, ours.stderr
    assert json.loads(ours.stdout)["tokens"] == json.loads(theirs.stdout)["tokens"]


def test_bench_ref_measures_mamba2(tiny_mamba2):
    folder, _, _ = tiny_mamba2
    proc = cli_in_process("bench", "--model", str(folder), "--backend", "ref", "--prompt-len", "8",
                          "--new-tokens", "4", "--repeats", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    print(report)
    assert report["ttft_ms"] > 0 and report["tpot_ms"] > 0 and report["decode_tokens_per_s"] > 0


@pytest.mark.parametrize("command", ["quantize", "export"])
def test_quamba_on_mamba2_is_refused(tiny_mamba2, tmp_path, command):
    """Mamba2 is quantized by --method quamba2 only (tests/test_quamba2.py runs it end to end)."""
    folder, _, _ = tiny_mamba2
    line = one_error_line(cli_in_process(command, "--model", str(folder), "--out", str(tmp_path / "out")))
    assert "Mamba2 model is quantized with --method quamba2" in line or "Mamba2 model is not supported yet" in line
    assert not (tmp_path / "out").exists()


def test_bad_mamba2_config_in_folder_is_one_line(tiny_mamba2, tmp_path):
    import shutil

    folder, _, _ = tiny_mamba2
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    config = json.loads((broken / "config.json").read_text())
    config["n_groups"] = 3
    (broken / "config.json").write_text(json.dumps(config))
    line = one_error_line(cli_in_process("run", "--model", str(broken), "--prompt", PROMPT))
    assert "nheads = 8 is not a multiple of ngroups 3" in line
