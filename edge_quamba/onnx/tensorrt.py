"""The TensorRT flavour of the exported graph: the same nodes, with the custom ops as plain plugin nodes.

``model.trt.onnx`` is the lowering of :mod:`edge_quamba.onnx.lower` (made with ``requantize_shared=False``, so without
the ORT-only copy of x_proj's input) with two changes:
    * the model-local FunctionProtos are dropped, so TensorRT's ONNX parser finds no function to inline and looks the
      node up in its plugin registry instead (onnx-tensorrt's fallback plugin importer);
    * every custom node gets the string attributes ``plugin_version`` and ``plugin_namespace`` of its spec
      (:func:`edge_quamba.ops.plugins.plugin_node_attributes`), which select the IPluginV3 creator; its float
      attributes (the scales) become the plugin fields of the same names.
Otherwise node names, tensor names, initializers, graph inputs and outputs equal the ORT flavour's.

NOT TESTED WITH TENSORRT: TensorRT is not available on the machines that build this package. What is checked here
is the ONNX side only (onnx.checker, no functions left, attributes equal to the op specs and PluginConfig.yaml). The
plugins themselves, and a parse of this file by TensorRT, belong to the Jetson build (``edge-quamba build-engine``).
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
