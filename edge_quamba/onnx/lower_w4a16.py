"""Lowering of a float Mamba1 model to one ONNX graph (opset 21) in standard ops: the W4A16 model
(:class:`edge_quamba.quant.qmodel.W4A16Mixer` blocks, float16) and the fp model itself (float32, the baseline).

Both are the fp reference (:class:`edge_quamba.models.mamba.MambaLM`, prefill ``forward``) written with standard ops;
one lowering, parametrized by the activation float type ``act`` of :class:`FloatGraph` (the reference's dtype) and
by what each linear holds:

    W4A16 (act float16): each of the four mixer linears is ``Cast(x, float32) -> MatMul(DequantizeLinear(INT4 (K, N),
        axis 0, block_size))`` (+ bias) ``-> Cast(float16)``: float32 accumulation and one rounding to float16, as
        ``w4a16_linear``. ONNX Runtime fuses the DequantizeLinear -> MatMul into MatMulNBits (accuracy level pinned
        to float32 by the session options).
    fp32 (act float32): the fp checkpoint's ``nn.Linear`` weights as float32 (K, N) initializers, ``MatMul`` (+ bias);
        embeddings, norms and lm_head float32 too. Every Cast of the float16 graph is then from float32 to float32
        and is left out. Float32, not float16, is the CPU baseline because it is what a CPU user runs: ONNX
        Runtime's CPU execution provider computes float32 MatMuls with its SGEMM, and has no float16 MatMul kernel
        on x86: it wraps a float16 MatMul in Cast -> float32 MatMul -> Cast (ORT 1.32's optimized graph; a test in
        tests/test_fp_graph.py holds it). A float16 graph would thus run float32 arithmetic plus casts, and its
        float16 roundings would make it another model than the fp checkpoint.
        Validated against the float32 reference within :data:`edge_quamba.onnx.validate.FP32_RTOL`
        (:func:`edge_quamba.onnx.validate.validate_float_graph_on_ort`).

Where the float16 reference computes in float16 the graph computes in float32 and casts back to float16 at the
same points (the norm's output, the conv output, silu(conv), the linears' outputs, lm_head's output), which is what
torch's CPU kernels do for float16 inside an op; the scan runs in float32 as the reference's does. The sum orders
differ (and the reference's one-token ``step`` computes the conv as a product-sum in the model dtype), so validation
compares every output with a tolerance sized for the float type (:mod:`edge_quamba.onnx.validate`).

Opset 21 for both: INT4 needs it (the norms' ReduceMean then takes its axes as an input, opset >= 18).

TensorRT flavour (W4A16 only, ``flavour="tensorrt"``): the same graph with the custom nodes TensorRT runs as plugins,
opset 17 (no INT4 initializer left, so the opset TensorRT 10.3's parser documents): each linear is a W4A16Linear node
over the packed weight as stored (float16 in, float16 out; :mod:`edge_quamba.ops.specs`), the scan a SelectiveScanF16
node (the kernel of the float16 scan; the reference's ONNX Scan would become a TensorRT loop of l iterations), and,
as in the int8 TensorRT flavour, only the last position goes through the final norm and the float16 lm_head:
``last_logits`` (b, v) float16. Validated on ONNX Runtime through the custom ops' function bodies
(:mod:`edge_quamba.onnx.functions_int4`, :mod:`edge_quamba.onnx.functions`) before they become plugin nodes
(:mod:`edge_quamba.onnx.tensorrt`). Why plugins and not TensorRT's own INT4 weight-only quantization: README,
TensorRT and 4-bit weights.

Interface: as the int8 graph, except ``conv_state.{i}`` / ``conv_state_out.{i}`` are in the activation type
(float16 or float32, the reference's).

Glossary: :mod:`edge_quamba.models.mamba`.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper
from torch import nn

from edge_quamba.models.mamba import MambaLM, Norm
from edge_quamba.onnx import (INPUT_IDS, INT4_IR_VERSION, INT4_OPSET, IR_VERSION, LAST_LOGITS, LOGITS, OPSET,
                              state_names)
from edge_quamba.onnx.functions import INT4_LINEAR_FUNCTIONS, selective_scan_nodes
from edge_quamba.onnx.graph_builder import GraphBuilder
from edge_quamba.ops.specs import DOMAIN, SELECTIVE_SCAN_F16, W4A16_LINEAR
from edge_quamba.quant.qmodel import Int4Linear

FLOAT, FLOAT16 = TensorProto.FLOAT, TensorProto.FLOAT16
TORCH_DTYPES = {FLOAT: torch.float32, FLOAT16: torch.float16}


class FloatGraph(GraphBuilder):
    """Node groups of the float graph; ``act`` is the float type of the activations between ops (FLOAT16 for
    W4A16, FLOAT for the fp32 baseline). Arithmetic inside an op is float32 either way. ``flavour`` "tensorrt"
    (W4A16 only): linears and scan as custom nodes (module docstring)."""

    def __init__(self, opset: int, act: int = FLOAT16, flavour: str = "ort"):
        super().__init__(opset, flavour)
        self.act = act

    def cast(self, x: str, to: int, out: str | None = None) -> str:
        return self.op("Cast", x, to=to, out=out)

    def convert(self, x: str, source: int, to: int, out: str | None = None) -> str:
        """x of type ``source`` as type ``to``: a Cast, or x itself when the types are equal."""
        return x if source == to else self.cast(x, to, out)

    def to_float32(self, x: str, out: str | None = None) -> str:
        """An activation (``act``) as float32."""
        return self.convert(x, self.act, FLOAT, out)

    def to_act(self, x: str, out: str | None = None) -> str:
        """A float32 value rounded to the activation type."""
        return self.convert(x, FLOAT, self.act, out)

    def act_init(self, name: str, value: torch.Tensor) -> str:
        """An initializer holding ``value`` in the activation type."""
        return self.init(name, value.detach().to(TORCH_DTYPES[self.act]))

    def linear(self, x: str, linear: Int4Linear | nn.Linear, name: str) -> str:
        """x (..., K) act -> (..., N) act: a float32 MatMul with the weight (+ bias), rounded once to act. An
        Int4Linear's weight is INT4 codes through a blocked DequantizeLinear; an nn.Linear's is float32 (K, N)."""
        if isinstance(linear, Int4Linear) and self.flavour == "tensorrt":
            return self.w4a16_plugin(x, linear, name)
        if isinstance(linear, Int4Linear):
            w = self.int4_weight(linear, name)
        else:
            w = self.init(f"{name}.weight", linear.weight.detach().float().T.contiguous())  # (K, N)
        y = self.op("MatMul", self.to_float32(x, f"{name}.input"), w, out=f"{name}.matmul")
        if linear.bias is not None:
            y = self.op("Add", y, self.init(f"{name}.bias", linear.bias.detach().float()), out=f"{name}.biased")
        return self.to_act(y, f"{name}.out")

    def w4a16_plugin(self, x: str, linear: Int4Linear, name: str) -> str:
        """The TensorRT flavour's linear: one W4A16Linear node, x (..., K) float16 -> (..., N) float16, over the
        packed weight as stored (its uint8 bytes as an int8 initializer), the (N, G) scales, the bias (zeros when
        none)."""
        if self.act != FLOAT16:
            raise AssertionError("W4A16Linear takes float16 activations")
        bias = linear.bias if linear.bias is not None else torch.zeros(linear.weight_packed.shape[0])
        inputs = [x, self.init(f"{name}.weight_packed", linear.weight_packed.view(torch.int8)),
                  self.init(f"{name}.weight_scale", linear.weight_scale.float()),
                  self.init(f"{name}.bias", bias.detach().float())]
        (y,) = self.custom(W4A16_LINEAR, inputs, [f"{name}.out"], name, group_size=linear.group_size)
        return y

    def mean(self, x: str) -> str:
        """ReduceMean over the last axis, keepdims (the axes are an input from opset 18, an attribute before)."""
        if self.opset >= 18:
            return self.op("ReduceMean", x, self.ints(-1), keepdims=1)
        return self.op("ReduceMean", x, axes=[-1], keepdims=1)

    def scan(self, u_act: str, delta: str, A: str, B: str, C: str, m: nn.Module, i: int) -> str:
        """The selective scan of layer i: u (b, l, d_in), B, C (b, l, n) in act, delta (b, l, d_in) float32 ->
        y = C.h + u D (b, l, d_in) float32; reads ssm_state.{i}, writes ssm_state_out.{i}. ORT flavour: standard
        nodes in float32 (:func:`edge_quamba.onnx.functions.selective_scan_nodes`); TensorRT flavour: one
        SelectiveScanF16 node (D in float16, as the float16 model holds it)."""
        p = f"layers.{i}.mixer."
        if self.flavour == "tensorrt":
            inputs = [u_act, delta, A, B, C, self.act_init(f"{p}D", m.D), f"ssm_state.{i}"]
            y, _ = self.custom(SELECTIVE_SCAN_F16, inputs, [f"{p}y_ssm", f"ssm_state_out.{i}"], f"{p}selective_scan")
            return y
        D = self.init(f"{p}D", m.D.detach().float())
        return selective_scan_nodes(self, self.to_float32(u_act), delta, A, self.to_float32(B), self.to_float32(C), D,
                                    f"ssm_state.{i}", f"ssm_state_out.{i}", f"{p}y_ssm")

    def int4_weight(self, linear: Int4Linear, name: str) -> str:
        """The (K, N) float32 weight of an Int4Linear: DequantizeLinear(INT4 codes, (G, N) scales, axis 0)."""
        codes = linear.codes().T.contiguous()  # (K, N)
        k, n = codes.shape
        self.initializers.append(helper.make_tensor(f"{name}.weight_q", TensorProto.INT4, [k, n],
                                                    codes.flatten().tolist()))
        scales = linear.weight_scale.T.contiguous()  # (G, N) float32
        self.init(f"{name}.weight_scale", scales)
        self.initializers.append(helper.make_tensor(f"{name}.weight_zero_point", TensorProto.INT4,
                                                    list(scales.shape), [0] * scales.numel()))
        return self.op("DequantizeLinear", f"{name}.weight_q", f"{name}.weight_scale", f"{name}.weight_zero_point",
                       out=f"{name}.weight", axis=0, block_size=linear.group_size)

    def act_norm(self, x: str, norm: Norm, name: str) -> str:
        """Norm.forward on x (act): statistics in float32, the result rounded to act, then ``weight * x`` (+ bias)
        in act."""
        xf = self.to_float32(x)
        eps = self.init(f"{name}.eps", np.array(norm.eps, np.float32))
        centered = xf if norm.kind == "rmsnorm" else self.op("Sub", xf, self.mean(xf))
        rstd = self.op("Reciprocal", self.op("Sqrt", self.op("Add", self.mean(self.op("Mul", centered, centered)),
                                                              eps)))
        normed = self.to_act(self.op("Mul", centered, rstd))
        y = self.op("Mul", self.act_init(f"{name}.weight", norm.weight), normed, out=f"{name}.scaled")
        if norm.bias is None:
            return y
        return self.op("Add", y, self.act_init(f"{name}.bias", norm.bias), out=f"{name}.out")

    def silu32(self, x: str) -> str:
        """x / (1 + exp(-x)) in x's float type (the formula of torch's silu)."""
        one = self.init(self._name("one"), np.array(1.0, np.float32))
        return self.op("Div", x, self.op("Add", self.op("Exp", self.op("Neg", x)), one))

    def act_conv_silu(self, x: str, conv1d: nn.Conv1d, i: int, name: str, out: str) -> str:
        """The depthwise causal conv (:func:`edge_quamba.models.mamba.causal_conv1d`) then SiLU, on x (b, l, c) act
        continuing from ``conv_state.{i}`` (b, c, k) act -> (b, l, c) act; writes ``conv_state_out.{i}``; its
        weight and bias are ``{name}.weight`` / ``{name}.bias``. The Conv sums in float32 (bias included) and
        rounds once to act, then silu in float32 rounded to act: the reference's two ops."""
        c, k = conv1d.weight.shape[0], conv1d.weight.shape[-1]
        # causal conv over [conv_state | x^T] (b, c, k + l): output t sees inputs t-k+1..t
        history = self.op("Concat", f"conv_state.{i}", self.op("Transpose", x, perm=[0, 2, 1]), axis=2)
        self.op("Slice", history, self.ints(-k), self.ints(np.iinfo(np.int64).max), self.ints(2),
                out=f"conv_state_out.{i}")
        window = self.to_float32(self.op("Slice", history, self.ints(1), self.ints(np.iinfo(np.int64).max),
                                         self.ints(2)))
        weight = self.init(f"{name}.weight", conv1d.weight.detach().float())  # (c, 1, k), the model's values
        conv_inputs = [window, weight] + ([self.init(f"{name}.bias", conv1d.bias.detach().float())]
                                          if conv1d.bias is not None else [])
        conv = self.to_act(self.op("Conv", *conv_inputs, group=c))  # (b, c, l)
        u = self.to_act(self.silu32(self.to_float32(conv)))
        return self.op("Transpose", u, perm=[0, 2, 1], out=out)  # (b, l, c)

    def mixer(self, m: nn.Module, hidden: str, i: int) -> str:
        """MambaMixer.forward (fp, or W4A16Mixer) on hidden (b, l, d) act -> (b, l, d) act; reads and writes
        layer i's states."""
        c, p = m.config, f"layers.{i}.mixer."
        d_in, n, r = c.d_inner, c.d_state, c.dt_rank
        xz = self.linear(hidden, m.in_proj, f"{p}in_proj")  # (b, l, 2 d_in)
        x_in, z = self.ops("Split", [xz, self.ints(d_in, d_in)], [f"{p}x", f"{p}z"], axis=-1)
        u_act = self.act_conv_silu(x_in, m.conv1d, i, f"{p}conv1d", out=f"{p}u")  # (b, l, d_in)
        dbc = self.linear(u_act, m.x_proj, f"{p}x_proj")
        dt_r, B, C = self.ops("Split", [dbc, self.ints(r, n, n)], [f"{p}dt_r", f"{p}B", f"{p}C"], axis=-1)
        delta = self.op("Softplus", self.to_float32(self.linear(dt_r, m.dt_proj, f"{p}dt_proj")))
        A = self.init(f"{p}A", -m.A_log.detach().float().exp())  # (d_in, n), exp in float32 as the reference
        y = self.scan(u_act, delta, A, B, C, m, i)  # (b, l, d_in) float32
        gated = self.op("Mul", y, self.silu32(self.to_float32(z)), out=f"{p}y")
        return self.linear(self.to_act(gated), m.out_proj, f"{p}out_proj")


