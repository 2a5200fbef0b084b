"""One line per bad input, never a traceback: sampling numerics, seeds, prompts, data files, option values, config
values, --json errors, and the lm-eval entry point. Tiny random models built here; the CLI runs in-process
(cli_in_process) except where a subprocess is the point (lm-eval)."""

import json
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from edge_quamba.runtime.sampling import NumericsError, SamplingConfig, sample_next
from helpers import TEXT, cli_in_process, make_tokenizer, one_error_line, random_hf_model, save_transformers_layout

PROMPT = "The quick brown fox"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    tokenizer = make_tokenizer(120)
    hf = random_hf_model(seed=13, vocab_size=tokenizer.get_vocab_size(), noise=0.3)
    folder = save_transformers_layout(hf, tmp_path_factory.mktemp("bad") / "model", tokenizer)
    (folder.parent / "eval.txt").write_text(TEXT)
    return folder


def with_weights(model, tmp_path, name, change):
    folder = tmp_path / name
    shutil.copytree(model, folder)
    state = load_file(folder / "model.safetensors")
    change(state)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def overflow_to_nan(state):
    """Huge (finite) final-norm weights and embeddings: the logits' sums meet +Inf and -Inf, giving NaN."""
    state["backbone.norm_f.weight"] = torch.full_like(state["backbone.norm_f.weight"].float(), 3e38)
    state["backbone.embeddings.weight"] = state["backbone.embeddings.weight"].float() * 100


def overflow_to_inf(state):
    """Huge final-norm weights: some logits overflow to +-Inf, none is NaN."""
    state["backbone.norm_f.weight"] = torch.full_like(state["backbone.norm_f.weight"].float(), 1e38)


def run_json(folder, *args):
    return cli_in_process("run", "--model", str(folder), "--prompt", PROMPT, "--max-new-tokens", "6", "--json", *args)


# -- sampling numerics ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("temperature", [1e-45, 5e-324, 1e-30])
def test_tiny_temperature_is_greedy(temperature):
    logits = torch.randn(300, generator=torch.Generator().manual_seed(0)) * 30
    config = SamplingConfig(temperature=temperature, top_k=0, top_p=1.0, seed=0)
    chosen = {sample_next(logits, config, config.generator()) for _ in range(20)}
    assert chosen == {int(torch.argmax(logits))}


def test_inf_logits_are_the_candidates_and_nan_is_an_error():
    logits = torch.zeros(10)
    logits[[3, 7]] = float("inf")
    logits[5] = float("-inf")
    for temperature in (0.0, 0.8, 1e-45):
        config = SamplingConfig(temperature=temperature, top_k=0, top_p=0.9, seed=1)
        picks = {sample_next(logits, config, config.generator()) for _ in range(10)}
        assert picks <= {3, 7}
    logits[0] = float("nan")
    with pytest.raises(NumericsError, match="NaN logits"):
        sample_next(logits, SamplingConfig(temperature=0.0), torch.Generator())
    with pytest.raises(NumericsError, match="-Inf for every token"):
        sample_next(torch.full((4,), float("-inf")), SamplingConfig(), torch.Generator())


def test_tiny_temperature_on_the_cli_equals_greedy(model):
    greedy, tiny = run_json(model, "--temperature", "0"), run_json(model, "--temperature", "1e-45", "--seed", "3")
    assert greedy.returncode == 0 and tiny.returncode == 0, tiny.stderr
    assert json.loads(greedy.stdout)["tokens"] == json.loads(tiny.stdout)["tokens"]


@pytest.mark.parametrize("temperature", ["0", "0.8"])
def test_model_overflowing_to_nan_is_one_line(model, tmp_path, temperature):
    folder = with_weights(model, tmp_path, "nan", overflow_to_nan)
    line = one_error_line(run_json(folder, "--temperature", temperature))
    assert "NaN logits" in line


def test_eval_of_a_model_overflowing_to_nan_is_one_line(model, tmp_path):
    folder = with_weights(model, tmp_path, "nan", overflow_to_nan)
    proc = cli_in_process("eval", "--model", str(folder), "--data", str(model.parent / "eval.txt"), "--seq-len", "16",
                          "--json")
    assert "NaN or Inf" in one_error_line(proc) and set(json.loads(proc.stdout)) == {"error"}


