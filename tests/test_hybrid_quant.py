"""The quantized hybrid reference (Quamba2 Mamba2 blocks, int8 / int4 / float attention and MLP linears, float16 or
int8 KV cache): decode equals prefill (bit for bit wherever activations are int8), the output tracks fp (a floor),
int8 arithmetic happens only in torch.ops.edge_quamba, the per-layer SQNR table reports every linear and site, the
recipe's knobs refuse what is not built, and `quantize` writes an artifact that loads back to the same model."""

import json
import math

import pytest
import torch

from edge_quamba.errors import ConfigError
from edge_quamba.eval.sqnr_hybrid import hybrid_layer_sqnr
from edge_quamba.models.attention import KVState
from edge_quamba.quant.calibrate import CalibrationData
from edge_quamba.quant.hybrid_qmodel import QuantHybridMixer
from edge_quamba.quant.hybrid_quant import hybrid_quantize, quantize_reordered_hybrid, reorder_hybrid
from edge_quamba.quant.mamba2_qmodel import QuantMamba2Mixer
from edge_quamba.quant.qmodel import Int4Linear, QuantConfig, QuantLinear
from helpers import decode_stepwise, report
from hybrid_helpers import random_hf_bamba, random_hf_nemotron_h, reference_from_hf

OPTIONS = {
    "w8a8": {},
    "kv_int8": dict(kv_cache="int8"),
    "float_attn_mlp": dict(quantize_attn_mlp=False),
    "w4a8": dict(bits="w4a8", group_size=16),
    "w4a16": dict(bits="w4a16", group_size=16),
}


def Q2(**knobs) -> QuantConfig:
    return QuantConfig(method="quamba2", **knobs)


def calib_data() -> CalibrationData:
    tokens = torch.randint(0, 120, (8, 32), generator=torch.Generator().manual_seed(0))
    return CalibrationData(tokens=tokens, source="random", sha256="0" * 64)


def sqnr_db(ref, approx) -> float:
    return 10 * math.log10(float(ref.double().pow(2).sum() / (ref.double() - approx.double()).pow(2).sum()))


@pytest.fixture(scope="module")
def fp_models():
    return {"nemotron_h": reference_from_hf(random_hf_nemotron_h(seed=5), torch.float32),
            "bamba": reference_from_hf(random_hf_bamba(seed=6), torch.float32)}


@pytest.fixture(scope="module")
def quantized(fp_models):
    return {(arch, option): hybrid_quantize(fp, calib_data(), Q2(**knobs), progress=False)
            for arch, fp in fp_models.items() for option, knobs in OPTIONS.items()}


