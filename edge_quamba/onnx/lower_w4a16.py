"""Lowering of the W4A16 model (:class:`edge_quamba.quant.qmodel.W4A16Mixer` blocks) to one ONNX graph (opset 21).

W4A16 quantizes no activation, so its graph has no int8 codes and no custom op: it is the fp16 reference
(:class:`edge_quamba.models.mamba.MambaLM` in float16, prefill ``forward``) written with standard ops, with each of the
four mixer linears as ``Cast(x, float32) -> MatMul(DequantizeLinear(INT4 (K, N), axis 0, block_size))`` (+ bias)
``-> Cast(float16)``: float32 accumulation and one rounding to float16, as ``w4a16_linear``. ONNX Runtime fuses the
DequantizeLinear -> MatMul into MatMulNBits (accuracy level pinned to float32 by the session options).

Where the reference computes in float16 the graph computes in float32 and casts back to float16 at the same points
(the norm's output, the conv output, silu(conv), the linears' outputs, lm_head's output), which is what torch's CPU
kernels do for float16 inside an op; the scan runs in float32 as the reference's does. The sum orders differ (and
the reference's one-token ``step`` computes the conv as a product-sum in float16), so validation compares every
output with a float16-sized tolerance (:mod:`edge_quamba.onnx.validate`).

Interface: as the int8 graph, except ``conv_state.{i}`` / ``conv_state_out.{i}`` are float16 (the reference's).

Glossary: :mod:`edge_quamba.models.mamba`.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper
from torch import nn

from edge_quamba.models.mamba import MambaLM, Norm
from edge_quamba.onnx import INPUT_IDS, INT4_IR_VERSION, INT4_OPSET, LOGITS, state_names
from edge_quamba.onnx.functions import _scan_step_body
from edge_quamba.onnx.lower import GraphBuilder
from edge_quamba.quant.qmodel import Int4Linear, W4A16Mixer

FLOAT, FLOAT16 = TensorProto.FLOAT, TensorProto.FLOAT16


class W4A16Graph(GraphBuilder):
    """Node groups of the float16 graph."""

    def cast(self, x: str, to: int, out: str | None = None) -> str:
        return self.op("Cast", x, to=to, out=out)

    def int4_linear16(self, x16: str, linear: Int4Linear, name: str) -> str:
        """x16 (..., K) float16 -> (..., N) float16: float32 MatMul with the dequantized int4 weight (+ bias)."""
        codes = linear.codes().T.contiguous()  # (K, N)
        k, n = codes.shape
        self.initializers.append(helper.make_tensor(f"{name}.weight_q", TensorProto.INT4, [k, n],
                                                    codes.flatten().tolist()))
        scales = linear.weight_scale.T.contiguous()  # (G, N) float32
        self.init(f"{name}.weight_scale", scales)
        self.initializers.append(helper.make_tensor(f"{name}.weight_zero_point", TensorProto.INT4,
                                                    list(scales.shape), [0] * scales.numel()))
        w = self.op("DequantizeLinear", f"{name}.weight_q", f"{name}.weight_scale", f"{name}.weight_zero_point",
                    out=f"{name}.weight", axis=0, block_size=linear.group_size)
        y = self.op("MatMul", self.cast(x16, FLOAT, f"{name}.input"), w, out=f"{name}.matmul")
        if linear.bias is not None:
            y = self.op("Add", y, self.init(f"{name}.bias", linear.bias.float()), out=f"{name}.biased")
        return self.cast(y, FLOAT16, f"{name}.out")

    def norm16(self, x: str, norm: Norm, name: str) -> str:
        """Norm.forward of a float16 norm on x (float16): statistics in float32, the result cast to float16, then
        ``weight * x`` (+ bias) in float16."""
        xf = self.cast(x, FLOAT)
        eps = self.init(f"{name}.eps", np.array(norm.eps, np.float32))
        mean = lambda t: self.op("ReduceMean", t, self.ints(-1), keepdims=1)  # noqa: E731
        centered = xf if norm.kind == "rmsnorm" else self.op("Sub", xf, mean(xf))
        rstd = self.op("Reciprocal", self.op("Sqrt", self.op("Add", mean(self.op("Mul", centered, centered)), eps)))
        normed = self.cast(self.op("Mul", centered, rstd), FLOAT16)
        y = self.op("Mul", self.init(f"{name}.weight", norm.weight.detach().half()), normed, out=f"{name}.scaled")
        if norm.bias is None:
            return y
        return self.op("Add", y, self.init(f"{name}.bias", norm.bias.detach().half()), out=f"{name}.out")

    def silu32(self, x: str) -> str:
        """x / (1 + exp(-x)) in x's float type (the formula of torch's silu)."""
        one = self.init(self._name("one"), np.array(1.0, np.float32))
        return self.op("Div", x, self.op("Add", self.op("Exp", self.op("Neg", x)), one))

    def conv_silu16(self, x16: str, conv1d: nn.Conv1d, i: int, name: str, out: str) -> str:
        """The depthwise causal conv (:func:`edge_quamba.models.mamba.causal_conv1d`) then SiLU, on x16 (b, l, c)
        float16 continuing from ``conv_state.{i}`` (b, c, k) float16 -> (b, l, c) float16; writes
        ``conv_state_out.{i}``; its weight and bias are ``{name}.weight`` / ``{name}.bias``. The Conv sums in
        float32 (bias included) and rounds once to float16, then silu in float32 rounded to float16: the
        reference's two float16 ops."""
        c, k = conv1d.weight.shape[0], conv1d.weight.shape[-1]
        # causal conv over [conv_state | x^T] (b, c, k + l): output t sees inputs t-k+1..t
        history = self.op("Concat", f"conv_state.{i}", self.op("Transpose", x16, perm=[0, 2, 1]), axis=2)
        self.op("Slice", history, self.ints(-k), self.ints(np.iinfo(np.int64).max), self.ints(2),
                out=f"conv_state_out.{i}")
        window = self.cast(self.op("Slice", history, self.ints(1), self.ints(np.iinfo(np.int64).max), self.ints(2)),
                           FLOAT)
        weight = self.init(f"{name}.weight", conv1d.weight.detach().float())  # (c, 1, k) float16 values
        conv_inputs = [window, weight] + ([self.init(f"{name}.bias", conv1d.bias.detach().float())]
                                          if conv1d.bias is not None else [])
        conv = self.cast(self.op("Conv", *conv_inputs, group=c), FLOAT16)  # (b, c, l)
        u16 = self.cast(self.silu32(self.cast(conv, FLOAT)), FLOAT16)
        return self.op("Transpose", u16, perm=[0, 2, 1], out=out)  # (b, l, c)

    def mixer(self, m: W4A16Mixer, hidden: str, i: int) -> str:
        """MambaMixer.forward on hidden (b, l, d) float16 -> (b, l, d) float16; reads and writes layer i's states."""
        c, p = m.config, f"layers.{i}.mixer."
        d_in, n, r = c.d_inner, c.d_state, c.dt_rank
        xz = self.int4_linear16(hidden, m.in_proj, f"{p}in_proj")  # (b, l, 2 d_in)
        x_in, z = self.ops("Split", [xz, self.ints(d_in, d_in)], [f"{p}x", f"{p}z"], axis=-1)
        u16 = self.conv_silu16(x_in, m.conv1d, i, f"{p}conv1d", out=f"{p}u")  # (b, l, d_in)
        dbc = self.int4_linear16(u16, m.x_proj, f"{p}x_proj")
        dt_r, B, C = self.ops("Split", [dbc, self.ints(r, n, n)], [f"{p}dt_r", f"{p}B", f"{p}C"], axis=-1)
        delta = self.op("Softplus", self.cast(self.int4_linear16(dt_r, m.dt_proj, f"{p}dt_proj"), FLOAT))
        u, B, C = self.cast(u16, FLOAT), self.cast(B, FLOAT), self.cast(C, FLOAT)
        A = self.init(f"{p}A", -m.A_log.detach().float().exp())  # (d_in, n), exp in float32 as the reference
        last, inner = self.ints(-1), self.ints(2)
        decay = self.op("Exp", self.op("Mul", self.op("Unsqueeze", delta, last), A))  # (b, l, d_in, n)
        drive = self.op("Mul", self.op("Unsqueeze", self.op("Mul", delta, u), last), self.op("Unsqueeze", B, inner))
        scanned = self.ops("Scan", [f"ssm_state.{i}", decay, drive, self.op("Unsqueeze", C, inner)],
                           [f"ssm_state_out.{i}", f"{p}y_scan"], body=_scan_step_body(), num_scan_inputs=3,
                           scan_input_axes=[1, 1, 1], scan_output_axes=[1])
        D = self.init(f"{p}D", m.D.detach().float())
        y = self.op("Add", scanned[1], self.op("Mul", u, D))
        gated = self.op("Mul", y, self.silu32(self.cast(z, FLOAT)), out=f"{p}y")
        return self.int4_linear16(self.cast(gated, FLOAT16), m.out_proj, f"{p}out_proj")


