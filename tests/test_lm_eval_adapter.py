"""The lm-eval adapter, offline: a tiny loglikelihood task defined over a local jsonl file, run through
`edge-quamba-lm-eval` (lm_eval's own CLI with our model registered); its accuracy must equal our own greedy check."""

import json
import subprocess
import sys

import torch

from edge_quamba.models.loading import load_fp_model
from helpers import make_tokenizer, random_hf_model, save_transformers_layout

DOCS = [("The quick brown", " fox"), ("State space models scan", " a"), ("Jetson boards run small", " language"),
        ("Quantization maps real numbers to", " a"), ("one token at a", " time")]


def test_lm_eval_cli_on_local_task(tmp_path):
    tokenizer = make_tokenizer(120)
    hf = random_hf_model(seed=21, vocab_size=tokenizer.get_vocab_size(), noise=0.3)
    model_dir = save_transformers_layout(hf, tmp_path / "model", tokenizer)
    data = tmp_path / "tiny.jsonl"
    data.write_text("".join(json.dumps({"context": c, "continuation": t}) + "\n" for c, t in DOCS))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "tiny.yaml").write_text(
        "task: edge_quamba_tiny\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\noutput_type: loglikelihood\n"
        'doc_to_text: "{{context}}"\ndoc_to_target: "{{continuation}}"\n'
        "metric_list:\n  - metric: acc\n"
    )
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-c", "from edge_quamba.eval.harness import main; main()",
         "run", "--model", "edge-quamba", "--model_args", f"path={model_dir}", "--tasks", "edge_quamba_tiny",
         "--include_path", str(tasks), "--output_path", str(out), "--log_samples"],
        capture_output=True, text=True, timeout=600,
        env={**__import__("os").environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"},
    )
    print(proc.stdout[-3000:], proc.stderr[-3000:])
    assert proc.returncode == 0
    result_files = list(out.rglob("results_*.json"))
    assert result_files, "lm_eval wrote no results file"
    acc = json.loads(result_files[0].read_text())["results"]["edge_quamba_tiny"]["acc,none"]

    samples = [json.loads(line) for f in out.rglob("samples_edge_quamba_tiny_*.jsonl") for line in f.open()]
    logged = {s["doc"]["context"]: float(s["resps"][0][0][0]) for s in samples}

    model = load_fp_model(model_dir)
    greedy = 0
    for context, continuation in DOCS:
        ids = tokenizer.encode(context + continuation).ids
        n_ctx = len(tokenizer.encode(context).ids)
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids[:-1]]))[0][0, n_ctx - 1:], -1)
        target = torch.tensor(ids[n_ctx:])
        expected = float(logp.gather(-1, target[:, None]).sum())
        greedy += torch.equal(logp.argmax(-1), target)
        print(f"{context!r}: lm_eval {logged[context]:.5f}, ours {expected:.5f}")
        assert abs(logged[context] - expected) < 1e-4
    print("lm_eval acc", acc, "expected", greedy / len(DOCS))
    assert acc == greedy / len(DOCS)
