"""jetson/benchmark.py and jetson/tegra_telemetry.py on CPU: tegrastats output recorded on real Orin Nano / Orin NX /
AGX Orin boards (tests/fixtures/tegrastats/, each file names its source) parsed field by field, power integrated to
energy, jetson_clocks / nvpmodel output read, the timed loop driven with fake backends (with and without the TensorRT
backend's ``engine_ms_last`` / ``cuda_graph``), the CSV contract, and one whole run on the demo model with the ref
backend. (On a Jetson the benchmark has never run.)"""

import csv
import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "jetson" / "benchmark.py"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "tegrastats"


def load_script():
    spec = importlib.util.spec_from_file_location("jetson_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


bench = load_script()
tt = bench.tt


def fixture_lines(name: str) -> list[str]:
    """The data lines of a fixture (comment lines start with #)."""
    return [line for line in (FIXTURES / name).read_text(encoding="utf-8").splitlines()
            if line and not line.startswith("#")]


def fixture_log(name: str) -> list[tuple[float, str]]:
    return tt.parse_log("\n".join(fixture_lines(name)))


def first_sample(name: str):
    lines = fixture_lines(name)
    line = lines[0].partition("::")[2] if name.endswith(".log") else lines[0]
    return tt.parse_tegrastats_line(line)


# ---- the CSV contract -------------------------------------------------------------------------------------------

EXPECTED_HEADER = (
    "date", "l4t", "jetpack", "cuda", "tensorrt", "torch", "edge_quamba", "nvpmodel", "jetson_clocks", "model",
    "backend", "batch", "prompt_len", "new_tokens", "repeats", "ttft_ms", "prefill_tokens_per_s", "tpot_ms",
    "decode_tokens_per_s", "model_bytes", "decode_weight_gb_per_s", "peak_rss_mib", "peak_mem_available_drop_mib",
    "tpot_p50_ms", "tpot_p90_ms", "engine_prefill_ms", "engine_decode_p50_ms", "cuda_graph", "gpu_mhz", "emc_mhz",
    "tj_max_c", "gpu_temp_max_c", "power_rail", "idle_power_w", "decode_power_w", "decode_mj_per_token",
    "tegrastats_interval_ms")


def test_csv_header_is_the_contract():
    """Changing a column is a format change: this literal must change with it (old files are then refused)."""
    assert bench.CSV_HEADER == EXPECTED_HEADER


def test_rows_append_under_one_fixed_header(tmp_path):
    path = tmp_path / "results" / "jetson.csv"
    for i in range(2):
        bench.append_row(path, {name: f"{name}-{i}" for name in bench.CSV_HEADER})
    rows = list(csv.reader(path.open(encoding="utf-8")))
    assert tuple(rows[0]) == bench.CSV_HEADER
    assert [r[0] for r in rows[1:]] == ["date-0", "date-1"]


def test_a_file_with_another_header_is_refused(tmp_path):
    path = tmp_path / "old.csv"
    path.write_text("date,something_else\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="another header"):
        bench.append_row(path, {name: "x" for name in bench.CSV_HEADER})
    assert path.read_text(encoding="utf-8") == "date,something_else\n"


def test_a_row_with_missing_or_extra_columns_is_refused(tmp_path):
    row = {name: "x" for name in bench.CSV_HEADER}
    del row["decode_mj_per_token"]
    with pytest.raises(ValueError, match="decode_mj_per_token"):
        bench.append_row(tmp_path / "a.csv", row)
    with pytest.raises(ValueError, match="surprise"):
        bench.append_row(tmp_path / "a.csv", {**{name: "x" for name in bench.CSV_HEADER}, "surprise": "1"})
    assert not (tmp_path / "a.csv").exists()


# ---- tegrastats lines from real boards --------------------------------------------------------------------------

def test_orin_nx_jp6_as_root_every_field():
    s = first_sample("orin_nx_16gb_jp6_root.log")
    print(s)
    assert s.rails_mw == {"VDD_IN": 5469.0, "VDD_CPU_GPU_CV": 970.0, "VDD_SOC": 1579.0}
    assert (s.gpu_load_pct, s.gpu_mhz, s.emc_load_pct, s.emc_mhz) == (0.0, 305.0, 0.0, 2133.0)
    assert s.temps_c["tj"] == 55.875 and s.temps_c["gpu"] == 51.343 and s.temps_c["cv0"] == 52.781


def test_orin_nx_jp6_without_root_has_no_clocks_rather_than_zero():
    s = first_sample("orin_nx_16gb_jp6_user.log")
    assert s.rails_mw["VDD_IN"] == 5793.0
    assert s.gpu_load_pct == 0.0 and s.gpu_mhz is None  # "GR3D_FREQ 0%": a load, no clock
    assert s.emc_mhz is None and s.emc_load_pct is None  # no EMC_FREQ field at all


def test_orin_nano_jp6_with_and_without_root():
    lines = fixture_lines("orin_nano_8gb_jp6.txt")
    root, user = (tt.parse_tegrastats_line(line) for line in lines)
    assert root.rails_mw["VDD_IN"] == 12479.0 and root.gpu_load_pct == 63.0 and root.gpu_mhz == 621.0
    assert (root.emc_load_pct, root.emc_mhz) == (43.0, 2133.0) and root.temps_c["tj"] == 53.968
    assert user.rails_mw["VDD_IN"] == 4824.0 and user.gpu_mhz is None and user.emc_mhz is None
    assert user.temps_c["tj"] == 50.25


def test_agx_orin_jp6_two_gpcs_and_no_vdd_in():
    s = first_sample("agx_orin_64gb_jp6_root.log")
    assert s.gpu_mhz == 1300.0 and s.emc_mhz == 3199.0  # GR3D_FREQ 0%@[1300,1300]
    assert "VDD_IN" not in s.rails_mw and s.rails_mw["VIN_SYS_5V0"] == 4320.0
    with pytest.raises(tt.TelemetryError, match="rail VDD_IN .*VDD_GPU_SOC"):
        tt.rail_power_mw(s, "VDD_IN")
    assert tt.rail_power_mw(s, "VDD_GPU_SOC+VDD_CPU_CV+VIN_SYS_5V0") == 5191.0 + 1997.0 + 4320.0


def test_agx_orin_r36_4_4_with_timestamps():
    samples = [tt.parse_tegrastats_line(line) for line in fixture_lines("agx_orin_64gb_r36.4.4.txt")]
    assert [s.rails_mw["VIN_SYS_5V0"] for s in samples] == [4707.0, 4607.0, 4707.0]
    assert [s.emc_load_pct for s in samples] == [3.0, 3.0, 2.0] and samples[0].emc_mhz == 2133.0
    assert samples[1].temps_c["tj"] == 52.343


def test_agx_orin_older_jp5_format():
    s = first_sample("agx_orin_32gb_jp5_root.log")
    assert s.gpu_mhz == 1300.0  # GR3D_FREQ 0%@1300 GR3D2_FREQ 0%@1300: one field per GPC, no brackets
    assert s.temps_c["cpu"] == 52.625 and s.temps_c["tj"] == 52.625  # "CPU@52.625C": names lower-cased
    assert "cv0" not in s.temps_c  # CV0@-256C: no sensor
    assert s.rails_mw["VDD_GPU_SOC"] == 4368.0


def test_newer_jp7_format_three_values_per_rail():
    s = tt.parse_tegrastats_line(fixture_lines("agx_orin_jp7.txt")[0])
    assert s.rails_mw == {"VDD_GPU_SOC": 5139.0, "VDD_CPU_CV": 3268.0, "VIN_SYS_5V0": 5500.0}
    assert s.temps_c["gpu"] == 47.625 and s.gpu_load_pct == 12.0 and s.gpu_mhz == 1300.0


def test_rails_without_a_unit_are_not_read():
    """JetPack 4 prints "VDD_IN 5297/5297": no rail is read, so energy is n/a instead of a number in a guessed unit."""
    s = tt.parse_tegrastats_line(fixture_lines("tx2_jp4_no_units.txt")[0])
    assert s.rails_mw == {}
    with pytest.raises(tt.TelemetryError, match="rails printed: none"):
        tt.rail_power_mw(s, "VDD_IN")


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.iterdir()))
def test_every_recorded_line_parses(name):
    lines = fixture_lines(name)
    if name.endswith(".log"):
        lines = [line for _, line in tt.parse_log("\n".join(lines))]
    samples = [tt.parse_tegrastats_line(line) for line in lines]
    print(name, len(samples), "lines")
    assert samples and all(s.gpu_load_pct is not None for s in samples)
    if name.startswith(("orin_nx", "orin_nano")):
        assert all(1000 < s.rails_mw["VDD_IN"] < 30000 for s in samples)


