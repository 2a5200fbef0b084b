"""The quantized mixers' data flows, written once, and the three ways each is run.

:func:`mamba1_mixer_flow` is the Quamba W8A8 Mamba1 mixer, :func:`mamba2_mixer_flow` the Quamba2 W8A8 Mamba2 mixer: which tensors are quantized at which site
(:mod:`edge_quamba.quant.sites`), which op consumes them, which scales each op reads. It calls an ``ops`` object
and nothing else, so one function serves every use:

    QuantOps   the quantized reference (and every backend): ``torch.ops.edge_quamba.*`` on int8 tensors
               (:class:`edge_quamba.quant.qmodel.QuantMambaMixer` forward and step)
    FloatOps   the fp model with the same structure, observing the float value at each site: calibration,
               per-layer SQNR, activation statistics (:func:`float_flow`)
    GraphOps   the ONNX lowering: the same calls emit nodes (:mod:`edge_quamba.onnx.lower_mamba1`)

Glossary: :mod:`edge_quamba.models.mamba` (b, l, d_in, n, r, k, u, z, Δ, A, B, C, D). Shapes below are for prefill,
(b, l, ...); decode (``step``) runs the same flow on (b, ...) with the ``*_update`` ops. The flow starts at the
residual stream: the block's pre-norm is part of it (``norm_quantize``, one fused op for RMSNorm), and its output
is what the block adds back.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_quamba.models.mamba import (LayerState, MambaLM, MambaMixer, Norm, ResidualBlock, causal_conv1d,
                                      selective_scan)
from edge_quamba.models.mamba2 import Mamba2Mixer, ssd_chunked
from edge_quamba.quant.hadamard import hadamard_transform
from edge_quamba.quant.sites import MAMBA2_IN_PROJ_SITES

Tap = Callable[[str, Tensor], None]
"""tap(site, value): sees the float value at a site (FloatOps) or the dequantized codes (QuantOps)."""


class MixerOps(Protocol):
    """What the flow needs; values are tensors (QuantOps, FloatOps) or graph tensor names (GraphOps)."""

    def norm_quantize(self, resid: Any, site: str) -> Any: ...
    def quantize(self, x: Any, site: str) -> Any: ...
    def split(self, x: Any, sizes: list[int]) -> list[Any]: ...
    def linear(self, name: str, x_q: Any, in_site: str, bias: bool = True, out_site: str | None = None) -> Any: ...
    def in_proj_conv(self, x_q: Any, conv_state: Any, d_inner: int) -> tuple[Any, Any, Any]: ...
    def causal_conv1d(self, x_q: Any, conv_state: Any) -> tuple[Any, Any]: ...
    def selective_scan(self, u_q: Any, dt_q: Any, B_q: Any, C_q: Any, z_q: Any, ssm_state: Any) -> tuple[Any, Any]: ...
    def dt_proj_scan(self, u_q: Any, dt_r_q: Any, B_q: Any, C_q: Any, z_q: Any, ssm_state: Any
                     ) -> tuple[Any, Any]: ...
    def hadamard_quantize(self, y: Any) -> Any: ...
    def hadamard_quantize_dynamic(self, y: Any) -> tuple[Any, Any]: ...
    def linear_per_token(self, name: str, x_q: Any, x_scale: Any) -> Any: ...


def in_proj_conv_composed(ops: MixerOps, x_q: Any, conv_state: Any, d_inner: int) -> tuple[Any, Any, Any]:
    """``in_proj_conv`` as its composition: in_proj requantized at site xz (b, l, 2 d_in), split into its x and z
    halves (views), the conv over x (reads xz, writes u). Returns (z_q, u_q, conv_state)."""
    xz_q = ops.linear("in_proj", x_q, "in_proj_input", out_site="xz")
    xc_q, z_q = ops.split(xz_q, [d_inner, d_inner])
    u_q, conv_state = ops.causal_conv1d(xc_q, conv_state)
    return z_q, u_q, conv_state


def dt_proj_scan_composed(ops: MixerOps, u_q: Any, dt_r_q: Any, B_q: Any, C_q: Any, z_q: Any, ssm_state: Any
                          ) -> tuple[Any, Any]:
    """``dt_proj_scan`` as its composition: dt_proj without its bias (added inside the scan) requantized at site
    dt, then the scan."""
    dt_q = ops.linear("dt_proj", dt_r_q, "dbc", bias=False, out_site="dt")
    return ops.selective_scan(u_q, dt_q, B_q, C_q, z_q, ssm_state)


def mamba1_mixer_flow(ops: MixerOps, resid: Any, state: LayerState, d_inner: int, dt_rank: int, d_state: int,
                      hadamard: bool, out_proj_scale: str = "static") -> tuple[Any, LayerState]:
    """One Quamba W8A8 Mamba1 mixer with its pre-norm: resid (b, l, d) float -> the mixer's output (b, l, d) float
    (the caller adds it to the residual stream), and the state after the last token.

    The official Quamba data flow (see ARCHITECTURE.md): the norm writes int8; int8 in_proj whose requantizing
    epilogue writes x and z at one scale; int8 conv1d + SiLU writing the scan input u at its (percentile-clipped)
    scale; int8 x_proj writing Δ_r, B, C at one scale; int8 dt_proj without its bias (added inside the scan); the
    scan on int8 inputs with a float32 state, gated by silu(z); Hadamard + quantize of y; int8 out_proj with the
    rotated weight, float out.

    ``out_proj_scale="dynamic"`` (needs ``hadamard``): Hadamard + quantize also computes one scale per token from the
    rotated values, and out_proj multiplies each row's accumulator by that token's scale (no static scale for the
    site out_proj_input).
    """
    x_q = ops.norm_quantize(resid, "in_proj_input")  # (b, l, d) int8
    z_q, u_q, conv_state = ops.in_proj_conv(x_q, state.conv_state, d_inner)  # z (b, l, d_in) for the gate, u
    dbc_q = ops.linear("x_proj", u_q, "u", out_site="dbc")  # (b, l, r + 2n) int8
    dt_r_q, B_q, C_q = ops.split(dbc_q, [dt_rank, d_state, d_state])
    # dt_proj (Δ at site dt, (b, l, d_in) int8) and the scan: y (b, l, d_in) float32
    y, ssm_state = ops.dt_proj_scan(u_q, dt_r_q, B_q, C_q, z_q, state.ssm_state)
    if out_proj_scale == "dynamic":
        y_q, y_scale = ops.hadamard_quantize_dynamic(y)  # (b, l, d_in) int8, (b, l) float32
        return ops.linear_per_token("out_proj", y_q, y_scale), LayerState(conv_state, ssm_state)
    y_q = ops.hadamard_quantize(y) if hadamard else ops.quantize(y, "out_proj_input")
    return ops.linear("out_proj", y_q, "out_proj_input"), LayerState(conv_state, ssm_state)


class Mamba2MixerOps(Protocol):
    """What :func:`mamba2_mixer_flow` needs (norm_quantize, quantize, split, linear as :class:`MixerOps`).
    ``in_proj_split_conv``: in_proj's output split into z | xBC | Δ (``sizes``), each quantized at its site, and the
    conv over xBC; returns (z_q, dt_q, ssm_input codes, conv state) (:func:`in_proj_split_conv_composed`)."""

    def norm_quantize(self, resid: Any, site: str) -> Any: ...
    def quantize(self, x: Any, site: str) -> Any: ...
    def split(self, x: Any, sizes: list[int]) -> list[Any]: ...
    def linear(self, name: str, x_q: Any, in_site: str, bias: bool = True, out_site: str | None = None) -> Any: ...
    def in_proj_split_conv(self, x_q: Any, conv_state: Any, sizes: list[int]) -> tuple[Any, Any, Any, Any]: ...
    def causal_conv1d(self, xBC_q: Any, conv_state: Any) -> tuple[Any, Any]: ...
    def ssd_scan(self, x_q: Any, dt_q: Any, B_q: Any, C_q: Any, ssm_state: Any) -> tuple[Any, Any]: ...
    def gated_norm_quantize(self, y: Any, z_q: Any, hadamard: bool) -> Any: ...


def mamba2_mixer_flow(ops: Mamba2MixerOps, resid: Any, state: LayerState, d_inner: int, bc_width: int, nheads: int,
                      hadamard: bool) -> tuple[Any, LayerState]:
    """One Quamba2 W8A8 Mamba2 mixer with its pre-norm: resid (b, l, d) float -> the mixer's output (b, l, d) float
    and the state after the last token. ``bc_width`` = g n, the width of B (and of C).

    Quamba2 (arXiv 2503.22879): the norm writes int8; int8 in_proj, its output split into z, xBC and Δ (without
    dt_bias), each quantized at its own per-tensor scale (in the GEMM's epilogue: one op); the int8 depthwise conv
    over xBC + SiLU writes x at the per-group scales of the sorted-and-clustered channels and B, C at
    per-state-group scales (one ``ssm_input`` tensor with per-channel scales); the SSD scan on int8 x, Δ, B, C with
    a float32 state (dt_bias, softplus, A and D per head inside); the gated RMSNorm of y with the int8 gate z,
    Hadamard and the quantize of out_proj's input (one fused op, as norm_quantize is); int8 out_proj with the
    rotated weight, float out. The sort-and-cluster channel order is applied to the weights offline
    (:mod:`edge_quamba.quant.cluster`), so the flow never permutes.
    """
    x_q = ops.norm_quantize(resid, "in_proj_input")  # (b, l, d) int8
    # in_proj's output (b, l, d_in + conv_dim + h) = z | xBC | Δ, each at its site; the conv reads xBC, writes
    # ssm_input (b, l, conv_dim)
    z_q, dt_q, ssm_in_q, conv_state = ops.in_proj_split_conv(x_q, state.conv_state,
                                                             [d_inner, d_inner + 2 * bc_width, nheads])
    xs_q, B_q, C_q = ops.split(ssm_in_q, [d_inner, bc_width, bc_width])
    y, ssm_state = ops.ssd_scan(xs_q, dt_q, B_q, C_q, state.ssm_state)  # y (b, l, d_in) float32
    y_q = ops.gated_norm_quantize(y, z_q, hadamard)  # (b, l, d_in) int8: gated RMSNorm, (Hadamard,) quantize
    return ops.linear("out_proj", y_q, "out_proj_input"), LayerState(conv_state, ssm_state)


def in_proj_split_conv_composed(ops: Any, x_q: Any, conv_state: Any, sizes: list[int]) -> tuple[Any, Any, Any, Any]:
    """``in_proj_split_conv`` as its composition: in_proj (float out), split into z | xBC | Δ, each quantized at
    its site in order (the float flow observes each site; the graph lowering emits these nodes), then the conv over
    xBC."""
    parts = ops.split(ops.linear("in_proj", x_q, "in_proj_input"), sizes)
    z_q, xBC_q, dt_q = (ops.quantize(part, site) for part, site in zip(parts, MAMBA2_IN_PROJ_SITES, strict=True))
    ssm_in_q, conv_state = ops.causal_conv1d(xBC_q, conv_state)
    return z_q, dt_q, ssm_in_q, conv_state


class FloatOps:
    """The flow in floating point over an fp block's norm and :class:`MambaMixer`: ``quantize`` observes and
    passes the value on.

    The arithmetic is the fp reference's (same norm, linears, conv, scan); only the dt_proj bias moves into the
    scan, as in the quantized flow (dt_proj(x) - bias is what the dt site quantizes). With ``hadamard``, the
    out_proj input site sees H y (the tensor the quantized model quantizes) and out_proj gets the unrotated y
    (W y = W' H y). It always runs the static branch: the value it observes at out_proj_input, H y, is the same
    for a dynamic out_proj scale (calibration then ignores it, the SQNR table compares it with the dynamic codes).
    """

    conv_site = "u"
    """The site observed after the conv's SiLU (Mamba2's is ssm_input: x | B | C)."""

    def __init__(self, mixer: MambaMixer, norm: Norm, hadamard: bool, tap: Tap | None):
        self.mixer, self.norm, self.hadamard, self.tap = mixer, norm, hadamard, tap

    def _observe(self, site: str, value: Tensor) -> None:
        if self.tap is not None:
            self.tap(site, value)

    def norm_quantize(self, resid: Tensor, site: str) -> Tensor:
        return self.quantize(self.norm(resid.to(self.norm.weight.dtype)), site)

    def quantize(self, x: Tensor, site: str) -> Tensor:
        self._observe(site, x)
        return x

    def split(self, x: Tensor, sizes: list[int]) -> list[Tensor]:
        return list(x.split(sizes, dim=-1))

    def linear(self, name: str, x: Tensor, in_site: str, bias: bool = True, out_site: str | None = None) -> Tensor:
        module = getattr(self.mixer, name)
        y = F.linear(x, module.weight, module.bias if bias else None)
        return y if out_site is None else self.quantize(y, out_site)

    def in_proj_conv(self, x: Tensor, conv_state: Tensor, d_inner: int) -> tuple[Tensor, Tensor, Tensor]:
        return in_proj_conv_composed(self, x, conv_state, d_inner)

    def dt_proj_scan(self, u, dt_r, B, C, z, ssm_state) -> tuple[Tensor, Tensor]:
        return dt_proj_scan_composed(self, u, dt_r, B, C, z, ssm_state)

    def causal_conv1d(self, x: Tensor, conv_state: Tensor) -> tuple[Tensor, Tensor]:
        conv = self.mixer.conv1d
        y, conv_state = causal_conv1d(x, conv.weight[:, 0, :], conv.bias, conv_state)
        u = F.silu(y)
        self._observe(self.conv_site, u)
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


class Mamba2FloatOps(FloatOps):
    """:class:`FloatOps` for :func:`mamba2_mixer_flow` over an fp :class:`Mamba2Mixer` (its weights already in the
    sort-and-cluster order when that is on): the conv observes ``ssm_input`` (x | B | C after SiLU), the SSD runs
    chunked as the fp reference's forward does."""

    mixer: Mamba2Mixer
    conv_site = "ssm_input"

    def in_proj_split_conv(self, x: Tensor, conv_state: Tensor, sizes: list[int]
                           ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return in_proj_split_conv_composed(self, x, conv_state, sizes)

    def ssd_scan(self, x, dt, B, C, ssm_state) -> tuple[Tensor, Tensor]:
        m, c = self.mixer, self.mixer.config
        A = -torch.exp(m.A_log)
        delta = F.softplus(dt + m.dt_bias)  # the fp reference's Δ (Mamba2Mixer.ssm_inputs)
        y, ssm_state = ssd_chunked(x.unflatten(-1, (c.nheads, c.headdim)), delta, A,
                                   B.unflatten(-1, (c.ngroups, c.d_state)), C.unflatten(-1, (c.ngroups, c.d_state)),
                                   m.D, ssm_state, c.chunk_size)
        return y.flatten(-2), ssm_state

    def gated_norm_quantize(self, y: Tensor, z: Tensor, hadamard: bool) -> Tensor:
        y = self.mixer.norm(y, z)
        return self.hadamard_quantize(y) if hadamard else self.quantize(y, "out_proj_input")


def _run_float_flow(block: ResidualBlock, resid: Tensor, state: LayerState, hadamard: bool, tap: Tap | None
                    ) -> tuple[Tensor, LayerState]:
    """The flow of the block's mixer kind with the float ops."""
    c = block.mixer.config
    if isinstance(block.mixer, Mamba2Mixer):
        ops = Mamba2FloatOps(block.mixer, block.norm, hadamard, tap)
        return mamba2_mixer_flow(ops, resid, state, c.d_inner, c.ngroups * c.d_state, c.nheads, hadamard)
    ops = FloatOps(block.mixer, block.norm, hadamard, tap)
    return mamba1_mixer_flow(ops, resid, state, c.d_inner, c.dt_rank, c.d_state, hadamard)


class FloatFlowMixer(nn.Module):
    """An fp block's norm and mixer run through the flow with :class:`FloatOps`: resid -> mixer output."""

    def __init__(self, block: ResidualBlock, hadamard: bool, tap: Tap | None):
        super().__init__()
        self.block, self.hadamard, self.tap = block, hadamard, tap

    def empty_state(self, batch: int) -> LayerState:
        return self.block.mixer.empty_state(batch)

    def forward(self, resid: Tensor, state: LayerState) -> tuple[Tensor, LayerState]:
        out, state = _run_float_flow(self.block, resid, state, self.hadamard, self.tap)
        return out.to(resid.dtype), state


class FloatFlowBlock(nn.Module):
    """An fp :class:`ResidualBlock` run through the flow (prefill only): resid + flow(resid)."""

    def __init__(self, block: ResidualBlock, hadamard: bool, tap: Tap | None):
        super().__init__()
        self.mixer = FloatFlowMixer(block, hadamard, tap)

    def forward(self, resid: Tensor, state: LayerState, step: bool = False) -> tuple[Tensor, LayerState]:
        if step:
            raise NotImplementedError("the float flow observes prefill only")
        out, state = self.mixer(resid, state)
        return resid + out, state


@contextlib.contextmanager
def float_flow(model: MambaLM, hadamard: bool, tap: Callable[[int, str, Tensor], None] | None):
    """Within this block the fp ``model`` runs its blocks through the flow with FloatOps, calling
    ``tap(layer, site, value)`` at every site (prefill only). The model is restored afterwards."""
    layers = model.backbone.layers
    originals = list(layers)
    try:
        for i, block in enumerate(originals):
            layer_tap = None if tap is None else (lambda site, value, i=i: tap(i, site, value))
            layers[i] = FloatFlowBlock(block, hadamard, layer_tap)
        yield model
    finally:
        for i, block in enumerate(originals):
            layers[i] = block
