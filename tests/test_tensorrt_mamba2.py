"""The Mamba2 TensorRT graph (issue 19; the rules of issue 18), on tiny Quamba2 models and the demo Mamba2 model:

* in_proj is three GEMMs, one per output site (z, xBC, dt: three per-tensor scales), each ending in a bare
  QuantizeLinear directly on its output (fusable into the GEMM's epilogue); out_proj's float output goes into the
  residual Add; no GEMM reads codes that may hold -128;
* the conv, the SSD scan and the fused gated norm are plugin nodes that read the codes of in_proj's sites;
* the graph passes the TensorRT 10.3 conformance check and validates on ONNX Runtime against the quantized reference
  with the W8A8 tie rule, also when in_proj's outputs saturate (-128 codes, read as -127);
* W4A8: the three row blocks are W4A8LinearQuantize plugins (opset 17, no INT4 left), out_proj W4A8Linear;
* W4A16 Mamba2 is refused for TensorRT in one line; `export --target tensorrt` of demo-mamba2 writes a validated graph.
"""

import json

import onnx
import pytest
import torch

from edge_quamba.errors import InputError
from edge_quamba.onnx.lower import NO_MAMBA2_W4A16_TENSORRT, lower_model
from edge_quamba.onnx.structure_check import check_graph
from edge_quamba.onnx.tensorrt import to_tensorrt_flavour
from edge_quamba.onnx.tensorrt_check import check_tensorrt_graph
from edge_quamba.onnx.validate import TIE_TOLERANCE, validate_on_ort
from edge_quamba.quant.quamba2 import quamba2_quantize
from test_quamba2 import Q2, calib_data, fp_mamba2

SITES = ("z", "xBC", "dt")


@pytest.fixture(scope="module")
def fp_model():
    return fp_mamba2(dtype=torch.float32, seed=5)  # d_inner 64, 8 heads of 8, 2 groups of 8 states, 2 layers


@pytest.fixture(scope="module")
def models(fp_model):
    configs = {"w8a8": Q2(), "no_hadamard": Q2(hadamard=False), "w4a8": Q2(bits="w4a8", group_size=16)}
    return {name: quamba2_quantize(fp_model, calib_data(), config, progress=False) for name, config in configs.items()}


def producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output}


def consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    found: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            found.setdefault(name, []).append(node)
    return found


def validate(model, flavour: str, tmp_path, bits: str = "w8a8"):
    """``model``'s graph of ``flavour`` on ONNX Runtime against it: a 24-token prompt, 3 decode steps."""
    graph = lower_model(model, flavour)
    file = tmp_path / f"{flavour}.onnx"
    onnx.save(graph, str(file))
    prompt = torch.randint(0, model.config.vocab_size, (24,), generator=torch.Generator().manual_seed(3))
    report = validate_on_ort(graph, file, model, prompt.tolist(), 3, flavour=flavour, bits=bits)
    print(flavour, *report.lines(), sep="\n")
    return report