def test_unreadable_lines_give_an_error_or_nothing_never_a_number():
    good = fixture_lines("orin_nano_8gb_jp6.txt")[0]
    with pytest.raises(tt.TelemetryError, match="not a tegrastats line"):
        tt.parse_tegrastats_line("Error: tegrastats: cannot open /sys/kernel/debug")
    truncated = tt.parse_tegrastats_line(good[: good.index("VDD_IN") + 9])  # "... VDD_IN 124"
    assert "VDD_IN" not in truncated.rails_mw
    garbled = tt.parse_tegrastats_line(good.replace("GR3D_FREQ 63%@[621]", "GR3D_FREQ 63%@[62x]"))
    assert garbled.gpu_mhz is None and garbled.gpu_load_pct is None
    twice = tt.parse_tegrastats_line(good + " VDD_IN 999mW/999mW")
    assert "VDD_IN" not in twice.rails_mw  # one rail, two values: ambiguous


def test_log_lines_need_a_time_prefix():
    with pytest.raises(tt.TelemetryError, match="line 2"):
        tt.parse_log("1.0::RAM 1/2MB\nRAM 1/2MB\n")
    samples, rejected = tt.parse_samples([(1.0, "RAM 1/2MB VDD_IN 5mW/5mW"), (2.0, "garbage")])
    assert len(samples) == 1 and len(rejected) == 1 and "garbage" in rejected[0]


