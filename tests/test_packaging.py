"""Dependencies and shipped data: the package imports only what setup.cfg requires (transformers, matplotlib are
test / benchmark extras; rich and onnxscript are gone), calib_data/ is installed inside the wheel and found there
and in a checkout, and calib_data/make_calibration_set.py builds a split from a user's text."""

import configparser
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from edge_quamba.resources import calib_data_dir, default_calibration_file, default_evaluation_file

REPO = Path(__file__).resolve().parent.parent
NOT_CORE = ("transformers", "matplotlib", "rich", "onnxscript")


def requirement_names(lines: str) -> set[str]:
    return {re.split(r"[<>=!~\[ ]", line.strip())[0].lower() for line in lines.strip().splitlines() if line.strip()}


def test_core_imports_only_what_it_requires():
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    required = requirement_names(setup["options"]["install_requires"])
    extras = setup["options.extras_require"]
    print("required:", sorted(required))
    assert not required & set(NOT_CORE)
    assert {"transformers", "pytest", "lm-eval"} <= requirement_names(extras["test"])  # the README installs .[test]
    assert {"matplotlib", "transformers"} <= requirement_names(extras["bench"])
    imports = re.compile(r"^\s*(?:from|import)\s+(" + "|".join(NOT_CORE) + r")\b", re.MULTILINE)
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "edge_quamba").rglob("*.py")
                 if imports.search(p.read_text(encoding="utf-8"))]
    assert offenders == []


SERVE_ONLY = ("starlette", "uvicorn", "prometheus_client", "pydantic", "jinja2")


def test_serve_dependencies_are_an_extra_that_the_test_extra_installs():
    """`edge-quamba serve` needs an HTTP stack the rest of the package does not: the `serve` extra, imported only
    under edge_quamba/serve/; the README's set-up line installs `.[test]`, which must hold it and the clients the
    serve tests use."""
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    extras = setup["options.extras_require"]
    serve = requirement_names(extras["serve"])
    assert {name.replace("_", "-") for name in SERVE_ONLY} <= serve
    assert serve | {"openai", "httpx"} <= requirement_names(extras["test"])
    imports = re.compile(r"^\s*(?:from|import)\s+(" + "|".join(SERVE_ONLY) + r")\b", re.MULTILINE)
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "edge_quamba").rglob("*.py")
                 if imports.search(p.read_text(encoding="utf-8")) and "serve" not in p.relative_to(REPO).parts]
    assert offenders == []


def test_calib_data_is_at_the_top_level_of_the_checkout():
    assert calib_data_dir() == REPO / "calib_data"
    manifest = json.loads((calib_data_dir() / "manifest.json").read_text())
    for split, file in (("calibration", default_calibration_file()), ("evaluation", default_evaluation_file())):
        import hashlib

        assert manifest["splits"][split]["path"] == f"calib_data/{file.name}"
        assert hashlib.sha256(file.read_bytes()).hexdigest() == manifest["splits"][split]["sha256"]
    assert not (REPO / "edge_quamba" / "assets" / "calib_data").exists()


