"""Calibration: run the fp model on calibration text and observe the six activations of every mixer.

Observation uses forward hooks on the fp mixer's linears, so the fp reference stays untouched:
    in_proj  input -> in_proj_input          in_proj output -> xz (x and z share one scale)
    x_proj   input -> u (percentile)          x_proj output  -> dbc
    dt_proj  output minus its bias -> dt      out_proj input -> out_proj_input (after the Hadamard transform when on)
Scales come from the fp activations (static post-training quantization, as in the official code). Batches are
fixed-length windows of the tokenized text in file order, so the same inputs give bit-identical scales.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from edge_quamba.errors import InputError
from edge_quamba.models.mamba import MambaLM
from edge_quamba.models.tokenizer import TextTokenizer
from edge_quamba.quant.hadamard import hadamard_transform
from edge_quamba.quant.observers import AbsMaxObserver, PercentileObserver
from edge_quamba.quant.qmodel import ACTIVATIONS, QuantConfig


@dataclass(frozen=True)
class CalibrationData:
    """Token windows for calibration and where they came from. tokens: (samples, seq_len) int64."""

    tokens: Tensor
    source: str
    sha256: str

    def manifest(self) -> dict:
        return {"file": Path(self.source).name, "sha256": self.sha256, "samples": int(self.tokens.shape[0]),
                "seq_len": int(self.tokens.shape[1])}


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
        except json.JSONDecodeError as exc:
            raise InputError(f"calibration data {path}:{number} is not valid JSON: {exc}") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise InputError(f"calibration data {path}:{number} has no string field \"text\"")
        texts.append(record["text"])
    return texts


def load_calibration_data(path: Path, tokenizer: TextTokenizer, samples: int, seq_len: int) -> CalibrationData:
    """The first ``samples`` windows of ``seq_len`` tokens of the file (documents joined by EOS)."""
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
    tokens = torch.tensor(ids[:needed], dtype=torch.long).view(samples, seq_len)
    return CalibrationData(tokens=tokens, source=str(path), sha256=hashlib.sha256(path.read_bytes()).hexdigest())


class MixerObservers:
    """The six observers of one mixer, attached to its linears with forward hooks."""

    def __init__(self, layer: int, mixer, qconfig: QuantConfig):
        def name(act: str) -> str:
            return f"layers.{layer}.mixer.{act}"

        self.observers = {act: AbsMaxObserver(name(act)) for act in ACTIVATIONS}
        if qconfig.percentile is not None:
            for act in qconfig.percentile_activations:
                self.observers[act] = PercentileObserver(name(act), qconfig.percentile, qconfig.percentile_momentum)
        self.hadamard = qconfig.hadamard
        self.dt_bias = mixer.dt_proj.bias
        self.handles = [
            mixer.in_proj.register_forward_hook(self._in_proj),
            mixer.x_proj.register_forward_hook(self._x_proj),
            mixer.dt_proj.register_forward_hook(self._dt_proj),
            mixer.out_proj.register_forward_hook(self._out_proj),
        ]

    def _observe(self, act: str, x: Tensor) -> None:
        """x: (b, l, ...). A percentile is taken per calibration sequence, as in the official recipe."""
        observer = self.observers[act]
        if isinstance(observer, PercentileObserver):
            for sequence in x:
                observer.observe(sequence)
        else:
            observer.observe(x)

    def _in_proj(self, module, inputs, output):
        self._observe("in_proj_input", inputs[0])
        self._observe("xz", output)

    def _x_proj(self, module, inputs, output):
        self._observe("u", inputs[0])
        self._observe("dbc", output)

    def _dt_proj(self, module, inputs, output):
        self._observe("dt", output - self.dt_bias)

    def _out_proj(self, module, inputs, output):
        y = inputs[0]
        self._observe("out_proj_input", hadamard_transform(y) if self.hadamard else y)

    def amaxes(self) -> dict[str, Tensor]:
        return {act: obs.amax() for act, obs in self.observers.items()}

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


@torch.inference_mode()
def calibrate(model: MambaLM, data: CalibrationData, qconfig: QuantConfig, batch_size: int = 8,
              progress: bool = True) -> list[dict[str, Tensor]]:
    """Per-layer amaxes of the six activations (a list with one dict per layer, keys: ACTIVATIONS)."""
    hooks = [MixerObservers(i, block.mixer, qconfig) for i, block in enumerate(model.backbone.layers)]
    try:
        batches = data.tokens.split(batch_size)
        for batch in tqdm(batches, desc="calibrating", unit="batch", disable=not progress):
            logits, _ = model(batch.to(model.device))
            if not torch.isfinite(logits).all():
                raise InputError("calibration: the model's logits hold NaN or Inf")
        return [hook.amaxes() for hook in hooks]
    except ValueError as exc:  # an observer saw NaN/Inf; its message names the layer and tensor
        raise InputError(f"calibration stopped: {exc}") from None
    finally:
        for hook in hooks:
            hook.remove()

