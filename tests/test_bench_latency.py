"""benchmarks/bench_latency.py and the mamba_ssm build helper, on the CPU: argument checks, the random quantized
model, the outputs (JSON, CSV, PNG) with a baseline that is not installed, the sm_90-only setup.py edit."""

import csv
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "benchmarks" / "gpu"))

import bench_latency  # noqa: E402
import latency_common  # noqa: E402
from keep_sm90 import keep_sm90  # noqa: E402

from edge_quamba.models.config import MambaConfig  # noqa: E402
from edge_quamba.quant.primitives import scale_from_amax  # noqa: E402


@pytest.mark.parametrize("argv, message", [
    (["--shapes", "7b"], "7b"),
    (["--impls", "vllm"], "vllm"),
    (["--new-tokens", "1"], "--new-tokens >= 2"),
    (["--shapes", ","], "empty"),
])
def test_bad_arguments_exit_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        bench_latency.parse_args(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_shapes_are_the_public_checkpoints():
    dims = {name: (bench_latency.mamba_config(name).d_model, bench_latency.mamba_config(name).n_layer,
                   bench_latency.mamba_config(name).d_inner) for name in bench_latency.SHAPES}
    assert dims == {"130m": (768, 24, 1536), "370m": (1024, 48, 2048), "1.4b": (2048, 48, 4096),
                    "2.8b": (2560, 64, 5120)}
    assert bench_latency.PADDED_VOCAB == 50280


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
def test_no_gpu_exits_with_one_line():
    with pytest.raises(SystemExit, match="needs an NVIDIA GPU"):
        bench_latency.main(["--shapes", "130m"])


def test_random_quantized_model_is_a_valid_seeded_quantized_model():
    config = MambaConfig(d_model=64, n_layer=2, vocab_size=256)
    a = bench_latency.random_quantized_model(config, seed=1, device="cpu")
    b = bench_latency.random_quantized_model(config, seed=1, device="cpu")
    mixer = a.backbone.layers[0].mixer
    assert a.lm_head.weight is a.backbone.embeddings.weight
    assert mixer.in_proj.weight.dtype == torch.int8 and int(mixer.in_proj.weight.abs().max()) == 127
    assert int(mixer.in_proj.weight.min()) >= -127
    assert float(mixer.u_scale) == float(scale_from_amax(bench_latency.SYNTHETIC_AMAX["u"]))
    assert torch.equal(mixer.A[0], -torch.arange(1.0, 17.0))
    for (key, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), key
    with torch.inference_mode():
        logits, _ = a(torch.randint(0, 256, (1, 9)))
    assert logits.shape == (1, 9, 256) and torch.isfinite(logits).all()


@pytest.mark.parametrize("bits", ["w4a8", "w4a16"])
def test_random_four_bit_models_run(bits):
    """The 4-bit rows' models: packed random codes, group scales (N, G), finite logits."""
    config = MambaConfig(d_model=64, n_layer=2, vocab_size=256)
    model = bench_latency.random_quantized_model(config, seed=1, device="cpu", bits=bits)
    in_proj = model.backbone.layers[0].mixer.in_proj
    assert in_proj.weight_packed.dtype == torch.uint8 and tuple(in_proj.weight_packed.shape) == (256, 32)
    assert tuple(in_proj.weight_scale.shape) == (256, 1)
    assert torch.equal(in_proj.weight_scale, torch.full((256, 1), (3 / 64) ** 0.5 / 7))  # unit gain at K = 64
    with torch.inference_mode():
        logits, _ = model(torch.randint(0, 256, (1, 9)))
    assert logits.shape == (1, 9, 256) and torch.isfinite(logits).all()


def test_four_bit_impls_are_accepted():
    args = bench_latency.parse_args(["--impls", "edge-quamba,edge-quamba-w4a8,edge-quamba-w4a16"])
    assert args.impls == ["edge-quamba", "edge-quamba-w4a8", "edge-quamba-w4a16"]


def test_missing_mamba_ssm_row_says_not_installed(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mamba_ssm" else real(name, *a))
    for shape, cfg in (("130m", {"layer": "Mamba1"}), ("m2-130m", latency_mamba2.MAMBA_SSM_CFG)):
        row = latency_common.bench_mamba_ssm(shape, 768, 24, bench_latency.VOCAB, cfg, [1, 2], 4, 1, 0, 1000.0)
        assert row == {"shape": shape, "impl": "mamba_ssm fp16 cg", "status": "not installed"}


def test_outputs_hold_every_row(tmp_path):
    ok = latency_common.row("130m", latency_common.IMPLS[0], 0.004, 0.0005, 2 * 10**9, 10**8, 4000.0, graph_ms=0.4)
    report = {"prompt_len": 512, "new_tokens": 128, "repeats": 5, "copy_bandwidth_gb_per_s": 4000.0,
              "environment": {"gpu": "test GPU"},
              "rows": [ok, latency_common.skipped("130m", latency_common.IMPLS[1], "not installed"),
                       latency_common.row("130m", latency_common.IMPLS[2], 0.5, 0.02, 3 * 10**9, 2 * 10**8, 4000.0)]}
    assert ok["achieved_gb_per_s"] == pytest.approx(200.0) and ok["fraction_of_copy_bandwidth"] == pytest.approx(0.05)
    paths = latency_common.write_outputs(report, tmp_path, "latency_test")
    assert [p.name for p in paths] == ["latency_test.json", "latency_test.csv", "latency_test.png"]
    assert json.loads(paths[0].read_text())["rows"][1]["status"] == "not installed"
    rows = list(csv.DictReader(paths[1].open()))
    assert list(rows[0]) == list(latency_common.CSV_FIELDS)
    assert [r["status"] for r in rows] == ["ok", "not installed", "ok"] and rows[1]["tpot_ms"] == ""
    assert paths[2].stat().st_size > 10_000
    latency_common.print_table(report)


SETUP_SNIPPET = '''
        cc_flag.append("-gencode")
        cc_flag.append("arch=compute_80,code=sm_80")
        if bare_metal_version >= Version("11.8"):
            cc_flag.append("-gencode")
            cc_flag.append("arch=compute_90,code=sm_90")
        if bare_metal_version >= Version("12.8"):
            cc_flag.append("-gencode")
            cc_flag.append("arch=compute_100,code=sm_100")
'''


def test_keep_sm90_leaves_one_gencode_pair_and_valid_python():
    text, dropped = keep_sm90("if True:\n    if True:\n        cc_flag = []\n" + SETUP_SNIPPET)
    print(text)
    assert dropped == 2
    assert text.count("arch=compute_") == 1 and text.count('"-gencode"') == 1
    compile(text, "setup.py", "exec")
    with pytest.raises(ValueError, match="exactly one sm_90"):
        keep_sm90(SETUP_SNIPPET.replace("compute_90,code=sm_90", "compute_89,code=sm_89"))


def small_record() -> dict:
    """A one-row bench_latency record, as a run writes it."""
    return {"prompt_len": 8, "new_tokens": 4, "repeats": 1, "copy_bandwidth_gb_per_s": 100.0,
            "environment": {"gpu": "test GPU"},
            "rows": [latency_common.row("2.8b", latency_common.IMPLS[1], 0.05, 0.004, 6 * 10**9, 5 * 10**9, 100.0)]}


def test_replot_rewrites_outputs_without_measuring(tmp_path):
    report = small_record()
    source = tmp_path / "earlier.json"
    source.write_text(json.dumps(report))
    bench_latency.main(["--replot", str(source), "--out", str(tmp_path / "out"), "--name", "again"])
    assert json.loads((tmp_path / "out" / "again.json").read_text()) == report
    assert (tmp_path / "out" / "again.png").stat().st_size > 10_000


def test_replot_without_out_rewrites_beside_the_record_not_the_default_results(tmp_path):
    report = small_record()
    source = tmp_path / "earlier.json"
    source.write_text(json.dumps(report))
    args = bench_latency.parse_args(["--replot", str(source)])
    assert (Path(args.out), args.name) == (tmp_path, "earlier")
    bench_latency.main(["--replot", str(source)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["earlier.csv", "earlier.json", "earlier.png"]
    assert json.loads(source.read_text()) == report
    measured = bench_latency.parse_args([])
    assert (Path(measured.out), measured.name) == (Path(bench_latency.__file__).parent / "results", "latency_h200")


# -- Mamba2 rows (benchmarks/latency_mamba2.py) ---------------------------------------------------------------------

import latency_mamba2  # noqa: E402


def test_mamba2_shapes_are_the_public_checkpoints():
    dims = {}
    for name in latency_mamba2.SHAPES:
        c = latency_mamba2.mamba2_config(name, bench_latency.PADDED_VOCAB)
        dims[name] = (c.d_model, c.n_layer, c.nheads, c.headdim, c.d_state, c.ngroups, c.conv_dim)
    assert dims == {"m2-130m": (768, 24, 24, 64, 128, 1, 1792), "m2-2.7b": (2560, 64, 80, 64, 128, 1, 5376)}
    assert bench_latency.parse_args(["--shapes", "2.8b,m2-2.7b"]).shapes == ["2.8b", "m2-2.7b"]


@pytest.mark.parametrize("bits", ["w8a8", "w4a8", "w4a16"])
def test_random_quantized_mamba2_model_runs_at_every_width(bits):
    from edge_quamba.models.config import Mamba2Config
    from edge_quamba.quant.qmodel import Int4Linear

    config = Mamba2Config(d_model=64, n_layer=2, vocab_size=256, d_state=16, headdim=16, ngroups=1)
    a = latency_mamba2.random_quantized_mamba2_model(config, bits, seed=1, device="cpu")
    b = latency_mamba2.random_quantized_mamba2_model(config, bits, seed=1, device="cpu")
    mixer = a.backbone.layers[0].mixer
    assert a.lm_head.weight is a.backbone.embeddings.weight
    assert isinstance(mixer.in_proj, Int4Linear) == (bits != "w8a8")
    if bits == "w4a8":
        codes = mixer.in_proj.codes()
        assert int(codes.abs().max()) == 7 and int(codes.min()) >= -7
    if bits != "w4a16":
        assert float(mixer.A.max()) < 0 and mixer.x_group.max() < mixer.x_scale.numel()
    for (key, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), key
    with torch.inference_mode():
        logits, _ = a(torch.randint(0, 256, (1, 9)))
    assert logits.shape == (1, 9, 256) and torch.isfinite(logits).all()


def test_mamba2_transformers_row_says_not_run():
    args = bench_latency.parse_args(["--shapes", "m2-130m"])
    row = latency_mamba2.bench("m2-130m", "transformers", [1, 2], args, 1000.0, bench_latency.VOCAB,
                               bench_latency.PADDED_VOCAB)
    assert row == {"shape": "m2-130m", "impl": "transformers fp16", "status": "not run for Mamba2 shapes"}


def test_markdown_table_pairs_each_row_with_its_host_argmax_twin():
    ok = latency_common.row("2.8b", latency_common.IMPLS[0], 0.05, 0.0028, 3 * 10**9, 2 * 10**9, 3000.0)
    twin = {**latency_common.row("2.8b", latency_common.IMPLS[0], 0.05, 0.0031, 3 * 10**9, 2 * 10**9, 3000.0),
            "impl": latency_common.IMPLS[0] + latency_common.HOST_ARGMAX_SUFFIX}
    failed = latency_common.skipped("2.8b", latency_common.IMPLS[4], "failed: NumericsError: NaN")
    table = latency_common.markdown_table({"rows": [ok, twin, failed]}, bench_latency.SHAPE_NAMES).splitlines()
    assert len(table) == 4 and table[2].startswith("| Mamba1 2.8b | edge-quamba cuda int8 | 50.0 | 2.800 | 3.100 |")
    assert table[3] == "| Mamba1 2.8b | edge-quamba cuda w4a16 | - | failed: NumericsError: NaN | - | - | - |"


@pytest.mark.parametrize("content", [None, "not json", "[1, 2]"])
def test_replot_of_an_unreadable_record_is_one_line(tmp_path, content):
    record = tmp_path / "latency.json"
    if content is not None:
        record.write_text(content)
    with pytest.raises(SystemExit) as exc:
        bench_latency.main(["--replot", str(record), "--out", str(tmp_path / "out")])
    assert "is not a readable record" in str(exc.value.code) and not (tmp_path / "out").exists()

