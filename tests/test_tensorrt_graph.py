"""The TensorRT flavour of the graph, as TensorRT must read it (issue: the TensorRT path made correct).

* the last position is taken with a Slice whose start is computed from the input's shape, never a negative Gather
  index on the dynamic axis l (TensorRT leaves that undefined; ONNX Runtime accepts it, so only the structure shows it);
* every int8 GEMM whose output is requantized ends in a bare QuantizeLinear directly on its output (TensorRT can fuse
  it into the GEMM's epilogue), split into pieces as int8; out_proj's float output goes straight to the residual Add;
* no GEMM reads codes that may hold -128 (a bare QuantizeLinear saturates to [-128, 127]): dt_proj reads a clamped
  requantization of dt_r;
* a model whose GEMM outputs saturate validates exactly on ONNX Runtime, -128 codes read as -127 and counted.
"""

import onnx
import pytest
import torch

from edge_quamba.onnx.lower import lower_model
from edge_quamba.onnx.structure_check import check_graph
from edge_quamba.onnx.tensorrt import to_tensorrt_flavour
from edge_quamba.onnx.validate import validate_on_ort
from test_export import SHAPES, quantized_model

REQUANTIZED_GEMMS = ("in_proj", "x_proj", "dt_proj")


@pytest.fixture(scope="module")
def trt_lowered():
    qmodel, _, _ = quantized_model(SHAPES[0])
    return qmodel, lower_model(qmodel, "tensorrt")


def consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    found: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            found.setdefault(name, []).append(node)
    return found


def test_last_position_is_a_slice_from_the_shape_not_a_negative_gather(trt_lowered):
    """Then the final norm and the lm_head see the last position only."""
    _, graph = trt_lowered
    nodes = {out: node for node in graph.graph.node for out in node.output}
    for node in graph.graph.node:
        if node.op_type == "Gather":
            assert node.output[0] == "embeddings.gathered", f"unexpected Gather {node.name}"
    last = nodes["residual.last"]
    assert last.op_type == "Squeeze"
    sliced = nodes[last.input[0]]
    assert sliced.op_type == "Slice" and sliced.input[0] == f"layers.{trt_lowered[0].config.n_layer - 1}.residual"
    start, end = nodes[sliced.input[1]], nodes[sliced.input[2]]
    assert start.op_type == "Sub" and end.op_type == "Shape" and end.input == ["input_ids"]
    assert nodes[start.input[0]] is end  # start = l - 1, a non-negative index computed at run time


def test_each_requantizing_gemm_ends_in_a_bare_quantize(trt_lowered):
    qmodel, graph = trt_lowered
    readers = consumers(graph.graph)
    for i in range(qmodel.config.n_layer):
        for name in REQUANTIZED_GEMMS:
            out = f"layers.{i}.mixer.{name}.matmul"
            (reader,) = readers[out]
            print(f"layer {i} {name}: MatMul -> {reader.op_type}")
            assert reader.op_type == "QuantizeLinear", f"{out} feeds {reader.op_type}, not a fusable QuantizeLinear"
        (reader,) = readers[f"layers.{i}.mixer.out_proj.matmul"]
        assert reader.op_type == "Add"  # out_proj: float out, straight into the residual add (or its bias)


def test_no_gemm_reads_codes_that_may_hold_minus_128(trt_lowered):
    _, graph = trt_lowered
    nodes = {out: node for node in graph.graph.node for out in node.output}
    for node in graph.graph.node:
        if node.op_type != "DequantizeLinear" or not node.name.endswith(".input"):
            continue  # only a linear's activation DequantizeLinear
        producer = nodes.get(node.input[0])
        assert producer is not None
        if producer.op_type == "QuantizeLinear":  # a clamped quantize: Max(x, -127 s) right before it
            assert nodes[producer.input[0]].op_type == "Max", f"{node.name} reads a bare QuantizeLinear's codes"
        else:
            assert producer.domain == "edge_quamba", f"{node.name} reads codes made by {producer.op_type}"


def test_saturating_gemm_outputs_validate_exactly(tmp_path):
    """Shrink the scales of in_proj's, x_proj's and dt_proj's outputs so that their codes saturate: the TensorRT
    graph's bare QuantizeLinear writes -128 where the reference clamps to -127, every reader reads -128 as -127, and
    validation (integers exact, ties followed) passes with the -128 codes counted."""
    qmodel, _, _ = quantized_model(SHAPES[0])
    for block in qmodel.backbone.layers:
        for site in ("xz", "dbc", "dt"):
            getattr(block.mixer, f"{site}_scale").mul_(0.25)
    for flavour in ("tensorrt", "ort"):
        graph = lower_model(qmodel, flavour)
        assert check_graph(to_tensorrt_flavour(graph) if flavour == "tensorrt" else graph, flavour) == []
        onnx.save(graph, str(tmp_path / f"{flavour}.onnx"))
        prompt = torch.randint(0, qmodel.config.vocab_size, (24,), generator=torch.Generator().manual_seed(3)).tolist()
        report = validate_on_ort(graph, tmp_path / f"{flavour}.onnx", qmodel, prompt, 3, flavour=flavour)
        print(flavour, *report.lines(), sep="\n")
        assert report.passed
        note = report.checks[0].note
        if flavour == "tensorrt":
            assert "codes of -128 read as -127" in note
        else:
            assert "-128" not in note  # the ORT flavour clamps before every QuantizeLinear


def test_float16_float_parts_validate_exactly_against_the_float16_reference(tmp_path):
    """--float-parts float16: the residual stream is float16 between blocks in both the reference
    (use_float_parts) and the TensorRT graph, so the graph's codes equal that reference's (ties followed) while they
    differ from the float32 reference's; a mismatched setting is refused."""
    from edge_quamba.onnx import INPUT_IDS
    from edge_quamba.quant.qmodel import use_float_parts

    qmodel, _, _ = quantized_model(SHAPES[1])  # LayerNorm, untied, biases: every float part
    with pytest.raises(ValueError, match="float_parts"):
        lower_model(qmodel, "tensorrt", float_parts="float16")  # the reference is still float32
    use_float_parts(qmodel, "float16")
    graph = lower_model(qmodel, "tensorrt", float_parts="float16")
    assert check_graph(to_tensorrt_flavour(graph), "tensorrt") == []
    produced = {out: node for node in graph.graph.node for out in node.output}
    n = qmodel.config.n_layer
    assert produced[f"layers.{n - 1}.residual"].op_type == "Cast"  # float16 between blocks
    assert produced["embeddings.gathered"].input[1] == INPUT_IDS and "embeddings.out" not in produced
    onnx.save(graph, str(tmp_path / "trt16.onnx"))
    prompt = torch.randint(0, qmodel.config.vocab_size, (32,), generator=torch.Generator().manual_seed(4)).tolist()
    report = validate_on_ort(graph, tmp_path / "trt16.onnx", qmodel, prompt, 3, flavour="tensorrt")
    print(*report.lines(), sep="\n")
    assert report.passed
    with torch.inference_mode():
        half_logits, _ = qmodel(torch.tensor([prompt]))
        use_float_parts(qmodel, "float32")
        full_logits, _ = qmodel(torch.tensor([prompt]))
    print("float16 vs float32 parts, max |logit diff|:", float((half_logits - full_logits).abs().max()))
    assert not torch.equal(half_logits, full_logits)  # the setting reaches the reference
