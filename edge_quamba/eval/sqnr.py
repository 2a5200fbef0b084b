"""Per-layer SQNR of every quantized tensor against the fp model on the same tokens.

SQNR = 10 log10(sum(ref^2) / sum((ref - quantized)^2)) in dB; higher is better, and every 6 dB is one more bit.
Both models run the full stack on the same tokens, so a layer's SQNR includes the error that reached it from the
layers before (what the next layer actually sees). Per mixer: every quantization site of
:mod:`edge_quamba.quant.sites` (the fp value there vs the dequantized int8 codes the quantized model makes), then
the mixer's output (fp vs quantized out_proj output).

Which sites a table has follows the quantized mixer (:func:`sqnr_tensors`): Quamba's (Mamba1) ``SITES``, Quamba2's
(Mamba2, W8A8 and W4A8) ``MAMBA2_SITES``, whose ``ssm_input`` codes are dequantized at their per-channel scales (x at
its sort-and-cluster group's, B and C at their state group's), or none for a weight-only (W4A16) model, which
quantizes no activation: its table holds the mixer's output only.

A Quamba2 model's x channels are in the sort-and-cluster order, so its fp reference must be in the same order (the
model :func:`edge_quamba.quant.quamba2.reorder_for_quamba2` returns: the same model, reordered); :func:`layer_sqnr`
refuses an fp model whose conv weights do not line up with the quantized ones.
"""

from __future__ import annotations

import contextlib
import math
from collections import defaultdict

import torch
from torch import Tensor

from edge_quamba.errors import InputError
from edge_quamba.models.mamba import MambaLM
from edge_quamba.quant.flow import float_flow
from edge_quamba.quant.mamba2_qmodel import QuantMamba2Mixer, W4A16Mamba2Mixer
from edge_quamba.quant.primitives import dequantize
from edge_quamba.quant.qmodel import QuantMambaMixer, W4A16Mixer
from edge_quamba.quant.sites import MAMBA2_SITE_NAMES, SITE_NAMES

TENSORS = (*SITE_NAMES, "mixer_output")
"""What the SQNR table reports per layer of a Quamba (Mamba1) int8 model: every quantization site, then the mixer's
output."""
MAMBA2_TENSORS = (*MAMBA2_SITE_NAMES, "mixer_output")
"""The same for a Quamba2 (Mamba2) W8A8 or W4A8 model."""
WEIGHT_ONLY_TENSORS = ("mixer_output",)
"""The same for a weight-only (W4A16) model of either kind: it quantizes no activation, so it has no site."""

MIN_WEIGHT_SQNR_DB = 10.0
"""The check that an fp Mamba2 model is in its quantized twin's channel order: the int8 conv weights of the same
channels are ~30-40 dB from the fp ones, those of other channels about 0 dB (a difference of two unrelated weights)."""


def sqnr_db(reference: Tensor, approx: Tensor) -> float:
    ref, err = reference.double(), reference.double() - approx.double()
    noise = float(err.pow(2).sum())
    return math.inf if noise == 0 else 10 * math.log10(float(ref.pow(2).sum()) / noise)


def sqnr_tensors(q_model: MambaLM) -> tuple[str, ...]:
    """The columns of ``q_model``'s SQNR table (one of the tuples above), from its mixer's kind."""
    mixer = q_model.backbone.layers[0].mixer
    for kind, tensors in ((QuantMambaMixer, TENSORS), (QuantMamba2Mixer, MAMBA2_TENSORS),
                          ((W4A16Mixer, W4A16Mamba2Mixer), WEIGHT_ONLY_TENSORS)):
        if isinstance(mixer, kind):
            return tensors
    raise InputError(f"per-layer SQNR: {type(mixer).__name__} is not a quantized mixer")


def _check_channel_order(fp_model: MambaLM, q_model: MambaLM) -> None:
    """Refuse an fp Mamba2 model whose x channels are not in the quantized model's (sort-and-cluster) order: its sites
    would be compared channel by channel with other channels' codes. The conv weights of x (d_in, k) show it."""
    for i, (fp_block, q_block) in enumerate(zip(fp_model.backbone.layers, q_model.backbone.layers, strict=True)):
        q = q_block.mixer
        if isinstance(q, QuantMamba2Mixer):
            d_inner = q.config.d_inner
            fp_weight = fp_block.mixer.conv1d.weight[:d_inner, 0, :]
            db = sqnr_db(fp_weight, dequantize(q.conv_weight[:d_inner], q.conv_weight_scale))
            if db < MIN_WEIGHT_SQNR_DB:
                raise InputError(f"per-layer SQNR: layer {i} of the fp model is not in the quantized model's channel "
                                 f"order (conv weights {db:.1f} dB apart); pass the fp model that "
                                 "reorder_for_quamba2 returns")


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
    mixers = {i: block.mixer for i, block in enumerate(model.backbone.layers)
              if hasattr(block.mixer, "tap")}  # a weight-only mixer has no site to tap
    for i, mixer in mixers.items():
        mixer.tap = lambda site, value, i=i: store[i].__setitem__(site, value.float())
    try:
        yield
    finally:
        for mixer in mixers.values():
            mixer.tap = None


@torch.inference_mode()
def layer_sqnr(fp_model: MambaLM, q_model: MambaLM, tokens: Tensor) -> list[dict[str, float]]:
    """tokens: (b, l) -> one dict per layer: tensor name -> SQNR in dB (keys: :func:`sqnr_tensors`). Both models
    run the one data flow of their mixer kind (:mod:`edge_quamba.quant.flow`): the fp model with float ops, the
    quantized one with its int8 ops; both report the value at every site. A weight-only model runs its own mixer (the fp one's code with int4
    linears): only its output is compared."""
    tensors = sqnr_tensors(q_model)
    _check_channel_order(fp_model, q_model)
    hadamard = bool(getattr(q_model.backbone.layers[0].mixer, "hadamard", False))  # what the fp sites observe
    fp_store, q_store = defaultdict(dict), defaultdict(dict)

    def fp_tap(layer: int, site: str, value: Tensor) -> None:
        fp_store[layer][site] = value.float()

    with float_flow(fp_model, hadamard, fp_tap), _mixer_outputs(fp_model, fp_store):
        fp_model(tokens.to(fp_model.device))
    with _quantized_taps(q_model, q_store), _mixer_outputs(q_model, q_store):
        q_model(tokens.to(q_model.device))
    return [{name: sqnr_db(fp_store[i][name], q_store[i][name]) for name in tensors}
            for i in range(fp_model.config.n_layer)]
