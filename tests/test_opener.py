"""The opener (edge_quamba/folders.py): every folder is opened once into a typed ModelFolder, the cheap checks of
everything come before any sha256 (so a 40 GB weights file whose size or header is wrong is refused at once, its
bytes never hashed), and nothing after the opener reads the folder's JSON or hashes a file again."""

import json
import os
import shutil
from pathlib import Path

import pytest

import edge_quamba.folders as folders
import edge_quamba.integrity as integrity
import edge_quamba.models.locate as locate
from edge_quamba.errors import CheckpointError, ConfigError
from edge_quamba.folders import open_model
from edge_quamba.integrity import seal
from edge_quamba.quant.config import QuantConfig
from helpers import TEXT, cli_in_process, make_tokenizer, one_error_line, random_hf_model, save_transformers_layout

GIB = 1 << 30


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """An fp checkpoint, its quantized artifact and its export folder (ort target), tiny and random."""
    root = tmp_path_factory.mktemp("opener")
    tokenizer = make_tokenizer(120)
    fp = save_transformers_layout(random_hf_model(seed=8, vocab_size=tokenizer.get_vocab_size()), root / "fp",
                                  tokenizer)
    (root / "calib.txt").write_text(TEXT * 4)
    quick = ("--calib-data", str(root / "calib.txt"), "--calib-samples", "2", "--calib-seq-len", "32")
    assert cli_in_process("quantize", "--model", str(fp), "--out", str(root / "q"), *quick).returncode == 0
    proc = cli_in_process("export", "--model", str(root / "q"), "--out", str(root / "x"), "--target", "ort",
                          "--calib-data", str(root / "calib.txt"), "--validate-prompt-len", "8",
                          "--validate-decode-steps", "1")
    assert proc.returncode == 0, proc.stderr
    return {"fp": fp, "q": root / "q", "x": root / "x"}


@pytest.fixture
def no_hashing(monkeypatch):
    """Any sha256 of a file fails the test (the JSON seals are hashed in memory, not through this)."""
    def refuse(path, *args, **kwargs):
        pytest.fail(f"{path} was hashed before the cheap checks refused the folder")

    monkeypatch.setattr(integrity, "file_sha256", refuse)
    monkeypatch.setattr(folders, "file_sha256", refuse)


def copy(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / folder.name))


def grow_sparse(file: Path, size: int) -> None:
    """``file`` extended to ``size`` bytes with a hole (no disk blocks written): a huge file in no time."""
    os.truncate(file, size)


def test_each_kind_opens_into_typed_values(made):
    fp, q, x = (open_model(str(made[k])) for k in ("fp", "q", "x"))
    assert (fp.kind, q.kind, x.kind) == ("fp", "quantized", "export")
    assert fp.checkpoint.layout == "transformers" and fp.record is None and fp.quant is None
    assert isinstance(q.quant, QuantConfig) and q.quant.bits == "w8a8" and q.config == fp.config
    assert x.reference.kind == "quantized" and x.reference.path == made["x"] / "quantized"
    assert x.reference.quant == q.quant and x.export.targets == ("ort",) and not x.fp32_export
    assert x.onnx_file("ort") == made["x"] / "model.onnx"
    with pytest.raises(CheckpointError, match="holds no model.trt.onnx: it was exported with --target ort"):
        x.onnx_file("tensorrt")


