"""Per-layer SQNR of every quantized tensor against the fp model on the same tokens.

SQNR = 10 log10(sum(ref^2) / sum((ref - quantized)^2)) in dB; higher is better, and every 6 dB is one more bit.
Both models run the full stack on the same tokens, so a layer's SQNR includes the error that reached it from the
layers before (what the next layer actually sees). Tensors, per mixer, in data-flow order:

    in_proj_input   norm output                    vs its int8 form entering in_proj
    xz              in_proj output                 vs its int8 form (one scale for x and z)
    u               scan input (SiLU(conv))        vs the int8 u from the int8 conv
    dbc             x_proj output                  vs its int8 form (one scale for Δ_r, B, C)
    dt              dt_proj output without bias    vs its int8 form
    out_proj_input  y (or H y with Hadamard)       vs the int8 out_proj input
    mixer_output    out_proj output                vs the quantized out_proj output
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch
from torch import Tensor

from edge_quamba.models.mamba import MambaLM
from edge_quamba.quant.hadamard import hadamard_transform
from edge_quamba.quant.primitives import dequantize, fake_quantize

TENSORS = ("in_proj_input", "xz", "u", "dbc", "dt", "out_proj_input", "mixer_output")


def sqnr_db(reference: Tensor, approx: Tensor) -> float:
    ref, err = reference.double(), reference.double() - approx.double()
    noise = float(err.pow(2).sum())
    return math.inf if noise == 0 else 10 * math.log10(float(ref.pow(2).sum()) / noise)


def _capture_fp(model: MambaLM, hadamard: bool, store: dict) -> list:
    handles = []
    for i, block in enumerate(model.backbone.layers):
        m = block.mixer

        def in_proj(mod, inp, out, i=i):
            store[i]["in_proj_input"] = inp[0].float()
            store[i]["xz"] = out.float()

        def x_proj(mod, inp, out, i=i):
            store[i]["u"] = inp[0].float()
            store[i]["dbc"] = out.float()

        def dt_proj(mod, inp, out, i=i, bias=m.dt_proj.bias):
            store[i]["dt"] = (out - bias).float()

        def out_proj(mod, inp, out, i=i):
            y = inp[0].float()
            store[i]["out_proj_input"] = hadamard_transform(y) if hadamard else y
            store[i]["mixer_output"] = out.float()

        handles += [m.in_proj.register_forward_hook(in_proj), m.x_proj.register_forward_hook(x_proj),
                    m.dt_proj.register_forward_hook(dt_proj), m.out_proj.register_forward_hook(out_proj)]
    return handles


def _capture_quantized(model: MambaLM, store: dict) -> list:
    """QuantLinear hooks see (x_q, x_scale) and the float output; the requantized outputs are rebuilt with the
    mixer's own scales (the same quantize call the mixer makes)."""
    handles = []
    for i, block in enumerate(model.backbone.layers):
        m = block.mixer

        def in_proj(mod, inp, out, i=i, m=m):
            store[i]["in_proj_input"] = dequantize(inp[0], inp[1])
            store[i]["xz"] = fake_quantize(out, m.xz_scale)

        def x_proj(mod, inp, out, i=i, m=m):
            store[i]["u"] = dequantize(inp[0], inp[1])
            store[i]["dbc"] = fake_quantize(out, m.dbc_scale)

        def dt_proj(mod, inp, out, i=i, m=m):
            store[i]["dt"] = fake_quantize(out, m.dt_scale)

        def out_proj(mod, inp, out, i=i):
            store[i]["out_proj_input"] = dequantize(inp[0], inp[1])
            store[i]["mixer_output"] = out.float()

        handles += [m.in_proj.register_forward_hook(in_proj), m.x_proj.register_forward_hook(x_proj),
                    m.dt_proj.register_forward_hook(dt_proj), m.out_proj.register_forward_hook(out_proj)]
    return handles


@torch.inference_mode()
def layer_sqnr(fp_model: MambaLM, q_model: MambaLM, tokens: Tensor) -> list[dict[str, float]]:
    """tokens: (b, l) -> one dict per layer: tensor name -> SQNR in dB (keys: TENSORS)."""
    hadamard = bool(q_model.backbone.layers[0].mixer.hadamard)
    fp_store, q_store = defaultdict(dict), defaultdict(dict)
    handles = _capture_fp(fp_model, hadamard, fp_store) + _capture_quantized(q_model, q_store)
    try:
        fp_model(tokens.to(fp_model.device))
        q_model(tokens.to(q_model.device))
    finally:
        for handle in handles:
            handle.remove()
    return [{name: sqnr_db(fp_store[i][name], q_store[i][name]) for name in TENSORS}
            for i in range(fp_model.config.n_layer)]
