"""Lowering: the quantized reference model (:mod:`edge_quamba.quant.qmodel`) -> one ONNX graph.

The graph mirrors ``MambaLM.forward`` with ``QuantMambaMixer.forward``, one node group per reference line:

    input_ids (b, l) int64 -> Gather(embeddings) -> resid (b, l, d) float32
    per layer i:
        hidden = Norm(resid)                                    RMSNorm / LayerNorm from standard ops, float32
        x_q    = Q(hidden, in_proj_input)                       Max, QuantizeLinear (every Q below is the same)
        xz     = int8 linear in_proj                            DQ(x_q) @ DQ(W) (+ bias) -> float32
        x, z   = Split(xz); Q each at xz                        = quantize(xz) then chunk (elementwise)
        u_q, conv_state_out.i = Int8CausalConv1d(x_q, conv_state.i, conv_weight, conv_bias)
        dbc    = int8 linear x_proj(u_q); dt_r, B, C = Split; Q each at dbc
        dt_q   = Q(int8 linear dt_proj(dt_r_q), dt)             no bias: dt_bias is added inside the scan
        y, ssm_state_out.i = Int8SelectiveScan(u_q, dt_q, B_q, C_q, z_q, ssm_state.i, A, D, dt_bias)
        y_q    = HadamardQuantize(y) (or Q(y) without Hadamard), at out_proj_input
        resid  = resid + int8 linear out_proj(y_q)
    logits (b, l, v) = Norm_f(resid) @ lm_head^T                float32 Gemm (tied: the embedding matrix itself)

int8 linear: ``Q -> DequantizeLinear -> MatMul(DequantizeLinear(W_q (K, N) int8, w_scale))``. The weight is stored
pre-transposed so that ONNX Runtime fuses the group into MatMulIntegerToFloat (exact int32 accumulation, then
``* (x_scale * w_scale)``: bit-identical to :func:`edge_quamba.quant.primitives.int8_linear`); the fusion needs the
activation's QuantizeLinear directly before its DequantizeLinear, which is why x|z and dt_r|B|C are split in float
and quantized per piece rather than split as int8. TensorRT reads the same Q/DQ pairs as int8 GEMMs.
What ONNX Runtime (1.32, CPU) fuses, found by reading its optimized graph (tests/test_export.py holds it):
    * the clamp to +-127 before each QuantizeLinear is a Max, not a Clip: a Clip right after a MatMul that the int8
      range does not make redundant stops that MatMul's QDQ fusion (dt_proj stayed a float MatMul). The upper bound
      needs no op: QuantizeLinear itself saturates at 127.
    * x86 (``session.qdqisint8allowed`` defaults to 0 there): ORT rewrites each int8 Q -> DQ pair to uint8 before
      fusing (exact: zero point 128), and can only do so for a QuantizeLinear with one consumer. u_q (the conv op's
      output) feeds both x_proj and the scan, so x_proj would stay DequantizeLinear + float MatMul, which is not
      exact (float products and sums instead of an int32 accumulator). The ORT flavour therefore gives x_proj its own
      copy, ``Q(DQ(u_q))`` with the same scale: exact (fl(q s) / s rounds back to q), three small elementwise nodes,
      and ORT keeps it (a Max sits between the DQ and the Q, so no QDQ clean-up removes the pair). Then all four
      linears become MatMulIntegerToFloat. With ``session.qdqisint8allowed = 1`` (ARM's default) ORT fuses without
      the copy, but on x86 that selects an s8 x s8 kernel 56x slower than the uint8 one, so the ort backend keeps
      ORT's default. The TensorRT flavour has no copy.

Names: ``layers.{i}.mixer.<tensor>`` as in the reference state dict; every scale a float32 scalar initializer,
one shared int8 zero point. Batch b and length l are symbolic: one graph serves prefill (l >= 1) and decode (l = 1).
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import Tensor

from edge_quamba.models.mamba import MambaLM, Norm
from edge_quamba.onnx import INPUT_IDS, IR_VERSION, LOGITS, OPSET, state_names
from edge_quamba.onnx.functions import Body, custom_functions
from edge_quamba.ops.specs import DOMAIN, HADAMARD_QUANTIZE, INT8_CAUSAL_CONV1D, INT8_SELECTIVE_SCAN, OpSpec
from edge_quamba.quant.primitives import INT8_MAX
from edge_quamba.quant.qmodel import QuantLinear, QuantMambaMixer

ZERO_POINT = "zero_point_int8"


def quantization_sites(n_layer: int) -> list[list[tuple[str, ...]]]:
    """Per layer, the int8 tensors of the graph that hold the codes of each ``quantize`` call of
    ``QuantMambaMixer.forward``, in the order the reference makes those calls; a call whose codes the graph splits
    (x|z, dt_r|B|C) lists the pieces, to be concatenated along the last axis. Validation uses these to follow the
    graph's side of rounding ties (:mod:`edge_quamba.onnx.validate`)."""
    def p(i: int, name: str) -> str:
        return f"layers.{i}.mixer.{name}"

    return [[(p(i, "in_proj.input_q"),), (p(i, "x_q"), p(i, "z_q")), (p(i, "u_q"),),
             (p(i, "dt_r_q"), p(i, "B_q"), p(i, "C_q")), (p(i, "dt_q"),), (p(i, "y_q"),)] for i in range(n_layer)]


