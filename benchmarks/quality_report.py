"""The report of benchmarks/quality.py: its JSON (rewritten after every variant, summarized over seeds), --resume
(a previous JSON merged in after checking it measured the same model, data and device), the printed table and the
PNG plot. The measuring (variants, calibration, perplexity, last-word accuracy, SQNR) is benchmarks/quality.py.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from pathlib import Path

from edge_quamba.eval.sqnr import TENSORS
from edge_quamba.integrity import file_sha256
from edge_quamba.models.locate import shard_files, weights_file

FP_VARIANTS = ("fp32", "fp16")
PAPER_VARIANT = "w8a8 quamba"
DEFAULT_VARIANT = "quamba +clip out_proj"
"""What `edge-quamba quantize` makes by default (QuantConfig()); every variant names its clipped sites explicitly,
so a row means the same whatever the default is."""


def summary(values: list[float]) -> dict:
    """mean, min, max and half the range (the table's +-) of per-seed values."""
    return {"mean": sum(values) / len(values), "min": min(values), "max": max(values),
            "half_range": (max(values) - min(values)) / 2, "n": len(values)}


class Report:
    """The JSON report, rewritten after every variant."""

    def __init__(self, args, started: float, header: dict):
        self.args, self.started, self.data = args, started, header

    def variant(self, name: str, runs: dict, config: dict | None, quant_config: dict | None = None) -> None:
        """runs: seed label -> {"perplexity": {seq_len: ppl}, optional "last_word": {...}}; config: the variant's
        QuantConfig keywords; quant_config: the whole QuantConfig of its last run (defaults of this checkout)."""
        self.data["variants"][name] = {"config": config, "runs": runs, "quant_config": quant_config}
        self.write()

    def summarize(self, entry: dict) -> None:
        """Mean and spread over seeds of each perplexity, its change vs fp16 and the last-word accuracy."""
        fp16 = self.data["variants"].get("fp16")
        entry["perplexity"], entry["vs_fp16_percent"] = {}, {}
        for seq_len in map(str, self.args.seq_lens):
            values = [run["perplexity"][seq_len] for run in entry["runs"].values()]
            entry["perplexity"][seq_len] = summary(values)
            if fp16 is not None:
                base = fp16["runs"]["-"]["perplexity"][seq_len]
                entry["vs_fp16_percent"][seq_len] = summary([100 * (v / base - 1) for v in values])
        accs = [run["last_word"]["acc"] for run in entry["runs"].values() if "last_word" in run]
        if accs:
            entry["last_word_acc"] = summary(accs)

    def write(self) -> None:
        for entry in self.data["variants"].values():
            self.summarize(entry)
        self.data["seconds"] = round(time.time() - self.started, 1)
        out = Path(self.args.out_prefix).with_suffix(".json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(self.data, indent=2) + "\n")


def seed_label(seed: int | None) -> str:
    """How a calibration seed is named in the JSON: "file" (first windows in file order) or the integer's digits."""
    return "file" if seed is None else str(seed)


def model_sha256(path: Path) -> str:
    """sha256 over the checkpoint's config.json and weight file(s) (shards too): what --resume compares, since a
    retrained model may live at the same path."""
    weights = weights_file(path)
    files = [path / "config.json", weights]
    if weights.name.endswith(".index.json"):
        files += shard_files(weights)
    return hashlib.sha256("".join(f"{f.name}:{file_sha256(f)}\n" for f in files).encode()).hexdigest()


RESUME_MUST_MATCH = ("model_sha256", "eval_data", "windows", "last_word_task")
"""Header fields a resumed JSON must share with this run (and the calibration file, window count and length)."""


def resume_into(header: dict, source: Path) -> None:
    """Merge a previous JSON's runs into ``header`` after checking that it measured the same thing; a one-line
    SystemExit naming the first difference otherwise."""
    try:
        previous = json.loads(source.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"--resume {source}: not a readable JSON ({exc})") from None
    calib_keys = ("file", "sha256", "samples", "seq_len")
    pairs = [(k, previous.get(k), header[k]) for k in RESUME_MUST_MATCH]
    pairs += [(f"calibration.{k}", previous.get("calibration", {}).get(k), header["calibration"][k])
              for k in calib_keys]
    pairs.append(("machine.device", previous.get("machine", {}).get("device"), header["machine"]["device"]))
    for key, before, now in pairs:
        if before != now:
            raise SystemExit(f"--resume {source}: {key} differs ({before!r} there, {now!r} here); a resumed table "
                             "must measure the same model, data and device")
    header["variants"] = previous["variants"]
    header["sqnr_db"] = previous["sqnr_db"]
    header["calibration"]["windows"] = previous["calibration"].get("windows", {})
    header["calibration"]["seeds"] = list(dict.fromkeys([*previous["calibration"]["seeds"],
                                                         *header["calibration"]["seeds"]]))
    header["resumed"] = {"from": source.name, "commands": [*previous.get("resumed", {}).get("commands", []),
                                                           {"command": previous["command"],
                                                            "date": previous["date"],
                                                            "seconds": previous.get("seconds")}]}


def log(report: Report, what: str, run: dict) -> None:
    ppl = "  ".join(f"ppl@{n} {v:.3f}" for n, v in run["perplexity"].items())
    acc = f"  last-word acc {run['last_word']['acc']:.3f}" if "last_word" in run else ""
    print(f"[{time.time() - report.started:6.0f} s] {what}: {ppl}{acc}", file=sys.stderr, flush=True)


def print_table(data: dict) -> None:
    seq_lens = list(data["windows"])
    print(f"\n{data['model']}: held-out perplexity on {data['eval_data']['file']} "
          f"(sha256 {data['eval_data']['sha256'][:12]}, first {data['eval_data']['tokens']} tokens), windows "
          + ", ".join(f"{n} ({w['count']} windows)" for n, w in data["windows"].items()))
    calib = data["calibration"]
    print(f"calibration: {calib['file']} (sha256 {calib['sha256'][:12]}), {calib['samples']} windows of "
          f"{calib['seq_len']} tokens, seeds {calib['seeds']}; mean over seeds +- half the min-max range")
    head = "".join(f"{'ppl@' + n:>18}{'vs fp16':>16}" for n in seq_lens)
    print(f"{'variant':<26}{head}{'last-word acc':>16}")
    for name, entry in data["variants"].items():
        cells = ""
        for n in seq_lens:
            p, d = entry["perplexity"][n], entry["vs_fp16_percent"].get(n)
            cells += f"{p['mean']:>11.3f} +-{p['half_range']:<5.3f}"
            cells += f"{d['mean']:>+9.2f}% +-{d['half_range']:<4.2f}" if d else f"{'':>16}"
        acc = entry.get("last_word_acc")
        cells += f"{acc['mean']:>16.3f}" if acc else ""
        print(f"{name:<26}{cells}")
    lw = data["last_word_task"]
    print(f"last-word task: {lw['examples']} passages of {lw['source']} (lm-eval, acc = every target token greedy)")
    if data["skipped"]:
        print(f"skipped at the deadline: {', '.join(data['skipped'])}")
    if PAPER_VARIANT in data["sqnr_db"]:
        print(f"\nper-layer SQNR (dB) of {PAPER_VARIANT}, first seed:")
        print(f"{'layer':<7}" + "".join(f"{t:>16}" for t in TENSORS))
        for i, layer in enumerate(data["sqnr_db"][PAPER_VARIANT]):
            print(f"{i:<7}" + "".join(f"{layer[t]:>16.1f}" for t in TENSORS))


def plot(data: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 5), gridspec_kw={"width_ratios": [1.6, 1]})
    names = [n for n in data["variants"] if n not in FP_VARIANTS]
    seq_lens = list(data["windows"])
    width = 0.8 / max(len(seq_lens), 1)
    for j, n in enumerate(seq_lens):
        stats = [data["variants"][v]["vs_fp16_percent"].get(n) for v in names]
        means = [s["mean"] if s else math.nan for s in stats]
        errors = [[s["mean"] - s["min"] if s else 0 for s in stats], [s["max"] - s["mean"] if s else 0 for s in stats]]
        xs = [i + (j - (len(seq_lens) - 1) / 2) * width for i in range(len(names))]
        ax1.bar(xs, means, width, yerr=errors, capsize=2, label=f"windows of {n}")
    ax1.axhline(1.0, color="#c44", lw=0.8, ls="--", label="+1% target")
    ax1.set_yscale("symlog", linthresh=2)
    ax1.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
    ax1.set_ylabel("perplexity vs fp16 (%), bars: min-max over seeds")
    ax1.legend(fontsize=8)
    for name, style in (("w8a8 naive", "--"), (PAPER_VARIANT, ":"), (DEFAULT_VARIANT, "-")):
        for tensor, color in (("u", "#e93"), ("out_proj_input", "#39c"), ("mixer_output", "#2a2")):
            if name in data["sqnr_db"]:
                ax2.plot([layer[tensor] for layer in data["sqnr_db"][name]], style, color=color,
                         label=f"{tensor} ({name})")
    ax2.set_xlabel("layer")
    ax2.set_ylabel("SQNR vs fp32 (dB), first seed")
    ax2.legend(fontsize=7)
    fig.suptitle(f"W8A8 variants on {Path(data['model']).name}, {data['eval_data']['tokens']} eval tokens, "
                 f"{data['machine']['device']} ({data['date']})")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
