"""The cases an outside hostile sweep broke (issue 21), each one line on stderr, a non-zero exit and nothing
destroyed: an unwritable --out refused before any work, a pickled pytorch_model.bin, deeply nested or oversized
JSON, --threads beyond the CPUs, an absurd --validate-prompt-len, options that do not apply, and messages that say
what a path is (a FIFO, a device, a symbolic link, a file used as a folder). The ones about the process (the hub
behind a proxy, lm-eval offline, a closed stdout, signals): test_hostile_processes.py.

Tiny random models (conftest.hostile_folders); the CLI runs in-process except where a subprocess is the point (a
read-only mount)."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from edge_quamba.errors import ConfigError, InputError
from edge_quamba.models.config import MAX_JSON_BYTES, read_json
from helpers import QUICK_CALIB, TEXT, cli_in_process, one_error_line, save_mamba_ssm_layout

QUICK = QUICK_CALIB


@pytest.fixture
def folders(hostile_folders):
    return hostile_folders


def copy(folder: Path, tmp_path: Path, name: str = "m") -> Path:
    return Path(shutil.copytree(folder, tmp_path / name, symlinks=True))


# -- --out that cannot be written: refused before the calibration --------------------------------------------------

def _no_expensive_work(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the fp model was loaded: --out was not checked before the work")

    monkeypatch.setattr("edge_quamba.quant.pipeline.load_fp_model", refuse)


@pytest.mark.parametrize("command", ["quantize", "export"])
@pytest.mark.parametrize("out", ["/proc/edge-quamba-out", "/sys/edge-quamba-out"])
def test_out_on_a_pseudo_file_system_is_refused_before_any_work(folders, monkeypatch, command, out):
    if not Path(out).parent.is_dir():
        pytest.skip(f"no {Path(out).parent} here")
    _no_expensive_work(monkeypatch)
    proc = cli_in_process(command, "--model", str(folders["fp"]), "--out", out, "--calib-data", str(folders["calib"]),
                          *QUICK)
    line = one_error_line(proc)
    assert f"--out {out}: " in line and ("cannot create a folder in" in line or "cannot write there" in line)


def unshare_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            "mount -t tmpfs -o size=8k tmpfs /tmp"], capture_output=True)
    return probe.returncode == 0


needs_unshare = pytest.mark.skipif(not unshare_available(), reason="unshare cannot mount a private tmpfs here")


@needs_unshare
def test_out_under_a_read_only_mount_is_refused_before_the_calibration(folders, tmp_path):
    mount = tmp_path / "mnt"
    mount.mkdir()
    command = [sys.executable, "-m", "edge_quamba", "quantize", "--model", str(folders["fp"]), "--out",
               str(mount / "out"), "--calib-data", str(folders["calib"]), *QUICK]
    script = f"mount -t tmpfs -o ro tmpfs {mount} && exec " + " ".join(f"'{arg}'" for arg in command)
    proc = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    line = one_error_line(proc)
    assert "Read-only file system" in line and "--out" in line
    assert "calibrating" not in proc.stderr  # refused before the calibration ran


@needs_unshare
def test_out_that_is_a_mount_point_is_refused_before_the_calibration(folders, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    command = [sys.executable, "-m", "edge_quamba", "quantize", "--model", str(folders["fp"]), "--out", str(out),
               "--calib-data", str(folders["calib"]), *QUICK]
    script = f"mount -t tmpfs tmpfs {out} && exec " + " ".join(f"'{arg}'" for arg in command)
    proc = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert "Device or resource busy (a mount point" in one_error_line(proc)
    assert "calibrating" not in proc.stderr


# -- a pickled pytorch_model.bin ------------------------------------------------------------------------------------

class RunsCode:
    """Unpickling this calls print("PICKLE RAN"): a stand-in for a checkpoint that runs code when loaded."""

    def __reduce__(self):
        return print, ("PICKLE RAN",)


@pytest.mark.parametrize("content", ["object that runs code", "plain pickle", "random bytes", "empty"])
def test_a_pickled_pytorch_model_bin_is_one_line_without_torch_advice(folders, tmp_path, content):
    import pickle

    folder = save_mamba_ssm_layout(folders["hf"], tmp_path / "ssm")
    shutil.copyfile(folders["fp"] / "tokenizer.json", folder / "tokenizer.json")
    weights = folder / "pytorch_model.bin"
    if content == "object that runs code":
        torch.save({"backbone.embedding.weight": RunsCode()}, weights)
    elif content == "plain pickle":
        weights.write_bytes(pickle.dumps({"backbone.embedding.weight": [1.0, 2.0]}, protocol=4))
    elif content == "random bytes":
        weights.write_bytes(os.urandom(4096))
    else:
        weights.write_bytes(b"")
    proc = cli_in_process("run", "--model", str(folder), "--prompt", "The quick", "--max-new-tokens", "2")
    line = one_error_line(proc)
    assert f"{weights} is not a readable PyTorch weights file" in line
    assert "weights_only" not in proc.stderr and "PICKLE RAN" not in proc.stdout + proc.stderr
    if content == "object that runs code":
        assert "the Python object builtins.print" in line or "the Python object print" in line


# -- JSON: nested too deeply, too large, not a regular file --------------------------------------------------------

def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("case", ["nested", "too large", "FIFO", "device", "not UTF-8"])
def test_read_json_refuses_in_one_line(tmp_path, case):
    file = tmp_path / "config.json"
    if case == "nested":
        file.write_text('{"a": ' + nested(200_000) + "}")
    elif case == "too large":
        file.write_text('{"a": "' + "x" * (MAX_JSON_BYTES + 1) + '"}')
    elif case == "FIFO":
        os.mkfifo(file)
    elif case == "device":
        file = Path("/dev/zero")
    else:
        file.write_bytes(b'{"a": "\xff"}')
    start = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        read_json(file)
    print(info.value, f"({time.perf_counter() - start:.2f} s)")
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(file))
    expected = {"nested": "nested too deeply", "too large": "larger than 64 MiB", "FIFO": "is a FIFO (named pipe)",
                "device": "is a character device", "not UTF-8": "is not readable JSON"}[case]
    assert expected in message


@pytest.mark.parametrize("name", ["config.json", "quant_config.json", "export_config.json",
                                  "model.safetensors.index.json"])
def test_deeply_nested_json_in_a_model_folder_is_one_line(folders, tmp_path, name):
    source = {"quant_config.json": "q", "export_config.json": "x"}.get(name, "fp")
    folder = copy(folders[source], tmp_path)
    if name == "model.safetensors.index.json":  # read only where there is no model.safetensors
        (folder / "model.safetensors").unlink()
    (folder / name).write_text('{"kind": ' + nested(100_000) + "}")
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = cli_in_process("run", "--model", str(folder), "--prompt", "The quick", "--max-new-tokens", "2")
    line = one_error_line(proc)
    assert f"{folder / name} is not readable JSON: nested too deeply" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_deeply_nested_jsonl_calibration_line_is_one_line(folders, tmp_path):
    calib = tmp_path / "calib.jsonl"
    calib.write_text(json.dumps({"text": TEXT}) + "\n" + '{"text": ' + nested(100_000) + "}\n")
    proc = cli_in_process("quantize", "--model", str(folders["fp"]), "--out", str(tmp_path / "q"), "--calib-data",
                          str(calib), *QUICK)
    assert f"calibration data {calib}:2 is not valid JSON" in one_error_line(proc)
    assert not (tmp_path / "q").exists()


def test_deeply_nested_tokenizer_config_for_serve_is_one_line(folders, tmp_path):
    from edge_quamba.serve.chat import load_chat_template

    folder = copy(folders["fp"], tmp_path)
    (folder / "tokenizer_config.json").write_text('{"chat_template": ' + nested(100_000) + "}")
    with pytest.raises(ConfigError, match="tokenizer_config.json is not readable JSON: nested too deeply"):
        load_chat_template(folder)


# -- --threads, --validate-prompt-len ----------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["run", "eval", "bench", "export"])
@pytest.mark.parametrize("backend", ["ref", "ort"])
def test_threads_beyond_the_cpus_is_one_line(folders, command, backend):
    from edge_quamba.cli_options import available_cpus

    args = {"run": ["--prompt", "hi", "--backend", backend], "eval": ["--data", str(folders["calib"]), "--backend",
            backend], "bench": ["--backend", backend], "export": ["--out", "never-written"]}[command]
    model = folders["x"] if backend == "ort" else folders["fp"]
    proc = cli_in_process(command, "--model", str(model), "--threads", str(10**6), *args)
    line = one_error_line(proc)
    assert f"'--threads': 1000000 is more than the {available_cpus()} CPUs this process may use" in line
    assert proc.returncode == 2 and not Path("never-written").exists()


def test_threads_up_to_the_cpus_run(folders):
    from edge_quamba.cli_options import available_cpus

    proc = cli_in_process("run", "--model", str(folders["x"]), "--backend", "ort", "--prompt", "The quick",
                          "--max-new-tokens", "2", "--threads", str(available_cpus()), "--json")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("args, words", [
    (["--validate-prompt-len", str(10**12)], "'--validate-prompt-len': 1000000000000 is not in the range 1<=x<=8192"),
    (["--validate-decode-steps", str(10**12)], "'--validate-decode-steps': 1000000000000 is not in the range"),
    (["--bits", "fp32", "--validate-prompt-len", str(10**12)], "'--validate-prompt-len'"),
])
def test_absurd_validation_lengths_are_one_line_before_work(folders, tmp_path, monkeypatch, args, words):
    _no_expensive_work(monkeypatch)
    proc = cli_in_process("export", "--model", str(folders["fp"]), "--out", str(tmp_path / "x"), *args)
    assert words in one_error_line(proc)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs", [{"prompt_len": 10**12}, {"decode_steps": 10**12}, {"prompt_len": 0}])
def test_the_export_library_bounds_the_validation_too(tmp_path, kwargs):
    from edge_quamba.onnx.export import export_fp32_model, export_model

    for export in (export_model, export_fp32_model):
        with pytest.raises(InputError, match="must be between"):
            export(model=None, out=tmp_path / "x", **kwargs)
    assert list(tmp_path.iterdir()) == []


# -- options that do not apply ---------------------------------------------------------------------------------------

NOT_APPLYING = {
    "group size at w8a8": (["--bits", "w8a8", "--group-size", "128"], "--group-size does not apply: it shapes the "
                           "int4 weights of --bits w4a8 / w4a16, not --bits w8a8"),
    "gptq order by default bits": (["--gptq-order", "act"], "--gptq-order does not apply"),
    "no-gptq at w8a8": (["--no-gptq"], "--no-gptq does not apply"),
    "gptq order with no-gptq": (["--bits", "w4a8", "--no-gptq", "--gptq-order", "act"],
                                "--gptq-order does not apply: --no-gptq rounds to nearest"),
    "quamba2 option with quamba": (["--head-groups", "2"], "--head-groups does not apply: it is a --method quamba2 "
                                   "option"),
    "no-group-bc with quamba": (["--no-group-bc"], "--no-group-bc does not apply"),
    "dim groups without sort-cluster": (["--method", "quamba2", "--no-sort-cluster", "--dim-groups", "2"],
                                        "--dim-groups does not apply: --no-sort-cluster"),
    "percentile with quamba2": (["--method", "quamba2", "--percentile", "0.999"], "--percentile does not apply: it "
                                "is a --method quamba option"),
    "percentile-on with no-percentile": (["--no-percentile", "--percentile-on", "u"],
                                         "--percentile-on does not apply: --no-percentile"),
    "no-hadamard at w4a16": (["--bits", "w4a16", "--no-hadamard"], "--no-hadamard does not apply: --bits w4a16"),
    "weight scales at w4a8 (even the default value)": (["--bits", "w4a8", "--weight-scales", "tensor"],
                                                       "--weight-scales does not apply: it is a Quamba W8A8 option"),
    "kv cache of a Mamba model": (["--kv-cache", "int8"], "--kv-cache does not apply: it is an option of hybrid"),
    "float attention of a Mamba model": (["--float-attn-mlp"], "--float-attn-mlp does not apply"),
}
EXPORT_ONLY = {
    "calibration option at fp32": (["--bits", "fp32", "--calib-samples", "8"], "--calib-samples does not apply: "
                                   "--bits fp32 exports the fp checkpoint unquantized"),
    "float parts at --target ort": (["--target", "ort", "--float-parts", "float16"], "--float-parts does not apply"),
    "float parts at w4a8": (["--bits", "w4a8", "--target", "ort", "--float-parts", "float32"],
                            "--float-parts does not apply"),
}


@pytest.mark.parametrize("command, case", [(command, case) for case in sorted(NOT_APPLYING)
                                           for command in ("quantize", "export")] +
                         [("export", case) for case in sorted(EXPORT_ONLY)])
def test_an_option_that_does_not_apply_is_refused(folders, tmp_path, monkeypatch, command, case):
    args, words = {**NOT_APPLYING, **EXPORT_ONLY}[case]
    _no_expensive_work(monkeypatch)
    proc = cli_in_process(command, "--model", str(folders["fp"]), "--out", str(tmp_path / "o"), *args)
    assert words in one_error_line(proc)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("source", ["q", "x"])
@pytest.mark.parametrize("args", [["--calib-samples", "8"], ["--bits", "w4a8"], ["--method", "quamba"],
                                  ["--tokenizer", "tokenizer.json"], ["--no-hadamard"]])
def test_recipe_options_do_not_apply_to_a_re_export(folders, tmp_path, source, args):
    proc = cli_in_process("export", "--model", str(folders[source]), "--out", str(tmp_path / "o"), *args)
    kind = {"q": "quantized", "x": "export"}[source]
    assert f"{args[0]} does not apply: --model is a {kind} folder" in one_error_line(proc)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [["--top-k", "5"], ["--top-p", "0.5"], ["--seed", "3"]])
def test_a_sampling_option_at_temperature_0_is_refused(folders, args):
    proc = cli_in_process("run", "--model", str(folders["fp"]), "--prompt", "Hi", "--temperature", "0", *args)
    assert f"{args[0]} does not apply: --temperature 0 decodes greedily" in one_error_line(proc)


def test_sampling_options_at_a_temperature_are_accepted(folders):
    proc = cli_in_process("run", "--model", str(folders["fp"]), "--prompt", "Hi", "--temperature", "0.5",
                          "--top-k", "5", "--seed", "3", "--max-new-tokens", "2")
    assert proc.returncode == 0, proc.stderr


# -- wording: say what a path is -----------------------------------------------------------------------------------

@pytest.mark.parametrize("what", ["FIFO", "device"])
@pytest.mark.parametrize("command", ["quantize", "export", "eval"])
def test_a_fifo_or_device_as_input_file_says_what_it_is(folders, tmp_path, what, command):
    path = tmp_path / "pipe" if what == "FIFO" else Path("/dev/zero")
    if what == "FIFO":
        os.mkfifo(path)
    option = "--data" if command == "eval" else "--calib-data"
    out = [] if command == "eval" else ["--out", str(tmp_path / "o")]
    proc = cli_in_process(command, "--model", str(folders["fp"]), *out, option, str(path))
    kind = "a FIFO (named pipe)" if what == "FIFO" else "a character device"
    assert f"{option} {path}: is {kind}, not a regular file" in one_error_line(proc)
    assert not (tmp_path / "o").exists()


def test_a_listed_file_replaced_by_a_fifo_says_what_it_is(folders, tmp_path):
    folder = copy(folders["q"], tmp_path)
    (folder / "tokenizer.json").unlink()
    os.mkfifo(folder / "tokenizer.json")
    proc = cli_in_process("run", "--model", str(folder), "--prompt", "hi")
    assert (f"{folder / 'tokenizer.json'} is a FIFO (named pipe), not a regular file (quant_config.json lists it)"
            in one_error_line(proc))


def test_an_output_with_a_symlinked_listed_file_is_not_called_unlisted(folders, tmp_path):
    out = copy(folders["q"], tmp_path, "out")
    (tmp_path / "elsewhere.json").write_bytes((out / "tokenizer.json").read_bytes())
    (out / "tokenizer.json").unlink()
    (out / "tokenizer.json").symlink_to(tmp_path / "elsewhere.json")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    proc = cli_in_process("quantize", "--model", str(folders["fp"]), "--out", str(out), "--calib-data",
                          str(folders["calib"]), *QUICK)
    line = one_error_line(proc)
    assert "it holds 'tokenizer.json', a symbolic link (listed in its quant_config.json)" in line
    assert "does not list" not in line
    assert (out / "tokenizer.json").is_symlink() and before == {p.name: p.read_bytes() for p in tmp_path.iterdir()
                                                                 if p.is_file()}


@pytest.mark.parametrize("depth", ["parent", "grandparent"])
def test_a_regular_file_used_as_the_parent_folder_says_so(folders, tmp_path, depth):
    file = tmp_path / "notes.txt"
    file.write_text("mine")
    out = file / "out" if depth == "parent" else file / "sub" / "out"
    proc = cli_in_process("quantize", "--model", str(folders["fp"]), "--out", str(out), "--calib-data",
                          str(folders["calib"]), *QUICK)
    line = one_error_line(proc)
    assert f"{file} is a regular file, not a folder" in line
    assert file.read_text() == "mine" and sorted(os.listdir(tmp_path)) == ["notes.txt"]