def _array(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


class GraphBuilder(Body):
    """A Body with initializers, and the node groups the lowering repeats (quantize, int8 linear, norm)."""

    def __init__(self, requantize_shared: bool = True):
        super().__init__()
        self.requantize_shared = requantize_shared
        self.initializers: list[onnx.TensorProto] = []
        self._scales: dict[str, np.float32] = {}
        self._lows: dict[str, str] = {}
        self.init(ZERO_POINT, np.array(0, np.int8))

    def init(self, name: str, value: np.ndarray | Tensor) -> str:
        array = _array(value) if isinstance(value, Tensor) else value
        self.initializers.append(numpy_helper.from_array(np.array(array, order="C"), name))  # keeps 0-d scalars
        return name

    def scale(self, name: str, value: Tensor) -> str:
        """A float32 scalar scale initializer."""
        self.init(name, np.array(np.float32(float(value))))
        self._scales[name] = np.float32(float(value))
        return name

    def quantize(self, x: str, scale: str, out: str, low=None, zero_point=None) -> str:
        """int8 codes at a scale initializer: Max(x, -fl(127 s)) (one initializer per scale) -> QuantizeLinear."""
        if scale not in self._lows:
            self._lows[scale] = self.init(f"{scale}.low", np.array(-np.float32(INT8_MAX) * self._scales[scale]))
        return super().quantize(x, scale, out, low=self._lows[scale], zero_point=ZERO_POINT)

    def int8_linear(self, x_q: str, x_scale: str, linear: QuantLinear, name: str) -> str:
        """x_q (..., K) int8 at x_scale -> (..., N) float32 = DQ(x_q) @ DQ(W_q^T) (+ bias)."""
        weight = self.init(f"{name}.weight_q", linear.weight.T.contiguous())  # (K, N) int8, pre-transposed
        w_scale = self.init(f"{name}.weight_scale", np.array(np.float32(float(linear.weight_scale))))
        x = self.op("DequantizeLinear", x_q, x_scale, ZERO_POINT, out=f"{name}.input")
        w = self.op("DequantizeLinear", weight, w_scale, ZERO_POINT, out=f"{name}.weight")
        y = self.op("MatMul", x, w, out=f"{name}.matmul")
        if linear.bias is None:
            return y
        return self.op("Add", y, self.init(f"{name}.bias", linear.bias.float()), out=f"{name}.out")

    def norm(self, x: str, norm: Norm, name: str) -> str:
        """Norm.forward in float32: RMSNorm x * 1/sqrt(mean(x^2) + eps) * w, or LayerNorm (two-pass mean and
        variance, as torch's layer_norm) * w + b."""
        eps = self.init(f"{name}.eps", np.array(norm.eps, np.float32))
        if norm.kind == "rmsnorm":
            centered = x
            mean_square = self.op("ReduceMean", self.op("Mul", x, x), axes=[-1], keepdims=1)
        else:
            centered = self.op("Sub", x, self.op("ReduceMean", x, axes=[-1], keepdims=1))
            mean_square = self.op("ReduceMean", self.op("Mul", centered, centered), axes=[-1], keepdims=1)
        rstd = self.op("Reciprocal", self.op("Sqrt", self.op("Add", mean_square, eps)))
        y = self.op("Mul", self.op("Mul", centered, rstd), self.init(f"{name}.weight", norm.weight.float()),
                    out=f"{name}.scaled")
        if norm.bias is None:
            return y
        return self.op("Add", y, self.init(f"{name}.bias", norm.bias.float()), out=f"{name}.out")

    def split(self, x: str, sizes: list[int], outs: list[str]) -> list[str]:
        return self.ops("Split", [x, self.ints(*sizes)], outs, axis=-1)

    def custom(self, spec: OpSpec, inputs: list[str], outputs: list[str], name: str, **attrs: float) -> list[str]:
        """A custom-op node; inputs, outputs and attributes in the spec's order (checked here, once)."""
        if len(inputs) != len(spec.inputs) or len(outputs) != len(spec.outputs) or \
                list(attrs) != [a.name for a in spec.attributes]:
            raise AssertionError(f"{spec.name} node does not follow its spec")
        node = helper.make_node(spec.name, inputs, outputs, name=name, domain=spec.domain)
        node.attribute.extend(helper.make_attribute(k, float(v)) for k, v in attrs.items())  # spec order (make_node
        # would sort keyword attributes by name)
        self.nodes.append(node)
        return outputs


def _mixer(g: GraphBuilder, mixer: QuantMambaMixer, hidden: str, i: int) -> str:
    """One QuantMambaMixer.forward: hidden (b, l, d) float32 -> (b, l, d) float32; writes layer i's states."""
    c = mixer.config
    p = f"layers.{i}.mixer."
    s = {name: g.scale(f"{p}{name}_scale", getattr(mixer, f"{name}_scale"))
         for name in ("in_proj_input", "xz", "u", "dbc", "dt", "out_proj_input")}
    x_q = g.quantize(hidden, s["in_proj_input"], out=f"{p}in_proj.input_q")
    xz = g.int8_linear(x_q, s["in_proj_input"], mixer.in_proj, f"{p}in_proj")
    x, z = g.split(xz, [c.d_inner, c.d_inner], [f"{p}x", f"{p}z"])
    x_q, z_q = g.quantize(x, s["xz"], out=f"{p}x_q"), g.quantize(z, s["xz"], out=f"{p}z_q")

    conv_bias = mixer.conv_bias if mixer.conv_bias is not None else torch.zeros(c.d_inner)  # + 0 is exact
    u_q, _ = g.custom(
        INT8_CAUSAL_CONV1D,
        [x_q, f"conv_state.{i}", g.init(f"{p}conv_weight_q", mixer.conv_weight), g.init(f"{p}conv_bias", conv_bias)],
        [f"{p}u_q", f"conv_state_out.{i}"], f"{p}conv1d",
        x_scale=mixer.xz_scale, weight_scale=mixer.conv_weight_scale, out_scale=mixer.u_scale,
    )
    x_proj_in = u_q
    if g.requantize_shared:  # an exact copy of u_q for x_proj alone (see the module docstring)
        u_float = g.op("DequantizeLinear", u_q, s["u"], ZERO_POINT, out=f"{p}u_copy.dequantized")
        x_proj_in = g.quantize(u_float, s["u"], out=f"{p}u_copy_q")
    dbc = g.int8_linear(x_proj_in, s["u"], mixer.x_proj, f"{p}x_proj")
    dt_r, B, C = g.split(dbc, [c.dt_rank, c.d_state, c.d_state], [f"{p}dt_r", f"{p}B", f"{p}C"])
    dt_r_q, B_q, C_q = (g.quantize(t, s["dbc"], out=f"{t}_q") for t in (dt_r, B, C))
    dt_q = g.quantize(g.int8_linear(dt_r_q, s["dbc"], mixer.dt_proj, f"{p}dt_proj"), s["dt"], out=f"{p}dt_q")

    y, _ = g.custom(
        INT8_SELECTIVE_SCAN,
        [u_q, dt_q, B_q, C_q, z_q, f"ssm_state.{i}", g.init(f"{p}A", mixer.A.float()), g.init(f"{p}D", mixer.D.float()),
         g.init(f"{p}dt_bias", mixer.dt_bias.float())],
        [f"{p}y", f"ssm_state_out.{i}"], f"{p}selective_scan",
        u_scale=mixer.u_scale, dt_scale=mixer.dt_scale, B_scale=mixer.dbc_scale, C_scale=mixer.dbc_scale,
        z_scale=mixer.xz_scale,
    )
    if mixer.hadamard:
        (y_q,) = g.custom(HADAMARD_QUANTIZE, [y], [f"{p}y_q"], f"{p}hadamard_quantize",
                          out_scale=mixer.out_proj_input_scale)
    else:
        y_q = g.quantize(y, s["out_proj_input"], out=f"{p}y_q")
    return g.int8_linear(y_q, s["out_proj_input"], mixer.out_proj, f"{p}out_proj")


def lower_model(model: MambaLM, requantize_shared: bool = True) -> onnx.ModelProto:
    """The graph of a quantized reference model, custom ops as model-local functions (the ORT flavour).

    requantize_shared: give x_proj its own exact copy of u_q (DequantizeLinear -> Max -> QuantizeLinear), which lets
    ONNX Runtime on x86 fuse x_proj too (see the module docstring). The TensorRT flavour is lowered without it.
    """
    c = model.config
    mixers = [block.mixer for block in model.backbone.layers]
    if not all(isinstance(m, QuantMambaMixer) for m in mixers):
        raise TypeError("lower_model needs the quantized reference model (load_quantized_model)")
    g = GraphBuilder(requantize_shared)
    embeddings = g.init("embeddings.weight", model.backbone.embeddings.weight.float())  # (v, d)
    resid = g.op("Gather", embeddings, INPUT_IDS, axis=0, out="embeddings.out")  # (b, l, d) float32
    for i, block in enumerate(model.backbone.layers):
        hidden = g.norm(resid, block.norm, f"layers.{i}.norm")
        resid = g.op("Add", resid, _mixer(g, block.mixer, hidden, i), out=f"layers.{i}.residual")
    hidden = g.op("Reshape", g.norm(resid, model.backbone.norm_f, "norm_f"), g.ints(-1, c.d_model))  # (b*l, d)
    head = embeddings if c.tie_embeddings else g.init("lm_head.weight", model.lm_head.weight.float())  # (v, d)
    flat_logits = g.op("Gemm", hidden, head, transB=1, out="lm_head.out")  # (b*l, v): x @ W^T, W not copied
    out_shape = g.op("Concat", g.op("Shape", INPUT_IDS), g.ints(c.vocab_size), axis=0)
    g.op("Reshape", flat_logits, out_shape, out=LOGITS)

    state_in, state_out = state_names(c.n_layer)
    d_in, n, k = c.d_inner, c.d_state, c.d_conv
    info = helper.make_tensor_value_info
    inputs = [info(INPUT_IDS, TensorProto.INT64, ["b", "l"])]
    outputs = [info(LOGITS, TensorProto.FLOAT, ["b", "l", c.vocab_size])]
    for i in range(c.n_layer):
        inputs += [info(state_in[2 * i], TensorProto.INT8, ["b", d_in, k]),
                   info(state_in[2 * i + 1], TensorProto.FLOAT, ["b", d_in, n])]
        outputs += [info(state_out[2 * i], TensorProto.INT8, ["b", d_in, k]),
                    info(state_out[2 * i + 1], TensorProto.FLOAT, ["b", d_in, n])]
    graph = helper.make_graph(g.nodes, "edge_quamba_mamba", inputs, outputs, initializer=g.initializers)
    hadamard = any(m.hadamard for m in mixers)
    onnx_model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(DOMAIN, 1)],
        functions=custom_functions(c.d_inner, hadamard), producer_name="edge-quamba",
    )
    onnx_model.ir_version = IR_VERSION
    return onnx_model