def test_wheel_installs_calib_data_inside_the_package(tmp_path):
    """Build the wheel from a copy of the sources, unpack it (a pure-Python wheel is installed by unpacking) and
    find the data from outside the checkout, as a non-editable `pip install` user would."""
    source = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("edge_quamba", "calib_data"):
        shutil.copytree(REPO / name, source / name, ignore=ignore)
    for name in ("setup.py", "setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(tmp_path / "wheel"), str(source)], capture_output=True, text=True, timeout=300)
    if build.returncode != 0 and "No module named" in build.stderr:
        pytest.skip(f"cannot build wheels here: {build.stderr.strip().splitlines()[-1]}")
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "wheel").glob("edge_quamba-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "site")
        metadata = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    for name in ("calibration.txt", "evaluation.txt", "manifest.json", "make_calibration_set.py"):
        assert f"edge_quamba/calib_data/{name}" in names
    for folder in ("demo_model", "demo_model_mamba2", "demo_model_hybrid"):
        for name in ("config.json", "model.safetensors", "tokenizer.json"):
            assert f"edge_quamba/assets/{folder}/{name}" in names
    unconditional = [line for line in metadata.splitlines()
                     if line.startswith("Requires-Dist:") and "extra ==" not in line]
    print("\n".join(unconditional))
    assert not [line for line in unconditional if any(dep in line for dep in NOT_CORE)]
    code = ("from edge_quamba.resources import calib_data_dir, default_calibration_file; "
            "print(calib_data_dir()); print(default_calibration_file().stat().st_size)")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                           env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert found.returncode == 0, found.stderr
    location, size = found.stdout.split()
    assert Path(location) == tmp_path / "site" / "edge_quamba" / "calib_data" and int(size) > 100_000
    script = subprocess.run([sys.executable, "-m", "edge_quamba.calib_data.make_calibration_set", "--help"],
                            capture_output=True, text=True, cwd=tmp_path,
                            env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert script.returncode == 0 and "--calibration-bytes" in script.stdout


# -- make_calibration_set -------------------------------------------------------------------------------------------

def load_script():
    spec = importlib.util.spec_from_file_location("make_calibration_set", calib_data_dir() / "make_calibration_set.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def corpus(tmp_path, n=40) -> Path:
    text = tmp_path / "corpus.txt"
    text.write_text("\n\n".join(f"Document {i}. " + "word " * (50 + 7 * i) for i in range(n)) + "\n")
    return text


def test_calibration_set_splits_documents_without_overlap_and_reproducibly(tmp_path):
    script = load_script()
    text = corpus(tmp_path)
    first = script.make_calibration_set(text, tmp_path / "a", calibration_bytes=3000, evaluation_bytes=2000, seed=7)
    script.make_calibration_set(text, tmp_path / "b", calibration_bytes=3000, evaluation_bytes=2000, seed=7)
    for name in ("calibration.txt", "evaluation.txt", "manifest.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    calib, held_out = (set(first["splits"][s]["document_indices"]) for s in ("calibration", "evaluation"))
    print(first["splits"]["calibration"]["bytes"], first["splits"]["evaluation"]["bytes"])
    assert calib and held_out and not calib & held_out
    assert 2000 <= first["splits"]["calibration"]["bytes"] <= 4500
    docs = (tmp_path / "a" / "calibration.txt").read_text().split("\n\n")
    assert all(doc.strip().startswith("Document") for doc in docs)
    again = script.make_calibration_set(text, tmp_path / "a", calibration_bytes=3000, evaluation_bytes=0, seed=8)
    assert again["splits"]["evaluation"]["documents"] == 0  # a previous set is replaced


def test_calibration_set_is_usable_by_quantize(tmp_path):
    """The split is what --calib-data reads (the loader of the quantizer, on a tiny model's tokenizer)."""
    from edge_quamba.quant.calibrate import read_calibration_texts

    script = load_script()
    script.make_calibration_set(corpus(tmp_path), tmp_path / "set", calibration_bytes=3000, evaluation_bytes=0)
    texts = read_calibration_texts(tmp_path / "set" / "calibration.txt")
    assert texts and "Document" in "".join(texts)


@pytest.mark.parametrize("case", ["binary text", "foreign out", "out is cwd", "no text"])
def test_calibration_set_bad_input_is_one_line(tmp_path, monkeypatch, case):
    text = corpus(tmp_path)
    out = tmp_path / "out"
    if case == "binary text":
        text.write_bytes(bytes(range(256)))
    elif case == "foreign out":
        out.mkdir()
        (out / "mine.txt").write_text("keep")
    elif case == "out is cwd":
        monkeypatch.chdir(tmp_path)
        out = Path(".")
    else:
        text.write_text("\n\n \n")
    proc = subprocess.run([sys.executable, str(calib_data_dir() / "make_calibration_set.py"), "--text", str(text),
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    print(proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("make_calibration_set: error:")
    if case == "foreign out":
        assert (out / "mine.txt").read_text() == "keep"


def test_cli_module_imports_no_torch():
    """`edge-quamba --help` must be instant: the CLI module imports torch only inside the commands that need it."""
    import subprocess
    import sys

    code = "import sys, edge_quamba.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
