"""`edge-quamba build-engine` and `--backend tensorrt` where TensorRT is absent (everywhere this package is tested):
one line on stderr naming the problem, exit 1, nothing written. The engine build itself has never run (no TensorRT
here); engine folders are recognised by their engine_config.json."""

import importlib.util
import json

import pytest

from edge_quamba.errors import ConfigError
from edge_quamba.folders import open_model, parse_folder
from edge_quamba.kinds import ENGINE
from helpers import run_cli

pytestmark = pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None,
                                reason="TensorRT is installed: these check the message given without it")


@pytest.mark.parametrize("args", [
    ("build-engine", "--out", "ENGINE"),
    ("run", "--backend", "tensorrt", "--prompt", "hello", "--max-new-tokens", "2"),
    ("bench", "--backend", "tensorrt", "--new-tokens", "2", "--repeats", "1"),
])
def test_one_line_error_without_tensorrt(args, tmp_path):
    args = tuple(str(tmp_path / a) if a == "ENGINE" else a for a in args)
    result = run_cli(*args)
    print(result.stderr)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edge-quamba: error: TensorRT is not installed here")
    assert not (tmp_path / "ENGINE").exists()


def test_engine_folder_is_recognised_by_its_json(tmp_path):
    """Classified and parsed from engine_config.json alone (parse_folder: what the opener does before verifying)."""
    demo = open_model(None).config
    record = {"kind": ENGINE.kind, "format_version": 1, "model_config": demo.to_dict(), "tensorrt": "10.3.0.26",
              "plugins": {"library": "/nowhere/libplugins.so", "sha256": "0" * 64, "creators": []}}
    (tmp_path / "engine_config.json").write_text(json.dumps(record), encoding="utf-8")
    folder = parse_folder(tmp_path)
    assert folder.kind == "engine" and folder.config == demo
    assert folder.engine.tensorrt == "10.3.0.26" and str(folder.engine.plugin_library) == "/nowhere/libplugins.so"
    (tmp_path / "engine_config.json").write_text(json.dumps({"kind": "something-else"}), encoding="utf-8")
    with pytest.raises(ConfigError, match="expected 'edge-quamba/engine'"):
        parse_folder(tmp_path)
