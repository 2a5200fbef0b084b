"""`edge-quamba run` end to end (subprocess, as a user runs it) and the one-line errors on bad input."""

import importlib.util
import json

import pytest
import torch

from helpers import make_tokenizer, random_hf_model, run_cli, save_transformers_layout

PROMPT = "The quick brown fox"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A random tiny model in transformers layout with a tokenizer.json made here (vocab = tokenizer vocab)."""
    tokenizer = make_tokenizer(120)
    hf = random_hf_model(seed=11, vocab_size=tokenizer.get_vocab_size(), noise=0.3)
    folder = save_transformers_layout(hf, tmp_path_factory.mktemp("tiny"), tokenizer)
    return folder, hf, tokenizer


def one_error_line(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    print(proc.stderr)
    assert proc.returncode != 0
    assert len(lines) == 1, f"expected one error line, got: {proc.stderr!r}"
    assert lines[0].startswith("edge-quamba: error:")
    return lines[0]


def test_greedy_json_matches_transformers_generate(tiny_model):
    folder, hf, tokenizer = tiny_model
    proc = run_cli("run", "--model", str(folder), "--prompt", PROMPT, "--temperature", "0",
                   "--max-new-tokens", "24", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)  # exactly one JSON object on stdout
    prompt_ids = tokenizer.encode(PROMPT).ids
    with torch.no_grad():
        expected = hf.float().generate(torch.tensor([prompt_ids]), max_new_tokens=24, do_sample=False,
                                       eos_token_id=0, pad_token_id=0)[0, len(prompt_ids):].tolist()
    print("ours", out["tokens"], "\ntransformers", expected)
    assert out["prompt_tokens"] == prompt_ids
    assert out["tokens"] == expected
    assert out["backend"] == "ref" and out["ttft_ms"] > 0
    assert out["text"] == tokenizer.decode([t for t in expected if t != 0])


def test_streamed_text_equals_json_text(tiny_model):
    folder, _, _ = tiny_model
    args = ["run", "--model", str(folder), "--prompt", PROMPT, "--temperature", "0", "--max-new-tokens", "16"]
    streamed = run_cli(*args)
    as_json = json.loads(run_cli(*args, "--json").stdout)
    assert streamed.returncode == 0
    assert streamed.stdout.rstrip("\n") == as_json["text"]
    assert "TTFT" in streamed.stderr


def test_sampling_is_seeded(tiny_model):
    folder, _, _ = tiny_model
    args = ["run", "--model", str(folder), "--prompt", PROMPT, "--temperature", "1.5", "--top-k", "0",
            "--top-p", "1", "--max-new-tokens", "20", "--json"]
    first = json.loads(run_cli(*args, "--seed", "1").stdout)["tokens"]
    again = json.loads(run_cli(*args, "--seed", "1").stdout)["tokens"]
    other = json.loads(run_cli(*args, "--seed", "2").stdout)["tokens"]
    assert first == again
    assert first != other


def test_mamba_ssm_folder_runs_with_tokenizer_option(tiny_model, tmp_path):
    from helpers import save_mamba_ssm_layout

    folder, hf, _ = tiny_model
    ssm = save_mamba_ssm_layout(hf, tmp_path / "ssm")
    missing = run_cli("run", "--model", str(ssm), "--prompt", PROMPT)
    assert "--tokenizer" in one_error_line(missing)
    proc = run_cli("run", "--model", str(ssm), "--tokenizer", str(folder / "tokenizer.json"), "--prompt", PROMPT,
                   "--temperature", "0", "--max-new-tokens", "8", "--json")
    reference = run_cli("run", "--model", str(folder), "--prompt", PROMPT, "--temperature", "0",
                        "--max-new-tokens", "8", "--json")
    assert json.loads(proc.stdout)["tokens"] == json.loads(reference.stdout)["tokens"]


@pytest.fixture
def broken(tiny_model, tmp_path):
    """Copies of the tiny model, each broken in one way."""
    import shutil

    folder, _, _ = tiny_model

    def make(name, breaker):
        target = tmp_path / name
        shutil.copytree(folder, target)
        breaker(target)
        return target

    return make


def _set_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key)
        else:
            config[key] = value
    (folder / "config.json").write_text(json.dumps(config))


def _nan_weight(folder):
    from safetensors.torch import load_file, save_file

    state = load_file(folder / "model.safetensors")
    key = "backbone.layers.0.mixer.x_proj.weight"
    state[key][0, 0] = float("nan")
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})


BAD_MODELS = {
    "no config": (lambda f: (f / "config.json").unlink(), "holds no config.json"),
    "corrupt safetensors": (lambda f: (f / "model.safetensors").write_bytes(b"\x00garbage" * 10), "safetensors"),
    "missing key": (lambda f: _set_config(f, hidden_size=None), "missing the required key 'hidden_size'"),
    "unknown model_type": (lambda f: _set_config(f, model_type="llama"), "unknown model_type 'llama'"),
    "mamba1 config labelled mamba2": (lambda f: _set_config(f, model_type="mamba2"), "num_heads * head_dim"),
    "wrong shapes": (lambda f: _set_config(f, hidden_size=64), "shape"),
    "NaN weight": (_nan_weight, "backbone.layers.0.mixer.x_proj.weight holds NaN"),
    "bad json": (lambda f: (f / "config.json").write_text("{not json"), "not readable JSON"),
}


@pytest.mark.parametrize("case", sorted(BAD_MODELS))
def test_bad_model_folder_is_one_line_error(broken, case):
    breaker, expected = BAD_MODELS[case]
    folder = broken(case.replace(" ", "_"), breaker)
    line = one_error_line(run_cli("run", "--model", str(folder), "--prompt", PROMPT))
    assert expected in line


def test_missing_folder(tmp_path):
    line = one_error_line(run_cli("run", "--model", str(tmp_path / "nope"), "--prompt", PROMPT))
    assert "no such folder" in line


def test_hub_id_while_offline():
    line = one_error_line(run_cli("run", "--model", "state-spaces/mamba-130m-hf", "--prompt", PROMPT))
    assert "state-spaces/mamba-130m-hf" in line and "HF_HUB_OFFLINE" in line


def test_unknown_flag(tiny_model):
    line = one_error_line(run_cli("run", "--model", str(tiny_model[0]), "--prompt", PROMPT, "--bogus"))
    assert "--bogus" in line


@pytest.mark.parametrize("args, expected", [
    (["--prompt", ""], "prompt is empty"),
    (["--prompt", PROMPT * 20, "--max-prompt-tokens", "16"], "the limit is 16"),
    (["--prompt", PROMPT, "--top-p", "0"], "--top-p"),
    (["--prompt", PROMPT, "--backend", "tensorrt"], "TensorRT"),
    (["--prompt", PROMPT, "--backend", "gpu"], "--backend"),
])
def test_bad_run_options(tiny_model, args, expected):
    line = one_error_line(run_cli("run", "--model", str(tiny_model[0]), *args))
    assert expected in line


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_build_engine_without_tensorrt_says_so():
    line = one_error_line(run_cli("build-engine", "--model", ".", "--out", "engine"))
    assert "TensorRT is not installed here" in line
