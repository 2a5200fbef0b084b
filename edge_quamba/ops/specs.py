"""One spec per custom op: the single definition that every implementation follows.

The reference (:mod:`edge_quamba.quant.qops`), the PyTorch custom op (:mod:`edge_quamba.ops.torch_ops`), the ONNX node
and its function body (:mod:`edge_quamba.onnx.functions` and its siblings ``functions_mamba2``, ``functions_int4``)
and the TensorRT plugin fields (:mod:`edge_quamba.ops.plugins`) all take their names, order, dtypes and attributes
from here; tests/test_ops_spec.py checks that they agree.

Conventions:
    * inputs, then attributes, in the order of the qops reference function's parameters;
    * scales are float attributes (static per-tensor scales are constants of the exported graph, so a TensorRT plugin
      receives them as plugin fields at build time, not as tensors); a per-token scale is made at run time and is
      an output tensor (HadamardQuantizeDynamic's y_scale);
    * shapes are symbols of the glossary in :mod:`edge_quamba.models.mamba` (b, l, d_in, n, k), and for the 4-bit
      linears ``in_features`` / ``out_features`` (K / N of nn.Linear), ``packed`` = ceil(K / 2) bytes per weight row
      and ``groups`` = ceil(K / group_size) scales per row; for Mamba2 (:mod:`edge_quamba.models.mamba2`) ``conv_dim``,
      ``h`` heads of ``p`` channels and ``gn`` = g n (B and C of every state group);
    * dtypes are "int8", "float16" or "float32" (the int8 convention: :mod:`edge_quamba.quant.primitives`);
    * integer attributes (``kind="int"``) are layout constants (the int4 group size, the gated norm's group), > 0;
      float ones are scales, and the gated norm's eps: finite and > 0 (TensorRT plugin fields are checked so).

The 4-bit linears take the packed weight as the artifact stores it, (N, ceil(K / 2)) bytes, two int4 codes per byte
low nibble first (:func:`edge_quamba.quant.primitives.pack_int4`). Its spec dtype is "int8": the graph and the
TensorRT plugin see those bytes reinterpreted as int8 (the same bits), because TensorRT 10.3's ONNX parser admits
UINT8 only as a network input or output and rewrites a UINT8 initializer as INT32 (onnx-tensorrt 10.3
ModelImporter.cpp:241-255, WeightsContext.cpp:307-316), while an INT8 initializer may feed a plugin directly
(edge_quamba/onnx/tensorrt_rules.json, TRT051). The torch ops and references take the artifact's uint8 tensor; the
kernels read ``uint8_t`` from the same bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DOMAIN = "edge_quamba"
"""ONNX domain and torch.library namespace of every custom op."""

DTYPES = ("int8", "float16", "float32")
ATTR_KINDS = ("float", "int")


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: name, dtype, shape symbols; ``optional`` inputs may be omitted (None in the reference)."""

    name: str
    dtype: str
    shape: tuple[str, ...]
    optional: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"{self.name}: dtype {self.dtype!r} is not one of {DTYPES}")


@dataclass(frozen=True)
class AttrSpec:
    """A compile-time scalar of the op (an ONNX attribute, a TensorRT plugin field)."""

    name: str
    kind: str
    doc: str

    def __post_init__(self) -> None:
        if self.kind not in ATTR_KINDS:
            raise ValueError(f"{self.name}: attribute kind {self.kind!r} is not one of {ATTR_KINDS}")


@dataclass(frozen=True)
class OpSpec:
    """A custom op: ONNX op_type ``name`` in ``domain`` at ``version``; ``reference`` names the qops function, which
    is also the torch op's name (``torch.ops.edge_quamba.<reference>``)."""

    name: str
    reference: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    attributes: tuple[AttrSpec, ...]
    doc: str
    domain: str = DOMAIN
    version: int = 1
    tensorrt_plugin: bool = True
    """Whether plugins/tensorrt has an IPluginV3 plugin for the op (PluginConfig.yaml and opSpecs.h list those)."""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Z][A-Za-z0-9]*", self.name):
            raise ValueError(f"op name {self.name!r} must be CamelCase (an ONNX op_type)")
        names = [t.name for t in self.inputs + self.outputs] + [a.name for a in self.attributes]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: input, output and attribute names must be distinct: {names}")

    @property
    def parameters(self) -> tuple[str, ...]:
        """The reference function's parameter names, in order: inputs, then attributes."""
        return tuple(t.name for t in self.inputs) + tuple(a.name for a in self.attributes)