@pytest.mark.parametrize("name", ["w8a8", "no_hadamard"])
def test_each_in_proj_site_is_its_own_gemm_ending_in_a_bare_quantize(models, name):
    model = models[name]
    graph = lower_model(model, "tensorrt").graph
    made, readers = producers(graph), consumers(graph)
    c = model.config
    for i in range(c.n_layer):
        p = f"layers.{i}.mixer."
        rows = 0
        for site in SITES:
            (quantize,) = readers[f"{p}in_proj.{site}.matmul"]
            print(f"layer {i} in_proj.{site}: MatMul -> {quantize.op_type} -> {quantize.output[0]}")
            assert quantize.op_type == "QuantizeLinear" and quantize.output == [f"{p}{site}_q"]
            assert quantize.input[1] == f"{p}{site}_scale"  # the site's own per-tensor scale
            weight = next(t for t in graph.initializer if t.name == f"{p}in_proj.{site}.weight_q")
            rows += weight.dims[1]  # (K, N_site), pre-transposed
        assert rows == c.d_in_proj
        (add,) = readers[f"{p}out_proj.matmul"]
        assert add.op_type == "Add"  # float out, into the residual
        (conv,) = readers[f"{p}xBC_q"]
        (ssd,) = readers[f"{p}dt_q"]
        (norm,) = readers[f"{p}z_q"]
        assert (conv.op_type, ssd.op_type) == ("Int8CausalConv1dChannelScales", "Int8SSDScan")
        assert norm.op_type == ("GatedRMSNormQuantize" if name == "no_hadamard" else "GatedRMSNormHadamardQuantize")
        assert norm.input[0] == ssd.output[0] and norm.output == [f"{p}y_q"]
        assert made[f"{p}x_q"].op_type == "Split" and made[f"{p}x_q"].input[0] == conv.output[0]
    for node in graph.node:  # every GEMM input: a clamped quantize (Max before it) or a plugin's clamped codes
        if node.op_type == "DequantizeLinear" and node.name.endswith(".input"):
            producer = made[node.input[0]]
            assert producer.domain == "edge_quamba" or made[producer.input[0]].op_type == "Max", node.name
    assert "HadamardQuantize" not in {n.op_type for n in graph.node}  # fused into the gated norm


@pytest.mark.parametrize("name", ["w8a8", "no_hadamard", "w4a8"])
def test_mamba2_tensorrt_graph_conforms_and_validates(models, name, tmp_path):
    """Conformance (TensorRT 10.3's rules) and ONNX Runtime validation with the W8A8 tie rule, for W8A8 with and
    without Hadamard and for W4A8 (whose TensorRT graph runs the exact W4A8 plugin bodies)."""
    model = models[name]
    graph = lower_model(model, "tensorrt")
    trt = to_tensorrt_flavour(graph)
    onnx.checker.check_model(graph, full_check=True)
    assert check_graph(trt, "tensorrt") == []
    violations = check_tensorrt_graph(trt)
    print("\n".join(map(str, violations)))
    assert violations == []
    assert [o.version for o in trt.opset_import if o.domain == ""] == [17]
    report = validate(model, "tensorrt", tmp_path, "w4a8" if name == "w4a8" else "w8a8")
    assert report.passed and report.tie_tolerance == TIE_TOLERANCE
    assert report.checks[0].max_abs_diff == 0  # int8 codes inside the graph
    if name == "w4a8":
        ops = [n.op_type for n in trt.graph.node if n.domain == "edge_quamba"]
        assert ops.count("W4A8LinearQuantize") == 3 * model.config.n_layer and "W4A8Linear" in ops
        assert not any(t.data_type == onnx.TensorProto.INT4 for t in trt.graph.initializer)
        quantize = next(n for n in trt.graph.node if n.name == "layers.0.mixer.in_proj.dt")
        out_scale = next(a.f for a in quantize.attribute if a.name == "out_scale")
        assert out_scale == pytest.approx(float(model.backbone.layers[0].mixer.dt_scale), rel=1e-7)


def test_saturating_in_proj_outputs_validate_exactly(fp_model, tmp_path):
    """Shrink the scales of z, xBC and dt so that in_proj's codes saturate: the TensorRT graph's bare QuantizeLinear
    writes -128 where the reference clamps to -127, the conv, SSD and gated-norm bodies read it as -127, and
    validation (codes exact, ties followed) passes with the -128 codes counted; the ORT flavour writes none."""
    model = quamba2_quantize(fp_model, calib_data(), Q2(), progress=False)
    for block in model.backbone.layers:
        for site in SITES:
            getattr(block.mixer, f"{site}_scale").mul_(0.25)
        block.mixer.forget_scales()
    for flavour in ("tensorrt", "ort"):
        report = validate(model, flavour, tmp_path)
        assert report.passed
        note = report.checks[0].note
        if flavour == "tensorrt":
            assert "codes of -128 read as -127" in note
        else:
            assert "-128" not in note


