"""Lowering: the quantized reference model (:mod:`edge_quamba.quant.qmodel`) -> one ONNX graph.

The graph is not a hand copy of the model: each mixer is lowered by running the model's own data flow,
:func:`edge_quamba.quant.flow.mamba1_mixer_flow`, with :class:`GraphOps`, whose ops emit nodes instead of computing.
Around it, ``MambaLM.forward``:

    input_ids (b, l) int64 -> Gather(embeddings) -> resid (b, l, d) float32
    per layer i:  resid = resid + mixer_flow(resid)             the pre-norm from standard ops, float32;
                  the flow's quantize -> Max + QuantizeLinear, linear -> int8 Q/DQ MatMul, conv / scan /
                  Hadamard -> the custom nodes Int8CausalConv1d, Int8SelectiveScan, HadamardQuantize
    logits (b, l, v) = Norm_f(resid) @ lm_head^T                float32 Gemm (tied: the embedding matrix itself)

Every int8 tensor is named ``layers.<i>.mixer.<code>`` after its site (:mod:`edge_quamba.quant.sites`); a site the
graph splits (x|z, Δ_r|B|C) is split in float and each piece quantized at the site's scale (elementwise, so the same
codes), which ONNX Runtime's QDQ fusion needs (a QuantizeLinear directly before each linear's DequantizeLinear).

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
      exact (float products and sums instead of an int32 accumulator). The ORT flavour therefore gives such a linear its own
      copy of codes that a custom op made and another node also reads (x_proj's u_q, :meth:`GraphBuilder.give_linears_own_codes`),
      ``Q(DQ(u_q))`` with the same scale: exact (fl(q s) / s rounds back to q), three small elementwise nodes,
      and ORT keeps it (a Max sits between the DQ and the Q, so no QDQ clean-up removes the pair). Then all four
      linears become MatMulIntegerToFloat. With ``session.qdqisint8allowed = 1`` (ARM's default) ORT fuses without
      the copy, but on x86 that selects an s8 x s8 kernel 56x slower than the uint8 one, so the ort backend keeps
      ORT's default. The TensorRT flavour has no copy.

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
The ORT flavour keeps the Max before every QuantizeLinear (ORT's QDQ fusions want it so: see above). Both are
validated against the same reference: the -128 codes the TensorRT flavour writes read as -127 downstream, exactly
what the reference computes (tests/test_tensorrt_graph.py makes GEMM outputs saturate and checks it).

Per-token out_proj input scale (``QuantConfig.out_proj_scale = "dynamic"``, ORT flavour only): HadamardQuantizeDynamic
makes y_q and y_scale (b, l), and out_proj is ``MatMulInteger(y_q + 128 as uint8, W_q, a_zero_point 128) -> Cast ->
Mul(y_scale[..., None] * w_scale) (+ bias)``: a DequantizeLinear takes no (b, l) scale in opset 17, and ORT's
MatMulIntegerToFloat takes a per-tensor or per-column one only. The exact int32 sum, then one float32 product of the
two scales per row multiplying it: bit-identical to :func:`edge_quamba.quant.primitives.int8_linear_per_token`. The
uint8 shift (exact: (q + 128) - 128 = q) is what ORT's own x86 Q/DQ rewrite does, and for the same reason: its
int8 x int8 MatMulInteger measured 12x (l = 512) to 15x (l = 1) slower than uint8 x int8 on this project's x86 CPU.
The TensorRT flavour refuses a per-token scale (README, TensorRT).
Mamba2 (Quamba2 W8A8 and W4A8, both flavours): :class:`edge_quamba.onnx.lower_mamba2.Mamba2GraphOps` runs
:func:`edge_quamba.quant.flow.mamba2_mixer_flow` the same way; its conv and SSD scan are the custom nodes
Int8CausalConv1dChannelScales and Int8SSDScan (``MAMBA2_SPECS``), per-channel scales as float32 initializers; states
are (b, conv_dim, k) int8 and (b, h, p, n). Its TensorRT flavour (three in_proj GEMMs, one per output scale, and the
fused gated-norm node) is described in that module.
W4A16 graphs (no int8 codes; custom ops only in the TensorRT flavour) are lowered apart:
:mod:`edge_quamba.onnx.lower_w4a16` (Mamba1, both flavours) and
:mod:`edge_quamba.onnx.lower_mamba2_w4a16` (Mamba2); so is the fp model itself, as the float32 baseline graph
(``export --bits fp32``), by the same two modules.

Names: ``layers.{i}.mixer.<tensor>`` as in the reference state dict; every scale a float32 scalar initializer,
one shared int8 zero point. Batch b and length l are symbolic: one graph serves prefill (l >= 1) and decode (l = 1).
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import Tensor
from tqdm import tqdm

import collections
from dataclasses import dataclass

from edge_quamba.errors import ConfigError
from edge_quamba.models.config import Mamba2Config
from edge_quamba.models.mamba import LayerState, MambaLM, MambaMixer, Norm
from edge_quamba.models.mamba2 import Mamba2Mixer
from edge_quamba.onnx import INPUT_IDS, INT4_IR_VERSION, INT4_OPSET, IR_VERSION, LAST_LOGITS, LOGITS, OPSET, state_names
from edge_quamba.onnx.functions import Body, custom_functions, mamba2_custom_functions
from edge_quamba.ops.specs import (DOMAIN, HADAMARD_QUANTIZE, HADAMARD_QUANTIZE_DYNAMIC, INT8_CAUSAL_CONV1D,
                                   INT8_SELECTIVE_SCAN, W4A8_LINEAR, W4A8_LINEAR_QUANTIZE, OpSpec)
from edge_quamba.quant.flow import mamba1_mixer_flow, mamba2_mixer_flow
from edge_quamba.quant.mamba2_qmodel import QuantMamba2Mixer, W4A16Mamba2Mixer
from edge_quamba.quant.primitives import INT8_MAX
from edge_quamba.errors import InputError
from edge_quamba.quant.qmodel import Int4Linear, QuantLinear, QuantMambaMixer, W4A16Mixer
from edge_quamba.quant.sites import SITE_BY_NAME, tensor_name

ZERO_POINT = "zero_point_int8"


def _array(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


class GraphBuilder(Body):
    """A Body with initializers, and the node groups the lowering repeats (quantize, int8 linear, norm)."""

    def __init__(self, opset: int = OPSET, flavour: str = "ort"):
        super().__init__()
        self.opset = opset
        self.flavour = flavour
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

    def quantize_saturating(self, x: str, scale: str, out: str) -> str:
        """int8 codes at a scale initializer by a bare QuantizeLinear, which saturates to [-128, 127]: the TensorRT
        flavour's requantization of a GEMM output (fusable into the GEMM's epilogue). Its readers read -128 as -127
        (:func:`edge_quamba.quant.primitives.read_codes`), which gives the clamped codes exactly."""
        return self.op("QuantizeLinear", x, scale, ZERO_POINT, out=out)

    def int8_linear(self, x_q: str, x_scale: str, linear: QuantLinear, name: str) -> str:
        """x_q (..., K) int8 at x_scale -> (..., N) float32 = DQ(x_q) @ DQ(W_q^T) (+ bias).

        A per-channel weight scale (N,) becomes a per-axis DequantizeLinear on axis 1 of the pre-transposed (K, N)
        weight (its output channels), with an (N,) zero point of zeros as ONNX requires; TensorRT's int8 GEMM reads
        per-output-channel weight Q/DQ natively."""
        weight = self.init(f"{name}.weight_q", linear.weight.T.contiguous())  # (K, N) int8, pre-transposed
        x = self.op("DequantizeLinear", x_q, x_scale, ZERO_POINT, out=f"{name}.input")
        if linear.per_channel:
            w_scale = self.init(f"{name}.weight_scale", linear.weight_scale.float())  # (N,) float32
            zero_point = self.init(f"{name}.weight_zero_point", np.zeros(linear.weight.shape[0], np.int8))
            w = self.op("DequantizeLinear", weight, w_scale, zero_point, axis=1, out=f"{name}.weight")
        else:
            w_scale = self.init(f"{name}.weight_scale", np.array(np.float32(float(linear.weight_scale))))
            w = self.op("DequantizeLinear", weight, w_scale, ZERO_POINT, out=f"{name}.weight")
        y = self.op("MatMul", x, w, out=f"{name}.matmul")
        if linear.bias is None:
            return y
        return self.op("Add", y, self.init(f"{name}.bias", linear.bias.float()), out=f"{name}.out")

    def int8_linear_per_token(self, x_q: str, x_scale: str, linear: QuantLinear, name: str) -> str:
        """x_q (..., K) int8 with a per-token scale x_scale (...) float32 -> (..., N) float32
        = float32(exact int32 x_q @ W_q^T) * (x_scale[..., None] * w_scale) (+ bias); see the module docstring."""
        weight = self.init(f"{name}.weight_q", linear.weight.T.contiguous())  # (K, N) int8, pre-transposed
        w_scale = self.init(f"{name}.weight_scale", np.array(np.float32(float(linear.weight_scale))))
        shifted = self.op("Add", self.op("Cast", x_q, to=TensorProto.INT16), self.const(np.array(128, np.int16)))
        x_u8 = self.op("Cast", shifted, to=TensorProto.UINT8, out=f"{name}.input_u8")  # q + 128 in [1, 255]
        acc = self.op("MatMulInteger", x_u8, weight, self.const(np.array(128, np.uint8), "zero_point_u8"),
                      out=f"{name}.matmul_integer")  # (..., N) int32, exact
        # alpha: one float32 product per row, Unsqueezed AFTER the Mul. Not an accident: ORT (1.32) fuses
        # MatMulInteger -> Cast -> Mul(., Mul(a_scale, b_scale)) (+ Add) into MatMulIntegerToFloat, which with a
        # (b, l, 1) a_scale gave values off by up to ~2 (bias case) and was not bit-exact without a bias; a Mul whose
        # scale comes from an Unsqueeze is not matched (tests/test_dynamic_scale.py holds the result bit-exact).
        alpha = self.op("Unsqueeze", self.op("Mul", x_scale, w_scale), self.ints(-1), out=f"{name}.alpha")
        y = self.op("Mul", self.op("Cast", acc, to=TensorProto.FLOAT), alpha, out=f"{name}.matmul")
        if linear.bias is None:
            return y
        return self.op("Add", y, self.init(f"{name}.bias", linear.bias.float()), out=f"{name}.out")

    def int4_linear(self, x_q: str, x_scale: str, linear: Int4Linear, name: str) -> str:
        """W4A8: x_q (..., K) int8 at x_scale -> (..., N) float32 = (x_q * x_scale) @ DQ(W (K, N) INT4, blocked)
        (+ bias).

        The weight is stored pre-transposed, (K, N), as the int8 linears are, so its groups run along axis 0:
        ``DequantizeLinear(axis=0, block_size=group_size)`` with scales (G, N) float32 and an INT4 zero point 0
        of the same shape (the last block may be partial, as in our convention). ONNX Runtime fuses DQ -> MatMul
        into MatMulNBits (com.microsoft); :func:`edge_quamba.runtime.ort_backend.session_options` pins its
        accuracy level to float32 (its default, 4, would quantize the float input to int8 again, per block and
        dynamically). The MatMul sums float32 products in its own order, not per group as the reference: floats
        are compared with a tolerance and requantized codes follow ties (:mod:`edge_quamba.onnx.validate`)."""
        codes = linear.codes().T.contiguous()  # (K, N) int8 in [-7, 7]
        k, n = codes.shape
        self.initializers.append(helper.make_tensor(f"{name}.weight_q", TensorProto.INT4, [k, n],
                                                    codes.flatten().tolist()))  # packed two per byte by onnx
        scales = linear.weight_scale.T.contiguous()  # (G, N) float32
        w_scale = self.init(f"{name}.weight_scale", scales)
        self.initializers.append(helper.make_tensor(f"{name}.weight_zero_point", TensorProto.INT4,
                                                    list(scales.shape), [0] * scales.numel()))
        # The codes' float values as Cast * scale, which is DequantizeLinear's float32(q) * s exactly: ONNX Runtime
        # claims a MatMul with a DequantizeLinear on its input for its int8 QDQ fusion, fails on the INT4 weight,
        # and then also skips the MatMulNBits fusion, dequantizing the whole weight on every call.
        x = self.op("Mul", self.op("Cast", x_q, to=TensorProto.FLOAT), x_scale, out=f"{name}.input")
        w = self.op("DequantizeLinear", f"{name}.weight_q", w_scale, f"{name}.weight_zero_point",
                    out=f"{name}.weight", axis=0, block_size=linear.group_size)
        y = self.op("MatMul", x, w, out=f"{name}.matmul")
        if linear.bias is None:
            return y
        return self.op("Add", y, self.init(f"{name}.bias", linear.bias.float()), out=f"{name}.out")

    def last_position(self, x: str, out: str) -> str:
        """x (b, l, d) -> x[:, l - 1] (b, d) for a dynamic l: ``Slice(x, starts=[l - 1], ends=[l], axes=[1])``
        with l read from ``input_ids``' shape, then Squeeze. Not ``Gather(x, -1, axis=1)``: TensorRT's gather
        layer leaves a negative index on an axis of run-time length undefined (NvInfer.h, IGatherLayer, 10.3 and
        11.x), and ONNX Runtime, which accepts it, could not show that."""
        length = self.op("Shape", INPUT_IDS, start=1, end=2, out=f"{out}.length")  # (1,) int64: [l]
        start = self.op("Sub", length, self.ints(1), out=f"{out}.start")  # [l - 1] >= 0
        sliced = self.op("Slice", x, start, length, self.ints(1), out=f"{out}.slice")  # (b, 1, d)
        return self.op("Squeeze", sliced, self.ints(1), out=out)

    def give_linears_own_codes(self) -> None:
        """ORT flavour: before each int8 linear whose input codes were made by a custom op and are also read by
        another node, insert an exact copy ``Q(DQ(codes))`` at the same scale (see the module docstring)."""
        producers = {out: node for node in self.nodes for out in node.output}
        readers = collections.Counter(name for node in self.nodes for name in node.input)
        nodes, self.nodes = self.nodes, []
        for node in nodes:
            codes = node.input[0] if node.op_type == "DequantizeLinear" and node.name.endswith(".input") else None
            if codes in producers and producers[codes].domain == DOMAIN and readers[codes] > 1:
                scale = node.input[1]
                dequantized = self.op("DequantizeLinear", codes, scale, ZERO_POINT, out=f"{codes}.copy.dequantized")
                node.input[0] = self.quantize(dequantized, scale, out=f"{codes}.copy")
            self.nodes.append(node)

    def norm(self, x: str, norm: Norm, name: str) -> str:
        """Norm.forward in float32: RMSNorm x * 1/sqrt(mean(x^2) + eps) * w, or LayerNorm (two-pass mean and
        variance, as torch's layer_norm) * w + b."""
        eps = self.init(f"{name}.eps", np.array(norm.eps, np.float32))
        def mean(t: str) -> str:  # over the last axis; the axes became an input in opset 18
            if self.opset >= 18:
                return self.op("ReduceMean", t, self.ints(-1), keepdims=1)
            return self.op("ReduceMean", t, axes=[-1], keepdims=1)

        if norm.kind == "rmsnorm":
            centered = x
            mean_square = mean(self.op("Mul", x, x))
        else:
            centered = self.op("Sub", x, mean(x))
            mean_square = mean(self.op("Mul", centered, centered))
        rstd = self.op("Reciprocal", self.op("Sqrt", self.op("Add", mean_square, eps)))
        y = self.op("Mul", self.op("Mul", centered, rstd), self.init(f"{name}.weight", norm.weight.float()),
                    out=f"{name}.scaled")
        if norm.bias is None:
            return y
        return self.op("Add", y, self.init(f"{name}.bias", norm.bias.float()), out=f"{name}.out")

    def group_rms_normalize(self, x: str, ngroups: int, width: int, eps: float, name: str) -> str:
        """x (b, l, width) float32 -> x / sqrt(mean(x^2) + eps), the mean over each of ``ngroups`` consecutive groups
        of width / ngroups channels (Mamba2's gated norm without its weight), float32."""
        groups = self.op("Reshape", x, self.ints(0, 0, ngroups, width // ngroups))
        square = self.op("Mul", groups, groups)
        mean_square = self.op("ReduceMean", square, self.ints(-1), keepdims=1) if self.opset >= 18 else \
            self.op("ReduceMean", square, axes=[-1], keepdims=1)  # the axes became an input in opset 18
        eps_name = self.init(f"{name}.eps", np.array(eps, np.float32))
        rstd = self.op("Reciprocal", self.op("Sqrt", self.op("Add", mean_square, eps_name)))
        return self.op("Reshape", self.op("Mul", groups, rstd), self.ints(0, 0, width))

    def split(self, x: str, sizes: list[int], outs: list[str]) -> list[str]:
        return self.ops("Split", [x, self.ints(*sizes)], outs, axis=-1)

    def custom(self, spec: OpSpec, inputs: list[str], outputs: list[str], name: str, **attrs: float) -> list[str]:
        """A custom-op node; inputs, outputs and attributes in the spec's order (checked here, once): FLOAT
        attributes for the spec's float ones (scales), INT for its int ones (the int4 group size)."""
        if len(inputs) != len(spec.inputs) or len(outputs) != len(spec.outputs) or \
                list(attrs) != [a.name for a in spec.attributes]:
            raise AssertionError(f"{spec.name} node does not follow its spec")
        node = helper.make_node(spec.name, inputs, outputs, name=name, domain=spec.domain)
        kinds = {a.name: a.kind for a in spec.attributes}
        node.attribute.extend(helper.make_attribute(k, int(v) if kinds[k] == "int" else float(v))
                              for k, v in attrs.items())  # spec order (make_node would sort them by name)
        self.nodes.append(node)
        return outputs


@dataclass(frozen=True)
class _Pending:
    """Codes of ``site`` not yet emitted: quantizing is deferred to the consumer, so that a split site is split in
    float and each piece quantized (the form ONNX Runtime fuses); ``gemm``: x is a linear's output (the TensorRT
    flavour quantizes it with a bare QuantizeLinear, then splits the codes)."""

    x: str
    site: str
    gemm: bool = False


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

    def _codes(self, value: str | _Pending, code: str | None = None) -> str:
        if not isinstance(value, _Pending):
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

    def norm_quantize(self, resid: str, site: str) -> _Pending:
        return _Pending(self.g.norm(resid, self.norm, f"layers.{self.layer}.norm"), site)

    def quantize(self, x: str, site: str) -> _Pending:
        return _Pending(x, site)

    def split(self, x: _Pending | str, sizes: list[int]) -> list[str]:
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
        return [self._codes(_Pending(f, x.site), piece) for f, piece in zip(floats, pieces, strict=True)]

    def linear(self, name: str, x_q: str | _Pending, in_site: str, bias: bool = True,
               out_site: str | None = None) -> str | _Pending:
        linear: QuantLinear | Int4Linear = getattr(self.m, name)
        if not bias and linear.bias is not None:
            raise AssertionError(f"{name}: a bias-free use of a linear that has a bias")
        scale = self.scales[in_site]
        x = self._gemm_input(self._codes(x_q), scale)
        if isinstance(linear, Int4Linear) and self.g.flavour == "tensorrt":
            return self._w4a8_plugin(name, linear, x, in_site, out_site)
        lower = self.g.int4_linear if isinstance(linear, Int4Linear) else self.g.int8_linear
        y = lower(x, scale, linear, f"{self.prefix}{name}")
        return y if out_site is None else _Pending(y, out_site, gemm=True)

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


def _mixer(g: GraphBuilder, block, resid: str, i: int) -> str:
    """One block's norm and mixer: resid (b, l, d) float32 -> the mixer's output (b, l, d) float32; reads and
    writes layer i's states."""
    c = block.mixer.config
    state = LayerState(f"conv_state.{i}", f"ssm_state.{i}")
    if isinstance(block.mixer, QuantMamba2Mixer):
        from edge_quamba.onnx.lower_mamba2 import Mamba2GraphOps  # it builds on GraphOps: imported here, not above

        out, _ = mamba2_mixer_flow(Mamba2GraphOps(g, block.mixer, block.norm, i), resid, state, c.d_inner,
                                   c.ngroups * c.d_state, c.nheads, block.mixer.hadamard)
        return out
    out, _ = mamba1_mixer_flow(GraphOps(g, block.mixer, block.norm, i), resid,
                               LayerState(f"conv_state.{i}", f"ssm_state.{i}"), c.d_inner, c.dt_rank, c.d_state,
                               block.mixer.hadamard, block.mixer.out_proj_scale)
    return out


TENSORRT_DYNAMIC_REFUSAL = (
    "--target tensorrt: a per-token (dynamic) out_proj input scale has no TensorRT graph (TensorRT's int8 GEMMs take "
    "static per-tensor activation scales; README, TensorRT); export with --target ort or quantize with "
    "--out-proj-scale static")
"""The one-line error for a TensorRT export of a model with ``out_proj_scale = "dynamic"``."""

NO_FP32_TENSORRT = ("--target tensorrt is not built for the fp32 graph (--bits fp32): it needs no plugin, but it has "
                    "never been built or run with TensorRT here; export with --target ort")

NO_MAMBA2_W4A16_TENSORRT = (
    "--target tensorrt is not built for a W4A16 Mamba2 model: its float16 SSD scan has no TensorRT plugin (the "
    "Int8SSDScan plugin reads int8 codes, SelectiveScanF16 is Mamba1's scan); export it with --target ort, or quantize "
    "with --bits w8a8 or w4a8 for a TensorRT graph")
"""The one-line error for a TensorRT export of a W4A16 Mamba2 model."""

FLAVOURS = ("ort", "tensorrt")
"""What each graph is lowered for (the TensorRT flavour then becomes plugin nodes: :mod:`edge_quamba.onnx.tensorrt`)."""


def lower_model(model: MambaLM, flavour: str = "ort", progress: bool = False,
                float_parts: str = "float32") -> onnx.ModelProto:
    """The graph of a quantized reference model, custom ops as model-local functions (an fp model in float32:
    the fp32 baseline graph, standard ops only, "ort" flavour only).

    flavour "ort": logits (b, l, v) float32 from a float32 lm_head (eval needs every position); a linear gets its
    own exact copy of codes that a custom op made and another node reads (x_proj's u_q: DequantizeLinear -> Max ->
    QuantizeLinear), which lets ONNX Runtime on x86 fuse x_proj too (see the module docstring).
    flavour "tensorrt": no copy; the embedding table stays float16 as stored (Gather, then Cast to float32: the
    values the reference computes with), and only the last position goes through the lm_head, in float16:
    ``last_logits`` (b, v) float16 (generation needs nothing else; a 50k x 2560 head in float32 would read 512 MB
    per token). Everything between is identical. progress: a progress bar on stderr.
    float_parts "float16" (TensorRT flavour only; ``model`` must hold the same setting,
    :func:`edge_quamba.quant.qmodel.use_float_parts`): the residual stream is float16 between blocks (the embedding
    rows as stored; each block ``Cast(Cast(resid, float32) + out, float16)``), the norms and out_proj still float32
    inside (their Casts are what TensorRT fuses into the neighbouring kernels).
    A model with a per-token out_proj input scale has only the "ort" flavour (ConfigError for "tensorrt").
    """
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour {flavour!r} is not one of {FLAVOURS}")
    c = model.config
    mixers = [block.mixer for block in model.backbone.layers]
    if all(type(m) in (MambaMixer, Mamba2Mixer) for m in mixers):  # the fp model: the float32 baseline graph
        if flavour != "ort":
            raise InputError(NO_FP32_TENSORRT)
        from edge_quamba.onnx.lower_mamba2_w4a16 import lower_mamba2_fp32
        from edge_quamba.onnx.lower_w4a16 import lower_fp32

        return lower_mamba2_fp32(model) if isinstance(model.config, Mamba2Config) else lower_fp32(model)
    if all(isinstance(m, W4A16Mixer) for m in mixers):  # Mamba1 W4A16: the fp16 graph with int4 linears
        if float_parts != "float32":
            raise ValueError("float_parts applies to the int8 graphs (the W4A16 graph is float16 throughout)")
        from edge_quamba.onnx.lower_w4a16 import lower_w4a16

        return lower_w4a16(model, flavour)
    if all(isinstance(m, W4A16Mamba2Mixer) for m in mixers):  # Mamba2 W4A16: the same, with Mamba2 mixers
        if flavour != "ort":
            raise InputError(NO_MAMBA2_W4A16_TENSORRT)
        from edge_quamba.onnx.lower_mamba2_w4a16 import lower_mamba2_w4a16

        return lower_mamba2_w4a16(model)
    mamba2 = all(isinstance(m, QuantMamba2Mixer) for m in mixers)
    if not mamba2 and not all(isinstance(m, QuantMambaMixer) for m in mixers):
        raise TypeError("lower_model needs the quantized reference model (load_quantized_model)")
    out_proj_scale = getattr(mixers[0], "out_proj_scale", "static")  # a Quamba W8A8 option (Mamba1)
    if flavour == "tensorrt" and out_proj_scale == "dynamic":
        raise ConfigError(TENSORRT_DYNAMIC_REFUSAL)
    four_bit = isinstance(mixers[0].in_proj, Int4Linear)
    # INT4 initializers need opset 21; the TensorRT flavour has none (its W4A8 linears are plugin nodes over the
    # packed bytes), so it stays at the opset TensorRT 10.3's parser documents
    opset, ir_version = (INT4_OPSET, INT4_IR_VERSION) if four_bit and flavour == "ort" else (OPSET, IR_VERSION)
    half = float_parts == "float16"
    if half != (model.residual_storage == torch.float16) or (half and flavour != "tensorrt"):
        raise ValueError(f"float_parts {float_parts!r} needs the TensorRT flavour and a reference with the same "
                         f"residual dtype (use_float_parts), got {flavour!r} and {model.residual_storage}")
    g = GraphBuilder(opset, flavour)
    table = model.backbone.embeddings.weight  # (v, d) float32 holding float16 values (the artifact stores fp16)
    if flavour == "ort":
        embeddings = g.init("embeddings.weight", table.float())
        resid = g.op("Gather", embeddings, INPUT_IDS, axis=0, out="embeddings.out")  # (b, l, d) float32
    else:
        embeddings = g.init("embeddings.weight", table.half())  # exact: the values are float16 already
        gathered = g.op("Gather", embeddings, INPUT_IDS, axis=0, out="embeddings.gathered")  # (b, l, d) float16
        resid = gathered if half else g.op("Cast", gathered, to=TensorProto.FLOAT, out="embeddings.out")
    layers = tqdm(model.backbone.layers, desc="lowering", unit="layer", disable=not progress, leave=False)
    for i, block in enumerate(layers):
        if half:  # float16 between blocks, float32 inside: the norm and the sum read the float32 copy
            resid32 = g.op("Cast", resid, to=TensorProto.FLOAT, out=f"layers.{i}.residual_in")
            total = g.op("Add", resid32, _mixer(g, block, resid32, i), out=f"layers.{i}.residual_sum")
            resid = g.op("Cast", total, to=TensorProto.FLOAT16, out=f"layers.{i}.residual")  # (b, l, d) float16
        else:
            resid = g.op("Add", resid, _mixer(g, block, resid, i), out=f"layers.{i}.residual")
    if flavour == "ort":
        normed = g.norm(resid, model.backbone.norm_f, "norm_f")  # (b, l, d) float32
        g.give_linears_own_codes()
        head = embeddings if c.tie_embeddings else g.init("lm_head.weight", model.lm_head.weight.float())  # (v, d)
        flat = g.op("Reshape", normed, g.ints(-1, c.d_model))  # (b*l, d)
        flat_logits = g.op("Gemm", flat, head, transB=1, out="lm_head.out")  # (b*l, v): x @ W^T, W not copied
        out_shape = g.op("Concat", g.op("Shape", INPUT_IDS), g.ints(c.vocab_size), axis=0)
        g.op("Reshape", flat_logits, out_shape, out=LOGITS)
        logits = helper.make_tensor_value_info(LOGITS, TensorProto.FLOAT, ["b", "l", c.vocab_size])
    else:
        head = embeddings if c.tie_embeddings else g.init("lm_head.weight", model.lm_head.weight.half())  # (v, d)
        last = g.last_position(resid, "residual.last")  # (b, d): the norm is per position, so only the last one
        if half:
            last = g.op("Cast", last, to=TensorProto.FLOAT, out="residual.last_fp32")
        normed = g.norm(last, model.backbone.norm_f, "norm_f")  # (b, d) float32
        last16 = g.op("Cast", normed, to=TensorProto.FLOAT16, out="norm_f.last_fp16")  # (b, d)
        g.op("Gemm", last16, head, transB=1, out=LAST_LOGITS)  # (b, v) float16
        logits = helper.make_tensor_value_info(LAST_LOGITS, TensorProto.FLOAT16, ["b", c.vocab_size])

    state_in, state_out = state_names(c.n_layer)
    conv_shape, ssm_shape = (["b", c.conv_dim, c.d_conv], ["b", c.nheads, c.headdim, c.d_state]) if mamba2 else \
        (["b", c.d_inner, c.d_conv], ["b", c.d_inner, c.d_state])
    info = helper.make_tensor_value_info
    inputs = [info(INPUT_IDS, TensorProto.INT64, ["b", "l"])]
    outputs = [logits]
    for i in range(c.n_layer):
        inputs += [info(state_in[2 * i], TensorProto.INT8, conv_shape),
                   info(state_in[2 * i + 1], TensorProto.FLOAT, ssm_shape)]
        outputs += [info(state_out[2 * i], TensorProto.INT8, conv_shape),
                    info(state_out[2 * i + 1], TensorProto.FLOAT, ssm_shape)]
    graph = helper.make_graph(g.nodes, "edge_quamba_mamba", inputs, outputs, initializer=g.initializers)
    hadamard = any(m.hadamard for m in mixers)
    onnx_model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(DOMAIN, 1)],
        functions=mamba2_custom_functions(c, hadamard, opset, flavour,
                                          int4_linears="w4a8" if four_bit and flavour == "tensorrt" else None)
        if mamba2 else
        custom_functions(c.d_inner, hadamard, out_proj_scale, opset,
                         int4_linears="w4a8" if four_bit and flavour == "tensorrt" else None),
        producer_name="edge-quamba",
    )
    onnx_model.ir_version = ir_version
    return onnx_model
