"""Static TensorRT conformance of the TensorRT graph (``model.trt.onnx``): every rule TensorRT 10.3's ONNX parser and
headers set on it, checked without TensorRT. (Past 400 lines on purpose: one checker of one rule table, each rule a
short function over the same private typed view of the graph, :class:`_Graph`; split, its files would share only
that view.)

The rules are data, :data:`RULES_FILE` (``tensorrt_rules.json``): each rule id (TRT0xx), the ops table (importer,
element types, attributes, constant inputs per op) and the int8 data-flow table cite the parser source (onnx-tensorrt
at 62bdde2a, the commit TensorRT 10.3 ships), its operator matrix or the 10.3 headers by file and line, and say what
TensorRT 11 changes. This module only walks the graph; it judges by those rules, not by a list of expected nodes:

    * types: strict ONNX shape inference on a copy in which every custom node is replaced, per output, by a
      ``ConstantOfShape`` of the spec's dtype whose shape is gathered from the input dims the spec gives that
      output (:func:`edge_quamba.ops.plugins.output_dim_sources`: what the plugin's getOutputDataTypes /
      getOutputShapes return), so that each tensor's element type and shape are known;
    * standard nodes: the op, its attributes, its input types and constant inputs (TRT010-013), Gather indices and
      Slice axes (TRT020-021), Q/DQ scales, zero points and types, INT4 blocks (TRT040-044);
    * custom nodes: the plugin creator the parser will look up, from the op spec (:data:`PLUGIN_SPECS`,
      :func:`edge_quamba.ops.plugins.plugin_info`), nothing restated here (TRT060-061);
    * the graph: opsets, functions, element types, graph inputs and outputs (TRT001-002, TRT030-032), and where int8
      tensors may flow (TRT050-051).

:func:`check_tensorrt_graph` returns the violations; :func:`require_tensorrt_conformance` raises a one-line
:class:`ConformanceError` naming them (export calls it before it writes ``model.trt.onnx``). CPU only; what TensorRT
itself does with a conforming graph is still unverified here (no TensorRT on any machine of this project).
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

from edge_quamba.errors import ConformanceError
from edge_quamba.ops.plugins import output_dim_sources, plugin_info
from edge_quamba.ops.specs import MAMBA2_SPECS, PLUGIN_SPECS, SPECS

RULES_FILE = Path(__file__).with_name("tensorrt_rules.json")
ALL_SPECS = {**SPECS, **MAMBA2_SPECS}
ELEM = {"int8": TensorProto.INT8, "float16": TensorProto.FLOAT16, "float32": TensorProto.FLOAT}
"""TensorSpec.dtype -> ONNX element type."""
ATTR_TYPES = {"INT": onnx.AttributeProto.INT, "INTS": onnx.AttributeProto.INTS, "FLOAT": onnx.AttributeProto.FLOAT,
              "FLOATS": onnx.AttributeProto.FLOATS, "STRING": onnx.AttributeProto.STRING,
              "TENSOR": onnx.AttributeProto.TENSOR}
FIELD_ATTR = {"FLOAT32": onnx.AttributeProto.FLOAT, "INT32": onnx.AttributeProto.INT}
"""PluginField.type -> the attribute type the parser turns into that plugin field (loadFields)."""
SELECTORS = ("plugin_version", "plugin_namespace")
DEFAULT_DOMAINS = ("", "ai.onnx")
FLOAT_TYPES = ("FLOAT", "FLOAT16", "BFLOAT16")
SMALL_INITIALIZER = 4096
"""Initializers up to this many elements keep their values in the inference copy (shape constants, scales); larger
ones (weights) enter it as typed graph inputs."""


@functools.lru_cache(maxsize=1)
def load_rules() -> dict:
    """The rules file, parsed once."""
    return json.loads(RULES_FILE.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Violation:
    """One broken rule: ``where`` names the node (its name, else op_type#index) or the tensor."""

    rule: str
    where: str
    message: str

    @property
    def cite(self) -> str:
        return load_rules()["rules"][self.rule]["cite"][0]

    def __str__(self) -> str:
        return f"[{self.rule}] {self.where}: {self.message}"


def require_tensorrt_conformance(model: onnx.ModelProto, what: str = "the TensorRT graph") -> None:
    """Raise a one-line :class:`ConformanceError` listing the first violations, if any."""
    violations = check_tensorrt_graph(model)
    if violations:
        rules = ", ".join(sorted({v.rule for v in violations}))
        first = "; ".join(str(v) for v in violations[:3])
        raise ConformanceError(f"{what} breaks {len(violations)} TensorRT 10.3 rule check(s) ({rules}; see "
                               f"edge_quamba/onnx/{RULES_FILE.name}), first: {first}; it is not written")


def _name(node: onnx.NodeProto, index: int) -> str:
    return node.name or f"{node.op_type}#{index}"


def _elem_name(elem: int) -> str:
    return TensorProto.DataType.Name(elem)


@dataclass
class _Tensor:
    elem: int  # 0: unknown
    dims: list[int | None] | None  # None: rank unknown; an entry None: dynamic


def _value_info(vi: onnx.ValueInfoProto) -> _Tensor:
    t = vi.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim] if t.HasField("shape") else None
    return _Tensor(t.elem_type, dims)