@pytest.mark.parametrize("option", sorted(OPTIONS))
@pytest.mark.parametrize("arch", ["nemotron_h", "bamba"])
def test_quantized_hybrid_step_decode_equals_prefill(quantized, fp_models, arch, option):
    """Token by token through the explicit states (Mamba2 int8 conv / float32 ssm states, the KV cache) equals one
    prefill: bit for bit with int8 activations (the attention computes a prefill row by row, as decode does), to
    float rounding where linears are float (their prefill and decode GEMMs sum in other orders, and a Mamba2 code after
    them may then round apart at a tie; float16 at w4a16). The output tracks fp (a floor)."""
    q = quantized[arch, option]
    tokens = torch.randint(0, 120, (2, 12), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        full, final = q(tokens)
        ref, _ = fp_models[arch](tokens)
    stepped, states = decode_stepwise(q, tokens)
    tolerance = {"w8a8": 0.0, "kv_int8": 0.0, "w4a8": 0.0, "float_attn_mlp": 1e-3, "w4a16": 2e-2}[option]
    assert report(f"{arch} {option} step vs prefill", stepped.float() - full.float()) <= tolerance
    for a, b in zip(final, states, strict=True):
        if isinstance(a, KVState):
            assert a.key.dtype == (torch.int8 if option == "kv_int8" else torch.float16)
            assert a.length == b.length == 12 and report("key cache", a.key.float() - b.key.float()) <= tolerance
    db = sqnr_db(ref, full.float())
    print(f"{arch} {option}: logit SQNR vs fp {db:.1f} dB")
    assert db > (20 if option in ("w8a8", "kv_int8", "float_attn_mlp") else 6)


def test_linears_follow_the_bit_width(quantized):
    kinds = {option: {type(getattr(q.backbone.layers[i].mixer, name)) for i, name in
                      ((1, "up_proj"), (1, "gate_proj"), (2, "q_proj"), (2, "o_proj"))}
             for (arch, option), q in quantized.items() if arch == "bamba"}
    print(kinds)
    assert kinds["w8a8"] == {QuantLinear} and kinds["w4a8"] == {Int4Linear} and kinds["w4a16"] == {Int4Linear}
    assert kinds["float_attn_mlp"] == {torch.nn.Linear}
    mixers = [b.mixer for b in quantized["bamba", "w8a8"].backbone.layers]
    assert [type(m) for m in mixers] == [QuantMamba2Mixer, QuantHybridMixer, QuantHybridMixer, QuantHybridMixer,
                                         QuantMamba2Mixer, QuantHybridMixer]  # M - * - M -
    assert mixers[2].sites == ("qkv_input", "o_proj_input") and mixers[3].sites == ("mlp_input", "down_proj_input")
    assert quantized["bamba", "kv_int8"].backbone.layers[2].mixer.sites == \
        ("qkv_input", "k_cache", "v_cache", "o_proj_input")
    assert quantized["bamba", "float_attn_mlp"].backbone.layers[2].mixer.sites == ()


@pytest.mark.parametrize("option", ["w8a8", "kv_int8"])
def test_hybrid_model_calls_only_the_edge_quamba_ops(quantized, option):
    """Every int8 code is made by torch.ops.edge_quamba (prefill and decode); aten only views int8 tensors, makes
    the zero states, appends codes to the int8 KV cache (cat: a copy) and reads them back (primitives.dequantize's
    read_codes: clamp at -127, the project's rule for reading codes)."""
    from test_data_flow import VIEWS, record_prefill_and_decode

    tokens = torch.randint(0, 120, (2, 9), generator=torch.Generator().manual_seed(0))
    prefill, decode, _ = record_prefill_and_decode(quantized["bamba", option], tokens)
    print("prefill:", sorted(prefill.edge_quamba), "int8 aten:", sorted(prefill.int8_aten))
    assert {"rms_norm_quantize", "int8_linear", "quantize", "int8_ssd_scan"} <= prefill.edge_quamba
    # the Mamba2 blocks' decode: in_proj and the conv step in one op
    assert {"int8_ssd_scan_update", "int8_linear_quantize_conv_update"} <= decode.edge_quamba
    allowed = VIEWS | {"zeros", "cat", "clamp"}
    assert prefill.int8_aten <= allowed and decode.int8_aten <= allowed


def test_per_layer_sqnr_reports_every_linear_and_site(fp_models):
    fp = fp_models["bamba"]
    config = Q2(kv_cache="int8")
    reordered, plans = reorder_hybrid(fp, calib_data(), config, progress=False)
    q = quantize_reordered_hybrid(reordered, plans, calib_data(), config, progress=False)
    tokens = torch.randint(0, 120, (2, 16), generator=torch.Generator().manual_seed(2))
    table = hybrid_layer_sqnr(reordered, q, tokens)
    for i, row in enumerate(table):
        print(i, {k: round(v, 1) for k, v in row.items()})
    assert list(table[0]) == ["in_proj_input", "z", "xBC", "dt", "ssm_input", "out_proj_input", "mixer_output"]
    assert list(table[1]) == ["mlp_input", "gate_proj", "up_proj", "down_proj_input", "mixer_output"]
    assert list(table[2]) == ["qkv_input", "q_proj", "k_proj", "v_proj", "k_cache", "v_cache", "o_proj_input",
                              "mixer_output"]
    assert all(15 < db < 60 for row in table for db in row.values())


def test_hybrid_knobs_round_trip_and_refusals():
    config = Q2(kv_cache="int8", quantize_attn_mlp=False)
    assert QuantConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ConfigError, match="--kv-cache 'int4' is not one of float16, int8"):
        Q2(kv_cache="int4")
    with pytest.raises(ConfigError, match="--kv-cache int8 is built for w8a8 and w4a8"):
        Q2(kv_cache="int8", bits="w4a16")


def test_quantize_cli_round_trip(tmp_path):
    """`quantize --method quamba2` on a hybrid folder writes an artifact that loads back (hashes checked) to the
    same model, and `eval --backend ref` runs it; `--method quamba` is refused in one line."""
    from edge_quamba.folders import load_quantized_model
    from helpers import TEXT, cli_in_process, make_tokenizer, one_error_line

    tokenizer = make_tokenizer(120)
    folder = tmp_path / "fp"
    random_hf_nemotron_h(seed=9, vocab_size=tokenizer.get_vocab_size()).save_pretrained(folder)
    tokenizer.save(str(folder / "tokenizer.json"))
    text = tmp_path / "text.txt"
    text.write_text(TEXT * 3)
    args = ("--calib-data", str(text), "--calib-samples", "4", "--calib-seq-len", "16")
    proc = cli_in_process("quantize", "--model", str(folder), "--out", str(tmp_path / "q"), "--method", "quamba2",
                          "--kv-cache", "int8", *args)
    assert proc.returncode == 0, proc.stderr
    q = load_quantized_model(tmp_path / "q")
    assert q.backbone.layers[2].mixer.kv_int8 and isinstance(q.backbone.layers[2].mixer.k_proj, QuantLinear)
    ev = cli_in_process("eval", "--model", str(tmp_path / "q"), "--data", str(text), "--seq-len", "16",
                        "--max-tokens", "48", "--json")
    assert ev.returncode == 0, ev.stderr
    tokens = torch.tensor(tokenizer.encode(TEXT).ids[:48]).view(3, 16)
    with torch.no_grad():
        logits, _ = q(tokens)
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
    assert abs(json.loads(ev.stdout)["nll_per_token"] - float(nll)) <= 1e-5
    line = one_error_line(cli_in_process("quantize", "--model", str(folder), "--out", str(tmp_path / "r"), *args))
    assert "hybrid model's Mamba2 layers are quantized with --method quamba2" in line
