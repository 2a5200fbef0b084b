"""Lowering of a quantized Mamba2 mixer (Quamba2 W8A8 and W4A8): :func:`edge_quamba.quant.flow.mamba2_mixer_flow` run
with :class:`Mamba2GraphOps`, whose ops emit nodes (the language model around it is :func:`edge_quamba.onnx.lower
.lower_model`'s). Per mixer, both flavours:

    resid -> pre-norm -> Max + QuantizeLinear (in_proj_input)
    in_proj -> z | xBC | Δ, each at its own per-tensor scale (sites z, xBC, dt)
    Int8CausalConv1dChannelScales(xBC_q, conv_state) -> ssm_input_q (per-channel scales), split as int8 into x | B | C
    Int8SSDScan(x_q, dt_q, B_q, C_q, ssm_state) -> y float32
    gated RMSNorm of y with z, (Hadamard,) quantize at out_proj_input -> y_q
    out_proj: DQ(y_q) @ DQ(W) (+ bias) -> float32, added to the residual stream

flavour "ort": in_proj is one int8 GEMM (Q/DQ MatMul, float out) whose output is split in float and each piece
quantized with Max + QuantizeLinear (the form ONNX Runtime fuses, :mod:`edge_quamba.onnx.graph_builder`); the gated
norm is standard float32 nodes (:func:`edge_quamba.onnx.functions_mamba2.gated_rms_norm_nodes`) followed by
HadamardQuantize or Max + QuantizeLinear.

flavour "tensorrt" (issue 18's rules, :mod:`edge_quamba.onnx.lower_mamba1`'s docstring): TensorRT fuses a QuantizeLinear
that directly follows a GEMM into the GEMM's epilogue, but only at ONE per-tensor output scale: TensorRT quantizes
activations per tensor (a per-axis QuantizeLinear of an activation is refused, rule TRT043 of tensorrt_rules.json).
z, xBC and Δ have three scales, so in_proj is lowered as three GEMMs over its row blocks (W[:d_in], W[d_in:d_in +
conv_dim], W[d_in + conv_dim:]), each ``DQ(x_q) @ DQ(W_rows) (+ bias rows) -> QuantizeLinear(scale)``, a bare
QuantizeLinear (saturating to [-128, 127]) that is fusion-eligible. Each output element is the same exact int32 sum
times the same float32 scale product as in the one GEMM, so the codes are the reference's (-128 read as -127 by
every reader: the conv plugin reads xBC, the SSD plugin Δ, the gated-norm plugin z; none of them feeds a GEMM). The
weight bytes read per token are the same as one GEMM's; the input x_q (d_model bytes per token) is read three times.
Instead: one GEMM with float32 output and three QuantizeLinear nodes after a Split would leave the requantization as a
separate pass over (b, l, d_in_proj) float32 (issue 18, item 3). The gated norm is one plugin node,
GatedRMSNormHadamardQuantize (or GatedRMSNormQuantize without Hadamard); out_proj reads its codes (clamped to +-127
inside, so a GEMM may read them) and writes float32 into the residual Add, as Mamba1's out_proj.
W4A8: each row block of in_proj is a W4A8LinearQuantize plugin over those rows of the packed weight and scales (the
requantizing epilogue inside; its codes are clamped to [-127, 127] like the reference's), out_proj a W4A8Linear
plugin; no INT4 initializer is left, so the graph stays at opset 17.
W4A16 Mamba2 has no TensorRT graph (:data:`edge_quamba.onnx.lower.NO_MAMBA2_W4A16_TENSORRT` says why).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from edge_quamba.models.mamba import Norm
from edge_quamba.onnx.functions_mamba2 import gated_rms_norm_nodes
from edge_quamba.onnx.graph_builder import ZERO_POINT, GraphBuilder, Pending
from edge_quamba.onnx.lower_mamba1 import GraphOps
from edge_quamba.ops.specs import (GATED_RMS_NORM_HADAMARD_QUANTIZE, GATED_RMS_NORM_QUANTIZE,
                                   INT8_CONV1D_CHANNEL_SCALES, INT8_SSD_SCAN, W4A8_LINEAR_QUANTIZE)
from edge_quamba.quant.flow import in_proj_split_conv_composed
from edge_quamba.quant.mamba2_qmodel import PER_TENSOR_SITES, QuantMamba2Mixer
from edge_quamba.quant.qmodel import Int4Linear, QuantLinear
from edge_quamba.quant.sites import MAMBA2_IN_PROJ_SITES, MAMBA2_SITE_BY_NAME, tensor_name


@dataclass(frozen=True)
class _Rows:
    """Rows [start, stop) of linear ``name``'s output on the codes ``x_q``, not yet emitted (TensorRT flavour):
    in_proj's output is split into its sites before any node is written, so that each piece becomes its own GEMM
    with a requantizing epilogue."""

    name: str
    x_q: str
    in_site: str
    start: int
    stop: int


def linear_rows(linear: QuantLinear | Int4Linear, start: int, stop: int) -> QuantLinear | Int4Linear:
    """The linear made of output rows [start, stop) of ``linear`` (weight rows, per-row scales, bias): each of its
    outputs is computed exactly as the same output of ``linear`` (same int32 sums, same scale products)."""
    bias = linear.bias is not None
    if isinstance(linear, Int4Linear):
        rows = Int4Linear(linear.in_features, stop - start, bias, linear.group_size)
        rows.weight_packed, rows.weight_scale = linear.weight_packed[start:stop], linear.weight_scale[start:stop]
    else:
        rows = QuantLinear(linear.weight.shape[1], stop - start, bias, linear.per_channel)
        rows.weight = linear.weight[start:stop]
        rows.weight_scale = linear.weight_scale[start:stop] if linear.per_channel else linear.weight_scale
    if bias:
        rows.bias = linear.bias[start:stop]
    return rows


class Mamba2GraphOps(GraphOps):
    """:func:`edge_quamba.quant.flow.mamba2_mixer_flow`'s ops emitting the nodes of one Mamba2 layer (see the module
    docstring for the two flavours)."""

    def __init__(self, g: GraphBuilder, mixer: QuantMamba2Mixer, norm: Norm, layer: int):
        self.g, self.m, self.norm, self.layer = g, mixer, norm, layer
        self.prefix = f"layers.{layer}.mixer."
        self.scales = {site: g.scale(f"{self.prefix}{site}_scale", getattr(mixer, f"{site}_scale"))
                       for site in PER_TENSOR_SITES}
        self.saturated: set[str] = set()  # TensorRT flavour: z_q, xBC_q, dt_q (bare QuantizeLinear); no GEMM reads them
        self._ssm_input: str | None = None

    def _codes(self, value: str | Pending, code: str | None = None) -> str:
        if not isinstance(value, Pending):
            return value
        out = tensor_name(self.layer, code or MAMBA2_SITE_BY_NAME[value.site].code)
        return self.g.quantize(value.x, self.scales[value.site], out=out)

    def linear(self, name: str, x_q: str | Pending, in_site: str, bias: bool = True,
               out_site: str | None = None) -> str | Pending | _Rows:
        if name == "in_proj" and self.g.flavour == "tensorrt":  # emitted per site when the flow quantizes the pieces
            return _Rows(name, self._codes(x_q), in_site, 0, self.m.config.d_in_proj)
        return super().linear(name, x_q, in_site, bias, out_site)

    def in_proj_split_conv(self, x_q: str | Pending, conv_state: str, sizes: list[int]
                           ) -> tuple[str | Pending, str | Pending, str, str]:
        """in_proj's float output split, each part quantized at its site (ORT flavour), or one requantizing GEMM
        per part's rows (TensorRT flavour, :meth:`linear`); then the conv node over xBC."""
        return in_proj_split_conv_composed(self, x_q, conv_state, sizes)

    def split(self, x: str | _Rows, sizes: list[int]) -> list[str | _Rows]:
        if isinstance(x, _Rows):  # in_proj's rows z | xBC | dt
            bounds = np.cumsum([x.start, *sizes]).tolist()
            return [_Rows(x.name, x.x_q, x.in_site, a, b) for a, b in zip(bounds[:-1], bounds[1:])]
        if x == self._ssm_input:  # the conv's codes: x | B | C
            names = MAMBA2_SITE_BY_NAME["ssm_input"].pieces
        else:  # in_proj's float output: z | xBC | dt, each quantized at its own site by the flow
            names = MAMBA2_IN_PROJ_SITES
        return self.g.split(x, sizes, [tensor_name(self.layer, name) for name in names])

    def quantize(self, x: str | _Rows, site: str) -> str | Pending:
        if isinstance(x, _Rows):
            return self._gemm_rows(x, site)
        return super().quantize(x, site)

    def _gemm_rows(self, rows: _Rows, site: str) -> str:
        """TensorRT flavour: the GEMM of in_proj's rows for ``site`` with its requantization at the site's scale, the
        codes named after the site: W8A8 ``DQ @ DQ(W_rows) (+ bias) -> QuantizeLinear`` (saturating, fusable), W4A8
        one W4A8LinearQuantize plugin node (clamped)."""
        g, m = self.g, self.m
        linear = linear_rows(getattr(m, rows.name), rows.start, rows.stop)
        name = f"{self.prefix}{rows.name}.{site}"
        codes = tensor_name(self.layer, MAMBA2_SITE_BY_NAME[site].code)
        if isinstance(linear, Int4Linear):
            bias = linear.bias if linear.bias is not None else torch.zeros(rows.stop - rows.start)
            (y_q,) = g.custom(
                W4A8_LINEAR_QUANTIZE,
                [rows.x_q, g.init(f"{name}.weight_packed", linear.weight_packed.view(torch.int8)),
                 g.init(f"{name}.weight_scale", linear.weight_scale.float()), g.init(f"{name}.bias", bias.float())],
                [codes], name, x_scale=getattr(m, f"{rows.in_site}_scale"), group_size=linear.group_size,
                out_scale=getattr(m, f"{site}_scale"))
            return y_q
        y = g.int8_linear(rows.x_q, self.scales[rows.in_site], linear, name)
        self.saturated.add(codes)
        return g.quantize_saturating(y, self.scales[site], out=codes)

    def causal_conv1d(self, xBC_q: str | Pending, conv_state: str) -> tuple[str, str]:
        m, g, p = self.m, self.g, self.prefix
        bias = m.conv_bias if m.conv_bias is not None else torch.zeros(m.config.conv_dim)  # + 0 is exact
        out_q, state = g.custom(
            INT8_CONV1D_CHANNEL_SCALES,
            [self._codes(xBC_q), conv_state, g.init(f"{p}conv_weight_q", m.conv_weight), g.init(f"{p}conv_bias", bias),
             g.init(f"{p}ssm_input_scales", m.scales()["ssm_input"])],
            [tensor_name(self.layer, MAMBA2_SITE_BY_NAME["ssm_input"].code), f"conv_state_out.{self.layer}"],
            f"{p}conv1d", x_scale=m.xBC_scale, weight_scale=m.conv_weight_scale)
        self._ssm_input = out_q
        return out_q, state

    def ssd_scan(self, x_q: str, dt_q: str | Pending, B_q: str, C_q: str, ssm_state: str) -> tuple[str, str]:
        m, g, p = self.m, self.g, self.prefix
        s = m.scales()
        return tuple(g.custom(
            INT8_SSD_SCAN,
            [x_q, self._codes(dt_q), B_q, C_q, ssm_state, g.init(f"{p}A", m.A.float()), g.init(f"{p}D", m.D.float()),
             g.init(f"{p}dt_bias", m.dt_bias.float()), g.init(f"{p}x_scales", s["x"]),
             g.init(f"{p}B_scales", s["B"]), g.init(f"{p}C_scales", s["C"])],
            [f"{p}y", f"ssm_state_out.{self.layer}"], f"{p}ssd_scan", dt_scale=m.dt_scale))

    def gated_norm_quantize(self, y: str, z_q: str | Pending, hadamard: bool) -> str | Pending:
        """The gated RMSNorm of y with the gate z and the codes of out_proj's input (qops.gated_rms_norm's order: the
        gate, the mean of squares per group of d_in / g channels, * 1/sqrt(mean + eps), * weight; then Hadamard and
        quantize). ORT flavour: standard float32 nodes, then HadamardQuantize or Max + QuantizeLinear; TensorRT
        flavour: one GatedRMSNorm(Hadamard)Quantize node."""
        m, g, p = self.m, self.g, self.prefix
        c = m.config
        weight = g.init(f"{p}norm.weight", m.norm_weight.float())
        group_size = c.d_inner // c.ngroups
        if g.flavour == "tensorrt":
            spec = GATED_RMS_NORM_HADAMARD_QUANTIZE if hadamard else GATED_RMS_NORM_QUANTIZE
            (y_q,) = g.custom(spec, [y, self._codes(z_q), weight],
                              [tensor_name(self.layer, MAMBA2_SITE_BY_NAME["out_proj_input"].code)], f"{p}norm",
                              z_scale=m.z_scale, eps=c.gate_norm_eps, group_size=group_size,
                              out_scale=m.out_proj_input_scale)
            return y_q
        z = g.op("DequantizeLinear", self._codes(z_q), self.scales["z"], ZERO_POINT, out=f"{p}z.dequantized")
        eps = g.init(f"{p}norm.eps", np.array(c.gate_norm_eps, np.float32))
        y = gated_rms_norm_nodes(g, y, z, weight, g.ints(group_size), eps, g.opset)
        return self.hadamard_quantize(y) if hadamard else super().quantize(y, "out_proj_input")
