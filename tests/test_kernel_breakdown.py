"""benchmarks/kernel_breakdown.py: a decode step's profiled kernels summed by kind against the graph time."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import kernel_breakdown  # noqa: E402


def test_kinds_are_told_apart():
    kind = kernel_breakdown.kind_of
    assert kind("void edge_quamba::kernels::(anonymous namespace)::quantize_kernel<float>(edge_q") == "quantize"
    assert kind("void edge_quamba::kernels::(anonymous namespace)::rms_norm_quantize_kernel<1024, 4>(e") \
        == "RMSNorm + quantize"
    assert kind("void edge_quamba::kernels::(anonymous namespace)::hadamard_quantize_kernel<20, 8, (") \
        == "Hadamard + quantize"
    assert kind("void edge_quamba::kernels::w4::(anonymous namespace)::w4a8_gemv_kernel<32, 1, true>(") == "W4A8 GEMV"
    assert kind("nvjet_sm90_hsh_384x8_64x4_2x1_v_bz_TNT") == "lm_head (cuBLAS fp16 GEMM)"
    assert kind("something new") == "other"


def test_breakdown_sums_by_kind_and_reports_the_rest(tmp_path, capsys):
    kernels = [{"kernel": "int8_gemv_kernel<16, 32, 1, true>", "us_per_token": 700.0, "launches_per_token": 64},
               {"kernel": "int8_gemv_kernel<16, 64, 1, false>", "us_per_token": 400.0, "launches_per_token": 64},
               {"kernel": "ssd_scan_kernel<8, 16>", "us_per_token": 300.0, "launches_per_token": 64}]
    report = {"rows": [{"shape": "m2-2.7b", "impl": "edge-quamba cuda int8", "graph_ms": 2.0, "kernels": kernels},
                       {"shape": "m2-2.7b", "impl": "mamba_ssm fp16 cg", "status": "ok"}]}
    record = tmp_path / "latency.json"
    record.write_text(json.dumps(report))
    out = tmp_path / "breakdown.json"
    kernel_breakdown.main([str(record), "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 1 and rows[0]["kinds"]["int8 GEMV"] == {"us_per_token": 1100.0, "launches_per_token": 128}
    assert rows[0]["outside_top_12_us"] == pytest.approx(600.0)
    assert "int8 GEMV" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        kernel_breakdown.main([str(record), "--shapes", "2.8b"])  # nothing profiled there: an error, not an empty table


@pytest.mark.parametrize("content", [None, "not json", '{"no_rows": 1}'])
def test_a_missing_or_foreign_record_is_a_usage_error(tmp_path, capsys, content):
    record = tmp_path / "record.json"
    if content is not None:
        record.write_text(content)
    with pytest.raises(SystemExit) as exc:
        kernel_breakdown.main([str(record)])
    assert exc.value.code == 2 and "is not a readable bench_latency.py record" in capsys.readouterr().err



def test_a_reader_that_stops_early_gets_no_traceback_and_the_record_is_written(tmp_path):
    kernels = [{"kernel": f"kernel_{i}", "us_per_token": 10.0, "launches_per_token": 1} for i in range(40)]
    record = tmp_path / "latency.json"
    record.write_text(json.dumps({"rows": [{"shape": "2.8b", "impl": "edge-quamba cuda int8", "graph_ms": 1.0,
                                            "kernels": kernels}]}))
    out = tmp_path / "breakdown.json"
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(f"{sys.executable} benchmarks/kernel_breakdown.py {record} --out {out} | true",
                          shell=True, cwd=root, capture_output=True, text=True, env={"PYTHONPATH": str(root)})
    assert proc.stderr == "" and json.loads(out.read_text())["rows"][0]["shape"] == "2.8b"
