"""Invariants 1 and 2 for the hybrid Mamba2 + attention models: the fp reference equals transformers'
NemotronHForCausalLM and BambaForCausalLM in float64 (loaded from a saved folder), for prefill and token by token
against transformers' own cache; prefill continues from explicit states; MoE configs, unknown pattern characters
and the other unbuilt options are refused in one line."""

import json

import pytest
import torch

from edge_quamba.errors import CheckpointError, ConfigError
from edge_quamba.models.attention import KVState
from edge_quamba.models.config_dispatch import parse_model_config
from edge_quamba.models.hybrid import HybridLM
from edge_quamba.models.hybrid_config import HybridConfig
from edge_quamba.models.loading import load_fp_model
from edge_quamba.models.mamba import LayerState
from helpers import decode_stepwise, report, transformers_keeps_float64
from hybrid_helpers import hf_double, random_hf_bamba, random_hf_nemotron_h, reference_from_hf

TOL_FLOAT64 = 1e-9
SEQ_LEN = 13

# Tiny configs over the options public checkpoints use (chunk 5 over 13 tokens: partial last chunk).
CONFIGS = {
    "nemotron_h": dict(make=random_hf_nemotron_h, seed=0),
    "nemotron_h_mlp_first": dict(make=random_hf_nemotron_h, seed=1, pattern="-M*-M", n_groups=1, use_conv_bias=False,
                                 use_bias=True, mlp_bias=True, num_key_value_heads=4,
                                 layer_norm_epsilon=1e-3),
    "nemotron_h_4b_shape": dict(make=random_hf_nemotron_h, seed=2, pattern="M*-", mamba_num_heads=6,
                                mamba_head_dim=8),  # d_inner 48 is not a multiple of d_model 32 (as Nemotron-H-4B)
    "bamba": dict(make=random_hf_bamba, seed=3),
    "bamba_bias_no_gqa": dict(make=random_hf_bamba, seed=4, num_hidden_layers=2, attn_layer_indices=[0],
                              num_key_value_heads=4, attention_bias=True, mlp_bias=True, mamba_n_groups=1,
                              mamba_conv_bias=False, tie_word_embeddings=True, rope_theta=500.0),
}


def build(name):
    overrides = dict(CONFIGS[name])
    return overrides.pop("make")(**overrides)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_reference_matches_transformers_float64(tmp_path, name):
    """The saved checkpoint (transformers' layout and names) loads into the reference; prefill logits equal."""
    hf = build(name)
    hf.save_pretrained(tmp_path / name, safe_serialization=True)
    ours = load_fp_model(tmp_path / name, dtype=torch.float64)
    assert isinstance(ours, HybridLM)
    print(name, ours.config.pattern)
    hf = hf_double(hf)
    tokens = torch.randint(0, 120, (2, SEQ_LEN), generator=torch.Generator().manual_seed(7))
    with torch.no_grad(), transformers_keeps_float64():
        expected = hf(tokens, use_cache=False).logits  # (its cache cannot start with an MLP block)
    with torch.no_grad():
        logits, _ = ours(tokens)
    assert report(f"{name} prefill vs transformers", logits - expected) <= TOL_FLOAT64


def hf_stepwise(hf, tokens):
    """transformers one token at a time through its own cache (positions passed: Bamba's forward would otherwise
    restart them at 0 on every call)."""
    b = tokens.shape[0]
    with torch.no_grad(), transformers_keeps_float64():
        out = hf(tokens[:, :1], use_cache=True)
        logits = [out.logits[:, 0]]
        for t in range(1, tokens.shape[1]):
            out = hf(tokens[:, t:t + 1], cache=out.cache, use_cache=True, position_ids=torch.full((b, 1), t))
            logits.append(out.logits[:, 0])
    return torch.stack(logits, 1), out.cache


