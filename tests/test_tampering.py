"""Tampered and mismatched folders are caught in one line: every file a quantized artifact or an export folder lists
is checked against its sha256 (and each JSON against its own seal), the tokenizer against the model's vocabulary,
and a config's sizes against the weight file's header before anything is allocated."""

import json
import shutil
import time

import pytest
import torch
from safetensors.torch import load_file, save_file

from edge_quamba.integrity import file_sha256, seal
from helpers import TEXT, cli_in_process, make_tokenizer, one_error_line, random_hf_model, save_transformers_layout

PROMPT = "The quick brown fox"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """An fp checkpoint, its quantized artifact and its export folder (tiny, random, built once)."""
    root = tmp_path_factory.mktemp("tamper")
    tokenizer = make_tokenizer(120)
    hf = random_hf_model(seed=5, vocab_size=tokenizer.get_vocab_size())
    fp = save_transformers_layout(hf, root / "fp", tokenizer)
    (root / "calib.txt").write_text(TEXT * 4)
    quick = ("--calib-data", str(root / "calib.txt"), "--calib-samples", "2", "--calib-seq-len", "32")
    proc = cli_in_process("quantize", "--model", str(fp), "--out", str(root / "q"), *quick)
    assert proc.returncode == 0, proc.stderr
    proc = cli_in_process("export", "--model", str(root / "q"), "--out", str(root / "x"), "--calib-data",
                          str(root / "calib.txt"), "--validate-prompt-len", "8", "--validate-decode-steps", "1")
    assert proc.returncode == 0, proc.stderr
    return {"fp": fp, "q": root / "q", "x": root / "x", "calib": root / "calib.txt"}


def negate_int8_weights(file):
    state = load_file(file)
    for key, tensor in state.items():
        if tensor.dtype == torch.int8:
            state[key] = -tensor
    save_file(state, file, metadata={"format": "pt"})


def swap_tokenizer(file):
    other = make_tokenizer(120)
    other.add_tokens(["<swapped>"])  # a different tokenizer of a plausible size
    other.save(str(file))


def edit_json(file, change):
    data = json.loads(file.read_text())
    change(data)
    file.write_text(json.dumps(data, indent=2))


def flip_a_byte(file):
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0x01
    file.write_bytes(bytes(data))


