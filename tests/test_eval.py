"""`edge-quamba eval`: held-out perplexity over non-overlapping windows, checked against a direct computation."""

import json
import math

import torch

from edge_quamba.models.loading import load_fp_model
from helpers import TEXT, make_tokenizer, random_hf_model, run_cli, save_transformers_layout


def test_eval_perplexity_matches_direct_computation(tmp_path):
    tokenizer = make_tokenizer(120)
    hf = random_hf_model(seed=31, vocab_size=tokenizer.get_vocab_size())
    folder = save_transformers_layout(hf, tmp_path / "m", tokenizer)
    data = tmp_path / "eval.txt"
    data.write_text(TEXT)
    proc = run_cli("eval", "--model", str(folder), "--data", str(data), "--seq-len", "32", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)

    ids = tokenizer.encode(TEXT).ids
    n_windows = len(ids) // 32
    model = load_fp_model(folder)
    nll, count = 0.0, 0
    with torch.no_grad():
        for w in range(n_windows):
            window = torch.tensor([ids[32 * w: 32 * (w + 1)]])
            logp = torch.log_softmax(model(window)[0][0, :-1].double(), -1)
            nll -= float(logp.gather(-1, window[0, 1:, None]).sum())
            count += 31
    print("eval", report["perplexity"], "direct", math.exp(nll / count))
    assert report["windows"] == n_windows and report["scored_tokens"] == count
    assert math.isclose(report["perplexity"], math.exp(nll / count), rel_tol=1e-5)


def test_eval_bad_data(tmp_path):
    tokenizer = make_tokenizer(120)
    folder = save_transformers_layout(random_hf_model(vocab_size=tokenizer.get_vocab_size()), tmp_path / "m", tokenizer)
    empty = tmp_path / "empty.txt"
    empty.write_text("   \n")
    proc = run_cli("eval", "--model", str(folder), "--data", str(empty))
    assert proc.returncode == 1 and "holds no text" in proc.stderr
    missing = run_cli("eval", "--data", str(tmp_path / "nope.txt"))
    assert missing.returncode == 2 and "nope.txt" in missing.stderr
