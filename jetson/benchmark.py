"""On-device benchmark (Jetson): one backend, one model, batch 1; appends one row to a CSV with a fixed header.

At the ~400-line rule: the timed loop, the platform fields and the CSV row of one on-device run, read together
(tegrastats parsing lives in jetson/tegra_telemetry.py).

    python3 jetson/benchmark.py --model ENGINE_OR_FOLDER --backend tensorrt [--prompt-len 128] [--new-tokens 64]
        [--repeats 5] [--csv benchmarks/results/jetson.csv] [--tegrastats-interval-ms 100] [--power-rail VDD_IN]

NEVER RUN: no Jetson was available where this was written. What ran is the CPU test of everything but the device:
tests/test_jetson_benchmark.py parses tegrastats output recorded on real Orin Nano / Orin NX / AGX Orin boards,
integrates it, drives the timed loop with fake backends and writes the CSV.

What one row records (the comparison an edge user makes), each "n/a" where it cannot be read, never a guess:

* platform: L4T release, JetPack, CUDA, TensorRT, torch versions; the power mode (``nvpmodel -q``) and whether the
  clocks are pinned (``jetson_clocks --show``: min == max for CPU and GPU, EMC overridden);
* speed, after one dropped warm-up run: TTFT (median), TPOT median, p50 and p90 over every decode step of every
  repeat, prompt tokens/s, decode tokens/s, decode GB/s of weights read; TPOT counts one decode step plus choosing the
  next token, as ``edge_quamba.runtime.bench`` does;
* the engine alone: ``engine_ms_last`` of backends that time their enqueue with CUDA events (the TensorRT backend:
  median over prefills, p50 over decode steps) and whether decode replays a CUDA graph (``cuda_graph``). Read with
  getattr: a backend without them gets "n/a";
* from ``tegrastats --interval MS`` running in the background (jetson/tegra_telemetry.py): board input power
  integrated over the decode steps -> mJ per decoded token and mean decode power in W; idle power (median over the
  samples before the warm-up); median GPU (GR3D) and memory (EMC) clocks and the highest tj and GPU temperatures
  during decode. The raw log is kept next to the CSV (``<csv stem>.tegrastats/<date>.log``).
* memory: the process's peak RSS and the largest drop of MemAvailable (CPU and GPU share Jetson memory).

Pure functions (:func:`time_generation` with an injected clock, :func:`speed_fields`, :func:`telemetry_fields`,
:func:`append_row`) carry all the arithmetic; :func:`main` only wires them to the device.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import resource
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tegra_telemetry as tt  # noqa: E402  (jetson/ is not a package: the script's own folder)

NA = "n/a"
CSV_HEADER = ("date", "l4t", "jetpack", "cuda", "tensorrt", "torch", "edge_quamba", "nvpmodel", "jetson_clocks",
              "model", "backend", "batch", "prompt_len", "new_tokens", "repeats", "ttft_ms", "prefill_tokens_per_s",
              "tpot_ms", "decode_tokens_per_s", "model_bytes", "decode_weight_gb_per_s", "peak_rss_mib",
              "peak_mem_available_drop_mib",
              # format 2 (issue 18): the comparison on a device
              "tpot_p50_ms", "tpot_p90_ms", "engine_prefill_ms", "engine_decode_p50_ms", "cuda_graph",
              "gpu_mhz", "emc_mhz", "tj_max_c", "gpu_temp_max_c", "power_rail", "idle_power_w", "decode_power_w",
              "decode_mj_per_token", "tegrastats_interval_ms")
"""The CSV contract (tests/test_jetson_benchmark.py holds it): ``nvpmodel`` is the power mode ("MAXN (0)"),
``jetson_clocks`` is "pinned" or "not pinned"; clocks in MHz, temperatures in C, power in W, energy in mJ per decoded
token (board input rail ``power_rail``, gross: idle power included)."""


# ---- the timed loop ---------------------------------------------------------------------------------------------

@dataclass
class RunRecord:
    """One generation: clock readings (seconds) and the engine-only milliseconds the backend reported."""

    prefill_start: float
    decode_start: float
    decode_end: float
    step_s: list[float]
    prefill_engine_ms: float | None
    decode_engine_ms: list[float | None]

    @property
    def ttft_s(self) -> float:
        return self.decode_start - self.prefill_start


def engine_ms(backend) -> float | None:
    """``backend.engine_ms_last`` (engine-only ms of its last call, CUDA events around the enqueue) when it is a
    finite number >= 0, else None (a backend that does not measure it)."""
    value = getattr(backend, "engine_ms_last", None)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        return None
    return float(value)


def cuda_graph_state(backend) -> str:
    """"on" / "off" from ``backend.cuda_graph`` (a bool), "n/a" where the backend does not say."""
    value = getattr(backend, "cuda_graph", None)
    return {True: "on", False: "off"}.get(value, NA) if isinstance(value, bool) else NA


def next_token(logits) -> int:
    """Greedy choice; ``argmax`` of a torch tensor or a numpy array (no torch import needed)."""
    return int(logits.argmax())


def time_generation(backend, prompt: list[int], new_tokens: int, clock=time.perf_counter) -> RunRecord:
    """Prefill ``prompt``, then decode ``new_tokens - 1`` tokens greedily (EOS does not stop the loop), reading the
    clock around each phase and each step."""
    start = clock()
    logits, states = backend.prefill(prompt)
    token = next_token(logits)
    first = clock()
    prefill_engine = engine_ms(backend)
    steps, engine = [], []
    end = first
    for _ in range(new_tokens - 1):
        t0 = clock()
        logits, states = backend.decode(token, states)
        token = next_token(logits)
        end = clock()
        steps.append(end - t0)
        engine.append(engine_ms(backend))
    return RunRecord(start, first, end, steps, prefill_engine, engine)


def fmt(value: float | None, digits: int) -> str:
    return NA if value is None else f"{value:.{digits}f}"


def speed_fields(runs: list[RunRecord], prompt_len: int, model_bytes: int) -> dict[str, str]:
    """Timing columns from the measured runs (the warm-up already dropped)."""
    ttft = statistics.median(r.ttft_s for r in runs)
    tpot = statistics.median(statistics.fmean(r.step_s) for r in runs)
    steps = [s for r in runs for s in r.step_s]
    prefill_engine = [r.prefill_engine_ms for r in runs]
    decode_engine = [e for r in runs for e in r.decode_engine_ms]
    return {
        "ttft_ms": f"{ttft * 1e3:.3f}", "prefill_tokens_per_s": f"{prompt_len / ttft:.1f}",
        "tpot_ms": f"{tpot * 1e3:.3f}", "decode_tokens_per_s": f"{1 / tpot:.1f}",
        "model_bytes": str(model_bytes), "decode_weight_gb_per_s": f"{model_bytes / tpot / 1e9:.3f}",
        "tpot_p50_ms": f"{tt.percentile(steps, 50) * 1e3:.3f}", "tpot_p90_ms": f"{tt.percentile(steps, 90) * 1e3:.3f}",
        # engine-only time counts only where every call reported it (a partial set would be a biased median)
        "engine_prefill_ms": fmt(statistics.median(prefill_engine) if None not in prefill_engine else None, 3),
        "engine_decode_p50_ms": fmt(tt.percentile(decode_engine, 50)
                                    if decode_engine and None not in decode_engine else None, 3),
    }


def telemetry_fields(log: list[tuple[float, str]], runs: list[RunRecord], idle_before: float, rail: str,
                     interval_ms: int, warn=lambda message: None) -> dict[str, str]:
    """Telemetry columns from a tegrastats log and the measured runs' decode windows; each value that cannot be
    computed is "n/a" and its reason goes to ``warn``."""
    out = {"power_rail": rail, "tegrastats_interval_ms": str(interval_ms)}
    samples, rejected = tt.parse_samples(log)
    for reason in rejected[:3]:
        warn(f"tegrastats: {reason}")
    windows = [(r.decode_start, r.decode_end) for r in runs if r.decode_end > r.decode_start]
    decoded = sum(len(r.step_s) for r in runs)
    decode_seconds = sum(b - a for a, b in windows)
    during = tt.in_windows(samples, windows)

    def attempt(column: str, digits: int, compute):
        try:
            out[column] = fmt(compute(), digits)
        except tt.TelemetryError as e:
            out[column] = NA
            warn(f"{column}: {e}")

    def decode_energy_mj() -> float:
        if not windows:
            raise tt.TelemetryError("no decode window (no decode step took measurable time)")
        points = []
        for t, sample in samples:
            try:
                points.append((t, tt.rail_power_mw(sample, rail)))
            except tt.TelemetryError:
                continue  # a line without the rail; the gap check in energy_mj decides whether the trace still covers
        if not points:
            seen = sorted(samples[0][1].rails_mw) if samples else []
            raise tt.TelemetryError(f"no tegrastats line carries rail {rail} (rails printed: "
                                    f"{', '.join(seen) or 'none'})")
        times = [t for t, _ in points]
        tt.check_spacing(times, interval_ms / 1e3)
        # a lost line is a gap well beyond the usual one (at a few ms tegrastats prints slower than asked)
        usual = statistics.median(b - a for a, b in zip(times, times[1:])) if len(times) > 1 else 0.0
        return tt.energy_mj(points, windows, max_gap_s=3 * max(interval_ms / 1e3, usual))

    def idle_power() -> float:
        before = [tt.rail_power_mw(s, rail) for t, s in samples if t < idle_before]
        if not before:
            raise tt.TelemetryError("no tegrastats sample before the warm-up run")
        return statistics.median(before) / 1e3

    try:
        energy = decode_energy_mj()
        out["decode_mj_per_token"] = fmt(energy / decoded, 3)
        out["decode_power_w"] = fmt(energy / 1e3 / decode_seconds, 3)
    except tt.TelemetryError as e:
        out["decode_mj_per_token"] = out["decode_power_w"] = NA
        warn(f"decode energy: {e}")
    attempt("idle_power_w", 3, idle_power)
    attempt("gpu_mhz", 0, lambda: tt.median_of([s.gpu_mhz for s in during], "a GPU clock (GR3D_FREQ ...@MHz)"))
    attempt("emc_mhz", 0, lambda: tt.median_of([s.emc_mhz for s in during], "an EMC clock (EMC_FREQ ...@MHz)"))
    attempt("tj_max_c", 1, lambda: tt.max_of([s.temps_c.get("tj") for s in during], "tj@"))
    attempt("gpu_temp_max_c", 1, lambda: tt.max_of([s.temps_c.get("gpu") for s in during], "gpu@"))
    return out


def append_row(path: Path, row: dict) -> None:
    """Append ``row`` (keys = CSV_HEADER) to ``path``, writing the header first; refuse a file with another header."""
    missing = set(CSV_HEADER) - set(row)
    if missing or set(row) - set(CSV_HEADER):
        raise ValueError(f"row keys differ from CSV_HEADER: missing {sorted(missing)}, "
                         f"extra {sorted(set(row) - set(CSV_HEADER))}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size > 0:
        with open(path, newline="", encoding="utf-8") as f:
            header = tuple(next(csv.reader(f)))
        if header != CSV_HEADER:
            sys.exit(f"benchmark.py: {path} has another header; write to a new --csv file")
        write_header = False
    else:
        write_header = True
    with open(path, "a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_HEADER)
        if write_header:
            writer.writeheader()
        writer.writerow(row)


# ---- the device side (NEVER RUN) ---------------------------------------------------------------------------------

def command_output(*args: str) -> str | None:
    """A command's stdout, or None where the command is missing, fails or times out."""
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def package_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return NA