def lower_float16_lm(model: MambaLM, g: W4A16Graph, conv_shape: list, ssm_shape: list, name: str
                     ) -> onnx.ModelProto:
    """The float16 language model around ``g.mixer`` (MambaLM.forward): embeddings, per layer norm16 -> mixer ->
    residual add (float32 when ``residual_in_fp32``), norm_f, lm_head; states as graph I/O, conv_state.{i}
    ``conv_shape`` float16 and ssm_state.{i} ``ssm_shape`` float32 (symbolic batch "b")."""
    c = model.config
    resid_type = FLOAT if c.residual_in_fp32 else FLOAT16
    table = g.init("embeddings.weight", model.backbone.embeddings.weight.detach().half())  # (v, d)
    resid = g.cast(g.op("Gather", table, INPUT_IDS, axis=0), resid_type, "embeddings.out")
    for i, block in enumerate(model.backbone.layers):
        hidden = g.norm16(g.cast(resid, FLOAT16), block.norm, f"layers.{i}.norm")
        out = g.mixer(block.mixer, hidden, i)
        resid = g.op("Add", resid, g.cast(out, resid_type), out=f"layers.{i}.residual")
    normed = g.norm16(g.cast(resid, FLOAT16), model.backbone.norm_f, "norm_f")  # (b, l, d) float16
    head = table if c.tie_embeddings else g.init("lm_head.weight", model.lm_head.weight.detach().half())
    flat = g.cast(g.op("Reshape", normed, g.ints(-1, c.d_model)), FLOAT)
    logits16 = g.cast(g.op("Gemm", flat, g.cast(head, FLOAT), transB=1), FLOAT16)  # (b*l, v), float32 sums
    out_shape = g.op("Concat", g.op("Shape", INPUT_IDS), g.ints(c.vocab_size), axis=0)
    g.op("Reshape", g.cast(logits16, FLOAT), out_shape, out=LOGITS)

    state_in, state_out = state_names(c.n_layer)
    info = helper.make_tensor_value_info
    inputs = [info(INPUT_IDS, TensorProto.INT64, ["b", "l"])]
    outputs = [info(LOGITS, FLOAT, ["b", "l", c.vocab_size])]
    for i in range(c.n_layer):
        inputs += [info(state_in[2 * i], FLOAT16, conv_shape), info(state_in[2 * i + 1], FLOAT, ssm_shape)]
        outputs += [info(state_out[2 * i], FLOAT16, conv_shape), info(state_out[2 * i + 1], FLOAT, ssm_shape)]
    graph = helper.make_graph(g.nodes, name, inputs, outputs, initializer=g.initializers)
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", INT4_OPSET)],
                                   producer_name="edge-quamba")
    onnx_model.ir_version = INT4_IR_VERSION
    return onnx_model


def lower_w4a16(model: MambaLM) -> onnx.ModelProto:
    """The graph of a Mamba1 W4A16 reference model (``load_quantized_model`` of a w4a16 artifact), ORT flavour."""
    c = model.config
    return lower_float16_lm(model, W4A16Graph(INT4_OPSET), ["b", c.d_inner, c.d_conv], ["b", c.d_inner, c.d_state],
                            "edge_quamba_mamba_w4a16")