# ---- energy -----------------------------------------------------------------------------------------------------

def test_energy_of_constant_and_linear_power():
    assert tt.energy_mj([(0.0, 5000.0), (1.0, 5000.0), (2.0, 5000.0)], [(0.0, 2.0)], max_gap_s=1.5) == 10000.0
    ramp = [(0.0, 0.0), (1.0, 1000.0), (2.0, 2000.0)]  # P = 1000 t mW
    assert tt.energy_mj(ramp, [(0.5, 1.5)], max_gap_s=1.5) == pytest.approx(1000.0)  # 500 t^2 from 0.5 to 1.5
    assert tt.energy_mj(ramp, [(0.0, 0.5), (1.5, 2.0)], max_gap_s=1.5) == pytest.approx(125.0 + 875.0)


def test_energy_refuses_windows_the_samples_do_not_cover():
    points = [(1.0, 5000.0), (2.0, 5000.0)]
    with pytest.raises(tt.TelemetryError, match="did not cover"):
        tt.energy_mj(points, [(0.5, 1.5)], max_gap_s=2.0)
    with pytest.raises(tt.TelemetryError, match="lines were lost"):
        tt.energy_mj([(0.0, 1.0), (0.1, 1.0), (1.0, 1.0)], [(0.2, 0.9)], max_gap_s=0.3)


def test_energy_over_a_recorded_orin_nx_log_matches_numpy():
    log = fixture_log("orin_nx_16gb_jp6_user.log")
    points = [(t, tt.rail_power_mw(tt.parse_tegrastats_line(line), "VDD_IN")) for t, line in log]
    t, p = np.array([x for x, _ in points]), np.array([y for _, y in points])
    ours = tt.energy_mj(points, [(t[0], t[-1])], max_gap_s=0.05)
    reference = float(np.sum((p[1:] + p[:-1]) / 2 * np.diff(t)))
    print(f"{len(points)} samples over {t[-1] - t[0]:.3f} s: {ours:.3f} mJ (numpy {reference:.3f})")
    assert ours == pytest.approx(reference, rel=1e-12)
    assert p.min() * (t[-1] - t[0]) <= ours <= p.max() * (t[-1] - t[0])


def test_buffered_bursts_are_refused():
    tt.check_spacing([t for t, _ in fixture_log("orin_nx_16gb_jp6_root.log")], interval_s=0.005)
    with pytest.raises(tt.TelemetryError, match="bursts"):
        tt.check_spacing([0.0, 0.0001, 0.0002, 0.0003, 1.0, 1.0001, 1.0002, 1.0003], interval_s=0.1)