class _Graph:
    """The graph with what the rules need: constant values, producers, consumers, and inferred tensor types."""

    def __init__(self, model: onnx.ModelProto):
        self.model, self.graph = model, model.graph
        self.opset = next((o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS), 0)
        self.initializers = {t.name: t for t in self.graph.initializer}
        self.producer = {out: (i, n) for i, n in enumerate(self.graph.node) for out in n.output if out}
        self.consumers: dict[str, list[tuple[int, onnx.NodeProto, int]]] = {}
        for i, node in enumerate(self.graph.node):
            for k, name in enumerate(node.input):
                self.consumers.setdefault(name, []).append((i, node, k))
        self.graph_inputs = {vi.name for vi in self.graph.input} - set(self.initializers)
        self.graph_outputs = {vi.name for vi in self.graph.output}
        self.types, self.inference_error = self._infer()

    def _infer(self) -> tuple[dict[str, _Tensor], str | None]:
        """Element types and shapes of every tensor (see the module docstring); the first line of a strict-mode
        inference error, if any (types then come from a non-strict pass)."""
        surrogate = onnx.ModelProto(ir_version=self.model.ir_version, opset_import=self.model.opset_import)
        graph = surrogate.graph
        graph.input.extend(self.graph.input)
        graph.output.extend(self.graph.output)
        graph.value_info.extend(self.graph.value_info)
        listed = {vi.name for vi in self.graph.input}
        for init in self.graph.initializer:  # weights enter as typed inputs: no copy of their bytes
            if int(np.prod(init.dims)) <= SMALL_INITIALIZER:
                graph.initializer.append(init)
            elif init.name not in listed:
                graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
        nodes = []
        for node in self.graph.node:
            spec = ALL_SPECS.get(node.op_type) if node.domain not in DEFAULT_DOMAINS else None
            if spec is None or len(node.input) != len(spec.inputs) or len(node.output) > len(spec.outputs):
                nodes.append(node)  # other custom nodes stay: inference skips them, their outputs stay untyped
                continue
            for k, (out, dims, t) in enumerate(zip(node.output, output_dim_sources(spec), spec.outputs)):
                if out and all(node.input[i] for i, _ in dims):
                    nodes += _surrogate(node, k, out, dims, ELEM[t.dtype])
        graph.node.extend(nodes)
        for out in graph.output:  # inferred afresh, to compare with the declared type (TRT031)
            out.type.tensor_type.elem_type = TensorProto.UNDEFINED
        error = None
        try:
            inferred = shape_inference.infer_shapes(surrogate, check_type=True, strict_mode=True, data_prop=True)
        except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as exc:
            error = str(exc).strip().splitlines()[0]
            inferred = shape_inference.infer_shapes(surrogate, strict_mode=False, data_prop=True)
        types = {vi.name: _value_info(vi) for vi in
                 list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output)}
        for init in self.graph.initializer:
            types[init.name] = _Tensor(init.data_type, list(init.dims))
        return types, error

    def elem(self, name: str) -> int:
        return self.types[name].elem if name in self.types else TensorProto.UNDEFINED

    def constant(self, name: str) -> np.ndarray | None:
        """The value of an initializer or a Constant node's output, else None."""
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        _, node = self.producer.get(name, (None, None))
        if node is None or node.op_type != "Constant" or node.domain not in DEFAULT_DOMAINS:
            return None
        for attr in node.attribute:
            if attr.name == "value":
                return numpy_helper.to_array(attr.t)
            if attr.name in ("value_float", "value_int"):
                return np.array(attr.f if attr.name == "value_float" else attr.i)
            if attr.name in ("value_floats", "value_ints"):
                return np.array(list(attr.floats if attr.name == "value_floats" else attr.ints))
        return None

    def is_constant_source(self, name: str) -> bool:
        return name in self.initializers or (name in self.producer and self.producer[name][1].op_type == "Constant")


