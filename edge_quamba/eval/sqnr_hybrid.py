"""Per-layer SQNR of a quantized hybrid model against its fp model on the same tokens (:mod:`edge_quamba.eval.sqnr`'s
measure: 10 log10(sum ref² / sum (ref - quantized)²) dB, both models running the full stack).

Per block, by kind (:func:`hybrid_sqnr_columns`):
    Mamba2 ("M")     every Quamba2 site (:data:`edge_quamba.quant.sites.MAMBA2_SITES`: in_proj's input, its
                     outputs z, xBC, dt, the conv output, out_proj's input), then the mixer's output (out_proj's)
    attention ("*")  qkv_input, the q_proj / k_proj / v_proj outputs, k_cache / v_cache (int8 KV cache only),
                     o_proj_input, the mixer's output (o_proj's)
    MLP ("-")        mlp_input, the gate_proj (SwiGLU) / up_proj outputs, down_proj_input, the mixer's output
A site the quantized model keeps float (``--float-attn-mlp``: no input sites) is left out; a W4A16 model quantizes no
activation and reports its linears' outputs and mixer outputs. The fp model must be the one
:func:`edge_quamba.quant.hybrid_quant.reorder_hybrid` returns (its Mamba2 channels in the quantized model's order).
"""

from __future__ import annotations

import contextlib
from collections import defaultdict

import torch
from torch import Tensor

from edge_quamba.eval.sqnr import _check_channel_order, sqnr_db
from edge_quamba.models.attention import MLP, Attention
from edge_quamba.models.hybrid import HybridLM
from edge_quamba.quant.hybrid_flow import hybrid_float_flow
from edge_quamba.quant.hybrid_qmodel import QuantHybridMixer, linear_names
from edge_quamba.quant.mamba2_qmodel import QuantMamba2Mixer
from edge_quamba.quant.sites import MAMBA2_SITE_NAMES

LAST_LINEAR = {"M": "out_proj", "*": "o_proj", "-": "down_proj"}


def hybrid_sqnr_columns(q_model: HybridLM) -> list[tuple[str, ...]]:
    """Per block, the tensors its SQNR row reports (module docstring), in data-flow order."""
    config, columns = q_model.config, []
    for i, block in enumerate(q_model.backbone.layers):
        mixer, kind = block.mixer, config.kind(i)
        if isinstance(mixer, QuantMamba2Mixer):
            columns.append((*MAMBA2_SITE_NAMES, "mixer_output"))
        elif kind == "M":  # W4A16: weight-only
            columns.append(("mixer_output",))
        else:
            sites = mixer.sites if isinstance(mixer, QuantHybridMixer) else ()
            names = linear_names(kind, config)
            order = [*(s for s in ("qkv_input", "mlp_input") if s in sites), *names[:-1],
                     *(s for s in ("k_cache", "v_cache", "o_proj_input", "down_proj_input") if s in sites)]
            columns.append((*order, "mixer_output"))
    return columns


@contextlib.contextmanager
def _quantized_taps(model: HybridLM, store: dict):
    """Every quantized mixer's sites (dequantized codes) and linear outputs, and every block's mixer output; a W4A16
    model's attention / MLP linears (modules called by their fp mixer) by forward hooks."""
    handles = [block.mixer.register_forward_hook(
        lambda module, inputs, output, i=i: store[i].__setitem__("mixer_output", output[0].float()))
        for i, block in enumerate(model.backbone.layers)]
    for i, block in enumerate(model.backbone.layers):
        if isinstance(block.mixer, (Attention, MLP)):
            handles += [getattr(block.mixer, name).register_forward_hook(
                lambda module, inputs, output, i=i, name=name: store[i].__setitem__(name, output.float()))
                for name in linear_names(model.config.kind(i), model.config)]
    tapped = [(i, block.mixer) for i, block in enumerate(model.backbone.layers) if hasattr(block.mixer, "tap")]
    for i, mixer in tapped:
        mixer.tap = lambda site, value, i=i: store[i].__setitem__(site, value.float())
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        for _, mixer in tapped:
            mixer.tap = None


@torch.inference_mode()
def hybrid_layer_sqnr(fp_model: HybridLM, q_model: HybridLM, tokens: Tensor) -> list[dict[str, float]]:
    """tokens: (b, l) -> one dict per block: tensor name -> SQNR in dB (keys: :func:`hybrid_sqnr_columns`)."""
    columns = hybrid_sqnr_columns(q_model)
    _check_channel_order(fp_model, q_model)
    hadamard = any(getattr(b.mixer, "hadamard", False) for b in q_model.backbone.layers)
    fp_store, q_store = defaultdict(dict), defaultdict(dict)
    config = fp_model.config

    def fp_tap(block: int, name: str, value: Tensor) -> None:
        fp_store[block][name] = value.float()
        if name == LAST_LINEAR[config.kind(block)]:
            fp_store[block]["mixer_output"] = value.float()

    with hybrid_float_flow(fp_model, hadamard, fp_tap):
        handles = [block.mixer.register_forward_hook(  # Mamba2 blocks: the flow mixer's output
            lambda module, inputs, output, i=i: fp_store[i].__setitem__("mixer_output", output[0].float()))
            for i, block in enumerate(fp_model.backbone.layers) if config.kind(i) == "M"]
        try:
            fp_model(tokens.to(fp_model.device))
        finally:
            for handle in handles:
                handle.remove()
    with _quantized_taps(q_model, q_store):
        q_model(tokens.to(q_model.device))
    return [{name: sqnr_db(fp_store[i][name], q_store[i][name]) for name in names}
            for i, names in enumerate(columns)]
