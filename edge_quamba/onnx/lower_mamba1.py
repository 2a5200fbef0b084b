"""Lowering of a quantized Mamba1 mixer (Quamba W8A8 and W4A8): :func:`edge_quamba.quant.flow.mamba1_mixer_flow` run
with :class:`GraphOps`, whose ops emit nodes (the language model around it is :func:`edge_quamba.onnx.lower
.lower_model`'s; :class:`edge_quamba.onnx.lower_mamba2.Mamba2GraphOps` builds on it). Per mixer: the flow's quantize ->
Max + QuantizeLinear, linear -> int8 Q/DQ MatMul, conv / scan / Hadamard -> the custom nodes Int8CausalConv1d,
Int8SelectiveScan, HadamardQuantize (with a per-token out_proj input scale: HadamardQuantizeDynamic and a per-token
out_proj). How those node groups are written, and what ONNX Runtime fuses of them:
:mod:`edge_quamba.onnx.graph_builder`.

The TensorRT flavour's GEMMs (TensorRT fuses a QuantizeLinear that directly follows a GEMM into its epilogue, and a
pointwise op in between blocks that; TensorRT's QuantizeLinear saturates to [-128, 127], so the clamp to -127 moves to
the readers, :func:`edge_quamba.quant.primitives.read_codes`):
    * in_proj:  DQ(x_q) @ DQ(W) -> QuantizeLinear(xz_scale) -> Split as int8 into x_q | z_q: fusion-eligible;
    * x_proj:   DQ(u_q) @ DQ(W) -> QuantizeLinear(dbc_scale) -> Split as int8 into dt_r_q | B_q | C_q: eligible;
    * dt_proj:  reads dt_r_q through a clamped requantization Q(Max(DQ(dt_r_q), -127 s)) (its own small pointwise
                pass over (b, l, r): a GEMM must not read -128), then DQ @ DQ(W) -> QuantizeLinear(dt_scale): eligible;
    * out_proj: DQ(y_q) @ DQ(W) (+ bias) -> float32 into the residual Add: nothing to requantize; the Add is the
                GEMM's elementwise epilogue candidate.
W4A8 (int4 weights) in the TensorRT flavour: each linear is one plugin node over the packed weight as stored
(:meth:`GraphOps._w4a8_plugin`): W4A8LinearQuantize for in_proj, x_proj and dt_proj (the requantizing epilogue inside;
its codes are clamped to [-127, 127] like the reference's, so they are split as int8 and read as they are) and
W4A8Linear for out_proj. No INT4 initializer is left, so the graph stays at opset 17. Why plugins: README, TensorRT
and 4-bit weights.
The ORT flavour keeps the Max before every QuantizeLinear (ORT's QDQ fusions want it so:
:mod:`edge_quamba.onnx.graph_builder`). Both are validated against the same reference: the -128 codes the TensorRT
flavour writes read as -127 downstream, exactly what the reference computes (tests/test_tensorrt_graph.py makes GEMM
outputs saturate and checks it).
"""

from __future__ import annotations

import torch

from edge_quamba.models.mamba import Norm
from edge_quamba.onnx.graph_builder import ZERO_POINT, GraphBuilder, Pending
from edge_quamba.ops.specs import (HADAMARD_QUANTIZE, HADAMARD_QUANTIZE_DYNAMIC, INT8_CAUSAL_CONV1D,
                                   INT8_SELECTIVE_SCAN, W4A8_LINEAR, W4A8_LINEAR_QUANTIZE)
from edge_quamba.quant.flow import dt_proj_scan_composed, in_proj_conv_composed
from edge_quamba.quant.qmodel import Int4Linear, QuantLinear, QuantMambaMixer
from edge_quamba.quant.sites import SITE_BY_NAME, tensor_name