def _i8(name: str, *shape: str) -> TensorSpec:
    return TensorSpec(name, "int8", shape)


def _f32(name: str, *shape: str, optional: bool = False) -> TensorSpec:
    return TensorSpec(name, "float32", shape, optional)


def _f16(name: str, *shape: str) -> TensorSpec:
    return TensorSpec(name, "float16", shape)


def _scale(name: str, what: str) -> AttrSpec:
    return AttrSpec(name, "float", f"float32 scale of {what} (x ~ q * scale), > 0")


INT8_CAUSAL_CONV1D = OpSpec(
    name="Int8CausalConv1d",
    reference="int8_causal_conv1d",
    inputs=(
        _i8("x_q", "b", "l", "d_in"),
        _i8("conv_state_q", "b", "d_in", "k"),
        _i8("weight_q", "d_in", "k"),
        # Optional in the reference (models without a conv bias); the ONNX lowering always binds it (zeros when
        # absent, which adds exactly nothing), so plugins and function bodies see a fixed arity.
        _f32("bias", "d_in", optional=True),
    ),
    outputs=(_i8("u_q", "b", "l", "d_in"), _i8("conv_state_out", "b", "d_in", "k")),
    attributes=(
        _scale("x_scale", "x_q and conv_state_q"),
        _scale("weight_scale", "weight_q"),
        _scale("out_scale", "u_q (the selective-scan input)"),
    ),
    doc="Depthwise causal conv1d on int8 x continuing from an int8 state, exact int32 accumulate, "
        "* (x_scale * weight_scale) + bias, SiLU, requantized to int8 at out_scale; the state is the last k inputs.",
)

INT8_SELECTIVE_SCAN = OpSpec(
    name="Int8SelectiveScan",
    reference="int8_selective_scan",
    inputs=(
        _i8("u_q", "b", "l", "d_in"),
        _i8("dt_q", "b", "l", "d_in"),
        _i8("B_q", "b", "l", "n"),
        _i8("C_q", "b", "l", "n"),
        _i8("z_q", "b", "l", "d_in"),
        _f32("ssm_state", "b", "d_in", "n"),
        _f32("A", "d_in", "n"),
        _f32("D", "d_in"),
        _f32("dt_bias", "d_in"),
    ),
    outputs=(_f32("y", "b", "l", "d_in"), _f32("ssm_state_out", "b", "d_in", "n")),
    attributes=(
        _scale("u_scale", "u_q"),
        _scale("dt_scale", "dt_q"),
        _scale("B_scale", "B_q"),
        _scale("C_scale", "C_q"),
        _scale("z_scale", "z_q"),
    ),
    doc="Selective scan on dequantized int8 u, dt, B, C with a float32 state: delta = softplus(dt + dt_bias), "
        "h_t = exp(delta A) h_{t-1} + delta B_t u_t, y = (C_t . h_t + D u) * silu(z).",
)

HADAMARD_QUANTIZE = OpSpec(
    name="HadamardQuantize",
    reference="hadamard_quantize",
    inputs=(_f32("y", "b", "l", "d_in"),),
    outputs=(_i8("y_q", "b", "l", "d_in"),),
    attributes=(_scale("out_scale", "y_q (the out_proj input)"),),
    doc="Orthonormal Hadamard transform over channels (edge_quamba.quant.hadamard), then int8 at out_scale.",
)

HADAMARD_QUANTIZE_DYNAMIC = OpSpec(
    name="HadamardQuantizeDynamic",
    reference="hadamard_quantize_dynamic",
    inputs=(_f32("y", "b", "l", "d_in"),),
    outputs=(_i8("y_q", "b", "l", "d_in"), _f32("y_scale", "b", "l")),
    attributes=(),
    doc="Orthonormal Hadamard transform over channels, then int8 at a per-token scale "
        "y_scale = max(amax_channels |H y|, 1e-5) / 127 (an output: out_proj reads it per row).",
    # No TensorRT plugin: TensorRT's int8 GEMMs take static per-tensor activation scales only (README, TensorRT).
    tensorrt_plugin=False,
)

