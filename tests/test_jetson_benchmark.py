"""jetson/benchmark.py's CSV: a fixed header written once, rows appended under it, another header refused. (The
benchmark itself needs a Jetson and has never run.)"""

import csv
import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "jetson" / "benchmark.py"


def load_script():
    spec = importlib.util.spec_from_file_location("jetson_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rows_append_under_one_fixed_header(tmp_path):
    bench = load_script()
    path = tmp_path / "results" / "jetson.csv"
    for i in range(2):
        bench.append_row(path, {name: f"{name}-{i}" for name in bench.CSV_HEADER})
    rows = list(csv.reader(path.open(encoding="utf-8")))
    assert tuple(rows[0]) == bench.CSV_HEADER
    assert [r[0] for r in rows[1:]] == ["date-0", "date-1"]
    assert {"prefill_tokens_per_s", "decode_tokens_per_s", "decode_weight_gb_per_s", "nvpmodel",
            "jetson_clocks", "tensorrt", "l4t", "jetpack"} <= set(bench.CSV_HEADER)


def test_a_file_with_another_header_is_refused(tmp_path):
    bench = load_script()
    path = tmp_path / "old.csv"
    path.write_text("date,something_else\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="another header"):
        bench.append_row(path, {name: "x" for name in bench.CSV_HEADER})
    assert path.read_text(encoding="utf-8") == "date,something_else\n"
