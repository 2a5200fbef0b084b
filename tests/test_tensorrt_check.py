"""The static TensorRT conformance check (edge_quamba/onnx/tensorrt_check.py, rules in tensorrt_rules.json).

Per rule: a tiny hand-built graph in the TensorRT flavour's shape (norm, per-tensor Q/DQ linear, the conv plugin on an
int8 graph-input state and an int8 weight initializer, an int8 Split, the last position as a Slice) passes every
rule, and one mutation of it per case breaks the rule named. Then the graph forms of the last position (the old
Gather(-1) on the dynamic axis l is flagged), the demo models' TensorRT graphs, and export's refusal to write a
TensorRT graph that fails."""

from __future__ import annotations

import json
import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T, helper, numpy_helper

from edge_quamba.errors import ConformanceError
from edge_quamba.onnx.tensorrt_check import RULES_FILE, check_tensorrt_graph, require_tensorrt_conformance
from edge_quamba.ops.plugins import plugin_node_attributes
from edge_quamba.ops.specs import DOMAIN, HADAMARD_QUANTIZE_DYNAMIC, INT8_CAUSAL_CONV1D, W4A8_LINEAR_QUANTIZE

INT64_MAX = np.iinfo(np.int64).max


def _init(name, value):
    return numpy_helper.from_array(np.asarray(value), name)


def _const(name, value):
    return helper.make_node("Constant", [], [name], name=name, value=numpy_helper.from_array(np.asarray(value), name))


def conv_node(inputs=("x_q", "conv_state", "conv_w", "conv_b"), outputs=("u_q", "conv_state_out"), **fields):
    node = helper.make_node(INT8_CAUSAL_CONV1D.name, list(inputs), list(outputs), name="conv1d", domain=DOMAIN)
    scales = {"x_scale": 0.05, "weight_scale": 0.02, "out_scale": 0.1, **fields}
    node.attribute.extend(helper.make_attribute(k, float(v)) for k, v in scales.items())
    node.attribute.extend(helper.make_attribute(k, v) for k, v in plugin_node_attributes(INT8_CAUSAL_CONV1D).items())
    return node


def good_graph(opset: int = 17) -> onnx.ModelProto:
    """x (b, l, 4) -> rms norm -> Q -> conv plugin (int8 state in and out, int8 weight) -> DQ -> int8 linear 4 -> 6
    -> Q -> int8 Split 2 | 4 -> DQ(first) -> last position (Slice) -> (b, 2) float16."""
    nodes = [
        helper.make_node("Mul", ["x", "x"], ["x2"], name="square"),
        helper.make_node("ReduceMean", ["x2"], ["ms"], name="mean", axes=[-1], keepdims=1),
        helper.make_node("Add", ["ms", "eps"], ["ms_eps"], name="add_eps"),
        helper.make_node("Sqrt", ["ms_eps"], ["rms"], name="sqrt"),
        helper.make_node("Reciprocal", ["rms"], ["rstd"], name="rstd"),
        helper.make_node("Mul", ["x", "rstd"], ["xn"], name="normalize"),
        helper.make_node("QuantizeLinear", ["xn", "s_x", "zp"], ["x_q"], name="quantize_x"),
        conv_node(),
        helper.make_node("DequantizeLinear", ["u_q", "s_u", "zp"], ["u"], name="linear.input"),
        helper.make_node("DequantizeLinear", ["w_q", "s_w", "zp"], ["w"], name="linear.weight"),
        helper.make_node("MatMul", ["u", "w"], ["y"], name="linear.matmul"),
        helper.make_node("QuantizeLinear", ["y", "s_y", "zp"], ["y_q"], name="quantize_y"),
        _const("split_sizes", np.array([2, 4], np.int64)),
        helper.make_node("Split", ["y_q", "split_sizes"], ["a_q", "b_q"], name="split", axis=-1),
        helper.make_node("DequantizeLinear", ["a_q", "s_y", "zp"], ["a"], name="dequantize_a"),
        _const("starts", np.array([-1], np.int64)), _const("ends", np.array([INT64_MAX], np.int64)),
        _const("axes", np.array([1], np.int64)),
        helper.make_node("Slice", ["a", "starts", "ends", "axes"], ["last3"], name="last.slice"),
        helper.make_node("Squeeze", ["last3", "axes"], ["last"], name="last"),
        helper.make_node("Cast", ["last"], ["out"], name="to_fp16", to=T.FLOAT16),
    ]
    rng = np.random.default_rng(0)
    inits = [
        _init("eps", np.float32(1e-5)), _init("zp", np.int8(0)),
        _init("s_x", np.float32(0.05)), _init("s_u", np.float32(0.1)), _init("s_w", np.float32(0.02)),
        _init("s_y", np.float32(0.2)),
        _init("w_q", rng.integers(-127, 128, (4, 6)).astype(np.int8)),
        _init("conv_w", rng.integers(-127, 128, (4, 3)).astype(np.int8)),
        _init("conv_b", rng.standard_normal(4).astype(np.float32)),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", T.FLOAT, ["b", "l", 4]),
                        helper.make_tensor_value_info("conv_state", T.INT8, ["b", 4, 3])],
        [helper.make_tensor_value_info("out", T.FLOAT16, ["b", 2]),
         helper.make_tensor_value_info("conv_state_out", T.INT8, ["b", 4, 3])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(DOMAIN, 1)])
    model.ir_version = 8
    return model