@pytest.mark.parametrize("name", ["nemotron_h", "nemotron_h_4b_shape", "bamba", "bamba_bias_no_gqa"])
def test_step_decode_matches_transformers_cache_float64(name):
    """Token by token: our step (explicit states) equals transformers stepping through its cache, logits and final
    states (Mamba2 conv and ssm states, the attention KV cache), and equals our own prefill."""
    hf = hf_double(build(name))
    ours = reference_from_hf(hf)
    tokens = torch.randint(0, 120, (2, SEQ_LEN), generator=torch.Generator().manual_seed(3))
    expected, cache = hf_stepwise(hf, tokens)
    stepped, states = decode_stepwise(ours, tokens)
    with torch.no_grad():
        full, _ = ours(tokens)
    assert report(f"{name} step vs transformers step", stepped - expected) <= TOL_FLOAT64
    assert report(f"{name} step vs our prefill", stepped - full) <= TOL_FLOAT64
    # transformers numbers its cache by its own layers: a Bamba layer is our blocks 2i (mixer) and 2i+1 (MLP)
    per_layer = 2 if ours.config.model_type == "bamba" else 1
    for block, state in enumerate(states):
        layer = block // per_layer
        if isinstance(state, LayerState):
            assert report("ssm_state", state.ssm_state - cache.get_recurrent_state(layer, state_idx=0)) <= TOL_FLOAT64
            assert report("conv_state", state.conv_state - cache.get_conv_state(layer, state_idx=0)) <= TOL_FLOAT64
        elif isinstance(state, KVState):
            assert state.length == SEQ_LEN
            assert report("key cache", state.key - cache.layers[layer].keys) <= TOL_FLOAT64
            assert report("value cache", state.value - cache.layers[layer].values) <= TOL_FLOAT64
        else:
            assert state is None and ours.config.kind(block) == "-"


