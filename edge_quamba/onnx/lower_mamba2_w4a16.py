"""Lowering of a float Mamba2 model to one ONNX graph (opset 21), the Mamba2 sibling of
:mod:`edge_quamba.onnx.lower_w4a16`: the W4A16 model (:class:`edge_quamba.quant.mamba2_qmodel.W4A16Mamba2Mixer`
blocks, float16) and the fp model itself (float32, the CPU baseline; that module's docstring says why float32).

The fp16 Mamba2 reference (:class:`edge_quamba.models.mamba2.Mamba2LM` in float16, prefill ``forward``) in standard
ops, no custom op. in_proj and out_proj are the int4 linears (INT4 + blocked DequantizeLinear -> MatMul, fused by
ONNX Runtime into MatMulNBits at float32 accuracy); the language model around the mixers, the norms, the linears and
the causal conv + SiLU are :mod:`edge_quamba.onnx.lower_w4a16`'s. Per mixer, with the reference's dtypes:

    in_proj(hidden) (b, l, d_in_proj) float16 -> z | xBC | dt_raw
    xBC -> causal conv over conv_dim channels (float32 sums, one rounding to float16) -> silu -> float16
        -> x (b, l, h, p) | B | C (b, l, g n), cast to float32
    Δ = softplus(float32(dt_raw) + dt_bias) (b, l, h);  A = -exp(A_log) (h,), float32 as the reference
    SSD recurrence in float32 (:func:`edge_quamba.onnx.functions_mamba2.ssd_scan_nodes`, the Int8SSDScan body's Scan):
        y = h C + D x (b, l, h, p), the (b, h, p, n) state carried through a Scan over l
    gated norm: rmsnorm over groups of d_in / g channels of y * silu(float32(z)) in float32, cast to float16,
        times the float16 weight (GatedRMSNorm's order) -> out_proj -> (b, l, d) float16

The reference's prefill runs the chunked SSD (:func:`edge_quamba.models.mamba2.ssd_chunked`), the graph the
recurrence token by token: the same float32 values summed in another order. Validation compares every output within
:data:`edge_quamba.onnx.validate.W4A16_RTOL` of the reference (prefill and decode steps).

The fp32 graph is the same with float32 activations and float32 (K, N) in_proj / out_proj weights (no Cast left,
validated within :data:`edge_quamba.onnx.validate.FP32_RTOL`).

Interface: as the int8 Mamba2 graph (conv_state.{i} (b, conv_dim, k), ssm_state.{i} (b, h, p, n) float32), except
that the conv states are in the activation type (the reference's), as in the Mamba1 float graphs.

Glossary: :mod:`edge_quamba.models.mamba2`.
"""

from __future__ import annotations

import onnx

from edge_quamba.models.mamba2 import Mamba2LM
from edge_quamba.onnx import INT4_OPSET
from edge_quamba.onnx.functions_mamba2 import ssd_scan_nodes
from edge_quamba.models.mamba2 import Mamba2Mixer
from edge_quamba.onnx.lower_w4a16 import FLOAT, FloatGraph, lower_float_lm


class Mamba2FloatGraph(FloatGraph):
    """The float graph's node groups with the Mamba2 mixer."""

    def mixer(self, m: Mamba2Mixer, hidden: str, i: int) -> str:
        """Mamba2Mixer.forward (fp, or W4A16Mamba2Mixer) on hidden (b, l, d) act -> (b, l, d) act; reads and writes
        layer i's states."""
        c, p = m.config, f"layers.{i}.mixer."
        d_in, h, hp, g, n = c.d_inner, c.nheads, c.headdim, c.ngroups, c.d_state
        zxbcdt = self.linear(hidden, m.in_proj, f"{p}in_proj")  # (b, l, d_in_proj)
        z, xBC, dt_raw = self.ops("Split", [zxbcdt, self.ints(d_in, c.conv_dim, h)],
                                  [f"{p}z", f"{p}xBC", f"{p}dt_raw"], axis=-1)
        xBC_act = self.act_conv_silu(xBC, m.conv1d, i, f"{p}conv1d", out=f"{p}ssm_input")  # (b, l, conv_dim)
        x_act, B_act, C_act = self.ops("Split", [xBC_act, self.ints(d_in, g * n, g * n)],
                                       [f"{p}x", f"{p}B", f"{p}C"], axis=-1)
        x = self.op("Reshape", self.to_float32(x_act), self.ints(0, 0, h, hp))  # (b, l, h, p) float32
        B, C = self.to_float32(B_act), self.to_float32(C_act)  # (b, l, g n)
        dt_bias = self.init(f"{p}dt_bias", m.dt_bias.detach().float())
        delta = self.op("Softplus", self.op("Add", self.to_float32(dt_raw), dt_bias))  # (b, l, h)
        A = self.init(f"{p}A", -m.A_log.detach().float().exp())  # (h,), exp in float32 as the reference
        D = self.init(f"{p}D", m.D.detach().float())
        y = ssd_scan_nodes(self, x, delta, A, B, C, D, f"ssm_state.{i}", f"ssm_state_out.{i}", f"{p}y_scan",
                           h, g, n)  # (b, l, h, p)
        y = self.op("Reshape", y, self.ints(0, 0, d_in), out=f"{p}y")
        gated = self.op("Mul", y, self.silu32(self.to_float32(z)), out=f"{p}gated")
        normed = self.to_act(self.group_rms_normalize(gated, g, d_in, c.gate_norm_eps, f"{p}norm"))
        scaled = self.op("Mul", self.act_init(f"{p}norm.weight", m.norm.weight), normed,
                         out=f"{p}norm.out")  # a product in act, as GatedRMSNorm's weight * normed
        return self.linear(scaled, m.out_proj, f"{p}out_proj")


def lower_mamba2_w4a16(model: Mamba2LM) -> onnx.ModelProto:
    """The graph of a Mamba2 W4A16 reference model (``load_quantized_model`` of a quamba2 w4a16 artifact), ORT
    flavour."""
    c = model.config
    return lower_float_lm(model, Mamba2FloatGraph(INT4_OPSET), ["b", c.conv_dim, c.d_conv],
                          ["b", c.nheads, c.headdim, c.d_state], "edge_quamba_mamba2_w4a16")


def lower_mamba2_fp32(model: Mamba2LM) -> onnx.ModelProto:
    """The float32 graph of a Mamba2 fp model (``load_fp_model(path, torch.float32)``), ORT flavour."""
    c = model.config
    return lower_float_lm(model, Mamba2FloatGraph(INT4_OPSET, act=FLOAT), ["b", c.conv_dim, c.d_conv],
                          ["b", c.nheads, c.headdim, c.d_state], "edge_quamba_mamba2_fp32")