def node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    (found,) = [n for n in model.graph.node if n.name == name]
    return found


def set_attr(n: onnx.NodeProto, name: str, value) -> None:
    for i, a in enumerate(n.attribute):
        if a.name == name:
            del n.attribute[i]
            break
    if value is not None:
        n.attribute.append(helper.make_attribute(name, value))


def add(model, *nodes, inits=()):
    """Insert ``nodes`` before the first node that reads one of their outputs (the graph stays topologically
    sorted), and ``inits`` as initializers."""
    for new in nodes:
        readers = [i for i, n in enumerate(model.graph.node) if set(n.input) & set(new.output)]
        model.graph.node.insert(readers[0] if readers else len(model.graph.node), new)
    model.graph.initializer.extend(inits)


def replace_init(model, name, value):
    (i,) = [k for k, t in enumerate(model.graph.initializer) if t.name == name]
    model.graph.initializer[i].CopyFrom(_init(name, value))


def set_input(n: onnx.NodeProto, k: int, name: str) -> None:
    n.input[k] = name


def gather_last(model):
    """The old norm_f.last form: Gather(-1) on the dynamic axis l."""
    sq = node(model, "last")
    sq.input[0] = "last_g"
    del sq.input[1:]
    sq.op_type = "Identity"
    add(model, _const("minus_one", np.array(-1, np.int64)),
        helper.make_node("Gather", ["a", "minus_one"], ["last_g"], name="norm_f.last", axis=1))


def w4a8_node(model, group_size: int = 2):
    """A W4A8LinearQuantize plugin on the conv's codes u_q (b, l, 4) -> (b, l, 6): its packed weight (6, 2) as an int8
    initializer read by the plugin directly, (6, 2) float32 group scales, a float32 bias, an int group_size."""
    node = helper.make_node(W4A8_LINEAR_QUANTIZE.name, ["u_q", "w4_packed", "w4_scale", "w4_bias"], ["w4_q"],
                            name="w4a8_linear", domain=DOMAIN)
    node.attribute.extend([helper.make_attribute("x_scale", 0.1), helper.make_attribute("group_size", group_size),
                           helper.make_attribute("out_scale", 0.05)])
    node.attribute.extend(helper.make_attribute(k, v) for k, v in plugin_node_attributes(W4A8_LINEAR_QUANTIZE).items())
    add(model, node, helper.make_node("DequantizeLinear", ["w4_q", "s_y", "zp"], ["w4"], name="w4.dequantize"),
        inits=[_init("w4_packed", np.full((6, 2), -0x79, np.int8)), _init("w4_scale", np.full((6, 2), 0.01, np.float32)),
               _init("w4_bias", np.zeros(6, np.float32))])


