"""TensorRT plugin fields of each custom op, derived from its spec, and the PluginConfig.yaml generator.

How TensorRT finds and configures our plugins (onnx-tensorrt 10.x, ``FallbackPluginImporter`` / ``loadFields``):
a node whose op_type is neither a built-in op nor a model-local function is looked up in the plugin registry with
``getCreator(op_type, plugin_version, plugin_namespace)``, the last two read from the node's string attributes
(defaults "1" and ""). The creator's ``getFieldNames()`` then selects which node attributes become plugin fields, by
name: FLOAT -> kFLOAT32, INT -> kINT32, STRING -> kCHAR. So each plugin's fields are exactly the op's attributes, with
the same names; plugin_version and plugin_namespace only select the creator.

Only the ops with a plugin (``PLUGIN_SPECS``; not HadamardQuantizeDynamic) are listed in the generated files.
Regenerate the checked-in config with ``python3 -m edge_quamba.ops.plugins plugins/tensorrt/PluginConfig.yaml``
(tests/test_ops_spec.py fails when it is stale), and the C++ header the plugins are built from (names, fields,
dtypes, ranks and shape symbols of every op) with
``python3 -m edge_quamba.ops.plugins --header plugins/tensorrt/common/opSpecs.h`` (tests/test_tensorrt_plugins.py
fails when it is stale).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from edge_quamba.ops.specs import PLUGIN_SPECS, OpSpec

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


def output_shape_sources(spec: OpSpec) -> tuple[int, ...]:
    """For each output, the index of the first input with the same shape symbols (opSpecs.h kOUTPUT_SHAPE_SOURCE:
    the plugins derive each output's dims from that input, and :mod:`edge_quamba.onnx.tensorrt_check` its type and
    shape for ONNX inference)."""
    sources = []
    for out in spec.outputs:
        same = [i for i, t in enumerate(spec.inputs) if t.shape == out.shape]
        if not same:
            raise ValueError(f"{spec.name}.{out.name}: no input has its shape {out.shape}")
        sources.append(same[0])
    return tuple(sources)


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


def plugin_config_yaml(specs: dict[str, OpSpec] = PLUGIN_SPECS) -> str:
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


CPP_DTYPES = {"int8": "nvinfer1::DataType::kINT8", "float32": "nvinfer1::DataType::kFLOAT"}
"""TensorSpec.dtype -> the nvinfer1::DataType of the plugin's linear tensor."""


def _cpp_constant(name: str) -> str:
    """A spec name as a C++ constant (TensorRT style): ``conv_state_q`` -> ``kCONV_STATE_Q``."""
    return "k" + name.upper()


def _cpp_strings(names) -> str:
    return "{" + ", ".join(f'"{n}"' for n in names) + "}"


def _cpp_enum(struct: str, names) -> list[str]:
    constants = [_cpp_constant(n) for n in names]
    if len(set(constants)) != len(constants):
        raise ValueError(f"{struct}: names {list(names)} collide once upper-cased")
    return [f"    struct {struct}", "    {",
            *[f"        static constexpr int32_t {c} = {i};" for i, c in enumerate(constants)], "    };"]


