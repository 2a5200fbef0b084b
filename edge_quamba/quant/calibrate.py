"""Calibration: run the fp model on calibration text and observe every quantization site of every mixer.

The fp model runs its mixers through the one data flow (:func:`edge_quamba.quant.flow.float_flow`), whose
``quantize`` calls observe the float value at each site of :mod:`edge_quamba.quant.sites` (the out_proj input after
the Hadamard transform when it is on). Scales come from the fp activations (static post-training quantization, as
in the official code). Batches are fixed-length windows of the tokenized text: in file order by default, or at
start offsets drawn with a seed (``QuantConfig.calib_seed``, to measure the spread over calibration draws). The same
windows in the same order give bit-identical scales on one machine (README "Determinism" says what was measured).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager

import torch
from torch import Tensor
from tqdm import tqdm

from edge_quamba.errors import InputError
from edge_quamba.integrity import file_sha256
from edge_quamba.models.mamba import MambaLM
from edge_quamba.models.tokenizer import TextTokenizer
from edge_quamba.quant.flow import float_flow
from edge_quamba.quant.gptq import HessianAccumulator
from edge_quamba.quant.observers import AbsMaxObserver, PercentileObserver, sequence_quantiles
from edge_quamba.quant.config import FOUR_BIT_LINEARS, QuantConfig
from edge_quamba.quant.sites import SITE_NAMES, static_site_names


@dataclass(frozen=True)
class CalibrationData:
    """Token windows for calibration and where they came from. tokens: (samples, seq_len) int64.

    seed: None for the first windows in file order; else the seed that drew ``offsets`` (each window's first token's
    index in the tokenized text, in calibration order)."""

    tokens: Tensor
    source: str
    sha256: str
    seed: int | None = None
    offsets: tuple[int, ...] = ()

    def manifest(self) -> dict:
        manifest = {"file": Path(self.source).name, "sha256": self.sha256, "samples": int(self.tokens.shape[0]),
                    "seq_len": int(self.tokens.shape[1])}
        if self.seed is not None:  # file-order manifests stay as they were (same artifact bytes as before)
            manifest.update(seed=self.seed, window_offsets=list(self.offsets))
        return manifest


def draw_offsets(total: int, samples: int, seq_len: int, seed: int) -> list[int]:
    """``samples`` window start offsets in [0, total - seq_len], drawn independently (windows may overlap) with
    Python's ``random.Random(seed)``, whose sequence for an int seed is fixed across platforms and versions."""
    rng = random.Random(seed)
    return [rng.randrange(total - seq_len + 1) for _ in range(samples)]


def read_calibration_texts(path: Path) -> list[str]:
    """A .jsonl file (one object per line with a "text" field) or any other file as plain UTF-8 text."""
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"calibration data {path} is not readable UTF-8 text: {exc}") from None
    if path.suffix != ".jsonl":
        return [raw]
    texts = []
    for number, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply for the parser
            raise InputError(f"calibration data {path}:{number} is not valid JSON: {exc}") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise InputError(f"calibration data {path}:{number} has no string field \"text\"")
        texts.append(record["text"])
    return texts


def load_calibration_data(path: Path, tokenizer: TextTokenizer, samples: int, seq_len: int,
                          seed: int | None = None) -> CalibrationData:
    """``samples`` windows of ``seq_len`` tokens of the file (documents joined by EOS): the first ones in file order
    (seed None), or at offsets drawn with ``seed`` (:func:`draw_offsets`)."""
    texts = read_calibration_texts(path)
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer.encode(text))
        if len(texts) > 1 and tokenizer.eos_token_id is not None:
            ids.append(tokenizer.eos_token_id)
    needed = samples * seq_len
    if len(ids) < needed:
        raise InputError(
            f"calibration data {path} has {len(ids)} tokens; {samples} samples of {seq_len} need {needed} "
            f"(lower --calib-samples or --calib-seq-len)"
        )
    if seed is None:
        tokens = torch.tensor(ids[:needed], dtype=torch.long).view(samples, seq_len)
        return CalibrationData(tokens=tokens, source=str(path), sha256=file_sha256(path))
    offsets = draw_offsets(len(ids), samples, seq_len, seed)
    tokens = torch.tensor([ids[o:o + seq_len] for o in offsets], dtype=torch.long)  # (samples, seq_len)
    return CalibrationData(tokens=tokens, source=str(path), sha256=file_sha256(path), seed=seed,
                           offsets=tuple(offsets))


def observer_spec(qconfig: QuantConfig, site: str) -> tuple:
    """What statistic ``qconfig`` takes at ``site``: ("absmax",) or ("percentile", percentile, momentum)."""
    if qconfig.percentile is not None and site in qconfig.percentile_activations:
        return ("percentile", qconfig.percentile, qconfig.percentile_momentum)
    return ("absmax",)


