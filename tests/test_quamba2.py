"""Quamba2 on Mamba2: the int8 Mamba2 ops against the fp reference on dequantized inputs, sort-and-cluster (the
reordered fp model is the same model, the clustering is optimal and deterministic), the quantized reference
(decode == prefill, ablation switches change what they name, quality floor), and the config."""

import inspect
import itertools
import json
import math

import pytest
import torch

from edge_quamba.errors import ConfigError
from edge_quamba.models.config import Mamba2Config
from edge_quamba.models.config_dispatch import parse_model_config
from edge_quamba.models.mamba2 import GatedRMSNorm, Mamba2LM, ssd_chunked
from edge_quamba.ops.specs import MAMBA2_SPECS
from edge_quamba.quant.calibrate import CalibrationData
from edge_quamba.quant.cluster import cut_sorted, permute_mamba2_mixer, sort_and_cluster
from edge_quamba.quant.qmodel import QuantConfig
from edge_quamba.quant.primitives import dequantize, quantize
from edge_quamba.quant.qops import (gated_rms_norm, int8_causal_conv1d, int8_causal_conv1d_channel_scales,
                                    int8_ssd_scan)
from edge_quamba.quant.quamba2 import calibrate_mamba2, quamba2_quantize
from helpers import decode_stepwise, random_hf_mamba2, report


def fp_mamba2(dtype=torch.float64, **overrides) -> Mamba2LM:
    hf = random_hf_mamba2(**overrides)
    model = Mamba2LM(parse_model_config(hf.config.to_dict(), "test"), dtype=dtype)
    model.load_state_dict(hf.to(dtype).state_dict(), strict=False)
    return model.eval()


def calib_data(samples=8, seq_len=32, seed=0) -> CalibrationData:
    tokens = torch.randint(0, 120, (samples, seq_len), generator=torch.Generator().manual_seed(seed))
    return CalibrationData(tokens=tokens, source="random", sha256="0" * 64)


def Q2(**knobs) -> QuantConfig:
    return QuantConfig(method="quamba2", **knobs)


def sqnr_db(ref, approx) -> float:
    return 10 * math.log10(float(ref.double().pow(2).sum() / (ref.double() - approx.double()).pow(2).sum()))


def test_int8_ssd_scan_equals_fp_ssd_on_dequantized_inputs():
    g = torch.Generator().manual_seed(0)
    b, l, h, p, ng, n = 2, 11, 4, 3, 2, 5
    ints = lambda *shape: torch.randint(-127, 128, shape, generator=g, dtype=torch.int8)
    x_q, dt_q, B_q, C_q = ints(b, l, h * p), ints(b, l, h), ints(b, l, ng * n), ints(b, l, ng * n)
    A, D, dt_bias = -torch.rand(h, generator=g) * 2, torch.randn(h, generator=g), torch.randn(h, generator=g)
    state = torch.randn(b, h, p, n, generator=g)
    x_scales = torch.rand(h * p, generator=g) * 0.05 + 1e-3  # every channel its own scale
    B_scales = torch.tensor([0.01] * n + [0.04] * n)  # one per state group
    C_scales = torch.tensor([0.03] * n + [0.02] * n)
    y, new_state = int8_ssd_scan(x_q, dt_q, B_q, C_q, state, A, D, dt_bias, x_scales, B_scales, C_scales, 0.02)
    deq = lambda q, s: dequantize(q, s).double()
    delta = torch.nn.functional.softplus(deq(dt_q, 0.02) + dt_bias.double())
    y_ref, state_ref = ssd_chunked(deq(x_q, x_scales).unflatten(-1, (h, p)), delta, A.double(),
                                   deq(B_q, B_scales).unflatten(-1, (ng, n)), deq(C_q, C_scales).unflatten(-1, (ng, n)),
                                   D.double(), state.double(), chunk_size=4)
    assert report("int8 SSD y (float32 sequential vs float64 chunked)", y.double() - y_ref.flatten(-2)) <= 1e-4
    assert report("int8 SSD state", new_state.double() - state_ref) <= 1e-4


