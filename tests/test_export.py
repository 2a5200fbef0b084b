"""ONNX export: graph structure and ONNX Runtime against the quantized reference, on random quantized models of
several shapes lowered and validated in-process (fast). The command line end to end, bad input and the demo model:
test_export_cli.py."""

import collections
import dataclasses

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from edge_quamba.models.config_dispatch import parse_model_config
from edge_quamba.models.mamba import MambaLM
from edge_quamba.onnx import state_names
from edge_quamba.onnx.lower import lower_model
from edge_quamba.onnx.structure_check import check_graph
from edge_quamba.onnx.tensorrt import custom_nodes, to_tensorrt_flavour
from edge_quamba.onnx.validate import TieFollower, validate_on_ort
from edge_quamba.ops.plugins import plugin_node_attributes
from edge_quamba.ops.specs import DOMAIN, SPECS
from edge_quamba.quant.calibrate import CalibrationData, calibrate
from edge_quamba.quant.qmodel import QuantConfig, quantize_model
from edge_quamba.runtime.ort_backend import session_options
from helpers import random_hf_model

LINEARS = ("in_proj", "x_proj", "dt_proj", "out_proj")


@dataclasses.dataclass(frozen=True)
class Shape:
    """A random model: transformers config overrides plus what transformers cannot express (LayerNorm)."""

    name: str
    hf: dict
    norm: str = "rmsnorm"
    hadamard: bool = True


SHAPES = [
    Shape("rms-tied-bias-hadamard-12x8", dict(hidden_size=48, num_hidden_layers=2, state_size=8)),
    Shape("layernorm-untied-nobias-projbias-20x8", dict(hidden_size=80, num_hidden_layers=2, state_size=4,
          conv_kernel=3, use_conv_bias=False, use_bias=True, tie_word_embeddings=False), norm="layernorm"),
    Shape("rms-untied-no-hadamard-28x4", dict(hidden_size=56, num_hidden_layers=3, tie_word_embeddings=False),
          hadamard=False),
    Shape("rms-tied-hadamard-pow2", dict(hidden_size=32, num_hidden_layers=1, state_size=16, conv_kernel=2)),
]


def quantized_model(shape: Shape, seed: int = 0):
    """fp model from random transformers weights (LayerNorm: same weights plus random norm biases), calibrated on
    random tokens, quantized."""
    hf = random_hf_model(seed=seed, noise=0.1, **shape.hf)
    config = dataclasses.replace(parse_model_config(hf.config.to_dict(), "test"), norm=shape.norm)
    fp = MambaLM(config)
    missing, unexpected = fp.load_state_dict(hf.state_dict(), strict=False)
    assert not unexpected and all(key.endswith("norm.bias") or key.endswith("norm_f.bias") for key in missing)
    with torch.no_grad():
        for key in missing:
            fp.get_parameter(key).normal_(0, 0.1, generator=torch.Generator().manual_seed(len(key)))
    qconfig = QuantConfig(hadamard=shape.hadamard, calib_samples=4, calib_seq_len=32)
    data = CalibrationData(torch.randint(0, config.vocab_size, (4, 32), generator=torch.Generator().manual_seed(1)),
                           source="random.txt", sha256="0" * 64)
    return quantize_model(fp.eval(), calibrate(fp.eval(), data, qconfig, progress=False), qconfig), qconfig, data


@pytest.fixture(scope="module", params=SHAPES, ids=lambda s: s.name)
def lowered(request, tmp_path_factory):
    qmodel, _, _ = quantized_model(request.param)
    ort_graph = lower_model(qmodel)
    trt_graph = to_tensorrt_flavour(lower_model(qmodel, "tensorrt"))
    folder = tmp_path_factory.mktemp(request.param.name)
    onnx.save(ort_graph, str(folder / "model.onnx"))
    return request.param, qmodel, ort_graph, trt_graph, folder / "model.onnx"


def test_checker_and_structure(lowered):
    shape, qmodel, ort_graph, trt_graph, _ = lowered
    for flavour, graph in (("ort", ort_graph), ("tensorrt", trt_graph)):
        onnx.checker.check_model(graph, full_check=True)
        assert check_graph(graph, flavour) == []
    n_layer = qmodel.config.n_layer
    per_layer = 3 if shape.hadamard else 2
    assert collections.Counter(n.op_type for n in custom_nodes(ort_graph.graph)) == collections.Counter(
        {"Int8CausalConv1d": n_layer, "Int8SelectiveScan": n_layer, **({"HadamardQuantize": n_layer}
                                                                         if shape.hadamard else {})})
    assert len(custom_nodes(trt_graph.graph)) == per_layer * n_layer
    inputs, outputs = state_names(n_layer)
    assert [i.name for i in ort_graph.graph.input] == ["input_ids", *inputs]
    assert [o.name for o in ort_graph.graph.output] == ["logits", *outputs]


