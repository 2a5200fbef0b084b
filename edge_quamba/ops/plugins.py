"""TensorRT plugin fields of each custom op, derived from its spec, and the PluginConfig.yaml generator.

How TensorRT finds and configures our plugins (onnx-tensorrt 10.x, ``FallbackPluginImporter`` / ``loadFields``):
a node whose op_type is neither a built-in op nor a model-local function is looked up in the plugin registry with
``getCreator(op_type, plugin_version, plugin_namespace)``, the last two read from the node's string attributes
(defaults "1" and ""). The creator's ``getFieldNames()`` then selects which node attributes become plugin fields, by
name: FLOAT -> kFLOAT32, INT -> kINT32, STRING -> kCHAR. So each plugin's fields are exactly the op's attributes, with
the same names; plugin_version and plugin_namespace only select the creator.

Regenerate the checked-in config with ``python3 -m edge_quamba.ops.plugins plugins/tensorrt/PluginConfig.yaml``
(tests/test_ops_spec.py fails when it is stale).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from edge_quamba.ops.specs import SPECS, OpSpec

PLUGIN_NAMESPACE = ""
"""Every edge-quamba plugin registers in the default (empty) namespace."""

FIELD_TYPES = {"float": "FLOAT32", "int": "INT32"}
"""AttrSpec.kind -> nvinfer1::PluginFieldType (without the k prefix)."""


@dataclass(frozen=True)
class PluginField:
    name: str
    type: str  # "FLOAT32" or "INT32"


@dataclass(frozen=True)
class PluginInfo:
    """What a TensorRT IPluginV3 creator for one op must declare."""

    name: str
    version: str
    namespace: str
    fields: tuple[PluginField, ...]


def plugin_info(spec: OpSpec) -> PluginInfo:
    fields = tuple(PluginField(a.name, FIELD_TYPES[a.kind]) for a in spec.attributes)
    return PluginInfo(spec.name, str(spec.version), PLUGIN_NAMESPACE, fields)


def plugin_node_attributes(spec: OpSpec) -> dict[str, str]:
    """The string attributes the TensorRT flavour adds to each custom node so the parser finds the creator."""
    info = plugin_info(spec)
    return {"plugin_version": info.version, "plugin_namespace": info.namespace}


def _tensors_yaml(tensors) -> list[str]:
    lines = []
    for t in tensors:
        lines.append(f"    {t.name}:")
        lines.append(f"      dtype: {t.dtype}")
        lines.append(f"      shape: [{', '.join(t.shape)}]")
    return lines


def plugin_config_yaml(specs: dict[str, OpSpec] = SPECS) -> str:
    """PluginConfig.yaml text (the TensorRT plugin generator's layout, IPluginV3), deterministic."""
    lines = ["# Generated from edge_quamba/ops/specs.py by `python3 -m edge_quamba.ops.plugins`; do not edit by hand.",
             "# Plugin fields are the op's ONNX attributes, same names (see edge_quamba/ops/plugins.py)."]
    for spec in specs.values():
        info = plugin_info(spec)
        formats = "+".join(t.dtype for t in spec.inputs + spec.outputs)
        lines += [f"{spec.name}:", "  plugin_type: IPluginV3", f'  plugin_version: "{info.version}"',
                  f'  plugin_namespace: "{info.namespace}"', "  inputs:", *_tensors_yaml(spec.inputs),
                  "  outputs:", *_tensors_yaml(spec.outputs), "  attributes:"]
        for field in info.fields:
            lines += [f"    {field.name}:", f"      datatype: {field.type.lower()}"]
        lines += ["  support_format_combination:", f'    - "{formats}"']
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        sys.exit("usage: python3 -m edge_quamba.ops.plugins OUT.yaml")
    out = Path(argv[0])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(plugin_config_yaml(), encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
