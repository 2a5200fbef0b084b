"""Per-layer SQNR of Quamba2 (Mamba2) models (edge_quamba.eval.sqnr): one row per layer and a column per Mamba2
site, every site fp vs the dequantized codes (ssm_input at its per-group scales) with the fp reference in the
quantized model's sort-and-cluster channel order; W4A16 reports the mixer output only."""

import copy

import pytest
import torch

from edge_quamba.errors import InputError
from edge_quamba.eval.sqnr import MAMBA2_TENSORS, WEIGHT_ONLY_TENSORS, layer_sqnr, sqnr_tensors
from edge_quamba.quant.quamba2 import quantize_reordered, reorder_for_quamba2
from edge_quamba.quant.sites import MAMBA2_SITE_NAMES
from test_quamba2 import Q2, calib_data, fp_mamba2

N_LAYER = 3


def quantized_pair(fp_model, qconfig):
    """(the fp reference in the quantized model's channel order, the quantized model)."""
    reference, plans = reorder_for_quamba2(fp_model, calib_data(), qconfig, progress=False)
    return reference, quantize_reordered(reference, plans, calib_data(), qconfig, progress=False)


def show(table):
    for i, layer in enumerate(table):
        print(i, {k: round(v, 1) for k, v in layer.items()})


@pytest.fixture(scope="module")
def fp32_model():
    return fp_mamba2(dtype=torch.float32, seed=5, num_hidden_layers=N_LAYER)


@pytest.fixture(scope="module")
def w8a8(fp32_model):
    return quantized_pair(fp32_model, Q2())


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, 120, (2, 24), generator=torch.Generator().manual_seed(3))


def corrupted(q_model, key: str, index: int | None = None, factor: float = 1 / 16):
    """A copy of q_model with the scale buffer ``key`` (or its element ``index``) multiplied by ``factor``, loaded as
    an artifact would be (load_state_dict, which drops the mixer's cached scales)."""
    model = copy.deepcopy(q_model)
    state = model.state_dict()
    scale = state[key].clone()
    if index is None:
        scale *= factor
    else:
        scale.view(-1)[index] *= factor
    state[key] = scale
    model.load_state_dict(state)
    return model


def test_w8a8_table_has_a_row_per_layer_and_a_plausible_column_per_site(w8a8, tokens):
    reference, q = w8a8
    table = layer_sqnr(reference, q, tokens)
    show(table)
    assert sqnr_tensors(q) == MAMBA2_TENSORS == (*MAMBA2_SITE_NAMES, "mixer_output")
    assert len(table) == N_LAYER and all(tuple(layer) == MAMBA2_TENSORS for layer in table)
    # int8 sites on a random tiny model: above ~15 dB everywhere (errors accumulate down the stack), above 25 dB in
    # the first layer, and below the ~50 dB an 8-bit code can carry
    assert all(15 < layer[name] < 50 for layer in table for name in MAMBA2_TENSORS)
    assert all(25 < table[0][name] for name in MAMBA2_SITE_NAMES)


def test_a_site_whose_codes_are_exact_has_a_very_high_sqnr(tokens):
    """Embeddings of +-1 and a first pre-norm weight of k / 64 (integers k, |k| <= 127, max 127): every token's norm
    output is +-k r / 64 (r = 1 / sqrt(1 + eps)), so the calibrated scale r / 64 gives every value an exact code and
    layer 0's in_proj_input differs from fp by float rounding only; the sites after it keep int8 error."""
    model = fp_mamba2(dtype=torch.float32, seed=6, num_hidden_layers=N_LAYER)
    g = torch.Generator().manual_seed(6)
    with torch.no_grad():
        emb = model.backbone.embeddings.weight
        emb.copy_(torch.randint(0, 2, emb.shape, generator=g).float() * 2 - 1)
        norm = model.backbone.layers[0].norm.weight
        k = torch.randint(-127, 128, norm.shape, generator=g).float()
        k[0] = 127
        norm.copy_(k / 64)
    table = layer_sqnr(*quantized_pair(model, Q2()), tokens)
    show(table)
    assert table[0]["in_proj_input"] > 100
    assert all(10 < table[0][name] < 50 for name in MAMBA2_TENSORS if name != "in_proj_input")