def _surrogate(node: onnx.NodeProto, k: int, out: str, dims: tuple[tuple[int, int], ...],
               elem: int) -> list[onnx.NodeProto]:
    """Nodes making ``out`` with the plugin's output type and shape: ConstantOfShape(Concat(Shape(input i)[j] for
    each (i, j) of ``dims``)) of type ``elem`` (shape inference with data propagation keeps symbolic dims)."""
    prefix = f"{out}.surrogate{k}"
    parts = [helper.make_node("Shape", [node.input[i]], [f"{prefix}.{d}"], start=j, end=j + 1)
             for d, (i, j) in enumerate(dims)]
    shape = helper.make_node("Concat", [p.output[0] for p in parts], [f"{prefix}.shape"], axis=0)
    zero = numpy_helper.from_array(np.zeros(1, helper.tensor_dtype_to_np_dtype(elem)))
    return [*parts, shape, helper.make_node("ConstantOfShape", [shape.output[0]], [out], value=zero)]


def check_tensorrt_graph(model: onnx.ModelProto) -> list[Violation]:
    """Every violation of :data:`RULES_FILE` in ``model`` (empty when the graph conforms), graph-level first, then
    node by node in graph order."""
    rules = load_rules()
    g = _Graph(model)
    found = _check_model(g, rules) + _check_types(g, rules)
    for index, node in enumerate(g.graph.node):
        where = _name(node, index)
        if node.domain in DEFAULT_DOMAINS:
            found += [Violation(rule, where, msg) for rule, msg in _check_standard_node(g, rules, node)]
        else:
            found += [Violation(rule, where, msg) for rule, msg in _check_plugin_node(g, rules, node)]
    return found + _check_int8_flow(g, rules)


def _check_model(g: _Graph, rules: dict) -> list[Violation]:
    found = []
    low, high = rules["opset"]["default_domain"]
    for opset in g.model.opset_import:
        if opset.domain in DEFAULT_DOMAINS and not low <= opset.version <= high:
            found.append(Violation("TRT001", "opset_import", f"default-domain opset {opset.version} is outside "
                                                             f"{low}..{high}"))
        elif opset.domain not in DEFAULT_DOMAINS + (rules["opset"]["custom_domain"],):
            found.append(Violation("TRT001", "opset_import", f"domain {opset.domain!r} is imported"))
    if g.model.functions:
        found.append(Violation("TRT002", "functions", f"model-local functions {[f.name for f in g.model.functions]} "
                                                      "would be imported instead of the plugins"))
    return found


def _check_types(g: _Graph, rules: dict) -> list[Violation]:
    allowed = rules["element_types"]["allowed"]
    io_only = rules["element_types"]["graph_io_only"]
    found = []
    if g.inference_error:
        found.append(Violation("TRT030", "graph", f"strict ONNX type inference fails: {g.inference_error}"))
    for name in sorted(g.graph_inputs):
        t = g.types.get(name)
        if t is None or _elem_name(t.elem) not in allowed or t.dims is None:
            found.append(Violation("TRT032", name, "graph input without an importable element type and a shape"))
    for init in g.graph.initializer:
        if _elem_name(init.data_type) not in allowed or _elem_name(init.data_type) in io_only:
            found.append(Violation("TRT030", init.name, f"initializer of type {_elem_name(init.data_type)}"))
    for index, node in enumerate(g.graph.node):
        for out in filter(None, node.output):
            elem = g.elem(out)
            if elem == TensorProto.UNDEFINED:
                found.append(Violation("TRT030", _name(node, index), f"output {out} has no element type"))
            elif _elem_name(elem) not in allowed or (_elem_name(elem) in io_only and out not in g.graph_outputs):
                found.append(Violation("TRT030", _name(node, index), f"output {out} is {_elem_name(elem)}"))
    for vi in g.graph.output:
        declared, inferred = vi.type.tensor_type.elem_type, g.elem(vi.name)
        if inferred != TensorProto.UNDEFINED and declared != inferred:
            found.append(Violation("TRT031", vi.name, f"declared {_elem_name(declared)}, inferred "
                                                      f"{_elem_name(inferred)}"))
    return found


