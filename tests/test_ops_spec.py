"""One op, defined once: the torch custom ops, the qops references, the ONNX function bodies, the TensorRT plugin
fields and plugins/tensorrt/PluginConfig.yaml all follow edge_quamba/ops/specs.py, and no op name clashes with a
standard one."""

import inspect
from pathlib import Path

import onnx
import pytest
import torch
import yaml

import edge_quamba.ops.torch_ops as torch_ops
from edge_quamba.onnx.functions import custom_functions
from edge_quamba.onnx.functions_mamba2 import mamba2_custom_functions
from edge_quamba.ops.plugins import FIELD_TYPES, plugin_config_yaml, plugin_info, plugin_node_attributes
from edge_quamba.ops.specs import DOMAIN, PLUGIN_SPECS, SPECS
from edge_quamba.quant import primitives, qops

REPO = Path(__file__).resolve().parents[1]
PLUGIN_CONFIG = REPO / "plugins" / "tensorrt" / "PluginConfig.yaml"
SPEC_NAMES = sorted(SPECS)
TORCH_TYPES = {"float": "float", "int": "int"}


def expected_torch_arguments(spec) -> list[tuple[str, str]]:
    tensors = [(t.name, "Optional[Tensor]" if t.optional else "Tensor") for t in spec.inputs]
    return tensors + [(a.name, TORCH_TYPES[a.kind]) for a in spec.attributes]


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_torch_op_schema_follows_spec(name):
    spec = SPECS[name]
    schema = getattr(torch.ops.edge_quamba, spec.reference).default._schema
    got = [(a.name, str(a.type)) for a in schema.arguments]
    print(name, got)
    assert got == expected_torch_arguments(spec)
    assert [str(r.type) for r in schema.returns] == ["Tensor"] * len(spec.outputs)
    assert torch_ops.OPS[name] is getattr(torch_ops, spec.reference)


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_reference_signature_follows_spec(name):
    spec = SPECS[name]
    params = tuple(inspect.signature(getattr(qops, spec.reference)).parameters)
    assert params == spec.parameters


def sample_args(name: str):
    g = torch.Generator().manual_seed(0)
    b, l, d_in, n, k = 2, 5, 24, 4, 4

    def ints(*shape):
        return torch.randint(-127, 128, shape, generator=g, dtype=torch.int8)

    if name == "Int8CausalConv1d":
        return (ints(b, l, d_in), ints(b, d_in, k), ints(d_in, k), torch.randn(d_in, generator=g), 0.02, 0.01, 0.05)
    if name == "Int8SelectiveScan":
        return (ints(b, l, d_in), ints(b, l, d_in), ints(b, l, n), ints(b, l, n), ints(b, l, d_in),
                torch.randn(b, d_in, n, generator=g), -torch.rand(d_in, n, generator=g), torch.randn(d_in, generator=g),
                torch.randn(d_in, generator=g), 0.01, 0.02, 0.03, 0.03, 0.05)
    if name == "HadamardQuantizeDynamic":
        return (torch.randn(b, l, d_in, generator=g),)
    if name == "SelectiveScanF16":  # float16 u, B, C, D; float32 delta, A, state
        return (torch.randn(b, l, d_in, generator=g).half(), torch.rand(b, l, d_in, generator=g) * 0.2,
                -torch.rand(d_in, n, generator=g), torch.randn(b, l, n, generator=g).half(),
                torch.randn(b, l, n, generator=g).half(), torch.randn(d_in, generator=g).half(),
                torch.randn(b, d_in, n, generator=g))
    if name in ("W4A8Linear", "W4A8LinearQuantize", "W4A16Linear"):  # K = 39 (odd, a partial group of 13), N = 7
        packed = primitives.pack_int4(torch.randint(-8, 8, (7, 39), generator=g, dtype=torch.int8))
        weight = (packed, torch.rand(7, 3, generator=g) * 0.01 + 1e-4, torch.randn(7, generator=g))
        if name == "W4A16Linear":
            return (torch.randn(b, l, 39, generator=g).half(), *weight, 16)
        return (ints(b, l, 39), *weight, 0.02, 16) + ((0.05,) if name == "W4A8LinearQuantize" else ())
    if name == "Int8CausalConv1dChannelScales":  # conv_dim 24
        return (ints(b, l, d_in), ints(b, d_in, k), ints(d_in, k), torch.randn(d_in, generator=g),
                torch.rand(d_in, generator=g) * 0.05 + 0.01, 0.02, 0.01)
    if name == "Int8SSDScan":  # h = 6 heads of p = 4 (d_in 24), g = 2 groups of n = 4 states
        return (ints(b, l, d_in), ints(b, l, 6), ints(b, l, 2 * n), ints(b, l, 2 * n),
                torch.randn(b, 6, 4, n, generator=g),
                -torch.rand(6, generator=g), torch.randn(6, generator=g), torch.randn(6, generator=g),
                torch.rand(d_in, generator=g) * 0.02 + 0.01, torch.rand(2 * n, generator=g) * 0.02 + 0.01,
                torch.rand(2 * n, generator=g) * 0.02 + 0.01, 0.03)
    if name.startswith("GatedRMSNorm"):  # two groups of 12 channels
        return (torch.randn(b, l, d_in, generator=g), ints(b, l, d_in), torch.rand(d_in, generator=g) + 0.5, 0.05, 1e-5,
                12, 0.03)
    return (torch.randn(b, l, d_in, generator=g), 0.05)