# The 4-bit-weight linears (W4A8, W4A16). The weight inputs are graph constants (initializers); bias is optional in
# the reference and always bound by the lowering (zeros when the linear has none: + 0 changes no value).


def _int4_weight() -> tuple[TensorSpec, ...]:
    return (_i8("weight_packed", "out_features", "packed"), _f32("weight_scale", "out_features", "groups"),
            _f32("bias", "out_features", optional=True))


GROUP_SIZE = AttrSpec("group_size", "int", "input columns per int4 weight scale (the last group may be partial), >= 1")

W4A8_LINEAR = OpSpec(
    name="W4A8Linear",
    reference="w4a8_linear",
    inputs=(_i8("x_q", "b", "l", "in_features"), *_int4_weight()),
    outputs=(_f32("y", "b", "l", "out_features"),),
    attributes=(_scale("x_scale", "x_q"), GROUP_SIZE),
    doc="W4A8 linear, float out (out_proj): per group of group_size columns the exact int32 sum of x_q times the "
        "int4 codes, times float32(x_scale * weight_scale[n, g]), groups added in float32 in ascending order, + bias.",
)

W4A8_LINEAR_QUANTIZE = OpSpec(
    name="W4A8LinearQuantize",
    reference="w4a8_linear_quantize",
    inputs=(_i8("x_q", "b", "l", "in_features"), *_int4_weight()),
    outputs=(_i8("y_q", "b", "l", "out_features"),),
    attributes=(_scale("x_scale", "x_q"), GROUP_SIZE, _scale("out_scale", "y_q")),
    doc="W4A8Linear requantized to int8 at out_scale in the same op (the GEMM epilogue of in_proj, x_proj, dt_proj).",
)

W4A16_LINEAR = OpSpec(
    name="W4A16Linear",
    reference="w4a16_linear",
    inputs=(_f16("x", "b", "l", "in_features"), *_int4_weight()),
    outputs=(_f16("y", "b", "l", "out_features"),),
    attributes=(GROUP_SIZE,),
    doc="W4A16 linear: float16 x times the int4 weight dequantized in float32 (code * weight_scale[n, g]), "
        "accumulated in float32, + bias, rounded once to float16.",
)

SELECTIVE_SCAN_F16 = OpSpec(
    name="SelectiveScanF16",
    reference="selective_scan",
    inputs=(
        _f16("u", "b", "l", "d_in"),
        _f32("delta", "b", "l", "d_in"),
        _f32("A", "d_in", "n"),
        _f16("B", "b", "l", "n"),
        _f16("C", "b", "l", "n"),
        _f16("D", "d_in"),
        _f32("ssm_state", "b", "d_in", "n"),
    ),
    outputs=(_f32("y", "b", "l", "d_in"), _f32("ssm_state_out", "b", "d_in", "n")),
    attributes=(),
    doc="W4A16's scan (the fp reference's, float16 model): float16 u, B, C, D and float32 delta (softplus applied), "
        "A and state; per t h = exp(delta A) h + (delta u) B, y = C . h, then y + u D; float32 out, no gate.",
)

# Mamba2 (Quamba2). Per-channel scales are float32 tensor inputs (the group scales gathered per channel), not
# attributes. Shapes: conv_dim = d_in + 2 g n, h heads of p channels (d_in = h p), g groups of n states (gn = g n).

INT8_CONV1D_CHANNEL_SCALES = OpSpec(
    name="Int8CausalConv1dChannelScales",
    reference="int8_causal_conv1d_channel_scales",
    inputs=(
        _i8("x_q", "b", "l", "conv_dim"),
        _i8("conv_state_q", "b", "conv_dim", "k"),
        _i8("weight_q", "conv_dim", "k"),
        _f32("bias", "conv_dim", optional=True),
        _f32("out_scales", "conv_dim"),
    ),
    outputs=(_i8("out_q", "b", "l", "conv_dim"), _i8("conv_state_out", "b", "conv_dim", "k")),
    attributes=(_scale("x_scale", "x_q and conv_state_q"), _scale("weight_scale", "weight_q")),
    doc="Mamba2's conv over x | B | C: Int8CausalConv1d whose output channel c is quantized at out_scales[c] (x at "
        "its sort-and-cluster group's scale, B and C at their state group's).",
)