def test_tensorrt_flavour_keeps_float16_tables_and_returns_the_last_logits(lowered):
    """The TensorRT graph stores the embedding / lm_head in float16 (as the artifact does) and runs the lm_head on
    the last position only; the ORT graph keeps float32 logits for every position (evaluation needs them)."""
    _, qmodel, ort_graph, trt_graph, _ = lowered
    initializers = {init.name: init for init in trt_graph.graph.initializer}
    assert initializers["embeddings.weight"].data_type == TensorProto.FLOAT16
    if not qmodel.config.tie_embeddings:
        assert initializers["lm_head.weight"].data_type == TensorProto.FLOAT16
    out = trt_graph.graph.output[0]
    dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert (out.name, out.type.tensor_type.elem_type, dims) == ("last_logits", TensorProto.FLOAT16,
                                                               ["b", qmodel.config.vocab_size])
    assert not any(n.output[0].endswith(".copy") for n in trt_graph.graph.node)  # the ORT-only copies
    assert any(n.output[0].endswith("u_q.copy") for n in ort_graph.graph.node)


def test_every_qdq_is_symmetric_int8_with_positive_scale_and_no_clip(lowered):
    """The checks of check_graph, spelled out on the main graph and every function body."""
    _, _, ort_graph, _, _ = lowered
    inits = {i.name: numpy_helper.to_array(i) for i in ort_graph.graph.initializer}
    bodies = [("graph", list(ort_graph.graph.node))] + [(f.name, list(f.node)) for f in ort_graph.functions]
    counted = 0
    for where, nodes in bodies:
        consts = {n.output[0]: n for n in nodes if n.op_type == "Constant"}
        producers = {o: n for n in nodes for o in n.output}
        for node in nodes:
            assert node.op_type != "Clip" or producers.get(node.input[0], node).op_type != "QuantizeLinear", where
            if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
                continue
            counted += 1
            assert len(node.input) == 3, f"{where}: {node.name} has an implicit zero point"
            if node.input[2] in inits:
                zero_point = inits[node.input[2]]
            else:
                zero_point = numpy_helper.to_array(consts[node.input[2]].attribute[0].t)
            assert zero_point.dtype == np.int8 and int(zero_point) == 0
            if node.input[1] in inits:
                assert inits[node.input[1]].dtype == np.float32 and float(inits[node.input[1]]) > 0
            else:  # a scale attribute of the custom op
                assert consts[node.input[1]].attribute[0].ref_attr_name.endswith("_scale")
    for node in custom_nodes(ort_graph.graph):
        assert all(a.f > 0 for a in node.attribute)
    print(f"{counted} QuantizeLinear/DequantizeLinear nodes checked")
    assert counted > 0


def test_custom_nodes_follow_specs_in_both_flavours(lowered):
    _, _, ort_graph, trt_graph, _ = lowered
    assert {f.name for f in ort_graph.functions} == {n.op_type for n in custom_nodes(ort_graph.graph)}
    assert len(trt_graph.functions) == 0
    inferred = onnx.shape_inference.infer_shapes(ort_graph)
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.value_info, *inferred.graph.input,
                                                           *inferred.graph.output, ]}
    types.update({i.name: i.data_type for i in ort_graph.graph.initializer})
    elem = {"int8": onnx.TensorProto.INT8, "float32": onnx.TensorProto.FLOAT}
    for node in custom_nodes(ort_graph.graph):
        spec = SPECS[node.op_type]
        assert node.domain == DOMAIN
        assert [types[i] for i in node.input] == [elem[t.dtype] for t in spec.inputs]
        assert [types[o] for o in node.output] == [elem[t.dtype] for t in spec.outputs]
        assert [a.name for a in node.attribute] == [a.name for a in spec.attributes]
    trt_nodes = {n.name: n for n in custom_nodes(trt_graph.graph)}
    for node in custom_nodes(ort_graph.graph):
        twin = trt_nodes[node.name]
        assert (twin.op_type, list(twin.input), list(twin.output)) == (node.op_type, list(node.input),
                                                                       list(node.output))
        strings = {a.name: a.s.decode() for a in twin.attribute if a.type == onnx.AttributeProto.STRING}
        assert strings == plugin_node_attributes(SPECS[node.op_type])
        assert [(a.name, a.f) for a in twin.attribute if a.type == onnx.AttributeProto.FLOAT] == \
            [(a.name, a.f) for a in node.attribute]


def test_ort_matches_quantized_reference(lowered):
    _, qmodel, ort_graph, _, model_file = lowered
    prompt = torch.randint(0, qmodel.config.vocab_size, (24,), generator=torch.Generator().manual_seed(2)).tolist()
    report = validate_on_ort(ort_graph, model_file, qmodel, prompt, decode_steps=6)
    print("\n".join(report.lines()))
    assert report.passed
    assert len(report.checks) == 3 + 2 * qmodel.config.n_layer
    assert all(c.max_abs_diff == 0 for c in report.checks if c.name.startswith("conv_state_out"))