def test_percentile_matches_numpy():
    rng = np.random.default_rng(0)
    values = list(rng.exponential(20.0, size=37))
    for q in (0, 50, 90, 100):
        assert tt.percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-12)


# ---- jetson_clocks --show and nvpmodel -q -----------------------------------------------------------------------
# Written for this test in the key=value format jetson_clocks prints on Orin (L4T r35/r36: "cpuN: Online=1 ...",
# "GPU ...", "Active GPU TPCs", "EMC ... FreqOverride=", "NV Power Mode"); newer releases drop "Online=" and
# FreqOverride and name GPCs "gpu-gpc-N". Not a recorded output.

UNPINNED = """SOC family:tegra234  Machine:NVIDIA Jetson Orin NX Engineering Reference Developer Kit
Online CPUs: 0-7
cpu0:  Online=1 Governor=schedutil MinFreq=729600 MaxFreq=1984000 CurrentFreq=1728000 IdleStates: WFI=1 c7=1
cpu1:  Online=1 Governor=schedutil MinFreq=729600 MaxFreq=1984000 CurrentFreq=1881600 IdleStates: WFI=1 c7=1
GPU MinFreq=306000000 MaxFreq=918000000 CurrentFreq=306000000
Active GPU TPCs: 8
EMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq=2133000000 FreqOverride=0
NV Power Mode: MAXN
"""
PINNED = """cpu0:  Online=1 Governor=schedutil MinFreq=1984000 MaxFreq=1984000 CurrentFreq=1984000 IdleStates: WFI=0 c7=0
cpu1:  Online=1 Governor=schedutil MinFreq=1984000 MaxFreq=1984000 CurrentFreq=1984000 IdleStates: WFI=0 c7=0
cpu7:  Online=0 Governor=schedutil MinFreq=729600 MaxFreq=1984000 CurrentFreq=729600 IdleStates: WFI=1 c7=1
GPU MinFreq=918000000 MaxFreq=918000000 CurrentFreq=918000000
EMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq=3199000000 FreqOverride=1
"""
PINNED_NEWER = """cpu0:  Governor=schedutil MinFreq=2201600 MaxFreq=2201600 CurrentFreq=2201600 IdleStates: WFI=0 c7=0
gpu-gpc-0 MinFreq=1300500000 MaxFreq=1300500000 CurrentFreq=1300500000
gpu-gpc-1 MinFreq=1300500000 MaxFreq=1300500000 CurrentFreq=1300500000
EMC MinFreq=3199000000 MaxFreq=3199000000 CurrentFreq=3199000000
"""


def test_clocks_pinned_or_not():
    assert tt.clocks_pinned(UNPINNED) is False
    assert tt.clocks_pinned(PINNED) is True  # offline cpu7 does not count
    assert tt.clocks_pinned(PINNED_NEWER) is True
    assert tt.clocks_pinned(PINNED.replace("FreqOverride=1", "FreqOverride=0")) is False
    one_gpc_free = PINNED_NEWER.replace("gpu-gpc-1 MinFreq=1300500000", "gpu-gpc-1 MinFreq=306000000")
    assert tt.clocks_pinned(one_gpc_free) is False
    with pytest.raises(tt.TelemetryError, match="no GPU or no EMC"):
        tt.clocks_pinned("jetson_clocks: must be run as root\n")


def test_power_mode():
    assert tt.power_mode("NV Power Mode: MAXN\n0\n") == "MAXN (0)"
    assert tt.power_mode("NV Fan Mode:quiet\nNV Power Mode: 15W\n0\n") == "15W (0)"
    assert tt.power_mode("NV Power Mode: MAXN_SUPER\n") == "MAXN_SUPER"
    with pytest.raises(tt.TelemetryError, match="NV Power Mode"):
        tt.power_mode("")


# ---- the timed loop and the contract with the TensorRT backend ---------------------------------------------------