class GraphOps:
    """The flow's ops (:class:`edge_quamba.quant.flow.MixerOps`) emitting the nodes of layer ``layer``."""

    def __init__(self, g: GraphBuilder, mixer: QuantMambaMixer, norm: Norm, layer: int):
        self.g, self.m, self.norm, self.layer = g, mixer, norm, layer
        self.prefix = f"layers.{layer}.mixer."
        self.scales = {site: g.scale(f"{self.prefix}{site}_scale", getattr(mixer, f"{site}_scale"))
                       for site in mixer.static_sites}
        self.saturated: set[str] = set()
        """Codes made by a bare QuantizeLinear (TensorRT flavour): they may hold -128, which no GEMM may read."""
        self.plugin_codes: dict[str, str] = {}
        """Codes made whole by a W4A8LinearQuantize node (TensorRT flavour), by tensor name: their site. Its
        epilogue clamps to [-127, 127] as the reference's quantize does, so they never hold -128."""

    def _codes(self, value: str | Pending, code: str | None = None) -> str:
        if not isinstance(value, Pending):
            return value
        out = tensor_name(self.layer, code or SITE_BY_NAME[value.site].code)
        if value.gemm and self.g.flavour == "tensorrt":
            self.saturated.add(out)
            return self.g.quantize_saturating(value.x, self.scales[value.site], out=out)
        return self.g.quantize(value.x, self.scales[value.site], out=out)

    def _gemm_input(self, x_q: str, scale: str) -> str:
        """Codes a GEMM may read: codes that may hold -128 are requantized with the clamp first, ``Q(Max(DQ(x_q),
        -127 s))`` at the same scale (exact: the values of read_codes(x_q)); every other input as it is."""
        if x_q not in self.saturated:
            return x_q
        dequantized = self.g.op("DequantizeLinear", x_q, scale, ZERO_POINT, out=f"{x_q}.dequantized")
        return self.g.quantize(dequantized, scale, out=f"{x_q}.clamped")

    def norm_quantize(self, resid: str, site: str) -> Pending:
        return Pending(self.g.norm(resid, self.norm, f"layers.{self.layer}.norm"), site)

    def quantize(self, x: str, site: str) -> Pending:
        return Pending(x, site)

    def split(self, x: Pending | str, sizes: list[int]) -> list[str]:
        if isinstance(x, str):  # codes a W4A8LinearQuantize plugin made: split as int8
            names = [tensor_name(self.layer, piece) for piece in SITE_BY_NAME[self.plugin_codes[x]].pieces]
            return self.g.split(x, sizes, names)
        pieces = SITE_BY_NAME[x.site].pieces
        if x.gemm and self.g.flavour == "tensorrt":  # quantize the GEMM's output whole, then split the codes
            codes = self._codes(x, SITE_BY_NAME[x.site].code)
            names = [tensor_name(self.layer, piece) for piece in pieces]
            self.saturated.update(names)
            return self.g.split(codes, sizes, names)
        floats = self.g.split(x.x, sizes, [tensor_name(self.layer, piece.removesuffix("_q")) for piece in pieces])
        return [self._codes(Pending(f, x.site), piece) for f, piece in zip(floats, pieces, strict=True)]

    def linear(self, name: str, x_q: str | Pending, in_site: str, bias: bool = True,
               out_site: str | None = None) -> str | Pending:
        linear: QuantLinear | Int4Linear = getattr(self.m, name)
        if not bias and linear.bias is not None:
            raise AssertionError(f"{name}: a bias-free use of a linear that has a bias")
        scale = self.scales[in_site]
        x = self._gemm_input(self._codes(x_q), scale)
        if isinstance(linear, Int4Linear) and self.g.flavour == "tensorrt":
            return self._w4a8_plugin(name, linear, x, in_site, out_site)
        lower = self.g.int4_linear if isinstance(linear, Int4Linear) else self.g.int8_linear
        y = lower(x, scale, linear, f"{self.prefix}{name}")
        return y if out_site is None else Pending(y, out_site, gemm=True)

    def _w4a8_plugin(self, name: str, linear: Int4Linear, x_q: str, in_site: str, out_site: str | None) -> str:
        """The TensorRT flavour's W4A8 linear: one W4A8Linear node (float out) or W4A8LinearQuantize node (codes of
        ``out_site`` out, the requantizing epilogue inside), over the packed weight as stored (its uint8 bytes as an
        int8 initializer: :mod:`edge_quamba.ops.specs`), the (N, G) scales and the bias (zeros when none)."""
        g, p = self.g, f"{self.prefix}{name}"
        bias = linear.bias if linear.bias is not None else torch.zeros(linear.weight_packed.shape[0])
        inputs = [x_q, g.init(f"{p}.weight_packed", linear.weight_packed.view(torch.int8)),
                  g.init(f"{p}.weight_scale", linear.weight_scale.float()), g.init(f"{p}.bias", bias.float())]
        x_scale = getattr(self.m, f"{in_site}_scale")
        if out_site is None:
            (y,) = g.custom(W4A8_LINEAR, inputs, [f"{p}.out"], p, x_scale=x_scale, group_size=linear.group_size)
            return y
        codes = tensor_name(self.layer, SITE_BY_NAME[out_site].code)
        (y_q,) = g.custom(W4A8_LINEAR_QUANTIZE, inputs, [codes], p, x_scale=x_scale, group_size=linear.group_size,
                          out_scale=getattr(self.m, f"{out_site}_scale"))
        self.plugin_codes[y_q] = out_site
        return y_q

    def in_proj_conv(self, x_q: str | Pending, conv_state: str, d_inner: int) -> tuple[str, str, str]:
        """in_proj requantized at xz, split, the conv node over x (one kernel at decode on the GPU; nodes here)."""
        return in_proj_conv_composed(self, x_q, conv_state, d_inner)

    def dt_proj_scan(self, u_q: str, dt_r_q: str, B_q: str, C_q: str, z_q: str, ssm_state: str) -> tuple[str, str]:
        """dt_proj requantized at dt, then the scan node (one kernel at decode on the GPU; nodes here)."""
        return dt_proj_scan_composed(self, u_q, dt_r_q, B_q, C_q, z_q, ssm_state)

    def causal_conv1d(self, x_q: str, conv_state: str) -> tuple[str, str]:
        m, g = self.m, self.g
        bias = m.conv_bias if m.conv_bias is not None else torch.zeros(m.config.d_inner)  # + 0 is exact
        return tuple(g.custom(
            INT8_CAUSAL_CONV1D,
            [x_q, conv_state, g.init(f"{self.prefix}conv_weight_q", m.conv_weight), g.init(f"{self.prefix}conv_bias", bias)],
            [tensor_name(self.layer, SITE_BY_NAME["u"].code), f"conv_state_out.{self.layer}"], f"{self.prefix}conv1d",
            x_scale=m.xz_scale, weight_scale=m.conv_weight_scale, out_scale=m.u_scale,
        ))

    def selective_scan(self, u_q: str, dt_q: str, B_q: str, C_q: str, z_q: str, ssm_state: str) -> tuple[str, str]:
        m, g, p = self.m, self.g, self.prefix
        return tuple(g.custom(
            INT8_SELECTIVE_SCAN,
            [u_q, self._codes(dt_q), B_q, C_q, z_q, ssm_state, g.init(f"{p}A", m.A.float()),
             g.init(f"{p}D", m.D.float()), g.init(f"{p}dt_bias", m.dt_bias.float())],
            [f"{p}y", f"ssm_state_out.{self.layer}"], f"{p}selective_scan",
            u_scale=m.u_scale, dt_scale=m.dt_scale, B_scale=m.dbc_scale, C_scale=m.dbc_scale, z_scale=m.xz_scale,
        ))

    def hadamard_quantize(self, y: str) -> str:
        (y_q,) = self.g.custom(HADAMARD_QUANTIZE, [y], [tensor_name(self.layer, SITE_BY_NAME["out_proj_input"].code)],
                               f"{self.prefix}hadamard_quantize", out_scale=self.m.out_proj_input_scale)
        return y_q

    def hadamard_quantize_dynamic(self, y: str) -> tuple[str, str]:
        codes = tensor_name(self.layer, SITE_BY_NAME["out_proj_input"].code)
        y_q, y_scale = self.g.custom(HADAMARD_QUANTIZE_DYNAMIC, [y], [codes, f"{self.prefix}y_scale"],
                                     f"{self.prefix}hadamard_quantize")
        return y_q, y_scale

    def linear_per_token(self, name: str, x_q: str, x_scale: str) -> str:
        return self.g.int8_linear_per_token(x_q, x_scale, getattr(self.m, name), f"{self.prefix}{name}")
