"""benchmarks/kernel_timing_ab.py: two kernel_timing records -> the before/after table (CPU only)."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import kernel_timing_ab  # noqa: E402


def record(times, gpu="GPU A"):
    return {"command": "python3 benchmarks/kernel_timing.py --int4-only", "date": "2026-12-07T00:00:00+00:00",
            "gpu": gpu, "torch": "2.11", "copy_gb_per_s": 3000.0, "shape": {"d_model": 8},
            "kernels": [{"kernel": name, "seqlen": l, "time_us": t, "fraction_of_copy": 0.5}
                        for (name, l), t in times.items()]}


def test_before_and_after_per_kernel_and_the_l1_sum(tmp_path):
    before = tmp_path / "before.json"
    after = tmp_path / "after.json"
    before.write_text(json.dumps(record({("in_proj w4a8", 1): 10.0, ("out_proj w4a8", 1): 6.0,
                                         ("in_proj w4a16", 1): 18.0, ("in_proj w4a8", 512): 200.0})))
    after.write_text(json.dumps(record({("in_proj w4a8", 1): 8.0, ("out_proj w4a8", 1): 5.0,
                                        ("in_proj w4a16", 1): 18.0, ("in_proj w4a8", 512): 200.0})))
    out = tmp_path / "ab.json"
    kernel_timing_ab.main([str(before), str(after), "--what", "a change", "--out", str(out)])
    result = json.loads(out.read_text())
    assert [(r["kernel"], r["before_us"], r["after_us"], r["speedup"]) for r in result["kernels"]][:2] == [
        ("in_proj w4a8", 10.0, 8.0, 1.25), ("out_proj w4a8", 6.0, 5.0, 1.2)]
    assert "l = 1, the 2 rows with 'w4a8': 16.00 -> 13.00 us" in out.with_suffix(".txt").read_text()


@pytest.mark.parametrize("after", [record({("in_proj w4a8", 1): 8.0}, gpu="GPU B"), record({("x", 1): 8.0})])
def test_records_of_other_gpus_or_kernels_are_refused_in_one_line(tmp_path, after):
    (tmp_path / "b.json").write_text(json.dumps(record({("in_proj w4a8", 1): 10.0})))
    (tmp_path / "a.json").write_text(json.dumps(after))
    with pytest.raises(SystemExit) as exc:
        kernel_timing_ab.main([str(tmp_path / "b.json"), str(tmp_path / "a.json"), "--what", "x", "--out",
                               str(tmp_path / "ab.json")])
    assert "kernel_timing_ab.py: ValueError" in str(exc.value) and "\n" not in str(exc.value)
    assert not (tmp_path / "ab.json").exists()