def all_functions() -> dict[str, onnx.FunctionProto]:
    """Every op's ONNX function body, from the Mamba1 builders (d_inner 96) and the Mamba2 ones of a tiny config."""
    from edge_quamba.models.config import Mamba2Config

    functions = custom_functions(d_inner=96, hadamard=True) + custom_functions(96, True, out_proj_scale="dynamic") + \
        custom_functions(96, True, int4_linears="w4a8") + custom_functions(96, True, int4_linears="w4a16")
    mamba2 = Mamba2Config(d_model=48, n_layer=1, vocab_size=16, d_state=4, headdim=8, ngroups=2)  # d_inner 96
    for hadamard in (False, True):
        functions += mamba2_custom_functions(mamba2, hadamard, flavour="tensorrt")
    return {f.name: f for f in functions}


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_torch_op_equals_reference_and_passes_opcheck(name):
    spec = SPECS[name]
    op = getattr(torch.ops.edge_quamba, spec.reference)
    args = sample_args(name)
    got = op(*args)
    want = getattr(qops, spec.reference)(*args)
    got, want = (got, want) if isinstance(got, tuple) else ((got,), (want,))
    assert len(got) == len(spec.outputs)
    for tensor, reference, out in zip(got, want, spec.outputs, strict=True):
        assert str(tensor.dtype) == f"torch.{out.dtype}"
        assert tensor.dim() == len(out.shape)
        assert torch.equal(tensor, reference)
    torch.library.opcheck(op, args)  # schema, fake (meta) kernel and autograd registration agree


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_onnx_function_follows_spec(name):
    spec = SPECS[name]
    function = all_functions()[name]
    assert function.domain == spec.domain == DOMAIN
    assert list(function.input) == [t.name for t in spec.inputs]
    assert list(function.output) == [t.name for t in spec.outputs]
    assert list(function.attribute) == [a.name for a in spec.attributes]
    referenced = {a.ref_attr_name for node in function.node for a in node.attribute if a.ref_attr_name}
    assert referenced == {a.name for a in spec.attributes}  # every attribute is used, nothing else is referenced


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_plugin_fields_follow_spec(name):
    spec = SPECS[name]
    info = plugin_info(spec)
    assert (info.name, info.version, info.namespace) == (spec.name, str(spec.version), "")
    assert [(f.name, f.type) for f in info.fields] == [(a.name, FIELD_TYPES[a.kind]) for a in spec.attributes]
    assert {f.type for f in info.fields} <= {"FLOAT32", "INT32"}  # what the ONNX parser makes of FLOAT / INT
    assert plugin_node_attributes(spec) == {"plugin_version": str(spec.version), "plugin_namespace": ""}


def test_plugin_config_yaml_is_current_and_matches_specs():
    text = PLUGIN_CONFIG.read_text(encoding="utf-8")
    assert text == plugin_config_yaml(), ("plugins/tensorrt/PluginConfig.yaml is stale: regenerate it with "
                                          "python3 -m edge_quamba.ops.plugins plugins/tensorrt/PluginConfig.yaml")
    config = yaml.safe_load(text)
    assert sorted(config) == sorted(PLUGIN_SPECS)  # the ops with a TensorRT plugin
    assert set(SPECS) - set(PLUGIN_SPECS) == {"HadamardQuantizeDynamic"}
    for name, spec in PLUGIN_SPECS.items():
        entry = config[name]
        assert entry["plugin_version"] == str(spec.version) and entry["plugin_namespace"] == ""
        assert list(entry["inputs"]) == [t.name for t in spec.inputs]
        assert list(entry["outputs"]) == [t.name for t in spec.outputs]
        assert [entry["inputs"][t.name]["dtype"] for t in spec.inputs] == [t.dtype for t in spec.inputs]
        assert list(entry["attributes"]) == [a.name for a in spec.attributes]


def test_op_names_clash_with_no_onnx_or_onnxruntime_op():
    import onnxruntime.capi.onnxruntime_pybind11_state as ort_state

    standard = {s.name.lower() for s in onnx.defs.get_all_schemas_with_history()}
    runtime = {s.name.lower() for s in ort_state.get_all_operator_schema()}
    print(f"{len(standard)} ONNX op names, {len(runtime)} ONNX Runtime op names checked")
    for name in SPEC_NAMES:
        for domain in ("", "ai.onnx.ml", "com.microsoft"):
            assert not onnx.defs.has(name, domain)
        assert name.lower() not in standard
        assert name.lower() not in runtime
    assert DOMAIN not in {s.domain for s in onnx.defs.get_all_schemas_with_history()}