def test_conv_channel_scales_quantize_each_channel_at_its_scale():
    """Channel c of the Mamba2 conv output equals the per-tensor conv quantized at out_scales[c]."""
    g = torch.Generator().manual_seed(1)
    b, l, c, k = 2, 6, 10, 4
    x_q = torch.randint(-127, 128, (b, l, c), generator=g, dtype=torch.int8)
    state_q = torch.randint(-127, 128, (b, c, k), generator=g, dtype=torch.int8)
    w_q = torch.randint(-127, 128, (c, k), generator=g, dtype=torch.int8)
    bias = torch.randn(c, generator=g)
    out_scales = torch.rand(c, generator=g) * 0.05 + 1e-3
    out, new_state = int8_causal_conv1d_channel_scales(x_q, state_q, w_q, bias, out_scales, 0.02, 0.01)
    for ch in range(c):
        expected, expected_state = int8_causal_conv1d(x_q, state_q, w_q, bias, 0.02, 0.01, float(out_scales[ch]))
        assert torch.equal(out[..., ch], expected[..., ch])
    assert torch.equal(new_state, expected_state)


def test_gated_rms_norm_equals_fp_module():
    g = torch.Generator().manual_seed(2)
    y, z = torch.randn(2, 5, 16, generator=g), torch.randn(2, 5, 16, generator=g)
    norm = GatedRMSNorm(16, 8, 1e-5, torch.float64)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(16, generator=g))
    z_scale = float(z.abs().max() / 127)
    z_q = quantize(z, z_scale)
    ours = gated_rms_norm(y, z_q, norm.weight.float(), z_scale, 1e-5, 8)
    assert report("gated norm", ours.double() - norm(y.double(), dequantize(z_q, z_scale).double())) <= 1e-5


def test_cut_sorted_is_the_optimal_contiguous_cut():
    values = sorted([0.1, 0.12, 0.5, 0.55, 3.0, 3.2, 40.0])

    def cost(labels):
        groups = {}
        for v, lab in zip(values, labels):
            groups.setdefault(lab, []).append(v)
        return sum(math.log(max(vs) / v) for vs in groups.values() for v in vs)

    for k in (1, 2, 3, 4):
        labels = cut_sorted(values, k)
        assert labels == sorted(labels) and len(set(labels)) == k  # contiguous, k clusters
        best = min(cost([sum(i >= c for c in cuts) for i in range(len(values))])
                   for cuts in itertools.combinations(range(1, len(values)), k - 1))
        assert cost(labels) == pytest.approx(best)
    assert cut_sorted(values, 3) == [0, 0, 0, 0, 1, 1, 2]
    assert cut_sorted([1.0, 2.0], 5) == [0, 1]  # capped at the number of values