def float_lm_nodes(model: MambaLM, g: FloatGraph) -> onnx.ValueInfoProto:
    """The nodes of the float language model around ``g.mixer`` (MambaLM.forward): embeddings, per block act_norm ->
    mixer -> residual add (float32 when ``residual_in_fp32``), norm_f, lm_head. Returns the logits output: ``logits``
    (b, l, v) float32, or in the TensorRT flavour (``g.flavour``) ``last_logits`` (b, v) float16 of the last
    position. Each mixer reads and writes its own states (whose graph I/O the caller declares)."""
    c = model.config
    resid_type = FLOAT if c.residual_in_fp32 else g.act
    table = g.act_init("embeddings.weight", model.backbone.embeddings.weight)  # (v, d)
    resid = g.convert(g.op("Gather", table, INPUT_IDS, axis=0), g.act, resid_type, "embeddings.out")
    for i, block in enumerate(model.backbone.layers):
        hidden = g.act_norm(g.convert(resid, resid_type, g.act), block.norm, f"layers.{i}.norm")
        out = g.mixer(block.mixer, hidden, i)
        resid = g.op("Add", resid, g.convert(out, g.act, resid_type), out=f"layers.{i}.residual")
    head = table if c.tie_embeddings else g.act_init("lm_head.weight", model.lm_head.weight)
    if g.flavour == "tensorrt":  # the norm is per position: only the last one goes through norm_f and lm_head
        last = g.convert(g.last_position(resid, "residual.last"), resid_type, g.act)  # (b, d) act
        normed = g.act_norm(last, model.backbone.norm_f, "norm_f")
        g.op("Gemm", normed, head, transB=1, out=LAST_LOGITS)  # (b, v) float16: float16 in, float32 sums
        logits = helper.make_tensor_value_info(LAST_LOGITS, g.act, ["b", c.vocab_size])
    else:
        normed = g.act_norm(g.convert(resid, resid_type, g.act), model.backbone.norm_f, "norm_f")  # (b, l, d) act
        flat = g.to_float32(g.op("Reshape", normed, g.ints(-1, c.d_model)))
        logits_act = g.to_act(g.op("Gemm", flat, g.to_float32(head), transB=1))  # (b*l, v), float32 sums
        out_shape = g.op("Concat", g.op("Shape", INPUT_IDS), g.ints(c.vocab_size), axis=0)
        g.op("Reshape", g.to_float32(logits_act), out_shape, out=LOGITS)
        logits = helper.make_tensor_value_info(LOGITS, FLOAT, ["b", "l", c.vocab_size])
    return logits