def test_greedy_continuation_ort_equals_reference(lowered):
    """24 greedy tokens after a random prompt, each side threading its own states (no tie following here)."""
    from edge_quamba.runtime.backends import TorchReferenceBackend
    from edge_quamba.runtime.ort_backend import OrtGraph

    _, qmodel, _, _, model_file = lowered
    graph, reference = OrtGraph(model_file, qmodel.config), TorchReferenceBackend(qmodel)
    prompt = torch.randint(0, qmodel.config.vocab_size, (16,), generator=torch.Generator().manual_seed(3)).tolist()
    logits, states = graph.run(np.array([prompt]))[:2]
    ref_logits, ref_states = reference.prefill(prompt)
    ort_tokens, ref_tokens = [int(logits[0, -1].argmax())], [int(ref_logits.argmax())]
    for _ in range(23):
        logits, states = graph.run(np.array([[ort_tokens[-1]]]), states)[:2]
        ref_logits, ref_states = reference.decode(ref_tokens[-1], ref_states)
        ort_tokens.append(int(logits[0, -1].argmax()))
        ref_tokens.append(int(ref_logits.argmax()))
    print(ort_tokens)
    assert ort_tokens == ref_tokens


def test_ort_fuses_every_int8_linear(lowered, tmp_path):
    _, qmodel, _, _, model_file = lowered
    import onnxruntime as ort

    optimized = tmp_path / "optimized.onnx"
    ort.InferenceSession(str(model_file), session_options(optimized_model_path=optimized),
                         providers=["CPUExecutionProvider"])
    graph = onnx.load(str(optimized)).graph
    fused = sorted(n.name for n in graph.node if n.op_type == "MatMulIntegerToFloat")
    print(collections.Counter(n.op_type for n in graph.node))
    expected = sorted(f"layers.{i}.mixer.{lin}.matmul" for i in range(qmodel.config.n_layer) for lin in LINEARS)
    assert fused == expected
    producers = {o: n for n in graph.node for o in n.output}
    for node in graph.node:  # what is left as MatMul is float: Hadamard's +-1 matrix, never a dequantized weight
        if node.op_type in ("MatMul", "Gemm"):
            assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in node.input)


def test_tie_follower_adopts_only_proven_ties():
    follower = TieFollower(tolerance=1e-4)
    quotient = torch.tensor([2.5 + 2e-6, 3.2, 4.51, -7.5 - 1e-6])
    reference = torch.tensor([3, 3, 5, -8], dtype=torch.int8)
    follower.expect({"site": np.array([2, 3, 4, -7], np.int8), "other": np.array([1], np.int8)})
    out = follower("site", quotient, reference)
    assert out.tolist() == [2, 3, 5, -7]  # ties adopted; 4.51 -> 4 is not a tie and is kept and counted
    assert (follower.ties, follower.other_differences, follower.first_other) == (2, 1, "site")
    with pytest.raises(AssertionError, match="other"):
        follower.finish()  # the graph made "other", the reference did not
    with pytest.raises(AssertionError, match="site"):
        follower("site", quotient, reference)  # the same codes twice in one step
    with pytest.raises(AssertionError):
        follower(None, quotient, reference)  # an unlabelled quantize call


def mutated(graph: onnx.ModelProto, change) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(graph)
    change(copy.graph)
    return copy


def test_check_graph_catches_broken_graphs(lowered):
    _, _, ort_graph, trt_graph, _ = lowered

    def nonzero_zero_point(g):
        (init,) = [i for i in g.initializer if i.name == "zero_point_int8"]
        init.CopyFrom(numpy_helper.from_array(np.array(3, np.int8), init.name))

    def zero_scale(g):
        (init,) = [i for i in g.initializer if i.name == "layers.0.mixer.xz_scale"]
        init.CopyFrom(numpy_helper.from_array(np.array(0.0, np.float32), init.name))

    def clip_between_q_and_dq(g):
        q = next(n for n in g.node if n.op_type == "QuantizeLinear")
        consumer = next(n for n in g.node if q.output[0] in n.input)
        consumer.input[list(consumer.input).index(q.output[0])] = "clipped_codes"
        g.node.append(helper.make_node("Clip", [q.output[0]], ["clipped_codes"], name="bad_clip"))

    def wrong_attribute(g):
        node = next(n for n in g.node if n.domain == DOMAIN)
        node.attribute[0].name = "scale"

    for change, words in ((nonzero_zero_point, "zero point"), (zero_scale, "scale"),
                          (clip_between_q_and_dq, "Clip"), (wrong_attribute, "attributes")):
        problems = check_graph(mutated(ort_graph, change), "ort")
        print(change.__name__, problems[:1])
        assert problems and any(words in p for p in problems)
    trt_with_function = onnx.ModelProto()
    trt_with_function.CopyFrom(trt_graph)
    trt_with_function.functions.extend(ort_graph.functions)
    assert any("no function bodies" in p for p in check_graph(trt_with_function, "tensorrt"))
    assert check_graph(ort_graph, "tensorrt")  # no plugin attributes on the ORT flavour's nodes
