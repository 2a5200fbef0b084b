"""mamba_ssm's ``MambaLMHeadModel`` <-> transformers' ``MambaForCausalLM``: the same Mamba1 LM under two layouts.

The two state dicts hold the same tensors with the same shapes and one name apart::

    mamba_ssm                               transformers
    backbone.embedding.weight        <->    backbone.embeddings.weight
    backbone.layers.{i}.norm.weight         (same)   RMSNorm before the mixer
    backbone.layers.{i}.mixer.{in_proj.weight, conv1d.weight, conv1d.bias, x_proj.weight, dt_proj.weight,
                               dt_proj.bias, A_log, D, out_proj.weight}   (same)
    backbone.norm_f.weight                  (same)
    lm_head.weight                          (same; tied to the embedding in both)

The configs: mamba_ssm's ``d_model, n_layer, vocab_size, ssm_cfg{d_state, d_conv, expand, dt_rank}, rms_norm,
residual_in_fp32, pad_vocab_size_multiple, tie_embeddings`` map to transformers' ``hidden_size,
num_hidden_layers, vocab_size, state_size, conv_kernel, expand, time_step_rank`` (mamba_ssm's Mamba1 block always
has a conv bias and no projection bias; its RMSNorm eps is 1e-5). Only the block shape the recipes train is
accepted: anything else is an error here rather than a silently different model.
"""

from __future__ import annotations

import math

EMBEDDING = ("backbone.embedding.", "backbone.embeddings.")  # (mamba_ssm prefix, transformers prefix)


def to_transformers_names(state: dict) -> dict:
    """mamba_ssm state dict -> transformers state dict (same tensors, not copied)."""
    return {key.replace(EMBEDDING[0], EMBEDDING[1], 1) if key.startswith(EMBEDDING[0]) else key: value
            for key, value in state.items()}


def to_mamba_ssm_names(state: dict) -> dict:
    """transformers state dict -> mamba_ssm state dict (same tensors, not copied)."""
    return {key.replace(EMBEDDING[1], EMBEDDING[0], 1) if key.startswith(EMBEDDING[1]) else key: value
            for key, value in state.items()}


def mamba_ssm_config(*, d_model: int, n_layer: int, vocab_size: int, d_state: int = 16, d_conv: int = 4,
                     expand: int = 2) -> dict:
    """The config dict (mamba_ssm's config.json / ``MambaConfig(**d)``) of a Mamba1 LM of the public block shape.

    ``pad_vocab_size_multiple`` is 1 so that the embedding has exactly ``vocab_size`` rows, as the tokenizer does;
    ``fused_add_norm`` only selects mamba_ssm's fused Triton kernel for residual add + RMSNorm (same arithmetic)."""
    return {
        "d_model": d_model,
        "d_intermediate": 0,
        "n_layer": n_layer,
        "vocab_size": vocab_size,
        "ssm_cfg": {"layer": "Mamba1", "d_state": d_state, "d_conv": d_conv, "expand": expand,
                    "dt_rank": math.ceil(d_model / 16)},
        "attn_layer_idx": [],
        "attn_cfg": {},
        "rms_norm": True,
        "residual_in_fp32": True,
        "fused_add_norm": True,
        "pad_vocab_size_multiple": 1,
        "tie_embeddings": True,
    }


def transformers_config_kwargs(ssm_config: dict) -> dict:
    """``transformers.MambaConfig`` keyword arguments for a mamba_ssm config dict made by :func:`mamba_ssm_config`
    (or read from a mamba_ssm config.json of the same block shape). ValueError for anything else."""
    ssm_cfg = dict(ssm_config.get("ssm_cfg") or {})
    if ssm_cfg.pop("layer", "Mamba1") != "Mamba1" or ssm_config.get("attn_layer_idx") or \
            ssm_config.get("d_intermediate", 0):
        raise ValueError("only a pure Mamba1 stack converts (no attention layers, no MLP)")
    if not ssm_config.get("rms_norm", True) or not ssm_config.get("residual_in_fp32", True) or \
            not ssm_config.get("tie_embeddings", True):
        raise ValueError("only rms_norm, residual_in_fp32 and tied embeddings convert")
    d_model = ssm_config["d_model"]
    vocab = ssm_config["vocab_size"]
    multiple = ssm_config.get("pad_vocab_size_multiple", 8)
    if vocab % multiple:
        raise ValueError(f"vocab_size {vocab} is padded to a multiple of {multiple} by mamba_ssm: use a "
                         f"padded vocab or pad_vocab_size_multiple 1")
    unknown = set(ssm_cfg) - {"d_state", "d_conv", "expand", "dt_rank"}
    if unknown:
        raise ValueError(f"ssm_cfg keys {sorted(unknown)} do not convert")
    dt_rank = ssm_cfg.get("dt_rank", "auto")
    return {
        "vocab_size": vocab,
        "hidden_size": d_model,
        "num_hidden_layers": ssm_config["n_layer"],
        "state_size": ssm_cfg.get("d_state", 16),
        "conv_kernel": ssm_cfg.get("d_conv", 4),
        "expand": ssm_cfg.get("expand", 2),
        "time_step_rank": math.ceil(d_model / 16) if dt_rank == "auto" else dt_rank,
        "use_bias": False,
        "use_conv_bias": True,
        "residual_in_fp32": True,
        "tie_word_embeddings": True,
        "layer_norm_epsilon": 1e-5,
    }
