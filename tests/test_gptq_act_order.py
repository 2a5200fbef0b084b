"""GPTQ in activation order with static groups (edge_quamba/quant/gptq.py): the stored int4 convention, agreement
with a literal OBS loop, round-to-nearest under a diagonal Hessian, a lower output error than round-to-nearest on
correlated inputs, and QuantConfig.gptq_act_order through quant_config.json, the CLI and old artifacts."""

import json

import pytest
import torch

from edge_quamba.errors import ConfigError
from edge_quamba.integrity import seal
from edge_quamba.folders import load_quantized_model, open_model
from edge_quamba.quant.artifact import QUANT_CONFIG
from edge_quamba.quant.gptq import DEFAULT_DAMP, HessianAccumulator, gptq_quantize
from edge_quamba.quant.pipeline import quantize_checkpoint
from edge_quamba.quant.primitives import (dequantize_int4, int4_group_scales, quantize_int4, quantize_weight_int4,
                                          unpack_int4)
from edge_quamba.quant.qmodel import Int4Linear, QuantConfig
from helpers import TEXT, cli_in_process, make_tokenizer, random_hf_model, save_transformers_layout


def correlated_hessian(k: int, tokens: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(X (tokens, k) float32 with correlated channels of different magnitudes, its H (k, k) float64)."""
    gen = torch.Generator().manual_seed(seed)
    mix = torch.randn(k, k, generator=gen) / k ** 0.5 + torch.eye(k)
    x = (torch.randn(tokens, k, generator=gen) @ mix) * (torch.rand(k, generator=gen) * 3 + 0.1)
    acc = HessianAccumulator(k)
    acc.add(x)
    return x, acc.H


def literal_act_order(w: torch.Tensor, H: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The same problem solved the way the OBS papers write it: static RTN scales; then, for the column p of largest
    H[p, p] among those left, round it at its group's scale, move its error onto every column still left with the
    inverse Hessian of the columns left (e = (w_p - ŵ_p) / Hinv[p, p]; w -= e Hinv[p, :]), and remove p from Hinv
    (Hinv -= Hinv[:, p] Hinv[p, :] / Hinv[p, p]). No Cholesky factor, no permuted copy, no lazy batch."""
    W, H = w.double().clone(), H.clone()
    H.diagonal().add_(DEFAULT_DAMP * float(H.diagonal().mean()))
    scales = int4_group_scales(w, group_size)
    Hinv = torch.linalg.inv(H)
    q = torch.zeros(w.shape, dtype=torch.int8)
    for p in torch.argsort(torch.diagonal(H), descending=True, stable=True).tolist():
        s = scales[:, p // group_size]
        q[:, p] = quantize_int4(W[:, p], s)
        error = (W[:, p] - (q[:, p].float() * s).double()) / Hinv[p, p]
        W -= error[:, None] * Hinv[p][None, :]
        Hinv -= Hinv[:, p, None] @ Hinv[None, p, :] / Hinv[p, p]
    return q, scales


def test_act_order_keeps_the_stored_convention_and_matches_the_literal_obs_loop():
    _, H = correlated_hessian(96, 2048, seed=1)
    w = torch.randn(24, 96, generator=torch.Generator().manual_seed(2))
    q, s = gptq_quantize(w, H, 32, act_order=True)
    assert q.dtype == torch.int8 and q.shape == (24, 96) and int(q.abs().max()) <= 7
    assert s.dtype == torch.float32 and torch.equal(s, int4_group_scales(w, 32))  # static: the RTN scales
    assert torch.diagonal(H).argsort(descending=True)[:5].tolist() != list(range(5))  # the order is not natural
    q_literal, _ = literal_act_order(w, H, 32)
    mismatches = int((q != q_literal).sum())
    print(f"codes differing from the literal OBS loop: {mismatches} of {q.numel()}")
    assert mismatches == 0
    q_natural, _ = gptq_quantize(w, H, 32)
    assert not torch.equal(q, q_natural)
    module = Int4Linear.from_weight(w, None, 32, H, act_order=True)  # stored packed in natural column order
    assert torch.equal(unpack_int4(module.weight_packed, 96), q) and torch.equal(module.weight_scale, s)


@pytest.mark.parametrize("diagonal", ["identity", "unequal"])
def test_both_orders_are_round_to_nearest_under_a_diagonal_hessian(diagonal):
    w = torch.randn(32, 100, generator=torch.Generator().manual_seed(3))
    H = torch.eye(100, dtype=torch.float64)
    if diagonal == "unequal":  # act order then visits the columns in another order; no error moves all the same
        H = torch.diag(torch.rand(100, generator=torch.Generator().manual_seed(4), dtype=torch.float64) + 0.1)
    q_rtn, s_rtn = quantize_weight_int4(w, 32)
    for act_order in (False, True):
        q, s = gptq_quantize(w, H, 32, act_order=act_order)
        assert torch.equal(s, s_rtn) and torch.equal(q, q_rtn), f"act_order={act_order}"


def test_act_order_lowers_the_output_error_against_round_to_nearest():
    x, H = correlated_hessian(160, 4096, seed=7)
    w = torch.randn(48, 160, generator=torch.Generator().manual_seed(8))

    def output_error(q, s):  # ||(W - Ŵ) X^T||² / tokens
        return float(((x.double() @ (w.double() - dequantize_int4(q, s, 64).double()).T) ** 2).mean())

    errors = {"rtn": output_error(*quantize_weight_int4(w, 64)),
              "natural": output_error(*gptq_quantize(w, H, 64)),
              "act order": output_error(*gptq_quantize(w, H, 64, act_order=True))}
    print({name: f"{e:.4e}" for name, e in errors.items()})
    assert errors["act order"] < 0.8 * errors["rtn"]


def test_act_order_is_deterministic_and_handles_dead_inputs():
    x, _ = correlated_hessian(64, 512, seed=10)
    x[:, 5] = 0
    acc = HessianAccumulator(64)
    acc.add(x)
    w = torch.randn(16, 64, generator=torch.Generator().manual_seed(11))
    first, second = gptq_quantize(w, acc.H, 32, act_order=True), gptq_quantize(w, acc.H, 32, act_order=True)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert int(first[0][:, 5].abs().sum()) == 0


# ------------------------------------------------------------------------------------------- config and artifacts


def test_config_field_round_trips_and_is_checked():
    for act_order in (False, True):
        qconfig = QuantConfig(bits="w4a8", gptq_act_order=act_order)
        assert QuantConfig.from_dict(json.loads(json.dumps(qconfig.to_dict()))) == qconfig
    old = {k: v for k, v in QuantConfig(bits="w4a8").to_dict().items() if k != "gptq_act_order"}
    assert QuantConfig.from_dict(old).gptq_act_order is False  # written before the key: natural order
    with pytest.raises(ConfigError, match="gptq_act_order must be true or false"):
        QuantConfig(gptq_act_order="yes")


@pytest.fixture(scope="module")
def fp_folder(tmp_path_factory):
    tokenizer = make_tokenizer(120)
    hf = random_hf_model(seed=21, vocab_size=tokenizer.get_vocab_size(), noise=0.2, hidden_size=64,
                         num_hidden_layers=2, state_size=8)
    folder = save_transformers_layout(hf, tmp_path_factory.mktemp("fp"), tokenizer)
    (folder.parent / "calib.txt").write_text(TEXT * 4)
    return folder


def test_cli_records_the_order_and_an_artifact_without_the_key_loads_as_natural(fp_folder, tmp_path):
    calib = fp_folder.parent / "calib.txt"
    natural = tmp_path / "natural"
    proc = cli_in_process("quantize", "--model", str(fp_folder), "--out", str(natural), "--bits", "w4a16",
                          "--group-size", "32", "--gptq-order", "natural", "--calib-data", str(calib),
                          "--calib-samples", "2", "--calib-seq-len", "32")
    assert proc.returncode == 0, proc.stderr
    assert open_model(str(natural)).quant.gptq_act_order is False
    act = tmp_path / "act"
    quantize_checkpoint(model=str(fp_folder), out=act, calib_data=calib, progress=False,
                        qconfig=QuantConfig(bits="w4a16", group_size=32, calib_samples=2, calib_seq_len=32,
                                            gptq_act_order=True))
    assert json.loads((act / QUANT_CONFIG).read_text())["quantization"]["gptq_act_order"] is True
    codes = {name: load_quantized_model(folder).backbone.layers[0].mixer.in_proj.codes()
             for name, folder in (("natural", natural), ("act", act))}
    assert not torch.equal(codes["natural"], codes["act"])  # the flag reached GPTQ

    raw = json.loads((natural / QUANT_CONFIG).read_text())  # as written before the key existed
    del raw["quantization"]["gptq_act_order"], raw["config_sha256"]
    (natural / QUANT_CONFIG).write_text(json.dumps(seal(raw)))
    assert open_model(str(natural)).quant.gptq_act_order is False
    tokens = torch.tensor([[3, 17, 42, 5, 9]])
    with torch.inference_mode():
        old = load_quantized_model(natural)
        assert torch.equal(old.backbone.layers[0].mixer.in_proj.codes(), codes["natural"])
        assert torch.isfinite(old(tokens)[0]).all()


@pytest.mark.parametrize("bits", ["w4a8", "w4a16"])
def test_mamba2_four_bit_models_take_the_order(bits):
    """Quamba2 (Mamba2) passes gptq_act_order to GPTQ: the codes change, the layout does not (at w4a16 the scales are
    the static RTN scales of the fp weight), and decode still equals prefill."""
    from edge_quamba.quant.quamba2 import quamba2_quantize
    from helpers import decode_stepwise, report
    from test_quamba2 import Q2, calib_data, fp_mamba2

    fp = fp_mamba2(dtype=torch.float32, seed=5)
    models = {act_order: quamba2_quantize(fp, calib_data(), Q2(bits=bits, group_size=16, gptq_act_order=act_order),
                                          progress=False) for act_order in (False, True)}
    in_proj = {act_order: m.backbone.layers[0].mixer.in_proj for act_order, m in models.items()}
    assert in_proj[True].weight_scale.shape == in_proj[False].weight_scale.shape
    assert not torch.equal(in_proj[True].codes(), in_proj[False].codes())
    if bits == "w4a16":  # (w4a8's in_proj rows are reordered by sort-and-cluster first)
        fp_weight = fp.backbone.layers[0].mixer.in_proj.weight
        assert torch.equal(in_proj[True].weight_scale, int4_group_scales(fp_weight, 16))
    tokens = torch.randint(0, 120, (1, 10), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        full, _ = models[True](tokens)
    stepped, _ = decode_stepwise(models[True], tokens)
    tolerance = 1e-4 if bits == "w4a8" else 2e-2  # as test_quamba2: float16 activations round differently at l = 1
    assert report(f"{bits} act order: step vs prefill", stepped.float() - full.float()) <= tolerance
