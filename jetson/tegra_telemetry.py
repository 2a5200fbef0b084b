"""Jetson telemetry for jetson/benchmark.py: `tegrastats` lines, `jetson_clocks --show` and `nvpmodel -q` parsed,
board power integrated to energy over the decode phase.

Everything here except :class:`TegrastatsRecorder` is a pure function (text or numbers in, numbers out), tested on CPU
against tegrastats output recorded on real boards (tests/fixtures/tegrastats/, each file names its source). The rule
throughout: a field that is absent or cannot be read gives ``None`` or a one-line :class:`TelemetryError`, never a
guessed number. The benchmark writes "n/a" for either.

A tegrastats line on Orin, JetPack 6 (L4T r36), one per ``--interval`` milliseconds::

    [MM-DD-YYYY HH:MM:SS] RAM 3408/15657MB (lfb 176x4MB) SWAP 0/7828MB (cached 0MB) CPU [33%@806,...]
    EMC_FREQ 0%@2133 GR3D_FREQ 0%@[305] ... APE 174 cv0@52.781C cpu@55.187C ... tj@55.875C ...
    VDD_IN 5469mW/5469mW VDD_CPU_GPU_CV 970mW/970mW VDD_SOC 1579mW/1579mW

Fields read (all optional, each independently):

* rails ``NAME <now>mW/<avg>mW`` (JetPack 7 adds ``/<max>mW``): the first value, the instantaneous power in mW. The
  second is a running average since tegrastats started, useless for a window. Values printed without the ``mW`` unit
  (JetPack 4: ``VDD_IN 5297/5297``) are not read. A rail name printed twice with different values is ambiguous and
  not read (AGX Orin prints ``NC 0mW/0mW`` twice for unconnected channels).
* ``GR3D_FREQ <load>%@[<MHz>,...]`` (JetPack 6), ``GR3D_FREQ <load>%@<MHz> GR3D2_FREQ ...`` (JetPack 5, one field per
  GPC) or ``GR3D_FREQ <load>%`` (tegrastats run without root prints no clock): GPU load in % and the highest GPC clock
  in MHz.
* ``EMC_FREQ <load>%@<MHz>`` or ``EMC_FREQ <load>%`` (no root): memory controller load and clock.
* temperatures ``name@<deg>C`` (JetPack 7: ``name@<now>C/<max>C``), names lower-cased (JetPack 5 prints ``CPU@``,
  JetPack 6 ``cpu@``); -256 C means "no sensor" and is dropped.

Energy: the board input rail (``VDD_IN`` on Orin Nano and Orin NX, the module's total input) sampled at the times the
lines arrived, linearly interpolated, integrated over each decode window (mW x s = mJ). AGX Orin prints no ``VDD_IN``
(its rails are VDD_GPU_SOC, VDD_CPU_CV, VIN_SYS_5V0, VDDQ_VDD2_1V8AO); a ``+``-joined rail list sums rails, and which
sum equals the module input there is the user's call (benchmark.py ``--power-rail``; jetson/README.md).
"""

from __future__ import annotations

import math
import re
import shutil
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field


class TelemetryError(ValueError):
    """A telemetry value cannot be computed from what was recorded; the message (one line) says why."""


@dataclass(frozen=True)
class TegraSample:
    """One parsed tegrastats line. ``None`` / absent key: the line did not carry that field."""

    rails_mw: dict[str, float] = field(default_factory=dict)
    gpu_load_pct: float | None = None
    gpu_mhz: float | None = None
    emc_load_pct: float | None = None
    emc_mhz: float | None = None
    temps_c: dict[str, float] = field(default_factory=dict)


_RAM = re.compile(r"(?:^|\s)RAM \d+/\d+[kMG]B")
_RAIL = re.compile(r"(?:^|\s)([A-Z][A-Z0-9_]*) (\d+)mW/(\d+)mW(?:/\d+mW)?(?=\s|$)")
_GR3D = re.compile(r"(?:^|\s)GR3D2?_FREQ (?:(\d+)%)?(?:@\[([\d,]+)\]|@(\d+))?(?=\s|$)")
_EMC = re.compile(r"(?:^|\s)EMC_FREQ (?:(\d+)%)?(?:@(\d+))?(?=\s|$)")
_TEMP = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_]*)@(-?\d+(?:\.\d+)?)C(?:/-?\d+(?:\.\d+)?C)?(?=\s|$)")
NO_SENSOR_C = -256.0
"""tegrastats prints a thermal zone without a sensor as -256C (AGX Orin's cv0/cv1/cv2 on JetPack 5)."""


