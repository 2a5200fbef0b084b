"""Invariants 1 and 2 for Mamba2: the fp reference is transformers' Mamba2ForCausalLM (both checkpoint layouts,
float64), chunked SSD equals the sequential recurrence, prefill resumes from explicit states, and step-by-step decode
equals the full forward. Bad Mamba2 configs are one-line errors."""

import json

import pytest
import torch

from edge_quamba.errors import CheckpointError, ConfigError
from edge_quamba.models.config import Mamba2Config
from edge_quamba.models.config_dispatch import parse_model_config
from edge_quamba.models.loading import load_fp_model
from edge_quamba.models.mamba2 import Mamba2LM, ssd_chunked, ssd_sequential
from helpers import (decode_stepwise, random_hf_mamba2, report, save_mamba_ssm_mamba2_layout,
                     save_transformers_layout, transformers_keeps_float64)

TOL_FLOAT64 = 1e-9
SEQ_LEN = 17

# Small configs over the options public checkpoints use; with 17 tokens the chunk sizes give partial last chunks
# (5, 4), one padded chunk (32) and one exact chunk (17).
CONFIGS = [
    dict(seed=0),
    dict(seed=1, n_groups=1, chunk_size=4, conv_kernel=3, use_bias=True, num_hidden_layers=3),
    dict(seed=2, hidden_size=24, expand=3, num_heads=9, head_dim=8, n_groups=3, use_conv_bias=False,
         residual_in_fp32=False, chunk_size=32, tie_word_embeddings=False),
    dict(seed=3, num_hidden_layers=1, num_heads=4, head_dim=16, n_groups=4, state_size=4, conv_kernel=2,
         chunk_size=SEQ_LEN, layer_norm_epsilon=1e-3),
]


def config_id(overrides):
    return f"seed{overrides['seed']}"


def hf_logits_float64(hf_model, tokens):
    with torch.no_grad(), transformers_keeps_float64():
        return hf_model.double()(tokens).logits


def reference_from_hf(hf, dtype=torch.float64) -> Mamba2LM:
    model = Mamba2LM(parse_model_config(hf.config.to_dict(), "test"), dtype=dtype)
    model.load_state_dict(hf.to(dtype).state_dict(), strict=False)  # a tied lm_head is the embedding
    return model.eval()


@pytest.mark.parametrize("overrides", CONFIGS, ids=config_id)
@pytest.mark.parametrize("layout", ["transformers", "mamba_ssm"])
def test_reference_matches_transformers_float64(tmp_path, overrides, layout):
    hf = random_hf_mamba2(**overrides)
    folder = tmp_path / layout
    if layout == "transformers":
        save_transformers_layout(hf, folder)
    else:
        save_mamba_ssm_mamba2_layout(hf, folder)
        # mamba_ssm fixes the gated norm's eps at 1e-5 whatever norm_epsilon says; make transformers compute that
        for block in hf.backbone.layers:
            block.mixer.norm.variance_epsilon = 1e-5
    ours = load_fp_model(folder, dtype=torch.float64)
    assert isinstance(ours, Mamba2LM) and ours.config.ngroups == hf.config.n_groups
    tokens = torch.randint(0, hf.config.vocab_size, (2, SEQ_LEN), generator=torch.Generator().manual_seed(7))
    expected = hf_logits_float64(hf, tokens)
    with torch.no_grad():
        logits, _ = ours(tokens)
    assert report(f"{layout} {overrides}", logits - expected) <= TOL_FLOAT64