@pytest.mark.parametrize("key, index", [("z_scale", None), ("xBC_scale", None), ("dt_scale", None),
                                        ("x_scale", "largest"), ("B_scale", 1)])
def test_a_corrupted_scale_lowers_its_layers_sqnr_and_no_earlier_layer(w8a8, tokens, key, index):
    """Layer 1's scale (per tensor, or one group of a per-group scale) made 16x finer, so that most of its values
    clip: its site in layer 1 loses several dB, while layer 0 and the sites before it in layer 1 are unchanged.
    Fails if the taps, the per-group dequantization or the order of layers or sites is wired wrong."""
    reference, q = w8a8
    buffer = getattr(q.backbone.layers[1].mixer, key)
    if index == "largest":  # the x group with the widest range
        index = int(buffer.flatten().argmax())
    site = {"x_scale": "ssm_input", "B_scale": "ssm_input"}.get(key, key.removesuffix("_scale"))
    before = layer_sqnr(reference, q, tokens)
    after = layer_sqnr(reference, corrupted(q, f"backbone.layers.1.mixer.{key}", index), tokens)
    print(key, index, "layer 1", site, round(before[1][site], 1), "->", round(after[1][site], 1))
    upstream = MAMBA2_TENSORS[:MAMBA2_TENSORS.index(site)]
    assert after[0] == before[0] and all(after[1][name] == before[1][name] for name in upstream)
    assert after[1][site] < before[1][site] - 3


def test_the_fp_model_must_be_in_the_quantized_channel_order(fp32_model, w8a8, tokens):
    """The un-reordered fp model would compare each x channel with another channel's codes: refused."""
    _, q = w8a8
    assert q.backbone.layers[0].mixer.x_scale.numel() > 1  # sort-and-cluster is on
    with pytest.raises(InputError, match="layer 0 of the fp model is not in the quantized model's channel order"):
        layer_sqnr(fp32_model, q, tokens)


def test_clustered_x_scales_beat_one_x_scale_at_ssm_input(tokens):
    """With an outlier head per SSD group, ssm_input dequantized at its group scales is closer to fp than at one
    scale (what sort-and-cluster is for)."""
    model = fp_mamba2(dtype=torch.float32, seed=5, num_hidden_layers=N_LAYER)
    c = model.config
    with torch.no_grad():
        for block in model.backbone.layers:
            for head in (1, 6):
                block.mixer.in_proj.weight[c.d_inner + head * c.headdim:c.d_inner + (head + 1) * c.headdim] *= 8
    grouped = layer_sqnr(*quantized_pair(model, Q2()), tokens)
    single = layer_sqnr(*quantized_pair(model, Q2(sort_cluster=False)), tokens)
    print("grouped", [round(layer["ssm_input"], 1) for layer in grouped])
    print("one x scale", [round(layer["ssm_input"], 1) for layer in single])
    assert grouped[0]["ssm_input"] > single[0]["ssm_input"] + 1


def test_w4a8_has_every_site_and_w4a16_the_mixer_output_only(fp32_model, tokens):
    w4a8 = layer_sqnr(*quantized_pair(fp32_model, Q2(bits="w4a8", group_size=16)), tokens)
    w4a16 = layer_sqnr(*quantized_pair(fp32_model, Q2(bits="w4a16", group_size=16)), tokens)
    show(w4a8)
    show(w4a16)
    assert len(w4a8) == len(w4a16) == N_LAYER
    assert all(tuple(layer) == MAMBA2_TENSORS for layer in w4a8)
    assert all(tuple(layer) == WEIGHT_ONLY_TENSORS for layer in w4a16)
    # int4 weights in groups of 16 on a random tiny model: well above 0 dB, finite
    assert all(5 < v < 50 for table in (w4a8, w4a16) for layer in table for v in layer.values())