@pytest.mark.parametrize("temperature", ["0", "0.8"])
def test_model_overflowing_to_inf_samples_among_the_inf_tokens(model, tmp_path, temperature):
    from edge_quamba.models.loading import load_fp_model
    from edge_quamba.models.tokenizer import load_tokenizer

    folder = with_weights(model, tmp_path, "inf", overflow_to_inf)
    prompt = load_tokenizer(folder).encode(PROMPT)
    with torch.no_grad():
        logits = load_fp_model(folder)(torch.tensor([prompt]))[0][0, -1]
    candidates = set(torch.nonzero(torch.isposinf(logits)).flatten().tolist())
    print(f"prefill logits: {len(candidates)} +Inf, {int(torch.isnan(logits).sum())} NaN")
    assert candidates and not torch.isnan(logits).any()  # the premise: overflow to +Inf, no NaN yet
    seed = ["--seed", "0"] if temperature != "0" else []  # greedy decoding refuses a seed (nothing is sampled)
    proc = run_json(folder, "--temperature", temperature, *seed, "--max-new-tokens", "1")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["tokens"][0] in candidates


# -- option values --------------------------------------------------------------------------------------------------

BAD_RUN_OPTIONS = {
    "seed 2**70": (["--seed", str(2**70)], "--seed"),
    "negative seed": (["--seed", "-1"], "--seed"),
    "temperature inf": (["--temperature", "inf"], "--temperature"),
    "temperature nan": (["--temperature", "nan"], "--temperature"),
    "invalid utf-8 prompt": (["--prompt", "\udcff\udcfe abc"], "--prompt is not valid UTF-8 text (byte 0xff"),
}


@pytest.mark.parametrize("case", sorted(BAD_RUN_OPTIONS))
def test_bad_run_option_is_one_line_and_one_json_error(model, case):
    args, words = BAD_RUN_OPTIONS[case]
    proc = run_json(model, *args)
    assert words in one_error_line(proc)
    error = json.loads(proc.stdout)  # exactly one JSON object on stdout
    assert set(error) == {"error"} and words in error["error"]


def test_seed_at_the_top_of_the_range_is_accepted(model):
    proc = run_json(model, "--seed", str(2**64 - 1), "--temperature", "1")
    assert proc.returncode == 0, proc.stderr