@pytest.mark.parametrize("overrides", CONFIGS[:3], ids=config_id)
def test_prefill_from_states_matches_transformers_cache_float64(overrides):
    """forward(prefix) then forward(rest, states) equals transformers continuing from its cache (the chunked SSD
    with an initial state, the conv from a conv state), states included, and equals one full forward."""
    hf = random_hf_mamba2(**overrides).double()
    model = reference_from_hf(hf)
    tokens = torch.randint(0, hf.config.vocab_size, (2, SEQ_LEN), generator=torch.Generator().manual_seed(5))
    split = 7
    with torch.no_grad(), transformers_keeps_float64():
        first_hf = hf(tokens[:, :split], use_cache=True)
        rest_hf = hf(tokens[:, split:], cache=first_hf.cache, use_cache=True)
    with torch.no_grad():
        full, _ = model(tokens)
        first, states = model(tokens[:, :split])
        rest, states = model(tokens[:, split:], states)
    assert report("prefix vs transformers", first - first_hf.logits) <= TOL_FLOAT64
    assert report("continuation vs transformers", rest - rest_hf.logits) <= TOL_FLOAT64
    assert report("split vs one forward", torch.cat([first, rest], 1) - full) <= TOL_FLOAT64
    cache = rest_hf.cache
    for i, state in enumerate(states):
        assert report(f"ssm_state {i}", state.ssm_state - cache.get_recurrent_state(i, state_idx=0)) <= TOL_FLOAT64
        assert report(f"conv_state {i}", state.conv_state - cache.get_conv_state(i, state_idx=0)) <= TOL_FLOAT64


@pytest.mark.parametrize("chunk_size", [1, 3, 8, 13, 40])
@pytest.mark.parametrize("groups", [1, 3])
def test_chunked_ssd_equals_sequential_float64(chunk_size, groups):
    """The chunked SSD is the recurrence: every chunk size (one token, partial and exact chunks, one padded chunk),
    from a non-zero initial state, with large and tiny Δ."""
    g = torch.Generator().manual_seed(chunk_size * 10 + groups)
    b, l, h, p, n = 2, 13, 6, 4, 5
    x = torch.randn(b, l, h, p, generator=g, dtype=torch.float64)
    dt = torch.nn.functional.softplus(torch.randn(b, l, h, generator=g, dtype=torch.float64) * 2)
    A = -torch.rand(h, generator=g, dtype=torch.float64) * 8
    B, C = (torch.randn(b, l, groups, n, generator=g, dtype=torch.float64) for _ in range(2))
    D = torch.randn(h, generator=g, dtype=torch.float64)
    state = torch.randn(b, h, p, n, generator=g, dtype=torch.float64)
    y_seq, final_seq = ssd_sequential(x, dt, A, B, C, D, state)
    y_chunk, final_chunk = ssd_chunked(x, dt, A, B, C, D, state, chunk_size)
    assert report(f"y, chunk {chunk_size}", y_chunk - y_seq) <= 1e-12 * y_seq.abs().max()
    assert report(f"final state, chunk {chunk_size}", final_chunk - final_seq) <= 1e-12 * final_seq.abs().max()


