"""benchmarks/orin_projection.py and benchmarks/decode_plan.py on the CPU: the bytes model against the H200 records and
the model's own weights, the projection's arithmetic on tiny fixture inputs, the labels, the citations, bad inputs,
and the design basis of GPU-side seeded sampling."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import decode_plan  # noqa: E402
import orin_projection as op  # noqa: E402

from edge_quamba.models.config import MambaConfig  # noqa: E402
from edge_quamba.quant.qmodel import QuantConfig, empty_quantized_model  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
L_1 = {"rms_norm_quantize": 2.0, "in_proj int8_linear_quantize": 10.0, "int8_causal_conv1d": 2.5,
       "x_proj int8_linear_quantize": 3.0, "dt_proj int8_linear_quantize": 3.0, "int8_selective_scan": 3.5,
       "hadamard_quantize": 6.0, "out_proj int8_linear": 5.0}
"""Fixture us per launch of the l = 1 kernels (the shortest, 2.0 us, is the launch floor)."""


def kernel_timing_fixture(copy: float = 1000.0) -> dict:
    c = op.mamba_config("2.8b")
    bytes_per_layer = {k.name: k.bytes // c.n_layer for k in op.int8_decode_step(c)}
    rows = [dict(kernel=name, chain="both" if name in ("int8_causal_conv1d", "int8_selective_scan",
                                                       "hadamard_quantize", "out_proj int8_linear") else "fused",
                 seqlen=1, time_us=us, bytes=bytes_per_layer[name],
                 fraction_of_copy=bytes_per_layer[name] / (us * 1e-6) / 1e9 / copy) for name, us in L_1.items()]
    rows.append(dict(kernel="quantize (norm out)", chain="unfused", seqlen=1, time_us=9.0, bytes=1,
                     fraction_of_copy=0.0))
    rows += [dict(kernel="int8_selective_scan", chain="both", seqlen=512, time_us=150.0, bytes=20_000_000,
                  fraction_of_copy=0.1),
             dict(kernel="in_proj int8_linear_quantize", chain="fused", seqlen=512, time_us=50.0, bytes=1,
                  fraction_of_copy=0.1),
             dict(kernel="in_proj int8_linear", chain="unfused", seqlen=512, time_us=99.0, bytes=1,
                  fraction_of_copy=0.1),
             dict(kernel="x_proj int8_linear_quantize", chain="fused", seqlen=512, time_us=15.0, bytes=1,
                  fraction_of_copy=0.1),
             dict(kernel="dt_proj int8_linear_quantize", chain="fused", seqlen=512, time_us=14.0, bytes=1,
                  fraction_of_copy=0.1),
             dict(kernel="out_proj int8_linear", chain="both", seqlen=512, time_us=40.0, bytes=1, fraction_of_copy=0.1)]
    return {"command": "fixture", "gpu": "fixture GPU", "date": "2026-12-01", "copy_gb_per_s": copy,
            "shape": {"d_model": c.d_model, "n_layer": c.n_layer}, "kernels": rows,
            "layers": [dict(chain="fused", seqlen=512, layer_us=300.0), dict(chain="fused", seqlen=1, layer_us=40.0)]}


def profile_fixture(n_layer: int, per_layer: int = 9) -> list[dict]:
    names = ["hadamard_quantize_kernel", "int8_gemv_kernel<16, 32, 1, true>", "selective_scan_kernel",
             "int8_gemv_kernel<16, 64, 1, false>", "int8_gemv_kernel<16, 256, 1, true>", "causal_conv1d_kernel",
             "int8_gemv_kernel<16, 8, 1, true>", "rms_norm_quantize_kernel", "CUDAFunctor_add<float>"]
    rows = [{"kernel": name, "us_per_token": 100.0, "launches_per_token": float(n_layer)} for name in names[:per_layer]]
    rows[-1]["us_per_token"] = 80.0  # the residual add
    return rows + [{"kernel": "nvjet_lm_head", "us_per_token": 70.0, "launches_per_token": 1.0},
                   {"kernel": "multi_tensor_apply_kernel<a>", "us_per_token": 20.0, "launches_per_token": 1.0},
                   {"kernel": "multi_tensor_apply_kernel<b>", "us_per_token": 5.0, "launches_per_token": 1.0}]


def latency_fixture(per_layer: int = 9) -> dict:
    n_layer = op.mamba_config("2.8b").n_layer
    return {"command": "fixture", "date": "2026-12-01", "environment": {"gpu": "fixture GPU"},
            "copy_bandwidth_gb_per_s": 1000.0,
            "rows": [{"shape": "2.8b", "impl": "edge-quamba cuda int8", "status": "ok", "ttft_ms": 60.0,
                      "tpot_ms": 5.5, "graph_ms": 5.0, "weight_gb": 2.916242176,
                      "kernels": profile_fixture(n_layer, per_layer)},
                     {"shape": "2.8b", "impl": "mamba_ssm fp16 cg", "status": "ok", "ttft_ms": 90.0, "tpot_ms": 8.0,
                      "weight_gb": 5.54783232},
                     {"shape": "2.8b", "impl": "transformers fp16", "status": "ok", "ttft_ms": 99.0, "tpot_ms": 70.0,
                      "weight_gb": 5.5}]}


@pytest.fixture
def inputs(tmp_path):
    kt, lat = tmp_path / "kernel_timing.json", tmp_path / "latency.json"
    kt.write_text(json.dumps(kernel_timing_fixture()))
    lat.write_text(json.dumps(latency_fixture()))
    return kt, lat


def test_int8_bytes_are_kernel_timing_bytes():
    """The bytes model counts each kernel as benchmarks/kernel_timing.py did for the recorded H200 run."""
    record = json.loads((RESULTS / "kernel_timing.json").read_text())
    c = op.mamba_config("2.8b")
    assert record["shape"]["d_model"] == c.d_model and record["shape"]["d_inner"] == c.d_inner
    model = {k.name: k.bytes // c.n_layer for k in op.int8_decode_step(c)}
    recorded = {r["kernel"]: r["bytes"] for r in record["kernels"] if r["seqlen"] == 1}
    common = sorted(set(model) & set(recorded))
    print({name: (model[name], recorded[name]) for name in common})
    assert len(common) >= 6
    assert all(model[name] == recorded[name] for name in common)


def test_int8_weight_bytes_are_the_model_weights():
    """Every tensor of the quantized model is read once per token (the embedding as fp16 by the tied lm_head) except
    the 0-dim scales, which the ops take as Python floats."""
    config = MambaConfig(d_model=64, n_layer=3, vocab_size=200)
    with torch.device("meta"):
        model = empty_quantized_model(config, QuantConfig())
    total = scalars = 0
    for name, tensor in model.state_dict().items():
        if tensor.dim() == 0:
            scalars += 1
            continue
        if name == "lm_head.weight":  # tied: the embedding table, counted once
            continue
        total += tensor.numel() * (2 if "embeddings" in name else tensor.element_size())
    weights = op.totals(op.int8_decode_step(config))[1]
    print(total, weights, scalars)
    assert weights == total and scalars > 0


def test_recorded_weight_bytes_agree(tmp_path):
    """Against latency_h200.json: the fp16 (mamba_ssm) model exactly, the int8 model up to 11 float32 scales a layer."""
    report = op.build(op.load_h200(RESULTS / "kernel_timing.json", RESULTS / "latency_h200.json"))
    print(report["checks"])
    assert report["checks"]
    for check in report["checks"]:
        n_layer = op.mamba_config(check["shape"]).n_layer
        assert check["difference_bytes"] == (0 if check["precision"] == "fp16" else 11 * 4 * n_layer)


def test_project_arithmetic():
    kernels = [op.Kernel("a", 6, 600_000_000, 100_000_000), op.Kernel("b", 4, 0, 300_000_000)]  # 1 GB, 10 launches
    h200 = op.H200(copy_gb_per_s=1000.0, floor_us=2.0, floor_kernel="k", rows={}, sources={})
    device = op.OrinDevice("test", op.Cited(100.0, "GB/s", "assumption", "t"),
                           op.Cited(990.0, "MHz", "assumption", "t"))
    row = op.project(kernels, 5.0, h200, device, (0.5, 1.0))
    print(row)
    assert (row["bytes"], row["launches"]) == (1_000_000_000, 10)
    assert row["bandwidth_ms"] == pytest.approx({"low": 10.0, "high": 20.0})
    assert row["launch_ms"]["low"] == pytest.approx(0.02)  # 10 launches x 2 us
    assert row["launch_ms"]["high"] == pytest.approx((5.0 - 1.0) * 1980.0 / 990.0)  # (graph - bytes/copy) x clocks
    assert row["tpot_ms"] == pytest.approx({"low": 10.02, "high": 28.0})
    assert row["tokens_per_s"]["low"] == pytest.approx(1e3 / 10.02)
    assert row["floor_ms_at_peak"] == pytest.approx(10.0)


def test_fixture_report_rows(inputs):
    report = op.build(op.load_h200(*inputs))
    eta = report["bandwidth_fraction"]
    assert eta["agx_orin_read"] == pytest.approx(152.8 / 204.8)
    fp16_bytes = op.totals(op.fp16_decode_step(op.mamba_config("2.8b")))[0]
    assert eta["quamba_fp16_nano_implied"] == pytest.approx(fp16_bytes / 0.1036 / 68e9)
    assert report["h200"]["floor_us"] == 2.0 and report["h200"]["floor_kernel"] == "rms_norm_quantize"
    rows = {(r["device"], r["precision"]): r for r in report["rows"]}
    assert {r["shape"] for r in report["rows"]} == {"2.8b"} and len(rows) == 6  # transformers is not projected
    nano = rows[("Orin Nano 8GB", "int8")]
    nbytes, _, launches = op.totals(op.int8_decode_step(op.mamba_config("2.8b")))
    assert (nano["bytes"], nano["launches"]) == (nbytes, 9 * 64 + 13)
    assert nano["bandwidth_ms"]["low"] == pytest.approx(nbytes / (eta["high"] * 68e9) * 1e3)
    assert nano["bandwidth_ms"]["high"] == pytest.approx(nbytes / (eta["low"] * 68e9) * 1e3)
    assert nano["launch_ms"]["low"] == pytest.approx(launches * 2.0e-3)
    assert nano["launch_ms"]["high"] == pytest.approx((5.0 - nbytes / 1e12 * 1e3) * 1980 / 625)
    assert nano["h200_host_ms"] == pytest.approx(0.5) and rows[("Orin Nano 8GB", "fp16")]["h200_host_ms"] is None
    assert rows[("AGX Orin 64GB", "fp16")]["launch_ms"]["high"] == pytest.approx(
        (8.0 - rows[("AGX Orin 64GB", "fp16")]["bytes"] / 1e12 * 1e3) * 1980 / 1300)
    assert nano["quamba_published_ms"] == 60.2 and rows[("Orin Nano 8GB", "fp16")]["quamba_published_ms"] == 103.6
    assert all("quamba_published_ms" not in r for (device, _), r in rows.items() if device != "Orin Nano 8GB")
    for r in report["rows"]:  # more bandwidth never projects slower
        faster = rows[("AGX Orin 64GB", r["precision"])]
        assert faster["tpot_ms"]["high"] <= r["tpot_ms"]["high"]


def test_main_writes_labelled_outputs(inputs, tmp_path, capsys):
    out = tmp_path / "out"
    op.main(["--kernel-timing", str(inputs[0]), "--latency", str(inputs[1]), "--out", str(out)])
    table = capsys.readouterr().out
    assert "PROJECTION, NOT A MEASUREMENT" in table.splitlines()[0]
    report = json.loads((out / "orin_projection.json").read_text())
    assert report["kind"] == "projection, not a measurement"
    assert (out / "orin_projection.png").read_bytes()[:4] == b"\x89PNG"
    op.main(["--kernel-timing", str(inputs[0]), "--latency", str(inputs[1]), "--out", str(out), "--json"])
    printed = json.loads(capsys.readouterr().out)  # exactly one JSON object
    print(table)
    assert printed["kind"] == report["kind"] and printed["rows"] == report["rows"]


def test_every_typed_number_is_cited():
    cited = [v for v in vars(op).values() if isinstance(v, op.Cited)]
    cited += [c for d in op.ORIN_DEVICES for c in (d.peak_gb_per_s, d.gpu_mhz)]
    cited += list(op.QUAMBA_ORIN_NANO_2P8B_MS.values())
    cited += [v for v in vars(decode_plan).values() if isinstance(v, op.Cited)]
    cited += [c for v in vars(decode_plan).values() if isinstance(v, tuple) for c in v if isinstance(c, op.Cited)]
    kinds = {"datasheet", "published measurement", "paper figure", "issue target", "assumption"}
    print(sorted({c.kind for c in cited}))
    assert len(cited) >= 15
    assert all(c.kind in kinds and len(c.source) > 20 and math.isfinite(c.value) for c in cited)


def test_quamba_figures_match_the_abstract():
    q = op.QUAMBA_ORIN_NANO_2P8B_MS
    assert round(q["fp16"].value / q["int8"].value, 2) == op.QUAMBA_SPEEDUP.value


@pytest.mark.parametrize("mutate, message", [
    (lambda kt, lat: kt.unlink(), "does not exist"),
    (lambda kt, lat: kt.write_text("{"), "is not JSON"),
    (lambda kt, lat: lat.write_text(json.dumps({"rows": []})), "not the output of"),
    (lambda kt, lat: lat.write_text(json.dumps(latency_fixture(per_layer=8))), "the chain changed"),
])
def test_bad_inputs_exit_with_one_line(inputs, tmp_path, mutate, message):
    mutate(*inputs)
    with pytest.raises(SystemExit) as info:
        op.main(["--kernel-timing", str(inputs[0]), "--latency", str(inputs[1]), "--out", str(tmp_path / "o")])
    print(info.value.code)
    assert message in str(info.value.code) and "\n" not in str(info.value.code)


def test_decode_plan_arithmetic(inputs, tmp_path):
    ctx = decode_plan.load_context(*inputs)
    report = decode_plan.build(ctx, *inputs)
    c = op.mamba_config("2.8b")
    L, di, d = c.n_layer, c.d_inner, c.d_model
    rows = {r["key"]: r for r in report["decode"]}
    assert ctx.floor_us == 2.0 and ctx.measured_us["state copies (copy_states)"] == 25.0
    assert ctx.measured_us["residual add (float32)"] == 80.0
    assert ctx.measured_us["lm_head fp16 GEMV (tied embedding)"] == 70.0
    assert rows["S0"]["h200_graph_ms"] == (5.0, 5.0) and rows["S0"]["h200_tpot_ms"] == (5.5, 5.5)
    assert rows["S1"]["host_gain_ms"] == pytest.approx(0.5)
    assert rows["S1"]["h200_tpot_ms"][0] == pytest.approx(rows["S1"]["h200_graph_ms"][0])  # no host time left
    assert rows["S2"]["h200_gain_ms"] == pytest.approx((0.025, 0.025))
    assert rows["S1"]["bytes"] - rows["S2"]["bytes"] == 2 * L * (di * c.d_conv + 4 * di * c.d_state)
    assert rows["S3"]["launches_before"] - rows["S3"]["launches"] == 3 * L
    assert rows["S5"]["launches_before"] - rows["S5"]["launches"] == L
    assert rows["S5"]["bytes_before"] - rows["S5"]["bytes"] == L * 8 * d
    in_out = op.int8_decode_step(c)[1].bytes + op.int8_decode_step(c)[7].bytes
    assert rows["S6"]["h200_gain_ms"][0] == pytest.approx(L * (10.0 + 5.0) / 1e3 - in_out / (0.85 * 1e12) * 1e3)
    assert rows["S8"]["launches"] == 4 * L + 6  # in_proj, fused, Hadamard stage, out_proj; 6 per token
    for before, after in zip(report["decode"], report["decode"][1:]):  # cumulative: graph = previous - gain
        assert after["h200_graph_ms"][0] == pytest.approx(before["h200_graph_ms"][0] - after["h200_gain_ms"][1])
    prefill = {p["key"]: p["ttft_ms"] for p in report["prefill"]}
    assert prefill["P0"] == (60.0, 60.0)
    assert prefill["P1"][0] == pytest.approx(L * 300.0 / 1e3 + 0.07)
    assert prefill["P3"][0] < prefill["P2"][0] < prefill["P1"][0]
    assert report["kind"] == "prediction, not a measurement"


def test_decode_plan_main_prints_tables(inputs, tmp_path, capsys):
    decode_plan.main(["--kernel-timing", str(inputs[0]), "--latency", str(inputs[1]), "--out", str(tmp_path)])
    text = capsys.readouterr().out
    print(text)
    assert "PREDICTION, NOT A MEASUREMENT" in text.splitlines()[0]
    assert sum(line.startswith("| S") for line in text.splitlines()) == 9
    assert json.loads((tmp_path / "decode_plan.json").read_text())["shape"] == "2.8b"


def test_a_step_that_removes_a_missing_kernel_is_refused():
    step = decode_plan.Step("S9", "t", ("no such kernel",), (), (0.0, 0.0), 0.0, 0.0, "-")
    with pytest.raises(decode_plan.InputError, match="no such kernel"):
        decode_plan.apply(op.int8_decode_step(op.mamba_config("130m")), step)


def test_seeded_sampling_is_an_argmax_of_p_over_exponentials():
    """DECODE_PLAN.md S1's basis: torch.multinomial(p, 1, generator=g) == argmax(p / q) with q ~ Exp(1) drawn from
    the same generator, so a GPU sampler can take the argmax of host-drawn q and give the host's tokens."""
    for seed in range(20):
        p = torch.softmax(torch.randn(5000, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * 3, 0)
        p[::7] = 0.0  # top-k / top-p masked tokens
        drawn = torch.multinomial(p, 1, generator=torch.Generator().manual_seed(seed))
        q = torch.empty_like(p).exponential_(1, generator=torch.Generator().manual_seed(seed))
        assert int(drawn) == int(torch.argmax(p / q))