INT8_SSD_SCAN = OpSpec(
    name="Int8SSDScan",
    reference="int8_ssd_scan",
    inputs=(
        _i8("x_q", "b", "l", "d_in"),
        _i8("dt_q", "b", "l", "h"),
        _i8("B_q", "b", "l", "gn"),
        _i8("C_q", "b", "l", "gn"),
        _f32("ssm_state", "b", "h", "p", "n"),
        _f32("A", "h"),
        _f32("D", "h"),
        _f32("dt_bias", "h"),
        _f32("x_scales", "d_in"),
        _f32("B_scales", "gn"),
        _f32("C_scales", "gn"),
    ),
    outputs=(_f32("y", "b", "l", "d_in"), _f32("ssm_state_out", "b", "h", "p", "n")),
    attributes=(_scale("dt_scale", "dt_q"),),
    doc="The Mamba2 SSD recurrence on dequantized int8 x (per channel), dt, B and C (per state group) with a float32 "
        "state: delta = softplus(dt + dt_bias), h_t = exp(delta A) h_{t-1} + delta x_t B_t^T, y = h_t C_t + D x_t.",
)


def _gated_norm(name: str, reference: str, hadamard: bool) -> OpSpec:
    """Mamba2's gated RMSNorm before out_proj fused with the quantize of out_proj's input (and, when ``hadamard``,
    the Hadamard transform between them)."""
    rotate = "the Hadamard transform over channels (as HadamardQuantize), then " if hadamard else ""
    return OpSpec(
        name=name,
        reference=reference,
        inputs=(_f32("y", "b", "l", "d_in"), _i8("z_q", "b", "l", "d_in"), _f32("weight", "d_in")),
        outputs=(_i8("y_q", "b", "l", "d_in"),),
        attributes=(
            _scale("z_scale", "z_q (the gate)"),
            AttrSpec("eps", "float", "the RMSNorm epsilon (added to the mean of squares), finite and > 0"),
            AttrSpec("group_size", "int", "channels per RMS group (d_in / ngroups), divides d_in, >= 1"),
            _scale("out_scale", "y_q (the out_proj input)"),
        ),
        doc=f"Mamba2's gated RMSNorm: g = y * silu(z_q * z_scale), per group of group_size channels "
            f"g / sqrt(mean(g^2) + eps), times weight; {rotate}int8 at out_scale.",
    )


GATED_RMS_NORM_QUANTIZE = _gated_norm("GatedRMSNormQuantize", "gated_rms_norm_quantize", hadamard=False)
GATED_RMS_NORM_HADAMARD_QUANTIZE = _gated_norm("GatedRMSNormHadamardQuantize", "gated_rms_norm_hadamard_quantize",
                                               hadamard=True)

MAMBA2_SPECS: dict[str, OpSpec] = {s.name: s for s in (INT8_CONV1D_CHANNEL_SCALES, INT8_SSD_SCAN,
                                                       GATED_RMS_NORM_QUANTIZE, GATED_RMS_NORM_HADAMARD_QUANTIZE)}
"""The Mamba2 custom ops, by ONNX op_type. The int8 Mamba2 graphs' ORT flavour uses the conv and the SSD scan (its
gated norm is standard nodes followed by HadamardQuantize or QuantizeLinear); the TensorRT flavour also the fused
gated norm, which becomes one plugin."""

SPECS: dict[str, OpSpec] = {s.name: s for s in (INT8_CAUSAL_CONV1D, INT8_SELECTIVE_SCAN, HADAMARD_QUANTIZE,
                                                HADAMARD_QUANTIZE_DYNAMIC, W4A8_LINEAR, W4A8_LINEAR_QUANTIZE,
                                                W4A16_LINEAR, SELECTIVE_SCAN_F16, *MAMBA2_SPECS.values())}
"""Every custom op, by ONNX op_type."""

PLUGIN_SPECS: dict[str, OpSpec] = {name: s for name, s in SPECS.items() if s.tensorrt_plugin}
"""The custom ops that have a TensorRT plugin (plugins/tensorrt/PluginConfig.yaml, common/opSpecs.h)."""