def test_sort_and_cluster_plan_is_a_valid_deterministic_grouping():
    h, p, ng = 8, 6, 2
    amax = torch.rand(h, p, generator=torch.Generator().manual_seed(3)) * torch.logspace(-1, 1, h)[:, None]
    plan = sort_and_cluster(amax, ng, head_groups=2, dim_groups=3)
    again = sort_and_cluster(amax.clone(), ng, head_groups=2, dim_groups=3)
    assert torch.equal(plan.channel_order, again.channel_order) and torch.equal(plan.group, again.group)
    assert plan.shape == (2, 2, 3)
    assert sorted(plan.channel_order.tolist()) == list(range(h * p))  # a permutation
    assert torch.equal(plan.channel_order.view(h, p)[:, 0] // p, plan.head_order)  # channels move with their head
    heads_per_group = h // ng
    assert all(old // heads_per_group == new // heads_per_group for new, old in enumerate(plan.head_order.tolist()))
    for row in plan.group.view(h, p).tolist():  # within a head, each dim group is one contiguous run of channels
        assert row == sorted(row)
    head_group = (plan.group.view(h, p)[:, 0] // 3).tolist()  # and heads of one head group are adjacent
    assert head_group == sorted(head_group) and len(set(head_group)) == 4
    # within a head group, channel ranges are sorted: every group's smallest range is above the previous one's
    new_amax = amax.flatten()[plan.channel_order]
    for hg in range(4):
        rows = new_amax.view(h, p)[torch.tensor(head_group) == hg].amax(0)
        assert torch.equal(rows, rows.sort().values)
    assert sort_and_cluster(amax, ng, head_groups=99, dim_groups=99).shape == (2, 4, 6)  # capped


def test_reordered_fp_model_is_the_same_model():
    """The channel order is applied to every weight that makes or reads x: float64 logits equal to 1e-12."""
    model = fp_mamba2(seed=4)
    tokens = torch.randint(0, 120, (2, 17), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        before, _ = model(tokens)
        amaxes = calibrate_mamba2(model, calib_data(), hadamard=False, progress=False)
        c = model.config
        for block, amax in zip(model.backbone.layers, amaxes):
            plan = sort_and_cluster(amax["ssm_input"][:c.d_inner].view(c.nheads, c.headdim), c.ngroups, 2, 3)
            assert not torch.equal(plan.channel_order, torch.arange(c.d_inner))  # a real reordering
            permute_mamba2_mixer(block.mixer, plan)
        after, _ = model(tokens)
    assert report("reordered fp64 logits", after - before) <= 1e-12


@pytest.fixture(scope="module")
def fp32_model():
    model = fp_mamba2(dtype=torch.float32, seed=5)
    with torch.no_grad():  # one outlier head per SSD group: the case sort-and-cluster exists for
        c = model.config
        for block in model.backbone.layers:
            for head in (1, 6):
                rows = slice(c.d_inner + head * c.headdim, c.d_inner + (head + 1) * c.headdim)
                block.mixer.in_proj.weight[rows] *= 8
    return model


@pytest.fixture(scope="module")
def quantized(fp32_model):
    return {name: quamba2_quantize(fp32_model, calib_data(), config, progress=False) for name, config in {
        "quamba2": Q2(), "no_cluster": Q2(sort_cluster=False),
        "no_group_bc": Q2(per_group_bc=False)}.items()}


def test_quantized_mamba2_step_decode_equals_prefill(quantized):
    q = quantized["quamba2"]
    tokens = torch.randint(0, 120, (2, 12), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        full, final = q(tokens)
    stepped, states = decode_stepwise(q, tokens)
    assert report("quantized Mamba2 step vs prefill logits", stepped - full) <= 1e-4
    for a, b in zip(final, states, strict=True):
        assert a.conv_state.dtype == torch.int8 and torch.equal(a.conv_state, b.conv_state)
        assert a.ssm_state.shape[1:] == (8, 8, 8)  # (b, h, p, n)
        assert report("quantized Mamba2 ssm_state", a.ssm_state - b.ssm_state) <= 1e-5


def test_ablation_switches_change_the_scales_they_name(quantized, fp32_model):
    c = fp32_model.config
    full, no_cluster, no_bc = (quantized[k].backbone.layers[0].mixer for k in ("quamba2", "no_cluster", "no_group_bc"))
    assert tuple(full.x_scale.shape) == (c.ngroups, 4, 4) and tuple(no_cluster.x_scale.shape) == (1, 1, 1)
    assert len(set(full.x_scale.flatten().tolist())) > 1
    assert tuple(full.B_scale.shape) == (c.ngroups,) and tuple(no_bc.B_scale.shape) == (1,)
    assert float(no_bc.B_scale) == float(full.B_scale.max())  # one scale covers every group
    assert float(no_cluster.x_scale) == pytest.approx(float(full.x_scale.max()), rel=1e-6)


def test_quantized_mamba2_tracks_fp_and_clustering_helps(quantized, fp32_model):
    """A floor, not a quality claim (benchmarks/quamba2.py measures the trained demo model): with an outlier head,
    grouped x scales must beat one x scale."""
    tokens = torch.randint(0, 120, (2, 32), generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        ref = fp32_model(tokens)[0]
        db = {name: sqnr_db(ref, model(tokens)[0]) for name, model in quantized.items()}
    print({k: round(v, 2) for k, v in db.items()})
    assert db["quamba2"] > 12
    assert db["quamba2"] > db["no_cluster"] + 1


def test_mamba2_model_calls_only_the_edge_quamba_ops(quantized):
    """The Mamba2 data flow exists once: prefill and decode call torch.ops.edge_quamba.* (decode the one-token
    ops), and aten makes no int8 tensor except views and the zero states. in_proj's three output sites are
    quantized in its epilogue (int8_linear_quantize_segments): no separate quantize op; at decode the same op also
    runs the conv step (int8_linear_quantize_conv_update), and out_proj adds the residual."""
    from test_data_flow import VIEWS, record_prefill_and_decode

    q = quantized["quamba2"]
    tokens = torch.randint(0, 120, (2, 9), generator=torch.Generator().manual_seed(0))
    prefill, decode, _ = record_prefill_and_decode(q, tokens)
    print("prefill:", sorted(prefill.edge_quamba), "int8 aten:", sorted(prefill.int8_aten))
    common = {"rms_norm_quantize", "gated_rms_norm_hadamard_quantize"}
    assert prefill.edge_quamba == common | {"int8_linear_quantize_segments", "int8_causal_conv1d_channel_scales",
                                            "int8_ssd_scan", "int8_linear"}
    # decode: out_proj also adds the block's residual (int8_linear_residual)
    assert decode.edge_quamba == common | {"int8_linear_quantize_conv_update", "int8_ssd_scan_update",
                                           "int8_linear_residual"}
    with pytest.MonkeyPatch.context() as patch:  # the fused decode ops off: the separate ops of before
        patch.setenv("EDGE_QUAMBA_FUSED_DECODE", "0")
        _, apart, _ = record_prefill_and_decode(q, tokens)
    assert apart.edge_quamba == common | {"int8_linear", "quantize", "int8_causal_conv1d_channel_scales_update",
                                          "int8_ssd_scan_update"}
    assert prefill.int8_aten <= VIEWS | {"zeros"} and decode.int8_aten <= VIEWS


def test_in_proj_sites_are_labelled_in_its_epilogue(quantized):
    """in_proj's one op quantizes z, xBC and Δ each at its site's scale and under its site's label (validation's tie
    rule finds each graph tensor by that label), and its codes equal the float linear quantized part by part."""
    from edge_quamba.quant.primitives import quantize, quantize_hook

    q = quantized["quamba2"]
    seen = {}

    def hook(label, quotient, codes):
        seen.setdefault(label, codes.shape[-1])
        return codes

    tokens = torch.randint(0, 120, (1, 5), generator=torch.Generator().manual_seed(2))
    with torch.no_grad(), quantize_hook(hook):
        q(tokens)
    c, mixer = q.config, q.backbone.layers[0].mixer
    sizes = [c.d_inner, c.d_inner + 2 * c.ngroups * c.d_state, c.nheads]
    assert [seen[f"layers.0.mixer.{code}"] for code in ("z_q", "xBC_q", "dt_q")] == sizes
    with torch.no_grad():  # decode: in_proj and the conv step in one op, its four quantize steps labelled in order
        _, states = q(tokens[:, :4])
        seen.clear()
        with quantize_hook(hook):
            q.step(tokens[:, 4], states)
    codes = ("z_q", "xBC_q", "dt_q", "ssm_input_q")
    assert [seen[f"layers.0.mixer.{code}"] for code in codes] == [*sizes, sizes[1]]
    x_q = torch.randint(-127, 128, (3, c.d_model), dtype=torch.int8, generator=torch.Generator().manual_seed(3))
    s = mixer.scales()
    y = torch.ops.edge_quamba.int8_linear(x_q, mixer.in_proj.weight, mixer.in_proj.bias, 0.02, s["in_proj.weight"])
    want = torch.cat([quantize(part, s[site]) for part, site in zip(y.split(sizes, -1), ("z", "xBC", "dt"))], -1)
    got = torch.ops.edge_quamba.int8_linear_quantize_segments(x_q, mixer.in_proj.weight, mixer.in_proj.bias, 0.02,
                                                             s["in_proj.weight"], [s["z"], s["xBC"], s["dt"]], sizes)
    assert torch.equal(got, want) and len({s["z"], s["xBC"], s["dt"]}) == 3


@pytest.mark.parametrize("bits", ["w4a8", "w4a16"])
def test_four_bit_mamba2_models(fp32_model, quantized, bits):
    """W4A8 and W4A16: in_proj and out_proj hold int4 group-wise weights (GPTQ), decode equals prefill, and the
    output stays near fp (a floor, not a quality claim). W4A8 keeps the W8A8 activation scales; W4A16 is the fp16
    mixer (float states)."""
    from edge_quamba.quant.qmodel import Int4Linear

    q = quamba2_quantize(fp32_model, calib_data(), Q2(bits=bits, group_size=16), progress=False)
    mixer = q.backbone.layers[0].mixer
    assert isinstance(mixer.in_proj, Int4Linear) and isinstance(mixer.out_proj, Int4Linear)
    assert mixer.in_proj.weight_scale.shape == (fp32_model.config.d_in_proj, 2)  # 32 inputs in groups of 16
    tokens = torch.randint(0, 120, (2, 12), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        full, _ = q(tokens)
        ref = fp32_model(tokens)[0]
    stepped, _ = decode_stepwise(q, tokens)
    tolerance = 1e-4 if bits == "w4a8" else 2e-2  # float16 activations round differently at l = 1
    assert report(f"{bits} step vs prefill logits", stepped.float() - full.float()) <= tolerance
    db = sqnr_db(ref, full.float())
    print(f"{bits} logit SQNR vs fp: {db:.1f} dB")
    assert db > 6
    if bits == "w4a8":  # the activation path is W8A8's: same scales, same clustering
        w8 = quantized["quamba2"].backbone.layers[0].mixer
        assert torch.equal(mixer.x_scale, w8.x_scale) and torch.equal(mixer.x_group, w8.x_group)


def test_quamba2_config_round_trip_and_refusals():
    config = Q2(head_groups=2, per_group_bc=False)
    assert QuantConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ConfigError, match="--head-groups"):
        Q2(head_groups=0)


def test_quantize_quamba2_cli_end_to_end(tmp_path):
    """`quantize --method quamba2` on a Mamba2 folder writes an artifact that records the recipe, loads back to the
    same model (artifact hashes checked), and runs under `eval` and `run` with --backend ref; a Mamba1 model is
    refused by quamba2."""
    from edge_quamba.folders import load_quantized_model, open_model
    from helpers import TEXT, cli_in_process, make_tokenizer, one_error_line, random_hf_model, save_transformers_layout

    tokenizer = make_tokenizer(120)
    folder = save_transformers_layout(random_hf_mamba2(seed=12, vocab_size=tokenizer.get_vocab_size()),
                                      tmp_path / "fp", tokenizer)
    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    out = tmp_path / "q"
    proc = cli_in_process("quantize", "--model", str(folder), "--out", str(out), "--method", "quamba2",
                          "--calib-data", str(text), "--calib-samples", "4", "--calib-seq-len", "16",
                          "--head-groups", "2", "--no-group-bc")
    assert proc.returncode == 0, proc.stderr
    opened = open_model(str(out))
    qconfig, raw = opened.quant, opened.record
    assert raw["quantization"]["method"] == "quamba2" and raw["quantization"]["bits"] == "w8a8"
    assert qconfig == Q2(head_groups=2, per_group_bc=False, calib_samples=4, calib_seq_len=16)
    model = load_quantized_model(out)
    assert tuple(model.backbone.layers[0].mixer.x_scale.shape) == (2, 2, 4)
    assert tuple(model.backbone.layers[0].mixer.B_scale.shape) == (1,)
    proc = cli_in_process("eval", "--model", str(out), "--data", str(text), "--seq-len", "16", "--max-tokens", "48",
                          "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    windows = torch.tensor(tokenizer.encode(TEXT).ids[:48]).view(3, 16)
    with torch.no_grad():
        logits = model(windows)[0][:, :-1].log_softmax(-1)
        nll = -logits.gather(-1, windows[:, 1:, None]).mean().item()
    assert abs(report["nll_per_token"] - nll) <= 1e-5  # eval runs the quantized reference
    proc = cli_in_process("run", "--model", str(out), "--prompt", "The quick", "--temperature", "0",
                          "--max-new-tokens", "5", "--json")
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["tokens"]) >= 1
    if not torch.cuda.is_available():  # Mamba2 is not refused: only the missing GPU is (GPU runs: test_cuda_mamba2.py)
        line = one_error_line(cli_in_process("eval", "--model", str(out), "--data", str(text), "--backend", "cuda"))
        assert "--backend cuda needs an NVIDIA GPU" in line
    mamba1 = save_transformers_layout(random_hf_model(vocab_size=tokenizer.get_vocab_size()), tmp_path / "m1",
                                      tokenizer)
    line = one_error_line(cli_in_process("quantize", "--model", str(mamba1), "--out", str(tmp_path / "q1"),
                                         "--method", "quamba2", "--calib-data", str(text)))
    assert "--method quamba2 is Mamba2-only" in line


@pytest.mark.parametrize("name", sorted(MAMBA2_SPECS))
def test_mamba2_ops_follow_their_spec(name):
    """The torch schema, the qops reference's signature and the ONNX function body of each Mamba2 custom op follow
    its spec (tensors in spec order, then the float attributes)."""
    from edge_quamba.onnx.functions_mamba2 import mamba2_custom_functions
    from edge_quamba.quant import qops

    spec = MAMBA2_SPECS[name]
    schema = getattr(torch.ops.edge_quamba, spec.reference).default._schema
    expected = [(t.name, "Optional[Tensor]" if t.optional else "Tensor") for t in spec.inputs]
    assert [(a.name, str(a.type)) for a in schema.arguments] == expected + [(a.name, a.kind) for a in spec.attributes]
    assert tuple(inspect.signature(getattr(qops, spec.reference)).parameters) == spec.parameters
    config = fp_mamba2().config
    functions = [f for hadamard in (False, True) for flavour in ("ort", "tensorrt")
                 for f in mamba2_custom_functions(config, hadamard, flavour=flavour)]
    function = next(f for f in functions if f.name == name)  # the gated norms: the TensorRT flavour's
    assert list(function.input) == [t.name for t in spec.inputs]
    assert list(function.output) == [t.name for t in spec.outputs]
    assert list(function.attribute) == [a.name for a in spec.attributes]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """`export --method quamba2` of a tiny Mamba2 (validated on ONNX Runtime inside the command)."""
    from helpers import TEXT, cli_in_process, make_tokenizer, save_transformers_layout

    tmp = tmp_path_factory.mktemp("mamba2_export")
    tokenizer = make_tokenizer(120)
    folder = save_transformers_layout(random_hf_mamba2(seed=13, vocab_size=tokenizer.get_vocab_size()),
                                      tmp / "fp", tokenizer)
    text = tmp / "text.txt"
    text.write_text(TEXT * 3)
    proc = cli_in_process("export", "--model", str(folder), "--out", str(tmp / "export"), "--method", "quamba2",
                          "--calib-data", str(text), "--calib-samples", "4", "--calib-seq-len", "16",
                          "--validate-prompt-len", "24", "--validate-decode-steps", "4", "--json")
    return tmp, folder, text, proc


def test_mamba2_w8a8_exports_and_validates_on_ort(exported):
    tmp, _, _, proc = exported
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    validation = report["validation"]["ort"]
    print(json.dumps(validation, indent=1)[:1500])
    checks = {c["name"]: c for c in validation["checks"]}
    assert all(c["passed"] for c in checks.values())
    codes = checks["int8 codes inside the graph"]
    assert codes["max_abs_diff"] == 0 and "conv_state_out.1" in checks and "ssm_state_out.1" in checks
    assert all(c["passed"] for c in report["validation"]["tensorrt"]["checks"])  # tests/test_tensorrt_mamba2.py
    assert (tmp / "export" / "model.onnx").is_file() and (tmp / "export" / "model.trt.onnx").is_file()
    import onnx

    graph = onnx.load(str(tmp / "export" / "model.onnx"))
    used = {node.op_type for node in graph.graph.node if node.domain == "edge_quamba"}
    assert used == {"Int8CausalConv1dChannelScales", "Int8SSDScan", "HadamardQuantize"}


def test_mamba2_ort_backend_equals_reference(exported):
    """eval --backend ort on the export and --backend ref on its quantized artifact score the same tokens alike."""
    from helpers import cli_in_process

    tmp, _, text, proc = exported
    assert proc.returncode == 0, proc.stderr
    args = ("eval", "--data", str(text), "--seq-len", "16", "--max-tokens", "48", "--json")
    ort = cli_in_process(*args, "--model", str(tmp / "export"), "--backend", "ort")
    ref = cli_in_process(*args, "--model", str(tmp / "export" / "quantized"), "--backend", "ref")
    assert ort.returncode == 0 and ref.returncode == 0, ort.stderr + ref.stderr
    got, want = json.loads(ort.stdout)["nll_per_token"], json.loads(ref.stdout)["nll_per_token"]
    print("ort", got, "ref", want)
    assert abs(got - want) <= 1e-4


def test_mamba2_w4a8_exports_and_validates_on_ort(exported):
    """W4A8: int4 in_proj/out_proj (INT4 + blocked DequantizeLinear, opset 21) around the same int8 Mamba2 ops."""
    from helpers import cli_in_process

    tmp, folder, text, _ = exported
    proc = cli_in_process("export", "--model", str(folder), "--out", str(tmp / "w4a8"), "--method", "quamba2",
                          "--bits", "w4a8", "--group-size", "16", "--calib-data", str(text), "--calib-samples", "4",
                          "--calib-seq-len", "16", "--validate-prompt-len", "24", "--validate-decode-steps", "4",
                          "--json")
    assert proc.returncode == 0, proc.stderr
    validation = json.loads(proc.stdout)["validation"]
    for flavour in ("ort", "tensorrt"):  # the TensorRT graph's W4A8 plugin bodies are exact: the W8A8 tie rule
        checks = {c["name"]: c for c in validation[flavour]["checks"]}
        assert all(c["passed"] for c in checks.values()) and checks["int8 codes inside the graph"]["max_abs_diff"] == 0
    assert validation["tensorrt"]["tie_tolerance_codes"] == 1e-4
    import onnx

    graph = onnx.load(str(tmp / "w4a8" / "model.onnx"))
    assert any(init.data_type == onnx.TensorProto.INT4 for init in graph.graph.initializer)
    trt = onnx.load(str(tmp / "w4a8" / "model.trt.onnx"))
    assert not any(init.data_type == onnx.TensorProto.INT4 for init in trt.graph.initializer)
    assert {n.op_type for n in trt.graph.node if n.domain == "edge_quamba"} == {
        "W4A8LinearQuantize", "W4A8Linear", "Int8CausalConv1dChannelScales", "Int8SSDScan",
        "GatedRMSNormHadamardQuantize"}


def test_mamba2_w4a16_exports_and_validates_on_ort(exported):
    """W4A16: the float16 Mamba2 reference in standard ops (no custom op) with INT4 in_proj/out_proj, validated on
    ONNX Runtime (prefill + decode, every output within W4A16_RTOL), and `run --backend ort` greedy tokens equal
    `--backend ref`'s."""
    import onnx

    from edge_quamba.onnx.structure_check import check_graph
    from helpers import cli_in_process

    tmp, folder, text, _ = exported
    out = tmp / "w4a16"
    proc = cli_in_process("export", "--model", str(folder), "--out", str(out), "--method", "quamba2",
                          "--bits", "w4a16", "--group-size", "16", "--calib-data", str(text), "--calib-samples", "4",
                          "--calib-seq-len", "16", "--validate-prompt-len", "24", "--validate-decode-steps", "4",
                          "--json")
    print(proc.stderr)
    assert proc.returncode == 0, proc.stderr
    checks = {c["name"]: c for c in json.loads(proc.stdout)["validation"]["ort"]["checks"]}
    assert set(checks) == {"logits", "conv_state_out.0", "ssm_state_out.0", "conv_state_out.1", "ssm_state_out.1"}
    assert all(c["passed"] and 0 < c["tolerance"] for c in checks.values())
    graph = onnx.load(str(out / "model.onnx"))
    assert check_graph(graph, "ort") == [] and not graph.functions
    assert {n.domain for n in graph.graph.node} == {""}  # no custom op: standard ops only
    int4 = [t.name for t in graph.graph.initializer if t.data_type == onnx.TensorProto.INT4]
    assert len(int4) == 2 * 2 * 2  # 2 layers x (in_proj, out_proj) x (codes, zero points)
    shapes = {i.name: (i.type.tensor_type.elem_type,
                       [d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim]) for i in graph.graph.input}
    c = Mamba2Config.from_dict(json.loads((out / "export_config.json").read_text())["model_config"])
    assert shapes["conv_state.1"] == (onnx.TensorProto.FLOAT16, ["b", c.conv_dim, c.d_conv])  # as OrtGraph expects
    assert shapes["ssm_state.1"] == (onnx.TensorProto.FLOAT, ["b", c.nheads, c.headdim, c.d_state])
    tokens = {}
    for backend in ("ort", "ref"):
        run = cli_in_process("run", "--model", str(out), "--backend", backend, "--prompt", "The quick",
                             "--max-new-tokens", "8", "--temperature", "0", "--json")
        assert run.returncode == 0, run.stderr
        tokens[backend] = json.loads(run.stdout)["tokens"]
    print(tokens)
    assert tokens["ort"] == tokens["ref"]


@pytest.mark.parametrize("extra, message", [
    (("--bits", "w4a16", "--target", "tensorrt"), "--target tensorrt is not built for a W4A16 Mamba2 model: its "
                                                  "float16 SSD scan has no TensorRT plugin")])
def test_mamba2_export_refuses_what_is_not_built(exported, extra, message):
    from helpers import cli_in_process, one_error_line

    tmp, folder, text, _ = exported
    line = one_error_line(cli_in_process("export", "--model", str(folder), "--out", str(tmp / "refused"),
                                         "--method", "quamba2", "--calib-data", str(text), *extra))
    assert message in line
    assert not (tmp / "refused").exists()