def platform_fields(warn) -> dict[str, str]:
    """Versions, power mode and clock state; never imports torch (the slim image has none)."""
    try:
        l4t = Path("/etc/nv_tegra_release").read_text(encoding="utf-8").splitlines()[0].strip("# ")
    except (OSError, IndexError):
        l4t = NA
    try:
        cuda = json.loads(Path("/usr/local/cuda/version.json").read_text(encoding="utf-8"))["cuda"]["version"]
    except (OSError, ValueError, KeyError, TypeError):
        cuda = NA
    tensorrt = package_version("tensorrt")
    if tensorrt == NA:  # JetPack's python3-libnvinfer may install no package metadata
        try:
            import tensorrt as trt_module

            tensorrt = trt_module.__version__
        except ImportError:
            pass
    from edge_quamba import __version__

    fields = {"l4t": l4t, "jetpack": (command_output("dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack") or NA)
              .strip() or NA, "cuda": cuda, "tensorrt": tensorrt, "torch": package_version("torch"),
              "edge_quamba": __version__}
    query, show = command_output("nvpmodel", "-q"), command_output("jetson_clocks", "--show")
    try:
        fields["nvpmodel"] = tt.power_mode(query or "")
    except tt.TelemetryError as e:
        fields["nvpmodel"] = NA
        warn(f"nvpmodel: {e if query is not None else 'nvpmodel -q is missing or failed'}")
    try:
        fields["jetson_clocks"] = "pinned" if tt.clocks_pinned(show or "") else "not pinned"
    except tt.TelemetryError as e:
        fields["jetson_clocks"] = NA
        warn(f"jetson_clocks: {e if show is not None else 'jetson_clocks --show is missing or failed (needs root)'}")
    return fields


