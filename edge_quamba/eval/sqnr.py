"""Per-layer SQNR of every quantized tensor against the fp model on the same tokens.

SQNR = 10 log10(sum(ref^2) / sum((ref - quantized)^2)) in dB; higher is better, and every 6 dB is one more bit.
Both models run the full stack on the same tokens, so a layer's SQNR includes the error that reached it from the
layers before (what the next layer actually sees). Per mixer: every quantization site of
:mod:`edge_quamba.quant.sites` (the fp value there vs the dequantized int8 codes the quantized model makes), then
the mixer's output (fp vs quantized out_proj output).
"""

from __future__ import annotations

import contextlib
import math
from collections import defaultdict

import torch
from torch import Tensor

from edge_quamba.models.mamba import MambaLM
from edge_quamba.quant.flow import float_flow
from edge_quamba.quant.sites import SITE_NAMES

TENSORS = (*SITE_NAMES, "mixer_output")
"""What the SQNR table reports per layer: every quantization site, then the mixer's output."""


def sqnr_db(reference: Tensor, approx: Tensor) -> float:
    ref, err = reference.double(), reference.double() - approx.double()
    noise = float(err.pow(2).sum())
    return math.inf if noise == 0 else 10 * math.log10(float(ref.pow(2).sum()) / noise)


@contextlib.contextmanager
def _mixer_outputs(model: MambaLM, store: dict):
    handles = [block.mixer.register_forward_hook(
        lambda module, inputs, output, i=i: store[i].__setitem__("mixer_output", output[0].float()))
        for i, block in enumerate(model.backbone.layers)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def _quantized_taps(model: MambaLM, store: dict):
    mixers = [block.mixer for block in model.backbone.layers]
    for i, mixer in enumerate(mixers):
        mixer.tap = lambda site, value, i=i: store[i].__setitem__(site, value.float())
    try:
        yield
    finally:
        for mixer in mixers:
            mixer.tap = None


@torch.inference_mode()
def layer_sqnr(fp_model: MambaLM, q_model: MambaLM, tokens: Tensor) -> list[dict[str, float]]:
    """tokens: (b, l) -> one dict per layer: tensor name -> SQNR in dB (keys: TENSORS). Both models run the one
    data flow (:mod:`edge_quamba.quant.flow`): the fp model with float ops, the quantized one with its int8 ops;
    both report the value at every site."""
    hadamard = bool(q_model.backbone.layers[0].mixer.hadamard)
    fp_store, q_store = defaultdict(dict), defaultdict(dict)

    def fp_tap(layer: int, site: str, value: Tensor) -> None:
        fp_store[layer][site] = value.float()

    with float_flow(fp_model, hadamard, fp_tap), _mixer_outputs(fp_model, fp_store):
        fp_model(tokens.to(fp_model.device))
    with _quantized_taps(q_model, q_store), _mixer_outputs(q_model, q_store):
        q_model(tokens.to(q_model.device))
    return [{name: sqnr_db(fp_store[i][name], q_store[i][name]) for name in TENSORS}
            for i in range(fp_model.config.n_layer)]