class SiteObservers:
    """Per (layer, site), one observer for each distinct statistic the configs ask for (abs-max, or a percentile
    with its momentum), so that several recipes sharing one Hadamard setting calibrate from ONE pass over the data
    with exactly the amaxes separate passes would give (same values, same order). A config reads only its static
    sites (out_proj_input has no static scale when its scale is per token)."""

    def __init__(self, n_layer: int, qconfigs: list[QuantConfig]):
        def observer(layer: int, site: str, spec: tuple):
            name = f"layers.{layer}.mixer.{site}"
            return AbsMaxObserver(name) if spec[0] == "absmax" else PercentileObserver(name, spec[1], spec[2])

        specs = {site: sorted({observer_spec(q, site) for q in qconfigs}) for site in SITE_NAMES}
        self.observers = [{site: {spec: observer(i, site, spec) for spec in specs[site]} for site in SITE_NAMES}
                          for i in range(n_layer)]

    def __call__(self, layer: int, site: str, x: Tensor) -> None:
        """x: (b, l, ...). A percentile is taken per calibration sequence, as in the official recipe; the
        percentiles of one site share one topk per batch (:func:`sequence_quantiles`)."""
        observers = self.observers[layer][site]
        percentile = [obs for obs in observers.values() if isinstance(obs, PercentileObserver)]
        for obs in observers.values():
            if isinstance(obs, AbsMaxObserver):
                obs.observe(x)
        if percentile:
            for quantiles in sequence_quantiles(x, [obs.percentile for obs in percentile], percentile[0].name):
                for obs, q in zip(percentile, quantiles, strict=True):  # sequences in order, as separate observes
                    obs.update(q)

    def amaxes(self, qconfig: QuantConfig) -> list[dict[str, Tensor]]:
        static = static_site_names(qconfig.out_proj_scale)
        return [{site: layer[site][observer_spec(qconfig, site)].amax() for site in static}
                for layer in self.observers]


LINEAR_INPUT_SITES = {"in_proj_input": "in_proj", "u": "x_proj", "dbc": "dt_proj", "out_proj_input": "out_proj"}
"""The site whose float value is each linear's input in :func:`edge_quamba.quant.flow.mamba1_mixer_flow`
(dt_proj reads the first dt_rank columns of dbc; out_proj's input site sees H y when Hadamard is on, the input of
the rotated weight)."""


class LinearHessians:
    """GPTQ's statistics: per layer and linear, H = 2 X^T X / tokens of the linear's *float* input, observed at the
    sites of :data:`LINEAR_INPUT_SITES` in the same pass as the scales.

    Float inputs rather than the int8-dequantized ones the W4A8 model will feed: one calibration pass serves the
    scales and the Hessians, both 4-bit configs get the same weights (their quality differs only by the activation
    path), and int8 rounding noise (independent, variance ~ s^2 / 12 per element) would only add a small multiple of
    the identity to H, which GPTQ's damping already does."""

    def __init__(self, n_layer: int, dt_rank: int):
        self.dt_rank = dt_rank
        self.layers: list[dict[str, HessianAccumulator]] = [{} for _ in range(n_layer)]

    def __call__(self, layer: int, site: str, x: Tensor) -> None:
        linear = LINEAR_INPUT_SITES.get(site)
        if linear is None:
            return
        x = x[..., : self.dt_rank] if linear == "dt_proj" else x
        self.layers[layer].setdefault(linear, HessianAccumulator(x.shape[-1])).add(x)

    def hessians(self) -> list[dict[str, Tensor]]:
        """Per layer, by linear name: H (K, K) float64."""
        missing = [name for layer in self.layers for name in FOUR_BIT_LINEARS if name not in layer]
        if missing:
            raise AssertionError(f"no calibration input seen for {missing[0]}")
        return [{name: acc.H for name, acc in layer.items()} for layer in self.layers]


@torch.inference_mode()
def calibrate(model: MambaLM, data: CalibrationData, qconfig: QuantConfig, batch_size: int = 8,
              progress: bool = True, hessians: LinearHessians | None = None) -> list[dict[str, Tensor]]:
    """Per-layer amaxes of every static site (a list with one dict per layer, keys: the site names). ``hessians``,
    when given, also accumulates every linear's input Hessian (GPTQ) in the same pass."""
    return calibrate_many(model, data, [qconfig], batch_size, progress, hessians)[0]


def site_tap(observers: Callable[[int, str, Tensor], None],
             hessians: Callable[[int, str, Tensor], None] | None) -> Callable[[int, str, Tensor], None]:
    """The tap a float flow calls at each site (layer or block index, site name, tensor): the observers, then the
    Hessian accumulators when given (GPTQ's statistics come from the same pass)."""
    def tap(layer: int, site: str, x: Tensor) -> None:
        observers(layer, site, x)
        if hessians is not None:
            hessians(layer, site, x)
    return tap


@torch.inference_mode()
def run_calibration(model, data: CalibrationData, flow: ContextManager, batch_size: int, progress: bool,
                    desc: str = "calibrating") -> None:
    """Every batch of ``data`` through ``model.residual_stream`` inside ``flow`` (a float flow whose tap observes
    the sites; no lm_head: only the mixers are observed). NaN or Inf in the residual stream, or an observer's
    ValueError (its message names the layer and tensor), becomes a one-line InputError."""
    try:
        with flow:
            for batch in tqdm(data.tokens.split(batch_size), desc=desc, unit="batch", disable=not progress):
                resid, _ = model.residual_stream(batch.to(model.device))
                if not torch.isfinite(resid).all():
                    raise InputError("calibration: the model's residual stream holds NaN or Inf")
    except ValueError as exc:
        raise InputError(f"calibration stopped: {exc}") from None


@torch.inference_mode()
def calibrate_many(model: MambaLM, data: CalibrationData, qconfigs: list[QuantConfig], batch_size: int = 8,
                   progress: bool = True, hessians: LinearHessians | None = None) -> list[list[dict[str, Tensor]]]:
    """:func:`calibrate` for several configs that share one ``hadamard`` setting, in one pass over ``data``:
    one amax list per config, each equal to what ``calibrate(model, data, qconfig)`` returns."""
    if len({q.hadamard for q in qconfigs}) != 1:
        raise ValueError("calibrate_many: the configs must share one hadamard setting (it changes what is observed)")
    observers = SiteObservers(model.config.n_layer, qconfigs)
    run_calibration(model, data, float_flow(model, qconfigs[0].hadamard, site_tap(observers, hessians)), batch_size,
                    progress)
    return [observers.amaxes(q) for q in qconfigs]