def int4_block_weight(model, k: int = 160, block: int = 64):
    """A blocked INT4 weight DequantizeLinear (k, 6) with ceil(k / block) block scales along axis 0."""
    groups = -(-k // block)
    add(model, helper.make_node("DequantizeLinear", ["w_int4", "s_int4", "zp_int4"], ["w_deq"], name="int4_weight",
                                axis=0, block_size=block),
        inits=[helper.make_tensor("w_int4", T.INT4, [k, 6], [1] * (k * 6)),
               _init("s_int4", np.full((groups, 6), 0.01, np.float32)),
               helper.make_tensor("zp_int4", T.INT4, [groups, 6], [0] * (groups * 6))])


def opset_19_quantize_fp16(model):
    """x16 (float16) quantized with a float32 scale at opset 19: the parser no longer casts the scale."""
    model.opset_import[0].version = 19
    mean = node(model, "mean")  # ReduceMean takes its axes as an input from opset 18
    set_attr(mean, "axes", None)
    add(model, _const("mean_axes", np.array([-1], np.int64)))
    mean.input.append("mean_axes")
    add(model, helper.make_node("Cast", ["xn"], ["xn16"], name="to16", to=T.FLOAT16),
        helper.make_node("QuantizeLinear", ["xn16", "s_x", "zp"], ["x16_q"], name="quantize_fp16"),
        helper.make_node("DequantizeLinear", ["x16_q", "s_x", "zp"], ["x16_back"], name="dequantize_fp16"))


CASES = [  # (rule, what breaks it, mutation)
    ("TRT001", "opset 21", lambda m: setattr(m.opset_import[0], "version", 21)),
    ("TRT001", "a foreign domain", lambda m: m.opset_import.append(helper.make_opsetid("com.microsoft", 1))),
    ("TRT002", "a local function", lambda m: m.functions.append(helper.make_function(
        DOMAIN, "Int8CausalConv1d", ["a"], ["b"], [helper.make_node("Identity", ["a"], ["b"])],
        [helper.make_opsetid("", 17)]))),
    ("TRT010", "an op outside the table", lambda m: add(m, helper.make_node("Round", ["a"], ["r"], name="round"))),
    ("TRT011", "an attribute the importer ignores", lambda m: set_attr(node(m, "to_fp16"), "saturate", 1)),
    ("TRT011", "a Gemm transB of 2", lambda m: add(m, helper.make_node("Gemm", ["u", "w"], ["g"], name="gemm",
                                                                        transB=2))),
    ("TRT012", "a Cast of int8 codes", lambda m: add(m, helper.make_node("Cast", ["x_q"], ["xf"], name="cast_q",
                                                                          to=T.FLOAT))),
    ("TRT012", "float Gather indices", lambda m: add(m, _const("fidx", np.array([0.0], np.float32)),
                                                      helper.make_node("Gather", ["a", "fidx"], ["gf"], name="gf"))),
    ("TRT013", "Squeeze axes that are not a constant", lambda m: (
        add(m, helper.make_node("Identity", ["axes"], ["axes_rt"], name="axes_rt")),
        set_input(node(m, "last"), 1, "axes_rt"))),
    ("TRT020", "Gather(-1) on the dynamic axis l", gather_last),
    ("TRT020", "Gather(5) on an axis of length 2", lambda m: add(
        m, _const("five", np.array(5, np.int64)), helper.make_node("Gather", ["a", "five"], ["g5"], name="g5",
                                                                    axis=2))),
    ("TRT021", "Slice axes 3 of a rank-3 tensor", lambda m: add(
        m, _const("axis3", np.array([3], np.int64)),
        helper.make_node("Slice", ["a", "starts", "ends", "axis3"], ["s3"], name="slice3"))),
    ("TRT030", "a UINT8 intermediate", lambda m: add(m, helper.make_node("Cast", ["a"], ["a8"], name="to_u8",
                                                                          to=T.UINT8))),
    ("TRT030", "a DOUBLE initializer", lambda m: add(m, inits=[_init("d", np.float64(1.0))])),
    ("TRT030", "strict ONNX type inference fails", lambda m: add(
        m, _const("h", np.array(1.0, np.float16)), helper.make_node("Add", ["a", "h"], ["ah"], name="mixed_add"))),
    ("TRT030", "an unknown custom node's untyped output", lambda m: add(
        m, helper.make_node("Mystery", ["a"], ["mystery"], name="mystery", domain=DOMAIN))),
    ("TRT031", "a graph output declared FLOAT, inferred FLOAT16",
     lambda m: setattr(m.graph.output[0].type.tensor_type, "elem_type", T.FLOAT)),
    ("TRT032", "a graph input without a shape", lambda m: m.graph.input[0].type.tensor_type.ClearField("shape")),
    ("TRT040", "a computed scale", lambda m: (
        add(m, helper.make_node("Mul", ["s_u", "s_u"], ["s_sq"], name="scale_product")),
        set_input(node(m, "linear.input"), 1, "s_sq"))),
    ("TRT040", "a negative scale", lambda m: replace_init(m, "s_w", np.float32(-0.02))),
    ("TRT040", "a per-axis scale without an axis", lambda m: (
        add(m, inits=[_init("s_w6", np.full(6, 0.02, np.float32)), _init("zp6", np.zeros(6, np.int8))]),
        set_input(node(m, "linear.weight"), 1, "s_w6"), set_input(node(m, "linear.weight"), 2, "zp6"))),
    ("TRT040", "a block scale on int8", lambda m: (
        add(m, inits=[_init("s_blk", np.full((2, 6), 0.02, np.float32)), _init("zp_blk", np.zeros((2, 6), np.int8))]),
        set_input(node(m, "linear.weight"), 1, "s_blk"), set_input(node(m, "linear.weight"), 2, "zp_blk"))),
    ("TRT041", "no zero point", lambda m: node(m, "quantize_x").input.pop()),
    ("TRT041", "a zero point of 1", lambda m: (add(m, inits=[_init("one", np.int8(1))]),
                                               set_input(node(m, "quantize_y"), 2, "one"))),
    ("TRT041", "a UINT8 zero point", lambda m: (add(m, inits=[_init("zp_u8", np.uint8(0))]),
                                                set_input(node(m, "quantize_y"), 2, "zp_u8"))),
    ("TRT042", "a float16 input with a float32 scale at opset 19", opset_19_quantize_fp16),
    ("TRT044", "an INT4 weight of K = 160 in blocks of 64 (a partial last block)", int4_block_weight),
    ("TRT043", "a per-axis DequantizeLinear of an activation", lambda m: add(
        m, helper.make_node("DequantizeLinear", ["u_q", "s_u4", "zp4"], ["u_pa"], name="per_axis_act", axis=2),
        inits=[_init("s_u4", np.full(4, 0.1, np.float32)), _init("zp4", np.zeros(4, np.int8))])),
    ("TRT050", "int8 codes into Max (the old clamp after a Split of codes)", lambda m: add(
        m, helper.make_node("Max", ["a_q", "a_q"], ["a_max"], name="max_on_codes"))),
    ("TRT050", "int8 codes out of a Reshape", lambda m: add(
        m, _const("shape", np.array([0, 0, 4], np.int64)),
        helper.make_node("Reshape", ["b_q", "shape"], ["b_r"], name="reshape_codes"))),
    ("TRT051", "an int8 initializer into Split", lambda m: add(
        m, _const("two", np.array([2, 1], np.int64)),
        helper.make_node("Split", ["conv_w", "two"], ["w1", "w2"], name="split_weight", axis=1))),
    ("TRT060", "no plugin_version", lambda m: set_attr(node(m, "conv1d"), "plugin_version", None)),
    ("TRT060", "another plugin_namespace", lambda m: set_attr(node(m, "conv1d"), "plugin_namespace", "other")),
    ("TRT060", "an extra attribute", lambda m: set_attr(node(m, "conv1d"), "alpha", 1.0)),
    ("TRT060", "a field as INT", lambda m: set_attr(node(m, "conv1d"), "out_scale", 1)),
    ("TRT060", "a negative field", lambda m: set_attr(node(m, "conv1d"), "out_scale", -0.1)),
    ("TRT060", "a float32 conv state", lambda m: setattr(m.graph.input[1].type.tensor_type, "elem_type", T.FLOAT)),
    ("TRT060", "no bias input", lambda m: node(m, "conv1d").input.pop()),
    ("TRT060", "a W4A8 group size of 0", lambda m: w4a8_node(m, group_size=0)),
    ("TRT060", "a W4A8 group size as FLOAT", lambda m: (w4a8_node(m), set_attr(node(m, "w4a8_linear"), "group_size",
                                                                               2.0))),
    ("TRT061", "an op whose spec has no plugin", lambda m: add(m, helper.make_node(
        HADAMARD_QUANTIZE_DYNAMIC.name, ["a"], ["dq", "ds"], name="hq_dynamic", domain=DOMAIN))),
    ("TRT061", "a custom node named like a builtin op", lambda m: add(m, helper.make_node(
        "Gather", ["a", "axes"], ["gx"], name="custom_gather", domain=DOMAIN))),
]


def rules_of(model) -> list[str]:
    violations = check_tensorrt_graph(model)
    for v in violations:
        print(v)
    return [v.rule for v in violations]


def test_the_good_graph_breaks_no_rule():
    model = good_graph()
    onnx.checker.check_model(model, full_check=False)
    assert rules_of(model) == []


@pytest.mark.parametrize("rule, what, mutate", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_each_rule_fails_on_a_graph_that_breaks_it(rule, what, mutate):
    model = good_graph()
    mutate(model)
    assert rule in rules_of(model), what


def test_every_rule_has_a_failing_case_and_cites_known_sources():
    rules = json.loads(RULES_FILE.read_text(encoding="utf-8"))
    assert rules["format_version"] == 1 and rules["sources"]["parser"]["commit"].startswith("62bdde2a")
    assert {c[0] for c in CASES} == set(rules["rules"])
    sources = set(rules["sources"])
    for rule_id, rule in rules["rules"].items():
        assert rule["cite"], rule_id
    for op, entry in rules["ops"].items():
        assert op in rules["builtin_importers"], op  # each table op has a 10.3 importer
        for cite in [entry["importer"], *entry["types_cite"]]:
            assert cite.split(":")[0] in sources, cite
    text = RULES_FILE.read_text(encoding="utf-8")
    cited = set(re.findall(r'"([a-z_0-9]+):[A-Za-z/]+[A-Za-z]\.(?:cpp|h|md)', text))
    print(sorted(cited))
    assert cited <= sources


def test_a_w4a8_plugin_on_its_packed_int8_weight_is_accepted():
    """The TensorRT graph's 4-bit linears: the packed bytes as an INT8 initializer read by the plugin (TRT051 admits
    it; a UINT8 one would be rewritten as INT32 by the parser, TRT030), an INT group_size field (kINT32), its int8
    output typed (b, l, N) from the weight's rows for ONNX inference."""
    model = good_graph()
    w4a8_node(model)
    assert rules_of(model) == []
    replace_init(model, "w4_packed", np.full((6, 2), 0x87, np.uint8))
    assert "TRT030" in rules_of(model)


def test_an_int4_weight_in_whole_blocks_passes_the_block_rule():
    """TRT044 holds where the block the parser infers is block_size: K = 128 in blocks of 64."""
    model = good_graph()
    int4_block_weight(model, k=128)
    assert "TRT044" not in rules_of(model)


def test_int8_graph_io_and_an_int8_weight_feeding_a_plugin_are_accepted():
    """The conv state is int8 graph I/O and the conv weight an int8 initializer read by the plugin directly (no
    DequantizeLinear): rules TRT050/TRT051 admit both, so the good graph has them and passes."""
    model = good_graph()
    conv = node(model, "conv1d")
    assert conv.input[1] == "conv_state" and conv.input[2] == "conv_w" and conv.output[1] == "conv_state_out"
    assert rules_of(model) == []


# ------------------------------------------------------------------------------------------------------------
# The last position: the old Gather(-1) form and the forms TensorRT defines


def last_position_graph(form: str) -> onnx.ModelProto:
    """norm_f.scaled (b, l, d) -> the last position (b, d) -> float16 -> lm_head Gemm -> last_logits (b, v)."""
    d, v = 8, 5
    nodes = [helper.make_node("Mul", ["resid", "norm_f.weight"], ["norm_f.scaled"], name="norm_f.scaled")]
    if form == "gather-minus-one":  # what lower.py wrote before issue 18
        nodes += [_const("last_position", np.array(-1, np.int64)),
                  helper.make_node("Gather", ["norm_f.scaled", "last_position"], ["norm_f.last"], name="norm_f.last",
                                   axis=1)]
    elif form == "slice":
        nodes += [_const("starts", np.array([-1], np.int64)), _const("ends", np.array([INT64_MAX], np.int64)),
                  _const("axes", np.array([1], np.int64)),
                  helper.make_node("Slice", ["norm_f.scaled", "starts", "ends", "axes"], ["last3"], name="slice"),
                  helper.make_node("Squeeze", ["last3", "axes"], ["norm_f.last"], name="norm_f.last")]
    else:  # "shape": a positive index l - 1 computed at run time
        nodes += [_const("one", np.array(1, np.int64)), _const("axis1", np.array([1], np.int64)),
                  helper.make_node("Shape", ["norm_f.scaled"], ["shape"], name="shape"),
                  helper.make_node("Gather", ["shape", "one"], ["l"], name="l", axis=0),
                  helper.make_node("Sub", ["l", "one"], ["l_minus_1"], name="l_minus_1"),
                  helper.make_node("Gather", ["norm_f.scaled", "l_minus_1"], ["norm_f.last"], name="norm_f.last",
                                   axis=1)]
    nodes += [helper.make_node("Cast", ["norm_f.last"], ["norm_f.last_fp16"], name="fp16", to=T.FLOAT16),
              helper.make_node("Gemm", ["norm_f.last_fp16", "head"], ["last_logits"], name="lm_head", transB=1)]
    graph = helper.make_graph(
        nodes, "last", [helper.make_tensor_value_info("resid", T.FLOAT, ["b", "l", d])],
        [helper.make_tensor_value_info("last_logits", T.FLOAT16, ["b", v])],
        initializer=[_init("norm_f.weight", np.ones(d, np.float32)), _init("head", np.ones((v, d), np.float16))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_the_old_gather_minus_one_on_the_dynamic_axis_is_flagged():
    violations = check_tensorrt_graph(last_position_graph("gather-minus-one"))
    print("\n".join(map(str, violations)))
    assert [(v.rule, v.where) for v in violations] == [("TRT020", "norm_f.last")]
    assert "NvInfer.h:2592" in violations[0].cite


@pytest.mark.parametrize("form", ["slice", "shape"])
def test_the_last_position_forms_tensorrt_defines_pass(form):
    """Slice with starts = -1 (the parser decodes it against the run-time length: rule TRT021's note) and a Gather
    at the positive index Shape(x)[1] - 1."""
    assert rules_of(last_position_graph(form)) == []


def test_a_negative_index_on_a_static_axis_is_allowed():
    model = last_position_graph("gather-minus-one")
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 7  # l static
    assert rules_of(model) == []


# ------------------------------------------------------------------------------------------------------------
# The demo models' TensorRT graphs, and export


@pytest.fixture(scope="module")
def demo_quantized(request, tmp_path_factory):
    """A demo model quantized once per session (4 x 128 calibration tokens)."""
    from edge_quamba.folders import load_quantized_model
    from edge_quamba.quant.pipeline import quantize_checkpoint
    from edge_quamba.quant.qmodel import QuantConfig

    name, _, bits = request.param.partition(":")
    method = "quamba2" if name == "demo-mamba2" else "quamba"
    out = tmp_path_factory.mktemp(name) / "quantized"
    quantize_checkpoint(model=name, out=out, qconfig=QuantConfig(method=method, bits=bits or "w8a8", calib_samples=4,
                                                                 calib_seq_len=128), progress=False)
    return load_quantized_model(out)


DEMOS = [pytest.param("demo", id="mamba1"), pytest.param("demo-mamba2", id="mamba2")]


@pytest.mark.parametrize("demo_quantized", DEMOS, indirect=True)
@pytest.mark.parametrize("float_parts", ["float32", "float16"])
def test_demo_tensorrt_graph_breaks_no_rule(demo_quantized, float_parts):
    """The TensorRT graph export writes for a demo model (lowered and made plugin nodes as export does, without
    export's own conformance hook), with either float parts."""
    from edge_quamba.onnx.lower import lower_model
    from edge_quamba.onnx.tensorrt import to_tensorrt_flavour
    from edge_quamba.quant.qmodel import use_float_parts

    graph = lower_model(use_float_parts(demo_quantized, float_parts), "tensorrt", float_parts=float_parts)
    violations = check_tensorrt_graph(to_tensorrt_flavour(graph))
    print("\n".join(map(str, violations)))
    assert violations == []


@pytest.mark.parametrize("demo_quantized", ["demo:w4a8", "demo:w4a16"], indirect=True)
def test_demo_4bit_tensorrt_graphs_break_no_rule(demo_quantized):
    """The demo model's W4A8 and W4A16 TensorRT graphs (their linears W4A8Linear(Quantize) / W4A16Linear plugins over
    the packed weights, W4A16's scan SelectiveScanF16), at the opset the 10.3 parser documents (17: no INT4 left)."""
    from edge_quamba.onnx.lower import lower_model
    from edge_quamba.onnx.tensorrt import to_tensorrt_flavour

    graph = to_tensorrt_flavour(lower_model(demo_quantized, "tensorrt"))
    ops = {n.op_type for n in graph.graph.node if n.domain == DOMAIN}
    print(sorted(ops))
    assert ops >= ({"W4A8Linear", "W4A8LinearQuantize"} if "Int8SelectiveScan" in ops else
                   {"W4A16Linear", "SelectiveScanF16"})
    assert [o.version for o in graph.opset_import if o.domain == ""] == [17]
    assert not any(t.data_type == T.INT4 for t in graph.graph.initializer)
    violations = check_tensorrt_graph(graph)
    print("\n".join(map(str, violations)))
    assert violations == []


def test_require_raises_one_line_naming_the_rules():
    model = good_graph()
    gather_last(model)
    set_attr(node(model, "conv1d"), "plugin_version", None)
    with pytest.raises(ConformanceError) as info:
        require_tensorrt_conformance(model, "model.trt.onnx")
    message = str(info.value)
    print(message)
    assert "\n" not in message and "(TRT020, TRT060;" in message and "norm_f.last" in message
    require_tensorrt_conformance(good_graph())  # conforms: no error


def test_export_refuses_a_tensorrt_graph_that_fails_and_writes_nothing(tmp_path, monkeypatch):
    """export --target tensorrt on a small random checkpoint, with a node TensorRT 10.3 has no rule for here (an
    unused Round: onnx.checker and structure_check.check_graph pass it): ConformanceError before anything is validated
    or written; no output folder, no temporary folder."""
    from helpers import make_tokenizer, random_hf_model, save_transformers_layout

    from edge_quamba.onnx import export
    from edge_quamba.onnx.tensorrt import to_tensorrt_flavour
    from edge_quamba.quant.qmodel import QuantConfig

    def broken(graph):
        trt = to_tensorrt_flavour(graph)
        trt.graph.node.append(helper.make_node("Round", ["embeddings.out"], ["rounded"], name="stray_round"))
        return trt

    tokenizer = make_tokenizer(120)
    fp = save_transformers_layout(random_hf_model(seed=3, vocab_size=tokenizer.get_vocab_size()),
                                  tmp_path / "fp", tokenizer)
    monkeypatch.setattr(export, "to_tensorrt_flavour", broken)
    out = tmp_path / "out"
    with pytest.raises(ConformanceError, match=r"TRT010.*stray_round: Round is not in the checked ops table"):
        export.export_model(model=str(fp), out=out, target="tensorrt", progress=False, echo=print,
                            qconfig=QuantConfig(calib_samples=2, calib_seq_len=16))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fp"]