def plugin_spec_header(specs: dict[str, OpSpec] = PLUGIN_SPECS) -> str:
    """plugins/tensorrt/common/opSpecs.h: every op spec as C++ constants, so that the plugins take their names,
    fields, dtypes, ranks and shape relations from the spec instead of restating them (deterministic text)."""
    symbols: list[str] = []
    for spec in specs.values():
        for t in spec.inputs + spec.outputs:
            symbols += [s for s in t.shape if s not in symbols]
    max_rank = max(len(t.shape) for spec in specs.values() for t in spec.inputs + spec.outputs)
    sym = {s: f"kSYM_{s.upper()}" for s in symbols}
    lines = [
        "// Generated from edge_quamba/ops/specs.py by `python3 -m edge_quamba.ops.plugins --header`; do not edit.",
        "// Each op spec as constants: names, plugin fields (the ONNX attributes, same names, kFLOAT32 length 1),",
        "// input/output dtypes (linear format), ranks, and the shape symbol of every dimension (kNO_SYM pads).",
        "#pragma once", "", "#include <NvInferRuntime.h>", "", "#include <cstdint>", "",
        "namespace edge_quamba", "{", "namespace trt", "{", "namespace spec", "{", "",
        "//! Shape symbols of the specs (glossary: edge_quamba.models.mamba).",
        "constexpr int32_t kNO_SYM = -1;",
        *[f"constexpr int32_t {sym[s]} = {i};" for i, s in enumerate(symbols)],
        f"constexpr int32_t kNB_SYMBOLS = {len(symbols)};",
        f"constexpr char const* kSYMBOL_NAMES[kNB_SYMBOLS] = {_cpp_strings(symbols)};",
        f"constexpr int32_t kMAX_RANK = {max_rank};", "",
    ]
    for spec in specs.values():
        info = plugin_info(spec)

        def dims(tensors):
            rows = []
            for t in tensors:
                row = [sym[s] for s in t.shape] + ["kNO_SYM"] * (max_rank - len(t.shape))
                rows.append("{" + ", ".join(row) + "}")
            return "{" + ", ".join(rows) + "}"

        sources = [str(i) for i in output_shape_sources(spec)]
        nin, nout, nf = len(spec.inputs), len(spec.outputs), len(info.fields)
        lines += [
            f"//! {spec.doc}", f"struct {spec.name}", "{",
            f'    static constexpr char const* kNAME = "{info.name}";',
            f'    static constexpr char const* kVERSION = "{info.version}";',
            f'    static constexpr char const* kNAMESPACE = "{info.namespace}";',
            f"    static constexpr int32_t kNB_INPUTS = {nin};",
            f"    static constexpr char const* kINPUT_NAMES[{nin}] = {_cpp_strings(t.name for t in spec.inputs)};",
            f"    static constexpr nvinfer1::DataType kINPUT_TYPES[{nin}] = "
            f"{{{', '.join(CPP_DTYPES[t.dtype] for t in spec.inputs)}}};",
            f"    static constexpr int32_t kINPUT_RANKS[{nin}] = {{{', '.join(str(len(t.shape)) for t in spec.inputs)}}};",
            f"    static constexpr int32_t kINPUT_DIMS[{nin}][kMAX_RANK] = {dims(spec.inputs)};",
            f"    static constexpr int32_t kNB_OUTPUTS = {nout};",
            f"    static constexpr char const* kOUTPUT_NAMES[{nout}] = {_cpp_strings(t.name for t in spec.outputs)};",
            f"    static constexpr nvinfer1::DataType kOUTPUT_TYPES[{nout}] = "
            f"{{{', '.join(CPP_DTYPES[t.dtype] for t in spec.outputs)}}};",
            f"    static constexpr int32_t kOUTPUT_RANKS[{nout}] = "
            f"{{{', '.join(str(len(t.shape)) for t in spec.outputs)}}};",
            f"    static constexpr int32_t kOUTPUT_DIMS[{nout}][kMAX_RANK] = {dims(spec.outputs)};",
            "    //! Each output has the shape of this input (same shape symbols).",
            f"    static constexpr int32_t kOUTPUT_SHAPE_SOURCE[{nout}] = {{{', '.join(sources)}}};",
            f"    static constexpr int32_t kNB_FIELDS = {nf};",
            f"    static constexpr char const* kFIELD_NAMES[{nf}] = {_cpp_strings(f.name for f in info.fields)};",
            f"    static constexpr nvinfer1::PluginFieldType kFIELD_TYPES[{nf}] = "
            f"{{{', '.join('nvinfer1::PluginFieldType::k' + f.type for f in info.fields)}}};",
            *_cpp_enum("In", [t.name for t in spec.inputs]),
            *_cpp_enum("Out", [t.name for t in spec.outputs]),
            *_cpp_enum("Field", [f.name for f in info.fields]),
            "};", "",
        ]
    lines += ["} // namespace spec", "} // namespace trt", "} // namespace edge_quamba"]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    usage = ("usage: python3 -m edge_quamba.ops.plugins OUT.yaml\n"
             "       python3 -m edge_quamba.ops.plugins --header OUT.h")
    if len(argv) == 1 and not argv[0].startswith("-"):
        out, text = Path(argv[0]), plugin_config_yaml()
    elif len(argv) == 2 and argv[0] == "--header":
        out, text = Path(argv[1]), plugin_spec_header()
    else:
        sys.exit(usage)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