@pytest.mark.parametrize("name", ["nemotron_h", "bamba"])
def test_prefill_continues_from_states_float64(name):
    """forward(prefix) then forward(rest, states): the chunked SSD from a state, the conv from its state, attention
    over the cached keys at the right positions (RoPE offset by the cache length) equal one full forward."""
    model = reference_from_hf(build(name))
    tokens = torch.randint(0, 120, (2, SEQ_LEN), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        full, _ = model(tokens)
        first, states = model(tokens[:, :6])
        rest, _ = model(tokens[:, 6:], states)
    assert report("split vs one forward", torch.cat([first, rest], 1) - full) <= TOL_FLOAT64


def test_float32_reference_close_to_float64():
    hf = build("bamba")
    m32, m64 = reference_from_hf(hf, torch.float32), reference_from_hf(hf, torch.float64)
    tokens = torch.randint(0, 120, (2, 9))
    with torch.no_grad():
        diff = m32(tokens)[0].double() - m64(tokens)[0]
    assert report("float32 vs float64", diff) <= 1e-4


def test_public_configs_parse():
    """config.json in the key set of the published Nemotron-H 8B (legacy ``hybrid_override_pattern``, a 52-block
    pattern of its mix), Nemotron-H-4B's 112 Mamba2 heads over d_model 3072, and Bamba-9B's transformers keys."""
    nemotron = parse_model_config({
        "model_type": "nemotron_h", "hidden_size": 4096, "vocab_size": 131072, "num_hidden_layers": 52,
        "hybrid_override_pattern": ("M-" * 3 + "M*-") * 4 + "M-" * 8, "num_attention_heads": 32,
        "num_key_value_heads": 8, "head_dim": 128, "mamba_num_heads": 128, "mamba_head_dim": 64, "n_groups": 8,
        "ssm_state_size": 128, "conv_kernel": 4, "chunk_size": 128, "intermediate_size": 21504,
        "mlp_hidden_act": "relu2", "time_step_limit": [0.0, {"__float__": "Infinity"}], "layer_norm_epsilon": 1e-5,
        "residual_in_fp32": False, "tie_word_embeddings": False}, "nemotron-h-8b")
    assert isinstance(nemotron, HybridConfig) and nemotron.n_layer == 52
    assert (nemotron.pattern.count("M"), nemotron.pattern.count("*"), nemotron.pattern.count("-")) == (24, 4, 24)
    m2 = nemotron.mamba2()
    assert (m2.d_inner, m2.nheads, m2.conv_dim, m2.d_in_proj) == (8192, 128, 8192 + 2 * 8 * 128, 8192 + 10240 + 128)
    four_b = parse_model_config({"model_type": "nemotron_h", "hidden_size": 3072, "vocab_size": 131072,
                                 "hybrid_override_pattern": "M-*", "mamba_num_heads": 112, "mamba_head_dim": 64},
                                "nemotron-h-4b")
    assert four_b.mamba2().d_inner == 7168
    bamba = parse_model_config({"model_type": "bamba", "hidden_size": 4096, "num_hidden_layers": 32,
                                "attn_layer_indices": [9, 18, 27], "num_attention_heads": 32,
                                "num_key_value_heads": 8, "mamba_n_heads": 128, "mamba_d_head": 64,
                                "mamba_n_groups": 1, "mamba_d_state": 128, "vocab_size": 128256,
                                "rope_theta": 10000.0, "intermediate_size": 14336}, "bamba-9b")
    assert bamba.n_layer == 64 and bamba.pattern[18:20] == "*-" and bamba.rotary_dim == 64 and bamba.head_dim == 128
    assert HybridConfig.from_dict(json.loads(json.dumps(bamba.to_dict()))) == bamba


def _nemotron(**keys):
    return {"model_type": "nemotron_h", "hidden_size": 32, "vocab_size": 100, "hybrid_override_pattern": "M*-",
            "mamba_num_heads": 8, "mamba_head_dim": 8, **keys}


BAD_CONFIGS = {
    "nemotron MoE": (_nemotron(hybrid_override_pattern="M-E*"), "MoE layers are not supported (pattern character "
                                                                "'E' at block 2)"),
    "nemotron MoE list": ({k: v for k, v in _nemotron(layers_block_type=["linear_attention", "moe"]).items()
                           if k != "hybrid_override_pattern"}, "MoE layers are not supported (pattern character 'E' "
                                                              "at block 1)"),
    "granite MoE": ({"model_type": "granitemoehybrid", "hidden_size": 32, "num_local_experts": 4},
                    "MoE layers are not supported (GraniteMoeHybrid"),
    "pattern char": (_nemotron(hybrid_override_pattern="M-A"), "pattern character 'A' at block 2 is not one of M"),
    "sliding window": (_nemotron(sliding_window=512), "sliding_window=512 is not supported"),
    "mtp": (_nemotron(num_nextn_predict_layers=1), "multi-token-prediction"),
    "nemotron tied": (_nemotron(tie_word_embeddings=True), "keeps lm_head apart"),
    "mlp act": (_nemotron(mlp_hidden_act="gelu"), "mlp_hidden_act='gelu' is not supported"),
    "dt limit": (_nemotron(time_step_limit=[0.0, 1.0]), "time_step_limit=[0.0, 1.0] is not supported"),
    "heads": (_nemotron(mamba_num_heads=6, n_groups=4), "mamba heads 6 is not a multiple of n_groups 4"),
    "bamba rope": ({"model_type": "bamba", "hidden_size": 32, "num_attention_heads": 4, "mamba_n_heads": 8,
                    "vocab_size": 100, "rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4}},
                   "RoPE type 'yarn' is not supported"),
    "bamba attn index": ({"model_type": "bamba", "hidden_size": 32, "num_hidden_layers": 2, "attn_layer_indices": [2],
                          "num_attention_heads": 4, "mamba_n_heads": 8, "vocab_size": 100},
                         "attn_layer_indices=[2] must list layers in [0, num_hidden_layers=2)"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_hybrid_config_is_one_line_error(case):
    raw, expected = BAD_CONFIGS[case]
    with pytest.raises(ConfigError) as info:
        parse_model_config(raw, "config.json")
    message = str(info.value)
    print(message)
    assert "\n" not in message and message.startswith("config.json") and expected in message


def test_weights_of_another_shape_are_refused_before_loading(tmp_path):
    """config.json claiming 3 kv heads over weights made with 2: k_proj has the wrong shape."""
    folder = tmp_path / "m"
    random_hf_nemotron_h().save_pretrained(folder, safe_serialization=True)
    config = json.loads((folder / "config.json").read_text())
    config["num_key_value_heads"], config["num_attention_heads"] = 1, 4
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"mixer\.[kv]_proj\.weight has shape .*config.json implies"):
        load_fp_model(folder)
