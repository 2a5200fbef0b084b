"""The graph builder of every lowering: :class:`GraphBuilder`, a :class:`edge_quamba.onnx.nodes.Body` with
initializers, and the node groups the lowerings repeat (quantize, the int8, per-token and W4A8 linears, the norms, the
last position, a custom node checked against its spec); and :class:`Pending`, the codes the flows' graph ops pass on
before they are emitted. Every scale is a float32 scalar initializer; one int8 zero point (:data:`ZERO_POINT`) serves
every Q/DQ pair of the main graph.

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
      exact (float products and sums instead of an int32 accumulator). The ORT flavour therefore gives such a linear
      its own copy of codes that a custom op made and another node also reads (x_proj's u_q,
      :meth:`GraphBuilder.give_linears_own_codes`), ``Q(DQ(u_q))`` with the same scale: exact (fl(q s) / s rounds
      back to q), three small elementwise nodes, and ORT keeps it (a Max sits between the DQ and the Q, so no QDQ
      clean-up removes the pair). Then all four linears become MatMulIntegerToFloat. With
      ``session.qdqisint8allowed = 1`` (ARM's default) ORT fuses without the copy, but on x86 that selects an s8 x s8
      kernel 56x slower than the uint8 one, so the ort backend keeps ORT's default. The TensorRT flavour has no copy.

Per-token out_proj input scale (``QuantConfig.out_proj_scale = "dynamic"``, ORT flavour only): HadamardQuantizeDynamic
makes y_q and y_scale (b, l), and out_proj is ``MatMulInteger(y_q + 128 as uint8, W_q, a_zero_point 128) -> Cast ->
Mul(y_scale[..., None] * w_scale) (+ bias)``: a DequantizeLinear takes no (b, l) scale in opset 17, and ORT's
MatMulIntegerToFloat takes a per-tensor or per-column one only. The exact int32 sum, then one float32 product of the
two scales per row multiplying it: bit-identical to :func:`edge_quamba.quant.primitives.int8_linear_per_token`. The
uint8 shift (exact: (q + 128) - 128 = q) is what ORT's own x86 Q/DQ rewrite does, and for the same reason: its
int8 x int8 MatMulInteger measured 12x (l = 512) to 15x (l = 1) slower than uint8 x int8 on this project's x86 CPU.
The TensorRT flavour refuses a per-token scale (README, TensorRT).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from torch import Tensor

from edge_quamba.models.mamba import Norm
from edge_quamba.onnx import INPUT_IDS, OPSET
from edge_quamba.onnx.nodes import Body
from edge_quamba.ops.specs import DOMAIN, OpSpec
from edge_quamba.quant.primitives import INT8_MAX
from edge_quamba.quant.qmodel import Int4Linear, QuantLinear

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
        another node, insert an exact copy ``Q(DQ(codes))`` at the same scale (module docstring)."""
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
class Pending:
    """Codes of ``site`` not yet emitted: quantizing is deferred to the consumer, so that a split site is split in
    float and each piece quantized (the form ONNX Runtime fuses); ``gemm``: x is a linear's output (the TensorRT
    flavour quantizes it with a bare QuantizeLinear, then splits the codes)."""

    x: str
    site: str
    gemm: bool = False