def _check_standard_node(g: _Graph, rules: dict, node: onnx.NodeProto):
    spec = rules["ops"].get(node.op_type)
    if spec is None:
        known = node.op_type in rules["builtin_importers"]
        yield "TRT010", (f"{node.op_type} is not in the checked ops table" +
                         (" (10.3 has an importer: add it to the table with its rules)" if known else
                          " (TensorRT 10.3 has no importer for it: the parser would look for a plugin)"))
        return
    for attr in node.attribute:
        allowed = spec["attributes"].get(attr.name)
        if allowed is None:
            yield "TRT011", f"attribute {attr.name!r} is not read by the {node.op_type} importer"
        elif attr.type != ATTR_TYPES[allowed["type"]]:
            yield "TRT011", f"attribute {attr.name!r} is not of type {allowed['type']}"
        elif "values" in allowed and attr.i not in allowed["values"]:
            yield "TRT011", f"attribute {attr.name}={attr.i} is not one of {allowed['values']}"
        elif "element_types" in allowed:
            types = rules["element_types"]["allowed"] if allowed["element_types"] == "allowed" else \
                allowed["element_types"]
            if attr.i not in TensorProto.DataType.values() or _elem_name(attr.i) not in types:
                yield "TRT011", f"attribute {attr.name}={attr.i} is not one of {types}"
    present = {a.name for a in node.attribute}
    for name, allowed in spec["attributes"].items():
        if allowed.get("required") and name not in present:
            yield "TRT011", f"required attribute {name!r} is missing"
    typed = range(len(node.input)) if spec["typed_inputs"] == "all" else spec["typed_inputs"]
    for k in typed:
        if k < len(node.input) and node.input[k]:
            elem = g.elem(node.input[k])
            if elem != TensorProto.UNDEFINED and _elem_name(elem) not in spec["types"]:
                yield "TRT012", f"input {node.input[k]} is {_elem_name(elem)}, the importer takes {spec['types']}"
    for k in spec.get("typed_outputs", []):
        elem = g.elem(node.output[k])
        if elem != TensorProto.UNDEFINED and _elem_name(elem) not in spec["types"]:
            yield "TRT012", f"output {node.output[k]} is {_elem_name(elem)}, the importer makes {spec['types']}"
    index_input = spec.get("index_input")
    if index_input and len(node.input) > index_input["input"]:
        elem = g.elem(node.input[index_input["input"]])
        if elem != TensorProto.UNDEFINED and _elem_name(elem) not in index_input["types"]:
            yield "TRT012", f"indices are {_elem_name(elem)}, not one of {index_input['types']}"
    for k in map(int, spec.get("constant_inputs", {})):
        if k < len(node.input) and node.input[k] and not _is_build_time_constant(g, node.input[k]):
            yield "TRT013", f"input {k} ({node.input[k]}) must be a build-time constant (initializer or Constant)"
    if node.op_type == "Gather":
        yield from _check_gather(g, node)
    elif node.op_type == "Slice":
        yield from _check_slice(g, node)
    elif node.op_type in ("QuantizeLinear", "DequantizeLinear"):
        yield from _check_qdq(g, node)


def _is_build_time_constant(g: _Graph, name: str) -> bool:
    """An initializer, a Constant, or a Cast of one (the Q/DQ scale subgraphs NvInfer.h allows)."""
    if g.is_constant_source(name):
        return True
    _, node = g.producer.get(name, (None, None))
    return node is not None and node.op_type == "Cast" and g.is_constant_source(node.input[0])


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _check_gather(g: _Graph, node: onnx.NodeProto):
    indices = g.constant(node.input[1])
    if indices is None:
        return  # a run-time index (input_ids, or one computed from Shape): its sign is the graph's business
    data = g.types.get(node.input[0])
    dims = data.dims if data is not None and data.dims else None
    axis = _attr(node, "axis", 0)
    dim = dims[axis % len(dims)] if dims is not None else None  # unknown rank: the axis is not known to be static
    if dim is None and np.any(indices < 0):
        yield "TRT020", (f"constant index {indices.tolist()} is negative on axis {axis} of {node.input[0]}, whose "
                         f"length is dynamic (undefined behaviour in TensorRT's IGatherLayer)")
    elif dim is not None and np.any((indices < -dim) | (indices >= dim)):
        yield "TRT020", f"constant index {indices.tolist()} is out of range for axis {axis} of length {dim}"