def mem_available_mib() -> float:
    for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class MemoryWatch:
    """Samples MemAvailable every 50 ms in a thread; ``peak_drop`` is the largest drop from the start value."""

    def __init__(self):
        self.start = mem_available_mib()
        self.lowest = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.05):
            self.lowest = min(self.lowest, mem_available_mib())

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def peak_drop(self) -> float:
        return self.start - self.lowest


def measure(backend, prompt: list[int], new_tokens: int, repeats: int, recorder, idle_s: float):
    """Idle samples, one dropped warm-up run, ``repeats`` measured runs; returns (runs, time the warm-up began)."""
    if recorder is not None:
        time.sleep(idle_s)
    warmup_start = time.perf_counter()
    time_generation(backend, prompt, new_tokens)
    runs = [time_generation(backend, prompt, new_tokens) for _ in range(repeats)]
    if recorder is not None:
        time.sleep(2 * recorder.interval_ms / 1e3)  # a sample after the last window closes
    return runs, warmup_start


def positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return number


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="engine folder (tensorrt) or any model folder (ref/ort/cuda)")
    parser.add_argument("--backend", default="tensorrt", choices=("tensorrt", "cuda", "ref", "ort"))
    parser.add_argument("--prompt-len", type=positive, default=128)
    parser.add_argument("--new-tokens", type=positive, default=64, help=">= 2 (one prefill token, then decode steps)")
    parser.add_argument("--repeats", type=positive, default=5, help="measured runs after one dropped warm-up run")
    parser.add_argument("--csv", type=Path, default=Path("benchmarks/results/jetson.csv"))
    parser.add_argument("--tegrastats-interval-ms", type=positive, default=100,
                        help="tegrastats sampling interval; energy needs several samples per decode window")
    parser.add_argument("--power-rail", default="VDD_IN",
                        help="rail integrated for energy: VDD_IN (Orin Nano / NX: the module input) or a +-joined "
                             "sum of rails (AGX Orin prints no VDD_IN; see jetson/README.md)")
    parser.add_argument("--no-tegrastats", action="store_true", help="record no power, clocks or temperatures")
    args = parser.parse_args(argv)
    if args.new_tokens < 2:
        parser.error("--new-tokens must be >= 2 (TPOT needs at least one decode step)")

    def warn(message: str) -> None:
        print(f"benchmark.py: n/a: {message}", file=sys.stderr)

    from edge_quamba.folders import load_model_tokenizer, open_model
    from edge_quamba.runtime.backends import check_backend, make_backend
    from edge_quamba.runtime.bench import bench_prompt, model_bytes

    platform = platform_fields(warn)
    folder = open_model(args.model, check=lambda opened: check_backend(args.backend, opened))
    backend = make_backend(args.backend, folder)
    prompt = bench_prompt(load_model_tokenizer(folder), args.prompt_len)
    recorder = None
    if not args.no_tegrastats:
        recorder = tt.TegrastatsRecorder(args.tegrastats_interval_ms)
        if not recorder.available():
            warn("tegrastats is not on PATH (inside a container: mount the host's, jetson/README.md)")
            recorder = None
    with MemoryWatch() as watch:
        if recorder is not None:
            with recorder:
                runs, warmup_start = measure(backend, prompt, args.new_tokens, args.repeats, recorder, idle_s=1.0)
        else:
            runs, warmup_start = measure(backend, prompt, args.new_tokens, args.repeats, None, idle_s=0.0)

    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    row = {name: NA for name in CSV_HEADER}
    row.update(platform)
    row.update({"date": date, "model": str(folder.path), "backend": args.backend, "batch": "1",
                "prompt_len": str(args.prompt_len), "new_tokens": str(args.new_tokens), "repeats": str(args.repeats),
                "cuda_graph": cuda_graph_state(backend),
                "peak_rss_mib": f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}",
                "peak_mem_available_drop_mib": f"{watch.peak_drop:.0f}"})
    row.update(speed_fields(runs, args.prompt_len, model_bytes(folder, args.backend)))
    if recorder is not None:
        row.update(telemetry_fields(recorder.log, runs, warmup_start, args.power_rail, args.tegrastats_interval_ms,
                                    warn))
        log_path = args.csv.parent / f"{args.csv.stem}.tegrastats" / f"{date.replace(':', '')}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text(recorder.text(), encoding="utf-8")
        print(f"tegrastats log: {log_path}")
    append_row(args.csv, row)
    print(f"{args.backend}: TTFT {row['ttft_ms']} ms, TPOT p50 {row['tpot_p50_ms']} / p90 {row['tpot_p90_ms']} ms "
          f"(engine {row['engine_decode_p50_ms']} ms, CUDA graph {row['cuda_graph']}), "
          f"{row['decode_mj_per_token']} mJ/token on {row['power_rail']}, power mode {row['nvpmodel']}, clocks "
          f"{row['jetson_clocks']}; appended to {args.csv}")


if __name__ == "__main__":
    main()
