"""The quantized Mamba1 mixer's data flow, written once, and the three ways it is run.

:func:`mamba1_mixer_flow` is the Quamba W8A8 mixer: which tensors are quantized at which site
(:mod:`edge_quamba.quant.sites`), which op consumes them, which scales each op reads. It calls an ``ops`` object
and nothing else, so one function serves every use:

    QuantOps   the quantized reference (and every backend): ``torch.ops.edge_quamba.*`` on int8 tensors
               (:class:`edge_quamba.quant.qmodel.QuantMambaMixer` forward and step)
    FloatOps   the fp model with the same structure, observing the float value at each site: calibration,
               per-layer SQNR, activation statistics (:func:`float_flow`)
    GraphOps   the ONNX lowering: the same calls emit nodes (:mod:`edge_quamba.onnx.lower`)

Glossary: :mod:`edge_quamba.models.mamba` (b, l, d_in, n, r, k, u, z, Δ, A, B, C, D). Shapes below are for prefill,
(b, l, ...); decode (``step``) runs the same flow on (b, ...) with the ``*_update`` ops.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_quamba.models.mamba import LayerState, MambaLM, MambaMixer, causal_conv1d, selective_scan
from edge_quamba.quant.hadamard import hadamard_transform

Tap = Callable[[str, Tensor], None]
"""tap(site, value): sees the float value at a site (FloatOps) or the dequantized codes (QuantOps)."""


class MixerOps(Protocol):
    """What the flow needs; values are tensors (QuantOps, FloatOps) or graph tensor names (GraphOps)."""

    def quantize(self, x: Any, site: str) -> Any: ...
    def split(self, x: Any, sizes: list[int]) -> list[Any]: ...
    def linear(self, name: str, x_q: Any, in_site: str, bias: bool = True) -> Any: ...
    def causal_conv1d(self, x_q: Any, conv_state: Any) -> tuple[Any, Any]: ...
    def selective_scan(self, u_q: Any, dt_q: Any, B_q: Any, C_q: Any, z_q: Any, ssm_state: Any) -> tuple[Any, Any]: ...
    def hadamard_quantize(self, y: Any) -> Any: ...


def mamba1_mixer_flow(ops: MixerOps, x: Any, state: LayerState, d_inner: int, dt_rank: int, d_state: int,
                      hadamard: bool) -> tuple[Any, LayerState]:
    """One Quamba W8A8 Mamba1 mixer: x (b, l, d) float -> (b, l, d) float, and the state after the last token.

    The official Quamba data flow (see ARCHITECTURE.md): int8 in_proj with one output scale for x and z; int8
    conv1d + SiLU writing the scan input u at its (percentile-clipped) scale; int8 x_proj with one scale for Δ_r,
    B, C; int8 dt_proj without its bias (added inside the scan); the scan on int8 inputs with a float32 state,
    gated by silu(z); Hadamard + quantize of y; int8 out_proj with the rotated weight.
    """
    x_q = ops.quantize(x, "in_proj_input")  # (b, l, d) int8
    xz_q = ops.quantize(ops.linear("in_proj", x_q, "in_proj_input"), "xz")  # (b, l, 2 d_in) int8
    xc_q, z_q = ops.split(xz_q, [d_inner, d_inner])  # views: x for the conv, z for the gate
    u_q, conv_state = ops.causal_conv1d(xc_q, state.conv_state)  # reads xz, writes u
    dbc_q = ops.quantize(ops.linear("x_proj", u_q, "u"), "dbc")  # (b, l, r + 2n) int8
    dt_r_q, B_q, C_q = ops.split(dbc_q, [dt_rank, d_state, d_state])
    dt_q = ops.quantize(ops.linear("dt_proj", dt_r_q, "dbc", bias=False), "dt")  # (b, l, d_in) int8
    y, ssm_state = ops.selective_scan(u_q, dt_q, B_q, C_q, z_q, state.ssm_state)  # y (b, l, d_in) float32
    y_q = ops.hadamard_quantize(y) if hadamard else ops.quantize(y, "out_proj_input")
    return ops.linear("out_proj", y_q, "out_proj_input"), LayerState(conv_state, ssm_state)


class FloatOps:
    """The flow in floating point over an fp :class:`MambaMixer`: ``quantize`` observes and passes the value on.

    The arithmetic is the fp reference's (same linears, conv, scan); only the dt_proj bias moves into the scan, as
    in the quantized flow (dt_proj(x) - bias is what the dt site quantizes). With ``hadamard``, the out_proj input
    site sees H y (the tensor the quantized model quantizes) and out_proj gets the unrotated y (W y = W' H y).
    """

    def __init__(self, mixer: MambaMixer, hadamard: bool, tap: Tap | None):
        self.mixer, self.hadamard, self.tap = mixer, hadamard, tap

    def _observe(self, site: str, value: Tensor) -> None:
        if self.tap is not None:
            self.tap(site, value)

    def quantize(self, x: Tensor, site: str) -> Tensor:
        self._observe(site, x)
        return x

    def split(self, x: Tensor, sizes: list[int]) -> list[Tensor]:
        return list(x.split(sizes, dim=-1))

    def linear(self, name: str, x: Tensor, in_site: str, bias: bool = True) -> Tensor:
        module = getattr(self.mixer, name)
        return F.linear(x, module.weight, module.bias if bias else None)

    def causal_conv1d(self, x: Tensor, conv_state: Tensor) -> tuple[Tensor, Tensor]:
        conv = self.mixer.conv1d
        y, conv_state = causal_conv1d(x, conv.weight[:, 0, :], conv.bias, conv_state)
        u = F.silu(y)
        self._observe("u", u)
        return u, conv_state

    def selective_scan(self, u, dt, B, C, z, ssm_state) -> tuple[Tensor, Tensor]:
        m = self.mixer
        A = -torch.exp(m.A_log.float())
        delta = F.softplus((dt + m.dt_proj.bias).float())
        y, ssm_state = selective_scan(u, delta, A, B, C, m.D, ssm_state)
        return y * F.silu(z.to(y.dtype)), ssm_state

    def hadamard_quantize(self, y: Tensor) -> Tensor:
        self._observe("out_proj_input", hadamard_transform(y))
        return y


class FloatFlowMixer(nn.Module):
    """An fp mixer run through the flow with :class:`FloatOps` (same interface as MambaMixer.forward)."""

    def __init__(self, mixer: MambaMixer, hadamard: bool, tap: Tap | None):
        super().__init__()
        self.mixer, self.hadamard, self.tap = mixer, hadamard, tap

    def empty_state(self, batch: int) -> LayerState:
        return self.mixer.empty_state(batch)

    def forward(self, x: Tensor, state: LayerState) -> tuple[Tensor, LayerState]:
        c = self.mixer.config
        out, state = mamba1_mixer_flow(FloatOps(self.mixer, self.hadamard, self.tap), x, state,
                                       c.d_inner, c.dt_rank, c.d_state, self.hadamard)
        return out.to(x.dtype), state


@contextlib.contextmanager
def float_flow(model: MambaLM, hadamard: bool, tap: Callable[[int, str, Tensor], None] | None):
    """Within this block the fp ``model`` runs its mixers through the flow with FloatOps, calling
    ``tap(layer, site, value)`` at every site (prefill only). The model is restored afterwards."""
    blocks = list(model.backbone.layers)
    originals = [block.mixer for block in blocks]
    try:
        for i, block in enumerate(blocks):
            layer_tap = None if tap is None else (lambda site, value, i=i: tap(i, site, value))
            block.mixer = FloatFlowMixer(block.mixer, hadamard, layer_tap)
        yield model
    finally:
        for block, mixer in zip(blocks, originals, strict=True):
            block.mixer = mixer