def _check_slice(g: _Graph, node: onnx.NodeProto):
    data = g.types.get(node.input[0])
    axes = g.constant(node.input[3]) if len(node.input) > 3 and node.input[3] else None
    if axes is None or data is None or data.dims is None:
        return
    rank = len(data.dims)
    if np.any((axes < -rank) | (axes >= rank)):
        yield "TRT021", f"axes {axes.tolist()} outside [-{rank}, {rank - 1}]"


def _check_qdq(g: _Graph, node: onnx.NodeProto):
    q = node.op_type == "QuantizeLinear"
    data = g.types.get(node.input[0])
    scale_name = node.input[1] if len(node.input) > 1 else ""
    scale, scale_elem = _constant_through_cast(g, scale_name)
    if scale is None:
        yield "TRT040", f"scale {scale_name!r} is not a build-time constant"
    else:
        if _elem_name(scale_elem) not in FLOAT_TYPES:
            yield "TRT040", f"scale is {_elem_name(scale_elem)}, not one of {FLOAT_TYPES}"
        elif not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
            yield "TRT040", "scale values must be finite and > 0"
        yield from _check_scale_layout(g, node, scale, data)
    zero_name = node.input[2] if len(node.input) > 2 else ""
    zero = g.constant(zero_name) if zero_name else None
    quantized = TensorProto.INT8 if q else (data.elem if data is not None else TensorProto.INT8)
    if not zero_name:
        yield "TRT041", "no zero point (ONNX then means UINT8, TensorRT INT8)"
    elif zero is None:
        yield "TRT041", f"zero point {zero_name!r} is not a constant"
    elif g.elem(zero_name) != quantized or np.any(zero != 0) or (scale is not None and zero.shape != scale.shape):
        yield "TRT041", (f"zero point must be {_elem_name(quantized)} zeros of the scale's shape, is "
                         f"{_elem_name(g.elem(zero_name))} {zero.tolist()}")
    if data is not None and scale is not None:
        if q and g.opset >= 19 and data.elem != scale_elem:
            yield "TRT042", (f"at opset {g.opset} the scale ({_elem_name(scale_elem)}) must have the input's type "
                             f"({_elem_name(data.elem)}): the parser casts it only below opset 19")
        out = g.elem(node.output[0])
        if not q and out != TensorProto.UNDEFINED and out != scale_elem:
            yield "TRT042", f"output is {_elem_name(out)}, TensorRT makes the scale's type {_elem_name(scale_elem)}"


def _constant_through_cast(g: _Graph, name: str) -> tuple[np.ndarray | None, int]:
    """(value, element type as the layer sees it) of a constant or a Cast of one; (None, 0) otherwise."""
    if not name:
        return None, TensorProto.UNDEFINED
    value = g.constant(name)
    if value is not None:
        return value, g.elem(name)
    _, node = g.producer.get(name, (None, None))
    if node is not None and node.op_type == "Cast" and g.constant(node.input[0]) is not None:
        return g.constant(node.input[0]), _attr(node, "to")
    return None, TensorProto.UNDEFINED


def _check_scale_layout(g: _Graph, node: onnx.NodeProto, scale: np.ndarray, data: _Tensor | None):
    if scale.size == 1:
        return
    rank = len(data.dims) if data is not None and data.dims is not None else None
    if scale.ndim == 1:
        if _attr(node, "axis") is None:
            yield "TRT040", "a per-axis scale needs an explicit axis (TensorRT's default is 0, ONNX's 1)"
        elif rank is not None:
            dim = data.dims[_attr(node, "axis") % rank]
            if dim is not None and dim != scale.size:
                yield "TRT040", f"{scale.size} scales for an axis of length {dim}"
        if not g.is_constant_source(node.input[0]):
            yield "TRT043", "per-axis quantization of an activation (only constants, i.e. weights, may be per axis)"
    elif data is not None and scale.ndim == rank and data.elem == TensorProto.INT4:
        yield from _check_block(node, scale, data)
    else:
        yield "TRT040", f"scale of shape {list(scale.shape)}: block scales are for INT4 only, other ranks refused"