def parse_tegrastats_line(line: str) -> TegraSample:
    """One tegrastats line -> :class:`TegraSample`. Raises TelemetryError for a line that is not tegrastats output
    (no ``RAM used/total`` field: an error message, a truncated line)."""
    if not _RAM.search(line):
        raise TelemetryError(f"not a tegrastats line (no 'RAM used/total' field): {line.strip()[:80]!r}")
    rails: dict[str, float] = {}
    ambiguous: set[str] = set()
    for name, now, _avg in _RAIL.findall(line):
        if name in rails and rails[name] != float(now):
            ambiguous.add(name)
        rails[name] = float(now)
    for name in ambiguous:
        del rails[name]

    gpu_loads, gpu_clocks = [], []
    for load, bracketed, plain in _GR3D.findall(line):
        if load:
            gpu_loads.append(float(load))
        clocks = bracketed.split(",") if bracketed else [plain] if plain else []
        gpu_clocks += [float(c) for c in clocks if c]
    emc = _EMC.search(line)
    temps = {name.lower(): float(deg) for name, deg in _TEMP.findall(line) if float(deg) != NO_SENSOR_C}
    return TegraSample(
        rails_mw=rails,
        gpu_load_pct=max(gpu_loads) if gpu_loads else None,
        gpu_mhz=max(gpu_clocks) if gpu_clocks else None,
        emc_load_pct=float(emc.group(1)) if emc and emc.group(1) else None,
        emc_mhz=float(emc.group(2)) if emc and emc.group(2) else None,
        temps_c=temps,
    )


def parse_log(text: str) -> list[tuple[float, str]]:
    """A recorded log, one ``<seconds>::<tegrastats line>`` per line (what :class:`TegrastatsRecorder` writes; the
    seconds are the host clock when the line arrived) -> [(seconds, line)]. Blank lines are skipped; any other line
    without a numeric ``<seconds>::`` prefix raises TelemetryError."""
    out = []
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        stamp, sep, line = raw.partition("::")
        try:
            seconds = float(stamp)
        except ValueError:
            seconds = math.nan
        if not sep or not math.isfinite(seconds):
            raise TelemetryError(f"log line {number} has no '<seconds>::' prefix: {raw.strip()[:80]!r}")
        out.append((seconds, line))
    return out


def parse_samples(log: list[tuple[float, str]]) -> tuple[list[tuple[float, TegraSample]], list[str]]:
    """Parse every line of a log; lines that are not tegrastats output are set aside (returned as the second list,
    one reason each) instead of stopping the run."""
    samples, rejected = [], []
    for seconds, line in log:
        try:
            samples.append((seconds, parse_tegrastats_line(line)))
        except TelemetryError as e:
            rejected.append(str(e))
    return samples, rejected


def rail_power_mw(sample: TegraSample, rail: str) -> float:
    """Power of ``rail`` in mW: one rail name, or several joined by ``+`` (summed). TelemetryError if one is absent."""
    total = 0.0
    for name in rail.split("+"):
        name = name.strip()
        if name not in sample.rails_mw:
            have = ", ".join(sorted(sample.rails_mw)) or "none"
            raise TelemetryError(f"rail {name} is not in the tegrastats line (rails printed: {have})")
        total += sample.rails_mw[name]
    return total


def check_spacing(times: list[float], interval_s: float) -> None:
    """Raise TelemetryError when the lines arrived in bursts (more than a quarter of the gaps shorter than a quarter
    of the interval): tegrastats' output was block-buffered, so arrival times say nothing about when a value was
    sampled and no energy can be computed from them."""
    gaps = [b - a for a, b in zip(times, times[1:])]
    if any(g < 0 for g in gaps):
        raise TelemetryError("tegrastats timestamps go backwards")
    if len(gaps) >= 4 and sum(g < interval_s / 4 for g in gaps) > len(gaps) / 4:
        raise TelemetryError(f"tegrastats lines arrived in bursts (buffered output; interval {interval_s * 1e3:g} ms): "
                             f"their arrival times cannot date the power samples")