class FakeClock:
    """Advances 1 ms per call to read it (prefill and each decode step then take a known time)."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        self.now += 0.001
        return self.now


class FakeBackend:
    """prefill/decode over numpy logits; the next token is (token + 1) mod 5."""

    name = "fake"

    def __init__(self):
        self.calls = 0

    def logits(self, token: int):
        out = np.zeros(5, dtype=np.float32)
        out[(token + 1) % 5] = 1.0
        return out

    def prefill(self, tokens):
        self.calls += 1
        return self.logits(tokens[-1]), ["state"]

    def decode(self, token, states):
        self.calls += 1
        return self.logits(token), states


class FakeTensorRTBackend(FakeBackend):
    """What the TensorRT backend promises: engine_ms_last after each call, cuda_graph."""

    cuda_graph = True

    def prefill(self, tokens):
        self.engine_ms_last = 7.5
        return super().prefill(tokens)

    def decode(self, token, states):
        self.engine_ms_last = 0.25 * (self.calls % 4 + 1)
        return super().decode(token, states)


def test_timed_loop_reads_engine_time_and_cuda_graph():
    backend = FakeTensorRTBackend()
    run = bench.time_generation(backend, [1, 2, 3], new_tokens=5, clock=FakeClock())
    assert backend.calls == 5 and len(run.step_s) == 4
    assert run.ttft_s == pytest.approx(0.001) and run.step_s == pytest.approx([0.001] * 4)
    assert run.prefill_engine_ms == 7.5 and run.decode_engine_ms == [0.5, 0.75, 1.0, 0.25]
    assert bench.cuda_graph_state(backend) == "on"
    fields = bench.speed_fields([run, run], prompt_len=3, model_bytes=2_000_000)
    print(fields)
    assert fields["engine_prefill_ms"] == "7.500" and fields["engine_decode_p50_ms"] == "0.625"
    assert fields["tpot_ms"] == "1.000" and fields["tpot_p50_ms"] == "1.000" and fields["ttft_ms"] == "1.000"
    assert fields["decode_weight_gb_per_s"] == "2.000"  # 2 MB per token in 1 ms


def test_a_backend_without_the_contract_gets_na():
    backend = FakeBackend()
    run = bench.time_generation(backend, [1], new_tokens=3, clock=FakeClock())
    assert run.prefill_engine_ms is None and run.decode_engine_ms == [None, None]
    fields = bench.speed_fields([run], prompt_len=1, model_bytes=1)
    assert fields["engine_prefill_ms"] == "n/a" and fields["engine_decode_p50_ms"] == "n/a"
    assert bench.cuda_graph_state(backend) == "n/a"
    backend.cuda_graph, backend.engine_ms_last = "yes", float("nan")  # not a bool, not a finite number
    assert bench.cuda_graph_state(backend) == "n/a" and bench.engine_ms(backend) is None
    backend.cuda_graph = False
    assert bench.cuda_graph_state(backend) == "off"


def test_tpot_percentiles_come_from_every_step():
    runs = [bench.RunRecord(0.0, 0.01, 0.0, [0.001] * 9 + [0.011], None, [None] * 10)]
    fields = bench.speed_fields(runs, prompt_len=1, model_bytes=1)
    assert fields["tpot_p50_ms"] == "1.000" and fields["tpot_p90_ms"] == "2.000"  # 0.001 + 0.1 * 0.010
    assert fields["tpot_ms"] == "2.000"  # the mean step, as edge_quamba.runtime.bench reports TPOT


# ---- telemetry columns from a recorded log ------------------------------------------------------------------------

def runs_inside(log, first: int, last: int, tokens: int):
    """One run whose decode window spans log samples first..last (times taken from the log itself)."""
    start, end = log[first][0], log[last][0]
    return bench.RunRecord(start - 0.01, start, end, [(end - start) / tokens] * tokens, None, [None] * tokens)


def test_telemetry_fields_on_a_recorded_orin_nx_log():
    log = fixture_log("orin_nx_16gb_jp6_root.log")
    runs = [runs_inside(log, 10, 30, tokens=8), runs_inside(log, 35, 50, tokens=8)]
    warnings = []
    fields = bench.telemetry_fields(log, runs, idle_before=log[5][0], rail="VDD_IN", interval_ms=5,
                                    warn=warnings.append)
    print(fields, warnings)
    points = [(t, tt.rail_power_mw(tt.parse_tegrastats_line(line), "VDD_IN")) for t, line in log]
    energy = sum(tt.energy_mj(points, [(r.decode_start, r.decode_end)], 1.0) for r in runs)
    seconds = sum(r.decode_end - r.decode_start for r in runs)
    assert fields["decode_mj_per_token"] == f"{energy / 16:.3f}"
    assert fields["decode_power_w"] == f"{energy / 1e3 / seconds:.3f}"
    assert 5.3 < float(fields["decode_power_w"]) < 5.5  # the log's VDD_IN stays within 5428..5469 mW
    assert fields["idle_power_w"] == "5.469"
    assert fields["gpu_mhz"] == "305" and fields["emc_mhz"] == "2133"
    assert fields["power_rail"] == "VDD_IN" and fields["tegrastats_interval_ms"] == "5"
    assert float(fields["tj_max_c"]) >= 55.0 and warnings == []


def test_telemetry_fields_say_why_values_are_missing():
    log = fixture_log("orin_nx_16gb_jp6_user.log")  # no root: no clocks
    warnings = []
    fields = bench.telemetry_fields(log, [runs_inside(log, 10, 40, tokens=4)], idle_before=log[3][0],
                                    rail="VDD_IN", interval_ms=5, warn=warnings.append)
    assert fields["gpu_mhz"] == "n/a" and fields["emc_mhz"] == "n/a" and fields["decode_mj_per_token"] != "n/a"
    assert any("GR3D_FREQ" in w for w in warnings) and any("EMC_FREQ" in w for w in warnings)

    agx = fixture_log("agx_orin_64gb_jp6_root.log")
    warnings = []
    fields = bench.telemetry_fields(agx, [runs_inside(agx, 2, 9, tokens=4)], idle_before=agx[1][0], rail="VDD_IN",
                                    interval_ms=5, warn=warnings.append)
    assert fields["decode_mj_per_token"] == fields["decode_power_w"] == fields["idle_power_w"] == "n/a"
    assert any("VIN_SYS_5V0" in w for w in warnings)  # the message lists the rails that are there
    summed = bench.telemetry_fields(agx, [runs_inside(agx, 2, 9, tokens=4)], idle_before=agx[1][0],
                                    rail="VDD_GPU_SOC+VDD_CPU_CV+VIN_SYS_5V0", interval_ms=5)
    assert 11.0 < float(summed["decode_power_w"]) < 11.6  # 5191 + 1997..1598 + 4320 mW

    warnings = []
    late = [runs_inside(log, 10, 40, tokens=4)]
    late[0].decode_end = log[-1][0] + 5.0  # decoding went on after tegrastats stopped
    fields = bench.telemetry_fields(log, late, idle_before=log[3][0], rail="VDD_IN", interval_ms=5,
                                    warn=warnings.append)
    assert fields["decode_mj_per_token"] == "n/a" and any("did not cover" in w for w in warnings)


# ---- the script as a whole --------------------------------------------------------------------------------------

def test_the_script_imports_without_torch():
    """The slim (TensorRT) image has no torch: the benchmark's own modules must not need it."""
    code = ("import sys, importlib.util; sys.modules['torch'] = None; "
            f"spec = importlib.util.spec_from_file_location('b', {str(SCRIPT)!r}); "
            "m = importlib.util.module_from_spec(spec); sys.modules['b'] = m; spec.loader.exec_module(m); "
            "print(len(m.CSV_HEADER))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(len(EXPECTED_HEADER))


def test_a_whole_run_on_the_demo_model_with_the_ref_backend(tmp_path, capsys):
    """Everything but the device: the runtime API, the loop, the row (no tegrastats, nvpmodel or jetson_clocks here:
    those columns are n/a and the reasons are printed)."""
    path = tmp_path / "jetson.csv"
    bench.main(["--model", str(ROOT / "edge_quamba" / "assets" / "demo_model"), "--backend", "ref",
                "--prompt-len", "8", "--new-tokens", "3", "--repeats", "2", "--csv", str(path), "--no-tegrastats"])
    err = capsys.readouterr().err
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    print(rows[0])
    assert len(rows) == 1 and rows[0]["backend"] == "ref" and rows[0]["new_tokens"] == "3"
    assert float(rows[0]["tpot_p50_ms"]) > 0 and float(rows[0]["ttft_ms"]) > 0
    assert rows[0]["engine_decode_p50_ms"] == "n/a" and rows[0]["cuda_graph"] == "n/a"
    assert rows[0]["decode_mj_per_token"] == "n/a" and rows[0]["nvpmodel"] == "n/a"
    assert "nvpmodel" in err and "jetson_clocks" in err
    assert not math.isnan(float(rows[0]["peak_rss_mib"]))