def test_w4a16_mamba2_has_no_tensorrt_graph(fp_model):
    model = quamba2_quantize(fp_model, calib_data(), Q2(bits="w4a16", group_size=16), progress=False)
    with pytest.raises(InputError) as refused:
        lower_model(model, "tensorrt")
    assert str(refused.value) == NO_MAMBA2_W4A16_TENSORRT and "\n" not in NO_MAMBA2_W4A16_TENSORRT


def test_demo_mamba2_exports_for_tensorrt(tmp_path):
    """`export --model demo-mamba2 --method quamba2 --target tensorrt`: model.trt.onnx written, validated on ONNX
    Runtime (codes exact, ties followed), plugin nodes only for the custom ops."""
    from helpers import cli_in_process

    proc = cli_in_process("export", "--model", "demo-mamba2", "--method", "quamba2", "--out", str(tmp_path / "e"),
                          "--target", "tensorrt", "--calib-samples", "4", "--calib-seq-len", "64",
                          "--validate-prompt-len", "32", "--validate-decode-steps", "4", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    checks = report["validation"]["tensorrt"]["checks"]
    print(*(f"{c['name']}: {c['max_abs_diff']:.3e} / {c['tolerance']:.3e}" for c in checks), sep="\n")
    assert all(c["passed"] for c in checks) and checks[0]["max_abs_diff"] == 0
    assert not (tmp_path / "e" / "model.onnx").exists()
    graph = onnx.load(str(tmp_path / "e" / "model.trt.onnx"))
    assert not graph.functions
    assert {n.op_type for n in graph.graph.node if n.domain == "edge_quamba"} == {
        "Int8CausalConv1dChannelScales", "Int8SSDScan", "GatedRMSNormHadamardQuantize"}
    assert check_tensorrt_graph(graph) == []


def test_float16_float_parts_validate_against_the_float16_reference(fp_model, tmp_path):
    """--float-parts float16 for W8A8 Mamba2: the residual stream is float16 between blocks in the reference
    (use_float_parts) and in the TensorRT graph, whose codes then equal that reference's (ties followed)."""
    from edge_quamba.quant.qmodel import use_float_parts

    model = quamba2_quantize(fp_model, calib_data(), Q2(), progress=False)
    with pytest.raises(ValueError, match="float_parts"):
        lower_model(model, "tensorrt", float_parts="float16")  # the reference is still float32
    use_float_parts(model, "float16")
    graph = lower_model(model, "tensorrt", float_parts="float16")
    assert producers(graph.graph)[f"layers.{model.config.n_layer - 1}.residual"].op_type == "Cast"
    assert check_tensorrt_graph(to_tensorrt_flavour(graph)) == []
    file = tmp_path / "half.onnx"
    onnx.save(graph, str(file))
    prompt = torch.randint(0, model.config.vocab_size, (24,), generator=torch.Generator().manual_seed(4)).tolist()
    report = validate_on_ort(graph, file, model, prompt, 3, flavour="tensorrt")
    print(*report.lines(), sep="\n")
    assert report.passed and report.checks[0].max_abs_diff == 0


def test_tensorrt_backend_binds_mamba2_state_shapes():
    """--backend tensorrt sizes and binds the states as the graph declares them: Mamba2's (1, conv_dim, k) int8 and
    (1, h, p, n) float32, Mamba1's (1, d_inner, k) and (1, d_inner, n)."""
    from edge_quamba.models.config import MambaConfig, Mamba2Config
    from edge_quamba.runtime.tensorrt_backend import state_shapes

    m2 = Mamba2Config(d_model=2560, n_layer=64, vocab_size=50288, d_state=128, headdim=64, ngroups=1)
    assert state_shapes(m2) == ((1, 5376, 4), (1, 80, 64, 128))
    assert state_shapes(MambaConfig(d_model=768, n_layer=24, vocab_size=50280)) == ((1, 1536, 4), (1, 1536, 16))