def lower_float_lm(model: MambaLM, g: FloatGraph, conv_shape: list, ssm_shape: list, name: str) -> onnx.ModelProto:
    """The float language model (:func:`float_lm_nodes`) with its states as graph I/O: conv_state.{i} ``conv_shape``
    in ``g.act`` and ssm_state.{i} ``ssm_shape`` float32 (symbolic batch "b"). The TensorRT flavour ends in
    ``last_logits``, opset 17, with the bodies of its custom nodes as model-local functions."""
    c = model.config
    logits = float_lm_nodes(model, g)
    state_in, state_out = state_names(c.n_layer)
    info = helper.make_tensor_value_info
    inputs = [info(INPUT_IDS, TensorProto.INT64, ["b", "l"])]
    outputs = [logits]
    for i in range(c.n_layer):
        inputs += [info(state_in[2 * i], g.act, conv_shape), info(state_in[2 * i + 1], FLOAT, ssm_shape)]
        outputs += [info(state_out[2 * i], g.act, conv_shape), info(state_out[2 * i + 1], FLOAT, ssm_shape)]
    graph = helper.make_graph(g.nodes, name, inputs, outputs, initializer=g.initializers)
    if g.flavour == "tensorrt":
        onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", g.opset),
                                                             helper.make_opsetid(DOMAIN, 1)],
                                       functions=[make() for make in INT4_LINEAR_FUNCTIONS["w4a16"]],
                                       producer_name="edge-quamba")
        onnx_model.ir_version = IR_VERSION
        return onnx_model
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", INT4_OPSET)],
                                   producer_name="edge-quamba")
    onnx_model.ir_version = INT4_IR_VERSION
    return onnx_model


def lower_w4a16(model: MambaLM, flavour: str = "ort") -> onnx.ModelProto:
    """The graph of a Mamba1 W4A16 reference model (``load_quantized_model`` of a w4a16 artifact), for ``flavour``
    "ort" or "tensorrt" (module docstring)."""
    c = model.config
    g = FloatGraph(INT4_OPSET) if flavour == "ort" else FloatGraph(OPSET, flavour=flavour)
    return lower_float_lm(model, g, ["b", c.d_inner, c.d_conv], ["b", c.d_inner, c.d_state], "edge_quamba_mamba_w4a16")


def lower_fp32(model: MambaLM) -> onnx.ModelProto:
    """The float32 graph of a Mamba1 fp model (``load_fp_model(path, torch.float32)``), ORT flavour."""
    c = model.config
    return lower_float_lm(model, FloatGraph(INT4_OPSET, act=FLOAT), ["b", c.d_inner, c.d_conv],
                          ["b", c.d_inner, c.d_state], "edge_quamba_mamba_fp32")