def energy_mj(points: list[tuple[float, float]], windows: list[tuple[float, float]],
              max_gap_s: float) -> float:
    """Energy in mJ of a power trace over ``windows``.

    points: [(seconds, mW)] in time order; the trace is linear between points. Each window (start, end) must lie
    inside the trace (a point at or before its start and one at or after its end), with no gap between consecutive
    points longer than ``max_gap_s`` where they touch it; otherwise TelemetryError (too few samples to say)."""
    times = [t for t, _ in points]
    if any(b < a for a, b in zip(times, times[1:])):
        raise TelemetryError("power samples are not in time order")
    total = 0.0
    for start, end in windows:
        if end < start:
            raise TelemetryError(f"window ({start}, {end}) ends before it starts")
        if not points or times[0] > start or times[-1] < end:
            raise TelemetryError(f"no power sample before and after the window {end - start:.3f} s long: "
                                 f"tegrastats did not cover it")
        for (t0, p0), (t1, p1) in zip(points, points[1:]):
            lo, hi = max(t0, start), min(t1, end)
            if hi <= lo:
                continue
            if t1 - t0 > max_gap_s:
                raise TelemetryError(f"{t1 - t0:.3f} s between two power samples inside a window "
                                     f"(more than {max_gap_s:.3f} s): lines were lost")
            slope = (p1 - p0) / (t1 - t0)
            p_lo, p_hi = p0 + slope * (lo - t0), p0 + slope * (hi - t0)
            total += 0.5 * (p_lo + p_hi) * (hi - lo)
    return total


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between order statistics (numpy's default method)."""
    if not values:
        raise TelemetryError("no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def in_windows(samples: list[tuple[float, TegraSample]], windows: list[tuple[float, float]]) -> list[TegraSample]:
    """The samples whose time falls inside one of the windows."""
    return [s for t, s in samples if any(a <= t <= b for a, b in windows)]


def median_of(values: list[float | None], what: str) -> float:
    present = [v for v in values if v is not None]
    if not present:
        raise TelemetryError(f"no tegrastats sample in the decode windows carries {what}")
    return statistics.median(present)


def max_of(values: list[float | None], what: str) -> float:
    present = [v for v in values if v is not None]
    if not present:
        raise TelemetryError(f"no tegrastats sample in the decode windows carries {what}")
    return max(present)


# ---- jetson_clocks --show and nvpmodel -q ----------------------------------------------------------------------

_CLOCK = re.compile(r"MinFreq=(\d+) MaxFreq=(\d+) CurrentFreq=(\d+)")


def clocks_pinned(show: str) -> bool:
    """Whether ``jetson_clocks --show`` says the clocks are pinned (what ``sudo jetson_clocks`` does):

    * every CPU line (``cpuN: [Online=1] Governor=... MinFreq=a MaxFreq=b ...``) of an online core has a == b,
    * every GPU line (``GPU MinFreq=...``; per GPC ``gpu-gpc-N MinFreq=...`` on newer releases) has a == b,
    * the EMC line has ``FreqOverride=1`` where it prints that field, otherwise MinFreq == MaxFreq.

    TelemetryError when the text has no GPU or no EMC line (not jetson_clocks output, or it failed)."""
    cpus, gpus, emc = [], [], None
    for line in show.splitlines():
        clock = _CLOCK.search(line)
        head = line.strip().split(" ", 1)[0]
        if clock is None:
            continue
        low, high = int(clock.group(1)), int(clock.group(2))
        if re.match(r"cpu\d+:", head):
            if "Online=0" not in line:
                cpus.append(low == high)
        elif head == "GPU" or head.startswith("gpu-gpc"):
            gpus.append(low == high)
        elif head == "EMC":
            override = re.search(r"FreqOverride=(\d)", line)
            emc = override.group(1) == "1" if override else low == high
    if not gpus or emc is None:
        raise TelemetryError("jetson_clocks --show printed no GPU or no EMC clock line")
    return all(cpus) and all(gpus) and emc


def power_mode(query: str) -> str:
    """``nvpmodel -q`` output (``NV Power Mode: MAXN`` then the mode id on the next line; a fan line may come
    first) -> ``"MAXN (0)"``, or just the name where no id follows. TelemetryError without a power-mode line."""
    lines = [line.strip() for line in query.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        match = re.match(r"NV Power Mode:\s*(\S.*)$", line)
        if match:
            name = match.group(1).strip()
            following = lines[i + 1] if i + 1 < len(lines) else ""
            return f"{name} ({following})" if following.isdigit() else name
    raise TelemetryError("nvpmodel -q printed no 'NV Power Mode:' line")


# ---- recording (the only part that starts a process) --------------------------------------------------------------

class TegrastatsRecorder:
    """Runs ``tegrastats --interval MS`` in the background (a context manager) and stamps each line with
    ``time.perf_counter()`` when it arrives; ``log`` holds the ``(seconds, line)`` pairs.

    tegrastats writes through stdio, which block-buffers a pipe; ``stdbuf -oL`` (coreutils) asks for line buffering
    where it is installed, and :func:`check_spacing` refuses timestamps that still came in bursts. NEVER RUN: no
    Jetson was available where this was written."""

    def __init__(self, interval_ms: int, executable: str = "tegrastats"):
        self.interval_ms = interval_ms
        self.executable = executable
        self.log: list[tuple[float, str]] = []
        self._process: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None

    def available(self) -> bool:
        return shutil.which(self.executable) is not None

    def __enter__(self):
        command = [self.executable, "--interval", str(self.interval_ms)]
        if shutil.which("stdbuf"):
            command = ["stdbuf", "-oL", *command]
        self._process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                         bufsize=1)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self):
        for line in self._process.stdout:
            self.log.append((time.perf_counter(), line.rstrip("\n")))

    def __exit__(self, *exc):
        self._process.terminate()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._thread.join(timeout=5)

    def text(self) -> str:
        """The log in :func:`parse_log`'s format."""
        return "".join(f"{t:.6f}::{line}\n" for t, line in self.log)
