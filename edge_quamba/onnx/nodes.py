"""Writing ONNX nodes: :class:`Body` collects the nodes of a function body or of a graph (the lowering's
:class:`edge_quamba.onnx.graph_builder.GraphBuilder` extends it with initializers), and :func:`function` makes a body
the FunctionProto of its op, whose name, domain, inputs, outputs and attributes come from the op's spec
(:mod:`edge_quamba.ops.specs`).

Numerics of the int8 node groups every body and graph shares:
    * int8 inputs are read as :func:`edge_quamba.quant.primitives.read_codes` says: Clip(q, -127, 127) on the codes
      (:meth:`Body.read_codes`), so a -128 from TensorRT's saturating QuantizeLinear reads as -127.
    * int8 codes: every QuantizeLinear is preceded by Max(x, -127 s) (:meth:`Body.quantize`). ONNX QuantizeLinear
      divides (x / s) and rounds half to even like :func:`edge_quamba.quant.primitives.quantize`, but saturates to
      [-128, 127]; the Max keeps -128 out (exact: fl(-127 s) / s rounds to -127).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import FunctionProto, TensorProto, helper, numpy_helper

from edge_quamba.onnx import OPSET
from edge_quamba.ops.specs import OpSpec
from edge_quamba.quant.primitives import INT8_MAX

INT64_MAX = np.iinfo(np.int64).max


class Body:
    """Collects the nodes of a graph body; each method adds nodes and returns the output name(s)."""

    def __init__(self, prefix: str = ""):
        self.nodes: list[onnx.NodeProto] = []
        self.prefix = prefix
        self._count = 0

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}{hint}_{self._count}"

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs) -> str:
        output = out or self._name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], name=output, **attrs))
        return output

    def ops(self, op_type: str, inputs: list[str], outputs: list[str], **attrs) -> list[str]:
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=outputs[0], **attrs))
        return outputs

    def const(self, value: np.ndarray, hint: str = "const") -> str:
        output = self._name(hint)
        self.nodes.append(helper.make_node("Constant", [], [output], value=numpy_helper.from_array(value, output)))
        return output

    def ints(self, *values: int) -> str:
        return self.const(np.array(values, dtype=np.int64), "ints")

    def attr_float(self, attr: str) -> str:
        """A float32 scalar tensor holding the function attribute ``attr`` (Constant with ref_attr_name)."""
        output = self._name(attr)
        node = helper.make_node("Constant", [], [output])
        node.attribute.append(onnx.AttributeProto(name="value_float", ref_attr_name=attr,
                                                  type=onnx.AttributeProto.FLOAT))
        self.nodes.append(node)
        return output

    def attr_int(self, attr: str) -> str:
        """An int64 scalar tensor holding the function attribute ``attr``."""
        output = self._name(attr)
        node = helper.make_node("Constant", [], [output])
        node.attribute.append(onnx.AttributeProto(name="value_int", ref_attr_name=attr, type=onnx.AttributeProto.INT))
        self.nodes.append(node)
        return output

    def quantize(self, x: str, scale: str, out: str, low: str | None = None, zero_point: str | None = None) -> str:
        """int8 codes of x at scale: Max(x, -fl(127 s)), then QuantizeLinear (x / s, half to even).

        QuantizeLinear saturates to [-128, 127]; our range is [-127, 127]. The upper end needs nothing (x / s >= 127.5
        gives 127 either way), the lower end is raised by the Max: fl(-127 s) / s rounds to -127 exactly. A Max, not a
        Clip: ONNX Runtime's QDQ fusion of a MatMul looks one node past it for a Clip and, finding one that the int8
        range does not make redundant, refuses to fuse the MatMul. ``low`` names -fl(127 s) when the caller has it.
        (NaN is not mapped to 0 as the reference does: the graph is validated on finite data only.)
        """
        if low is None:
            low = self.op("Mul", scale, self.const(np.array(-INT8_MAX, np.float32)))
        zero_point = zero_point or self.const(np.array(0, np.int8), "zero_point")
        return self.op("QuantizeLinear", self.op("Max", x, low, out=f"{out}.max"), scale, zero_point, out=out)

    def read_codes(self, q: str) -> str:
        """int8 codes as every op reads them (:func:`edge_quamba.quant.primitives.read_codes`): Clip(q, -127, 127) on
        the int8 tensor, so -128 (which only TensorRT's saturating QuantizeLinear writes) reads as -127."""
        low = self.const(np.array(-INT8_MAX, np.int8), "code_low")
        return self.op("Clip", q, low, self.const(np.array(INT8_MAX, np.int8), "code_high"))

    def quantize_per_channel(self, x: str, scales: str, out: str) -> str:
        """int8 codes of x (..., c) at per-channel scales (c,): Cast(Clip(Round(x / s), -127, 127)), the reference's
        division, half-to-even rounding and symmetric range written out (a per-axis QuantizeLinear would need an
        int8 zero-point vector and saturates to -128)."""
        low, high = self.const(np.array(-INT8_MAX, np.float32)), self.const(np.array(INT8_MAX, np.float32))
        rounded = self.op("Clip", self.op("Round", self.op("Div", x, scales)), low, high)
        return self.op("Cast", rounded, to=TensorProto.INT8, out=out)

    def dequantize_per_channel(self, q: str, scales: str) -> str:
        """float32(q) * s, per channel (the last axis)."""
        return self.op("Mul", self.op("Cast", q, to=TensorProto.FLOAT), scales)

    def silu(self, x: str) -> str:
        """x / (1 + exp(-x)), the formula of torch's silu."""
        one = self.const(np.array(1.0, np.float32))
        return self.op("Div", x, self.op("Add", self.op("Exp", self.op("Neg", x)), one))


def function(spec: OpSpec, body: Body, opset: int = OPSET) -> FunctionProto:
    """``body`` as the FunctionProto of ``spec`` at the default-domain ``opset``."""
    return helper.make_function(
        spec.domain, spec.name,
        inputs=[t.name for t in spec.inputs], outputs=[t.name for t in spec.outputs],
        nodes=body.nodes, opset_imports=[helper.make_opsetid("", opset)],
        attributes=[a.name for a in spec.attributes], doc_string=spec.doc,
    )