def _check_block(node: onnx.NodeProto, scale: np.ndarray, data: _Tensor):
    """TRT044: the block the 10.3 parser infers (input dim // scale dim on the one blocked axis) is the node's
    block_size, with no partial last block."""
    if any(d is None for d in data.dims):
        return
    blocked = [a for a, (d, s) in enumerate(zip(data.dims, scale.shape)) if d != s]
    block = _attr(node, "block_size", 0)
    if len(blocked) != 1:
        yield "TRT044", f"block scales {list(scale.shape)} for {data.dims}: exactly one axis must be blocked"
        return
    dim, groups = data.dims[blocked[0]], scale.shape[blocked[0]]
    if dim % groups or dim // groups != block:
        yield "TRT044", (f"block_size {block} over {dim} elements in {groups} blocks: the parser ignores block_size "
                         f"and reads blocks of {dim // groups}" + (" (a partial last block)" if block and dim % block else ""))


def _check_plugin_node(g: _Graph, rules: dict, node: onnx.NodeProto):
    if node.op_type in rules["builtin_importers"]:
        yield "TRT061", f"op_type {node.op_type} is a builtin importer's name: the parser would not look for a plugin"
        return
    spec = PLUGIN_SPECS.get(node.op_type)
    if spec is None or node.domain != spec.domain:
        why = "its op spec has no TensorRT plugin" if node.op_type in ALL_SPECS else "no op spec"
        yield "TRT061", f"{node.domain}.{node.op_type}: {why}"
        return
    info = plugin_info(spec)
    expected = {f.name: FIELD_ATTR[f.type] for f in info.fields}
    expected.update({name: onnx.AttributeProto.STRING for name in SELECTORS})
    got = {a.name: a.type for a in node.attribute}
    if got != expected:
        yield "TRT060", f"attributes {_attr_types(got)}, the creator takes {_attr_types(expected)}"
    selectors = {"plugin_version": info.version, "plugin_namespace": info.namespace}
    for attr in node.attribute:
        if attr.name in selectors and attr.type == onnx.AttributeProto.STRING and attr.s.decode() != selectors[attr.name]:
            yield "TRT060", f"{attr.name}={attr.s.decode()!r}, the creator is registered with {selectors[attr.name]!r}"
        if attr.name in expected and attr.type == onnx.AttributeProto.FLOAT and \
                not (math.isfinite(attr.f) and attr.f > 0):
            yield "TRT060", f"field {attr.name}={attr.f} must be finite and > 0"
        if attr.name in expected and attr.type == onnx.AttributeProto.INT and attr.i < 1:
            yield "TRT060", f"field {attr.name}={attr.i} must be >= 1"
    if len(node.input) != len(spec.inputs) or not all(node.input) or len(node.output) != len(spec.outputs):
        yield "TRT060", (f"{len(node.input)} inputs / {len(node.output)} outputs (all bound), the spec has "
                         f"{len(spec.inputs)} / {len(spec.outputs)}")
        return
    for name, t in zip(node.input, spec.inputs):
        found = g.types.get(name)
        if found is None or found.elem == TensorProto.UNDEFINED:
            continue
        if found.elem != ELEM[t.dtype]:
            yield "TRT060", f"input {t.name} ({name}) is {_elem_name(found.elem)}, the spec says {t.dtype}"
        elif found.dims is not None and len(found.dims) != len(t.shape):
            yield "TRT060", f"input {t.name} ({name}) has rank {len(found.dims)}, the spec says {len(t.shape)}"


def _attr_types(attrs: dict[str, int]) -> str:
    return ", ".join(f"{k}:{onnx.AttributeProto.AttributeType.Name(v)}" for k, v in sorted(attrs.items()))


def _check_int8_flow(g: _Graph, rules: dict) -> list[Violation]:
    flow = rules["int8_flow"]
    found = []
    for name, t in g.types.items():
        if t.elem != TensorProto.INT8:
            continue
        constant = g.is_constant_source(name)
        producer = g.producer.get(name)
        if producer is not None and not constant:
            index, node = producer
            ok = node.domain not in DEFAULT_DOMAINS or node.op_type in flow["producers"]
            if not ok:
                found.append(Violation("TRT050", _name(node, index), f"makes int8 {name}"))
        for index, node, k in g.consumers.get(name, []):
            plugin = node.domain not in DEFAULT_DOMAINS
            allowed = flow["constant_consumers" if constant else "consumers"].get(node.op_type, [])
            if not plugin and k not in allowed:
                rule = "TRT051" if constant else "TRT050"
                found.append(Violation(rule, _name(node, index), f"reads int8 {name} as input {k}"))
    return found
