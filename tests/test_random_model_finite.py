"""benchmarks/random_model_finite.py: whether the latency benchmark's random models give finite logits, and where a
non-finite value first appears."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_latency  # noqa: E402
import random_model_finite  # noqa: E402


@pytest.fixture
def tiny_shape(monkeypatch):
    monkeypatch.setitem(bench_latency.SHAPES, "tiny", (64, 2))
    return "tiny"


def test_reports_finite_logits_per_shape(tiny_shape, tmp_path, capsys):
    out = tmp_path / "finite.json"
    random_model_finite.main(["--shapes", tiny_shape, "--prompt-len", "5", "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert rows[0]["shape"] == "tiny" and rows[0]["logits_finite"] is True and rows[0]["first_non_finite_module"] is None
    assert "logits finite: True" in capsys.readouterr().out


def test_names_the_first_module_with_a_non_finite_output(tiny_shape):
    model = bench_latency.random_quantized_model(bench_latency.mamba_config(tiny_shape), 0, "cpu", "w4a16")
    with torch.no_grad():
        model.backbone.layers[1].norm.weight.fill_(float("inf"))
    finite, first = random_model_finite.first_non_finite(model, torch.randint(0, 100, (1, 4)))
    assert finite is False and first == "backbone.layers.1.norm"


def test_unknown_shape_is_a_usage_error():
    with pytest.raises(SystemExit):
        random_model_finite.main(["--shapes", "7b"])