def test_invalid_utf8_prompt_from_a_real_command_line(model):
    """The bytes as a shell passes them (Python decodes argv with surrogateescape)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable.encode(), b"-m", b"edge_quamba", b"run", b"--model", str(model).encode(),
                           b"--prompt", b"\xff\xfe bad"], capture_output=True, env=env, timeout=300)
    proc = subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode())
    assert "not valid UTF-8" in one_error_line(proc)


@pytest.mark.parametrize("args, words", [
    (["--prompt-len", "300000"], "--prompt-len 300000 must be between 1 and 4096 (--max-prompt-tokens)"),
    (["--prompt-len", "64", "--max-prompt-tokens", "32"], "between 1 and 32"),
])
def test_bench_caps_the_prompt_length(model, args, words):
    proc = cli_in_process("bench", "--model", str(model), *args, "--json")
    assert words in one_error_line(proc) and words in json.loads(proc.stdout)["error"]


@pytest.mark.parametrize("content", [bytes(range(256)) * 8, b"\x00" * 100, b"text then \xff\xfe binary"])
def test_binary_calib_data_on_export_is_one_line(model, tmp_path, content):
    calib = tmp_path / "calib.bin"
    calib.write_bytes(content)
    proc = cli_in_process("export", "--model", str(model), "--out", str(tmp_path / "x"), "--calib-data", str(calib))
    line = one_error_line(proc)
    assert f"--calib-data {calib}" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib.bin"]


def test_short_calib_data_is_refused_before_the_weights_load(model, tmp_path, monkeypatch):
    """A calibration text with fewer tokens than the windows need: one line naming it, before the fp weights are
    loaded (the cheap check first), nothing written."""
    from edge_quamba.quant import pipeline

    calib = tmp_path / "short.txt"
    calib.write_text("a few words only")

    def no_load(*args, **kwargs):
        raise AssertionError("the weights were loaded before the calibration text was checked")

    monkeypatch.setattr(pipeline, "load_fp_model", no_load)
    proc = cli_in_process("quantize", "--model", str(model), "--out", str(tmp_path / "q"), "--calib-data", str(calib))
    line = one_error_line(proc)
    assert f"calibration data {calib} has" in line and "--calib-samples" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["short.txt"]


def test_eval_errors_with_json(model, tmp_path):
    binary = tmp_path / "data.bin"
    binary.write_bytes(b"\xff\xfe\x00" * 50)
    proc = cli_in_process("eval", "--model", str(model), "--data", str(binary), "--json")
    assert "UTF-8" in one_error_line(proc) and "error" in json.loads(proc.stdout)
    proc = cli_in_process("eval", "--model", str(model), "--data", str(tmp_path / "nope.txt"), "--json")
    assert proc.returncode == 2 and "nope.txt" in json.loads(proc.stdout)["error"]


# -- config values --------------------------------------------------------------------------------------------------

BAD_CONFIGS = {
    "eos_token_id abc": ({"eos_token_id": "abc"}, "eos_token_id='abc'"),
    "eos_token_id list of text": ({"eos_token_id": ["x"]}, "eos_token_id='x'"),
    "hidden_size text": ({"hidden_size": "abc"}, "d_model='abc'"),
    "num_hidden_layers float": ({"num_hidden_layers": 1e6}, "n_layer=1000000.0"),
    "use_bias text": ({"use_bias": "yes"}, "proj_bias='yes'"),
    "layer_norm_epsilon text": ({"layer_norm_epsilon": "small"}, "norm_eps='small'"),
    "model_type list": ({"model_type": ["mamba"]}, "model_type=['mamba']"),
    "time_step_rank negative": ({"time_step_rank": -3}, "dt_rank=-3"),
}
BAD_MAMBA_SSM_CONFIGS = {
    "pad_vocab_size_multiple 0": ({"pad_vocab_size_multiple": 0}, "pad_vocab_size_multiple=0"),
    "ssm_cfg a list": ({"ssm_cfg": [16, 4]}, "ssm_cfg must be a JSON object"),
    "ssm_cfg d_state text": ({"ssm_cfg": {"d_state": "16"}}, "d_state='16'"),
    "vocab_size text": ({"vocab_size": "many"}, "vocab_size='many'"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS) + sorted(BAD_MAMBA_SSM_CONFIGS))
def test_bad_config_value_is_one_line(model, tmp_path, case):
    folder = tmp_path / "m"
    shutil.copytree(model, folder)
    config = json.loads((folder / "config.json").read_text())
    if case in BAD_MAMBA_SSM_CONFIGS:
        changes, words = BAD_MAMBA_SSM_CONFIGS[case]
        config = {"d_model": 32, "n_layer": 2, "vocab_size": 257, "ssm_cfg": {}, "pad_vocab_size_multiple": 1}
    else:
        changes, words = BAD_CONFIGS[case]
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))
    line = one_error_line(run_json(folder))
    assert str(folder / "config.json") in line and words in line


# -- edge-quamba-lm-eval ---------------------------------------------------------------------------------------------

def lm_eval(*args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", "from edge_quamba.eval.harness import main; main()", "run",
                           "--model", "edge-quamba", *args], capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.parametrize("case", ["bad path", "NaN model", "unknown task"])
def test_lm_eval_errors_are_one_line(model, tmp_path, case):
    folder = {"bad path": lambda: tmp_path / "nope",
              "NaN model": lambda: with_weights(model, tmp_path, "nanw", lambda s: s["backbone.norm_f.weight"].fill_(
                  math.nan)),
              "unknown task": lambda: model}[case]()
    proc = lm_eval("--model_args", f"path={folder}", "--tasks", "no_such_task_xyz" if case == "unknown task"
                   else "lambada_openai")
    line = one_error_line(proc, prog="edge-quamba-lm-eval")
    expected = {"bad path": f"--model_args path={folder}: no such folder",
                "NaN model": "backbone.norm_f.weight holds NaN",
                "unknown task": "--tasks: no such task: no_such_task_xyz"}[case]
    assert expected in line