@pytest.mark.parametrize("where", ["q", "x"])
@pytest.mark.parametrize("change, words", [
    ("padded to 40 GiB", "has bytes after its last tensor: its header describes"),
    ("truncated", "is truncated: its header describes"),
    ("a 40 GiB file of zeros", "is not a safetensors file"),
    ("resealed config of other sizes", "quant_config.json implies"),
    ("bogus seal", "was edited after edge-quamba wrote it"),
])
def test_cheap_checks_refuse_before_any_hashing(made, tmp_path, no_hashing, where, change, words):
    folder = copy(made[where], tmp_path)
    artifact = folder if where == "q" else folder / "quantized"
    weights = artifact / "model.safetensors"
    if change == "padded to 40 GiB":
        grow_sparse(weights, 40 * GIB)
    elif change == "truncated":
        os.truncate(weights, weights.stat().st_size - 1)
    elif change == "a 40 GiB file of zeros":
        weights.write_bytes(b"")
        grow_sparse(weights, 40 * GIB)
    else:
        config = artifact / "quant_config.json"
        data = json.loads(config.read_text())
        data["model_config"]["d_state"] = 32
        config.write_text(json.dumps(seal(data) if change == "resealed config of other sizes" else data))
    with pytest.raises((CheckpointError, ConfigError)) as info:
        open_model(str(folder))
    print(info.value)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_a_huge_padded_file_is_refused_at_once_from_the_command_line(made, tmp_path):
    """The same through `run`, timed: no 40 GiB read."""
    import time

    folder = copy(made["q"], tmp_path)
    grow_sparse(folder / "model.safetensors", 40 * GIB)
    start = time.perf_counter()
    line = one_error_line(cli_in_process("run", "--model", str(folder), "--prompt", "The quick"))
    print(f"refused after {time.perf_counter() - start:.2f} s: {line}")
    assert "has bytes after its last tensor" in line and time.perf_counter() - start < 10


def test_a_backend_that_cannot_run_the_folder_is_refused_before_hashing(made, no_hashing):
    from edge_quamba.errors import BackendUnavailableError
    from edge_quamba.runtime.run import run_prompt

    with pytest.raises(BackendUnavailableError, match="--backend ort runs an export folder"):
        run_prompt(model=str(made["q"]), prompt="The quick", backend="ort")


@pytest.mark.parametrize("backend", ["ref", "ort"])
def test_run_reads_each_json_once_and_hashes_each_file_once(made, monkeypatch, backend):
    """From the command's library call to the last token: export_config.json and quantized/quant_config.json are
    read once each, every listed file is hashed once, and no other JSON of the folder is read."""
    from edge_quamba.runtime.run import run_prompt

    reads, hashes = [], []
    read_json, file_sha256 = folders.read_json, integrity.file_sha256

    def counting_read(path):
        reads.append(Path(path))
        return read_json(path)

    def counting_hash(path):
        hashes.append(Path(path))
        return file_sha256(path)

    for module in (folders, locate):
        monkeypatch.setattr(module, "read_json", counting_read)
    monkeypatch.setattr(integrity, "file_sha256", counting_hash)
    result = run_prompt(model=str(made["x"]), prompt="The quick", max_new_tokens=2, backend=backend)
    assert len(result.tokens) == 2
    x = made["x"]
    assert reads == [x / "export_config.json", x / "quantized" / "quant_config.json"]
    listed = json.loads((x / "export_config.json").read_text())["files"]
    assert sorted(hashes) == sorted(x / name for name in listed)


def test_only_the_opener_reads_marker_json_or_verifies():
    """The source: the marker files are named only through edge_quamba/kinds.py, and the seal / sha256 checks are
    called from the opener alone."""
    package = Path(folders.__file__).parent
    for file in package.rglob("*.py"):
        text = file.read_text(encoding="utf-8")
        code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith(("#", "\"", "'")))
        rel = file.relative_to(package).as_posix()
        if rel != "kinds.py":
            for name in ('"quant_config.json"', '"export_config.json"', '"engine_config.json"'):
                assert name not in code, f"{rel} names {name}: use edge_quamba.kinds"
        if rel not in ("folders.py", "integrity.py"):
            for call in ("check_seal(", "check_sha256(", "check_listed_file("):
                assert call not in code, f"{rel} calls {call}: only the opener verifies"


def test_an_export_folder_opens_without_torch(made):
    """Where PyTorch is not installed (a Jetson's slim image builds its engine from an export folder), the opener
    still verifies the folder (its weights by size and sha256) and imports no torch."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None\n"
            "from edge_quamba.folders import open_model\n"
            f"folder = open_model({str(made['x'])!r})\n"
            "print(folder.kind, folder.reference.kind, folder.onnx_file('ort').name)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["export", "quantized", "model.onnx"]