@pytest.mark.parametrize("overrides", CONFIGS, ids=config_id)
def test_step_decode_equals_forward_float64(overrides):
    model = reference_from_hf(random_hf_mamba2(**overrides))
    tokens = torch.randint(0, model.config.vocab_size, (3, 11), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full, final_states = model(tokens)
    stepped, states = decode_stepwise(model, tokens)
    assert report("step vs forward logits", stepped - full) <= TOL_FLOAT64
    for a, b in zip(final_states, states, strict=True):
        assert report("ssm_state", a.ssm_state - b.ssm_state) <= TOL_FLOAT64
        assert report("conv_state", a.conv_state - b.conv_state) <= TOL_FLOAT64


def test_float32_reference_close_to_float64():
    hf = random_hf_mamba2(seed=6)
    m32, m64 = reference_from_hf(hf, torch.float32), reference_from_hf(hf, torch.float64)
    tokens = torch.randint(0, hf.config.vocab_size, (2, 9))
    with torch.no_grad():
        diff = m32(tokens)[0].double() - m64(tokens)[0]
    assert report("float32 vs float64", diff) <= 1e-4


def test_public_mamba2_configs_parse():
    """state-spaces/mamba2-130m's config.json (mamba_ssm layout) and the transformers form of mamba2-2.8b."""
    ssm = parse_model_config({"d_model": 768, "d_intermediate": 0, "n_layer": 24, "vocab_size": 50277,
                              "ssm_cfg": {"layer": "Mamba2"}, "attn_layer_idx": [], "attn_cfg": {},
                              "rms_norm": True, "residual_in_fp32": True, "fused_add_norm": True,
                              "pad_vocab_size_multiple": 16, "tie_embeddings": True}, "mamba2-130m")
    assert isinstance(ssm, Mamba2Config)
    assert (ssm.vocab_size, ssm.nheads, ssm.headdim, ssm.d_state, ssm.ngroups, ssm.conv_dim, ssm.d_in_proj) == \
        (50288, 24, 64, 128, 1, 1792, 3352)
    hf = parse_model_config({"model_type": "mamba2", "hidden_size": 2560, "num_hidden_layers": 64,
                             "vocab_size": 50288, "num_heads": 80, "head_dim": 64, "n_groups": 1,
                             "time_step_limit": [0.0, float("inf")]}, "mamba2-2.8b-hf")
    assert (hf.nheads, hf.d_inner, hf.tie_embeddings, hf.chunk_size) == (80, 5120, False, 256)


def _mamba_ssm(**ssm_cfg):
    return {"d_model": 64, "n_layer": 2, "vocab_size": 100, "ssm_cfg": {"layer": "Mamba2", **ssm_cfg}}


def _hf(**keys):
    return {"model_type": "mamba2", "hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 100, "num_heads": 8,
            "head_dim": 16, "n_groups": 2, **keys}


BAD_CONFIGS = {
    "heads x headdim": (_hf(num_heads=4), "num_heads * head_dim = 4 * 16 must equal expand * hidden_size"),
    "headdim does not divide": (_mamba_ssm(headdim=48), "not a multiple of headdim 48"),
    "groups do not divide heads": (_hf(n_groups=3), "nheads = 8 is not a multiple of ngroups 3"),
    "norm before gate": (_mamba_ssm(norm_before_gate=True), "ssm_cfg.norm_before_gate=True is not supported"),
    "gated mlp": (_mamba_ssm(d_ssm=64), "ssm_cfg.d_ssm=64 is not supported"),
    "D per channel": (_mamba_ssm(D_has_hdim=True), "ssm_cfg.D_has_hdim=True is not supported"),
    "no gated norm": (_mamba_ssm(rmsnorm=False), "ssm_cfg.rmsnorm=False is not supported"),
    "dt limit": (_mamba_ssm(dt_limit=[0.001, 0.1]), "ssm_cfg.dt_limit=[0.001, 0.1] is not supported"),
    "hf dt limit": (_hf(time_step_limit=[0.0, 1.0]), "time_step_limit=[0.0, 1.0] is not supported"),
    "unknown layer": (_mamba_ssm() | {"ssm_cfg": {"layer": "Mamba3"}}, "ssm_cfg.layer='Mamba3' is not supported"),
    "zero chunk": (_hf(chunk_size=0), "chunk_size=0 must be a positive integer"),
    "activation": (_hf(hidden_act="gelu"), "hidden_act='gelu' is not supported"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_mamba2_config_is_one_line_error(case):
    raw, expected = BAD_CONFIGS[case]
    with pytest.raises(ConfigError) as info:
        parse_model_config(raw, "config.json")
    message = str(info.value)
    print(message)
    assert "\n" not in message and message.startswith("config.json") and expected in message


def test_weights_of_another_group_count_are_refused_before_loading(tmp_path):
    """config.json saying 1 group over weights made with 2: in_proj and conv1d have the wrong shapes."""
    folder = save_transformers_layout(random_hf_mamba2(), tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config["n_groups"] = 1
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"mixer\.(in_proj|conv1d)\.\w+ has shape .*config.json implies"):
        load_fp_model(folder)
