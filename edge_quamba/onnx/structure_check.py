"""The structure of an exported graph, checked before any number is compared (:func:`check_graph`): its Q/DQ pairs
(int8 zero point 0, float32 scales > 0, no Clip on codes) and its custom nodes and function bodies against the ops'
specs. The graph's numbers on ONNX Runtime are :mod:`edge_quamba.onnx.validate`'s; TensorRT's own rules on the
TensorRT flavour, :mod:`edge_quamba.onnx.tensorrt_check`'s.
"""

from __future__ import annotations

import collections
import math

import numpy as np
import onnx
from onnx import numpy_helper

from edge_quamba.ops.plugins import plugin_node_attributes
from edge_quamba.ops.specs import DOMAIN, MAMBA2_SPECS, SPECS

ALL_SPECS = {**SPECS, **MAMBA2_SPECS}


def initializer_values(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """The graph's initializers by name."""
    return {init.name: numpy_helper.to_array(init) for init in graph.initializer}


def constant_values(nodes) -> dict[str, np.ndarray | str]:
    """Outputs of Constant nodes: the value, or the name of the attribute it refers to (function bodies)."""
    values: dict[str, np.ndarray | str] = {}
    for node in nodes:
        if node.op_type != "Constant":
            continue
        for attr in node.attribute:
            values[node.output[0]] = attr.ref_attr_name or (
                numpy_helper.to_array(attr.t) if attr.type == onnx.AttributeProto.TENSOR else np.array(attr.f))
    return values


def _check_qdq(nodes, values: dict, where: str) -> list[str]:
    """Zero points int8 0, scales float32 > 0 and finite (or a float attribute of the op; a vector only for a
    per-axis DequantizeLinear), no Clip on int8 codes."""
    problems = []
    producers = {out: node for node in nodes for out in node.output}
    for node in nodes:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            if len(node.input) != 3:
                problems.append(f"{where}: {node.op_type} {node.name} has no explicit zero point")
                continue
            zero_point, scale = values.get(node.input[2]), values.get(node.input[1])
            blocked = any(a.name == "block_size" and a.i > 0 for a in node.attribute)  # an int4 weight's DQ
            zero_types = ("int4",) if blocked else ("int8",)
            if not isinstance(zero_point, np.ndarray) or zero_point.dtype.name not in zero_types or \
                    np.any(zero_point.astype(np.int8) != 0):
                problems.append(f"{where}: {node.op_type} {node.name} zero point is not an {zero_types[0]} 0: "
                                f"{zero_point!r}")
            if isinstance(scale, str):
                continue  # a float attribute of the custom op; checked on every call site by _check_custom_node
            per_axis = node.op_type == "DequantizeLinear" and any(a.name == "axis" for a in node.attribute) and \
                isinstance(scale, np.ndarray) and scale.ndim == 1 and isinstance(zero_point, np.ndarray) and \
                zero_point.shape == scale.shape  # a per-channel weight (--weight-scales channel)
            if not isinstance(scale, np.ndarray) or scale.dtype != np.float32 \
                    or (scale.size != 1 and not (blocked or per_axis)) \
                    or not np.all(np.isfinite(scale)) or not np.all(scale > 0):
                problems.append(f"{where}: {node.op_type} {node.name} scale is not a float32 scalar > 0 (per block "
                                f"for an int4 weight, per row for a per-channel one): {scale!r}")
        if node.op_type == "Clip" and node.input[0] in producers and \
                producers[node.input[0]].op_type == "QuantizeLinear":
            problems.append(f"{where}: Clip {node.name} between QuantizeLinear and DequantizeLinear")
    return problems


def _check_custom_node(node: onnx.NodeProto, flavour: str) -> list[str]:
    spec = ALL_SPECS.get(node.op_type)
    if spec is None:
        return [f"node {node.name}: {node.op_type} is not an edge_quamba op"]
    problems = []
    if len(node.input) != len(spec.inputs) or len(node.output) != len(spec.outputs):
        problems.append(f"node {node.name}: {len(node.input)} inputs / {len(node.output)} outputs, spec "
                        f"{len(spec.inputs)} / {len(spec.outputs)}")
    kinds = {onnx.AttributeProto.FLOAT: "float", onnx.AttributeProto.INT: "int"}
    fields = [(a.name, kinds[a.type]) for a in node.attribute if a.type in kinds]
    strings = {a.name: a.s.decode() for a in node.attribute if a.type == onnx.AttributeProto.STRING}
    if fields != [(a.name, a.kind) for a in spec.attributes]:
        problems.append(f"node {node.name}: float/int attributes {fields}, spec "
                        f"{[(a.name, a.kind) for a in spec.attributes]}")
    bad = {a.name: a.f for a in node.attribute if a.type == onnx.AttributeProto.FLOAT
           and not (math.isfinite(a.f) and a.f > 0)}
    bad.update({a.name: a.i for a in node.attribute if a.type == onnx.AttributeProto.INT and a.i < 1})
    if bad:
        problems.append(f"node {node.name}: scales must be > 0 and finite, group sizes >= 1: {bad}")
    expected = plugin_node_attributes(spec) if flavour == "tensorrt" else {}
    if strings != expected:
        problems.append(f"node {node.name}: string attributes {strings}, expected {expected}")
    return problems


def check_graph(model: onnx.ModelProto, flavour: str) -> list[str]:
    """Structural problems of an exported graph (empty when it is sound). flavour: "ort" or "tensorrt".

    Checked: every QuantizeLinear/DequantizeLinear has an int8 zero point 0 and a float32 scale > 0 (main graph and
    function bodies); no Clip acts on int8 codes; custom nodes follow their spec (inputs, outputs, float attributes
    > 0, int attributes >= 1; plugin_version/plugin_namespace on the TensorRT flavour only); the ORT flavour defines a
    function for each custom op used, following its spec, and the TensorRT flavour defines none.
    """
    graph = model.graph
    values = {**initializer_values(graph), **constant_values(graph.node)}
    problems = _check_qdq(graph.node, values, "graph")
    used = collections.Counter()
    for node in graph.node:
        if node.domain == DOMAIN:
            used[node.op_type] += 1
            problems += _check_custom_node(node, flavour)
    functions = {f.name: f for f in model.functions}
    if flavour == "tensorrt":
        if functions:
            problems.append(f"the TensorRT flavour must carry no function bodies, has {sorted(functions)}")
        return problems
    for name in used:
        function, spec = functions.get(name), ALL_SPECS.get(name)
        if spec is None:
            continue
        if function is None:
            problems.append(f"no function body for {name}")
            continue
        if (function.domain, list(function.input), list(function.output), list(function.attribute)) != (
                spec.domain, [t.name for t in spec.inputs], [t.name for t in spec.outputs],
                [a.name for a in spec.attributes]):
            problems.append(f"function {name} does not follow its spec")
        problems += _check_qdq(function.node, constant_values(function.node), f"function {name}")
    return problems