TAMPERING = {
    # name: (folder, file, change, words in the error line)
    "negated int8 weights": ("q", "model.safetensors", negate_int8_weights, "does not match the sha256"),
    "swapped tokenizer.json": ("q", "tokenizer.json", swap_tokenizer, "does not match the sha256"),
    "edited quant_config.json": ("q", "quant_config.json",
                                 lambda f: edit_json(f, lambda d: d["quantization"].update(percentile=0.9)),
                                 "was edited"),
    "quant_config.json without its seal": ("q", "quant_config.json",
                                           lambda f: edit_json(f, lambda d: d.pop("config_sha256")),
                                           "has no config_sha256"),
    "missing weights": ("q", "model.safetensors", lambda f: f.unlink(), "is missing"),
    "edited model.onnx": ("x", "model.onnx", flip_a_byte, "model.onnx does not match the sha256"),
    "edited export_config.json": ("x", "export_config.json",
                                  lambda f: edit_json(f, lambda d: d["validation"].update(passed=True, ties=0)),
                                  "was edited"),
    "negated weights in the export's quantized/": ("x", "quantized/model.safetensors", negate_int8_weights,
                                                   "quantized/model.safetensors does not match the sha256"),
    "swapped tokenizer.json of the export": ("x", "tokenizer.json", swap_tokenizer, "does not match the sha256"),
    "missing model.trt.onnx": ("x", "model.trt.onnx", lambda f: f.unlink(), "is missing"),
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_tampered_file_is_refused(folders, tmp_path, case):
    kind, name, change, words = TAMPERING[case]
    folder = tmp_path / kind
    shutil.copytree(folders[kind], folder)
    change(folder / name)
    line = one_error_line(cli_in_process("run", "--model", str(folder), "--prompt", PROMPT, "--max-new-tokens", "2"))
    assert words in line


@pytest.mark.parametrize("backend", ["ref", "ort"])
def test_tampered_export_fails_on_every_backend_and_re_export(folders, tmp_path, backend):
    folder = tmp_path / "x"
    shutil.copytree(folders["x"], folder)
    negate_int8_weights(folder / "quantized" / "model.safetensors")
    line = one_error_line(cli_in_process("run", "--model", str(folder), "--prompt", PROMPT, "--backend", backend))
    assert "quantized/model.safetensors does not match" in line
    proc = cli_in_process("export", "--model", str(folder), "--out", str(tmp_path / "again"))
    assert "does not match" in one_error_line(proc) and "validation passed" not in proc.stdout
    assert not (tmp_path / "again").exists()


def test_untouched_folders_load(folders):
    for kind in ("q", "x"):
        proc = cli_in_process("run", "--model", str(folders[kind]), "--prompt", PROMPT, "--max-new-tokens", "2",
                              "--temperature", "0", "--json")
        assert proc.returncode == 0, proc.stderr


def test_resealed_config_with_other_sizes_fails_on_the_header(folders, tmp_path):
    """Past the seal (an edit that recomputes it), the weights' header still disagrees with the config."""
    folder = tmp_path / "q"
    shutil.copytree(folders["q"], folder)
    data = json.loads((folder / "quant_config.json").read_text())
    data["model_config"]["d_state"] = 32
    (folder / "quant_config.json").write_text(json.dumps(seal(data)))
    line = one_error_line(cli_in_process("run", "--model", str(folder), "--prompt", PROMPT))
    assert "quant_config.json implies" in line


# -- the tokenizer against the model --------------------------------------------------------------------------------

@pytest.mark.parametrize("size", ["too big", "too small"])
@pytest.mark.parametrize("via", ["--tokenizer", "folder"])
def test_tokenizer_vocab_must_fit_the_model(folders, tmp_path, size, via):
    """too big: a 400-token tokenizer on the 257-row model (ids past the embedding); too small: the 257-token
    tokenizer on a 457-row model (200 rows unused, more than any vocabulary padding)."""
    tokenizer = make_tokenizer(120)
    model = tmp_path / "model"
    if size == "too big":
        shutil.copytree(folders["fp"], model)
        tokenizer.add_tokens([f"<extra{i}>" for i in range(400 - tokenizer.get_vocab_size())])
        expected = "the tokenizer has 400 tokens but the model's embedding has only 257 rows"
    else:
        save_transformers_layout(random_hf_model(seed=5, vocab_size=457), model)
        expected = "the tokenizer has 257 tokens but the model's embedding has 457 rows"
    tokenizer_file = (model if via == "folder" else tmp_path) / "tokenizer.json"
    tokenizer.save(str(tokenizer_file))
    args = ["--tokenizer", str(tokenizer_file)] if via == "--tokenizer" else []
    line = one_error_line(cli_in_process("run", "--model", str(model), "--prompt", PROMPT, *args))
    assert expected in line and "not this model's tokenizer" in line
    named = f"edge-quamba: error: --tokenizer {tokenizer_file}:" if via == "--tokenizer" else \
        f"edge-quamba: error: {tokenizer_file}:"
    assert line.startswith(named)


@pytest.mark.parametrize("case", ["missing", "not json"])
def test_tokenizer_errors_name_the_flag(folders, tmp_path, case):
    spec = tmp_path / "tok.json"
    if case == "not json":
        spec.write_text("{broken")
    line = one_error_line(cli_in_process("run", "--model", str(folders["fp"]), "--prompt", PROMPT,
                                         "--tokenizer", str(spec)))
    assert line.startswith(f"edge-quamba: error: --tokenizer {spec}")


# -- config sizes against the weights' header, before allocation ----------------------------------------------------

@pytest.mark.parametrize("key, value, words", [
    ("num_hidden_layers", 1000000, "says 1000000 layers, the weights hold 2"),
    ("hidden_size", 10**9, "shape"),
    ("vocab_size", 10**10, "(vocab_size, d_model)"),  # the opener's header check, before the tokenizer's
    ("expand", 100000, "shape"),
    ("state_size", 10**7, "shape"),
])
def test_huge_config_sizes_fail_fast(folders, tmp_path, key, value, words):
    model = tmp_path / "fp"
    shutil.copytree(folders["fp"], model)
    edit_json(model / "config.json", lambda d: d.update({key: value}))
    start = time.perf_counter()
    proc = cli_in_process("run", "--model", str(model), "--prompt", PROMPT)
    elapsed = time.perf_counter() - start
    print(f"{key}={value}: failed after {elapsed:.2f} s")
    line = one_error_line(proc)
    assert words in line and elapsed < 5.0


def test_weights_header_is_read_before_the_weights(folders, tmp_path, monkeypatch):
    """A shape mismatch is found from the header: the tensors are never loaded."""
    import edge_quamba.models.loading as loading

    model = tmp_path / "fp"
    shutil.copytree(folders["fp"], model)
    edit_json(model / "config.json", lambda d: d.update(state_size=4))
    monkeypatch.setattr(loading, "read_state_dict", lambda path: pytest.fail("weights read before the check"))
    assert "shape" in one_error_line(cli_in_process("run", "--model", str(model), "--prompt", PROMPT))


def test_recorded_hashes_are_streamed_and_cached(tmp_path, monkeypatch):
    import hashlib

    import edge_quamba.integrity as integrity

    file = tmp_path / "big.bin"
    file.write_bytes(b"x" * (3 * 2**20 + 5))
    reads = []
    real_open = open

    def counting_open(path, mode="r", *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        reads.append(path)
        return handle

    monkeypatch.setattr("builtins.open", counting_open)
    assert file_sha256(file) == hashlib.sha256(file.read_bytes()).hexdigest()
    file_sha256(file)
    assert reads.count(file) == 1  # hashed once while the file is unchanged
    file.write_bytes(b"y" * 10)
    assert integrity.file_sha256(file) == hashlib.sha256(b"y" * 10).hexdigest()
