"""The TensorRT flavour of the exported graph: the same nodes, with the custom ops as plain plugin nodes.

``model.trt.onnx`` is the ``"tensorrt"`` lowering of :mod:`edge_quamba.onnx.lower` (or, for W4A16, of
:mod:`edge_quamba.onnx.lower_w4a16`; no ORT-only copies of int8 codes;
float16 embedding table and lm_head, which sees the last position only: output ``last_logits`` (b, v) float16) with
two changes:
    * the model-local FunctionProtos are dropped, so TensorRT's ONNX parser finds no function to inline and looks the
      node up in its plugin registry instead (onnx-tensorrt's fallback plugin importer);
    * every custom node gets the string attributes ``plugin_version`` and ``plugin_namespace`` of its spec
      (:func:`edge_quamba.ops.plugins.plugin_node_attributes`), which select the IPluginV3 creator; its float
      attributes (the scales) and int ones (the 4-bit linears' group size) become the plugin fields of the same
      names (kFLOAT32, kINT32).
Before these two changes the same graph (with its function bodies) is validated on ONNX Runtime against the quantized
reference at export (:func:`edge_quamba.onnx.validate.validate_on_ort` with ``flavour="tensorrt"``): every int8 code,
the states and the float16 last logits.

NOT TESTED WITH TENSORRT: TensorRT is not available on the machines that build this package. What is checked is the
ONNX side (onnx.checker, no functions left, attributes equal to the op specs and PluginConfig.yaml, the numbers of
the pre-plugin graph on ONNX Runtime) and the plugins through their own interface in a C++ harness
(plugins/tensorrt/tests). A parse of this file by TensorRT and an engine belong to the Jetson build
(``edge-quamba build-engine``), which has never run.
"""

from __future__ import annotations

import onnx
from onnx import helper

from edge_quamba.ops.plugins import plugin_node_attributes
from edge_quamba.ops.specs import DOMAIN, SPECS


def to_tensorrt_flavour(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the ORT-flavour ``model`` with plugin nodes instead of function calls (see the module docstring)."""
    trt = onnx.ModelProto()
    trt.CopyFrom(model)
    del trt.functions[:]
    for node in custom_nodes(trt.graph):
        for name, value in plugin_node_attributes(SPECS[node.op_type]).items():
            node.attribute.append(helper.make_attribute(name, value))
    trt.doc_string = "edge-quamba Mamba, TensorRT flavour: custom ops are IPluginV3 plugin nodes (no function bodies)"
    return trt


def custom_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The nodes of our custom-op domain in ``graph`` (top level: the lowering never nests them in subgraphs)."""
    return [node for node in graph.node if node.domain == DOMAIN]
