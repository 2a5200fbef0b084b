"""Builders for the hybrid-model tests: tiny random transformers NemotronH / Bamba models and their references."""

from __future__ import annotations

import torch
import transformers

from edge_quamba.models.config_dispatch import parse_model_config
from edge_quamba.models.hybrid import HybridLM, hybrid_reference_keys


def random_hf_nemotron_h(seed: int = 0, noise: float = 0.1, pattern: str = "M-*M-*", **overrides):
    """A transformers NemotronHForCausalLM with random weights (init + noise so that every parameter matters).
    Default: d_model 32; Mamba2 8 heads of 8 (d_inner 64 = 2 d_model), 2 groups, d_state 8, chunk 5; attention 4
    query heads of 8 over 2 kv heads; relu² MLP of 48."""
    torch.manual_seed(seed)
    kwargs = dict(vocab_size=120, hidden_size=32, hybrid_override_pattern=pattern, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=8, mamba_num_heads=8, mamba_head_dim=8, n_groups=2,
                  ssm_state_size=8, conv_kernel=4, chunk_size=5, intermediate_size=48, tie_word_embeddings=False,
                  eos_token_id=0, bos_token_id=0, pad_token_id=0)
    kwargs.update(overrides)
    model = transformers.NemotronHForCausalLM(transformers.NemotronHConfig(**kwargs)).eval()
    return _perturb(model, noise)


def random_hf_bamba(seed: int = 0, noise: float = 0.1, **overrides):
    """A transformers BambaForCausalLM: 3 layers (attention in layer 1), d_model 32, Mamba2 8 heads of 8, 2 groups,
    attention 4 heads of 8 over 2 kv heads with RoPE on the first 4 dims of each head, SwiGLU MLP of 48."""
    torch.manual_seed(seed)
    kwargs = dict(vocab_size=120, hidden_size=32, num_hidden_layers=3, attn_layer_indices=[1], num_attention_heads=4,
                  num_key_value_heads=2, mamba_n_heads=8, mamba_n_groups=2, mamba_d_state=8, mamba_d_conv=4,
                  mamba_chunk_size=5, intermediate_size=48, eos_token_id=0, bos_token_id=0, pad_token_id=0)
    kwargs.update(overrides)
    model = transformers.BambaForCausalLM(transformers.BambaConfig(**kwargs)).eval()
    return _perturb(model, noise)


def _perturb(model, noise: float):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * noise)
    return model


def reference_from_hf(hf, dtype=torch.float64) -> HybridLM:
    """Our reference with the transformers model's weights (renamed as the loader renames them)."""
    config = parse_model_config(hf.config.to_dict(), "test")
    model = HybridLM(config, dtype=dtype)
    state = {hybrid_reference_keys(k, config): v.to(dtype) for k, v in hf.state_dict().items()}
    if config.tie_embeddings:
        state.pop("lm_head.weight", None)  # the embedding matrix itself
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    return model.eval()


def hf_double(hf):
    """``hf.double()`` with Bamba's RoPE frequencies kept float32: transformers computes the angles in float32
    (``inv_freq.to(torch.float)``), which :func:`helpers.transformers_keeps_float64` would otherwise turn into a
    float64 product of the converted buffer; the reference computes them in float32 as transformers does."""
    hf = hf.double()
    rotary = getattr(getattr(hf, "model", None), "rotary_emb", None)
    if rotary is not None:
        rotary.inv_freq = rotary.inv_freq.float()
    return hf
