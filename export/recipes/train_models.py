"""The demo trainer's models (export/recipes/train_demo.py): the transformers configs of the demo shapes, the model
trained per --arch / --backend (transformers' MambaForCausalLM, mamba_ssm's MambaLMHeadModel, or edge_quamba's Mamba2
reference), how each is saved in transformers layout, and how the saved fp16 folder is read back for the final
held-out evaluation (with, for mamba_ssm, the check that transformers reproduces the trained model).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mamba_ssm_names  # noqa: E402  (the recipe folder is not a package)

ARCHES = {"mamba": ("MambaForCausalLM", "demo_model"), "mamba2": ("Mamba2ForCausalLM", "demo_model_mamba2")}
"""--arch -> (transformers class it is saved as, folder under edge_quamba/assets/ that the default --out names)."""
MAMBA2_HEADDIM = 64
MAMBA2_CHUNK = 64


def make_config(*, vocab_size: int, hidden_size: int, layers: int, eot_id: int, use_mambapy: bool):
    from transformers import MambaConfig

    return MambaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        state_size=16,
        expand=2,
        conv_kernel=4,
        time_step_rank="auto",
        use_bias=False,
        use_conv_bias=True,
        residual_in_fp32=True,
        tie_word_embeddings=True,
        layer_norm_epsilon=1e-5,
        bos_token_id=eot_id,
        eos_token_id=eot_id,
        pad_token_id=eot_id,
        use_mambapy=use_mambapy,
    )


def make_mamba2_config(*, vocab_size: int, hidden_size: int, layers: int, d_state: int, n_groups: int, eot_id: int):
    from transformers import Mamba2Config

    return Mamba2Config(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        expand=2,
        head_dim=MAMBA2_HEADDIM,
        num_heads=2 * hidden_size // MAMBA2_HEADDIM,
        state_size=d_state,
        n_groups=n_groups,
        conv_kernel=4,
        chunk_size=MAMBA2_CHUNK,
        use_bias=False,
        use_conv_bias=True,
        residual_in_fp32=True,
        tie_word_embeddings=True,
        layer_norm_epsilon=1e-5,
        initializer_range=0.02,
        rescale_prenorm_residual=True,
        bos_token_id=eot_id,
        eos_token_id=eot_id,
        pad_token_id=eot_id,
    )


class ReferenceForTraining(torch.nn.Module):
    """edge_quamba's fp reference called the way transformers' model is: ``forward(input_ids, labels=None,
    use_cache=False)`` -> ``.logits`` (b, l, vocab) and ``.loss`` (labels shifted inside, as transformers does).
    ``self.model`` holds the reference (transformers' names under ``model.``)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None, use_cache: bool = False):
        logits, _ = self.model(input_ids)
        loss = None
        if labels is not None:
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1)
            )
        return SimpleNamespace(logits=logits, loss=loss)


class MambaSsmLM(torch.nn.Module):
    """mamba_ssm's ``MambaLMHeadModel`` called the way transformers' model is: ``forward(input_ids, labels=None,
    use_cache=False)`` -> ``.logits`` (b, l, vocab) and ``.loss`` (mean next-token cross-entropy, labels shifted
    inside, as transformers does). ``self.lm`` holds the mamba_ssm model (mamba_ssm names under ``lm.``)."""

    def __init__(self, ssm_config: dict, device: torch.device, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        import copy

        from mamba_ssm.models.config_mamba import MambaConfig as SsmConfig
        from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

        self.lm = MambaLMHeadModel(SsmConfig(**copy.deepcopy(ssm_config)), device=device, dtype=dtype)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None, use_cache: bool = False):
        logits = self.lm(input_ids).logits
        loss = None
        if labels is not None:
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1)
            )
        return SimpleNamespace(logits=logits, loss=loss)


def mamba_ssm_conv_path() -> str:
    """Which causal conv1d mamba_ssm's Mamba block runs (it falls back silently; this records it)."""
    from mamba_ssm.modules import mamba_simple

    if mamba_simple.causal_conv1d_fn is None:
        return "nn.Conv1d (causal_conv1d not installed; mamba_ssm's unfused path: conv, then selective_scan_fn)"
    return "causal_conv1d_fn (fused mamba_inner_fn)"


def build_model(args, vocab_size: int, eot_id: int, device: torch.device):
    """(model to train, the transformers config it is saved under). Mamba2: transformers' initialization copied
    into the reference (module trees and names are equal)."""
    from transformers import Mamba2ForCausalLM, MambaConfig, MambaForCausalLM

    torch.manual_seed(args.seed)
    if args.arch == "mamba2":
        from edge_quamba.models.config_dispatch import parse_model_config
        from edge_quamba.models.mamba2 import Mamba2LM

        config = make_mamba2_config(vocab_size=vocab_size, hidden_size=args.hidden_size, layers=args.layers,
                                    d_state=args.d_state, n_groups=args.n_groups, eot_id=eot_id)
        reference = Mamba2LM(parse_model_config(config.to_dict(), "make_mamba2_config"), dtype=torch.float32)
        reference.load_state_dict(Mamba2ForCausalLM(config).state_dict())
        return ReferenceForTraining(reference).to(device), config
    if args.backend == "transformers":
        config = make_config(vocab_size=vocab_size, hidden_size=args.hidden_size, layers=args.layers,
                             eot_id=eot_id, use_mambapy=True)
        return MambaForCausalLM(config).to(device), config
    ssm_config = mamba_ssm_names.mamba_ssm_config(d_model=args.hidden_size, n_layer=args.layers,
                                                  vocab_size=vocab_size)
    config = MambaConfig(**mamba_ssm_names.transformers_config_kwargs(ssm_config), bos_token_id=eot_id,
                         eos_token_id=eot_id, pad_token_id=eot_id, use_mambapy=False)
    return MambaSsmLM(ssm_config, device), config


def save_mamba2(model: ReferenceForTraining, config, out: Path) -> None:
    """fp16 weights (tied lm_head saved once, as transformers saves it) and config.json in transformers' layout,
    without the init-only rescale_prenorm_residual: transformers 5.24's from_pretrained applies it again to the
    loaded out_proj weights (divides them by sqrt(layers))."""
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in model.model.state_dict().items()}
    if config.tie_word_embeddings:
        state.pop("lm_head.weight")
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    config.rescale_prenorm_residual = False
    config.architectures = [ARCHES["mamba2"][0]]
    config.dtype = torch.float16
    config.save_pretrained(out)


def as_transformers(model, config):
    """The trained model as a CPU ``MambaForCausalLM`` (a mamba_ssm model's weights renamed, strict load)."""
    from transformers import MambaForCausalLM

    if isinstance(model, MambaForCausalLM):
        return model
    hf = MambaForCausalLM(config)
    state = {k: v.detach().cpu() for k, v in mamba_ssm_names.to_transformers_names(model.lm.state_dict()).items()}
    hf.load_state_dict(state, strict=True)
    return hf


CONVERSION_TOLERANCE = 1e-3
"""Bound on max|logits(transformers reload) - logits(mamba_ssm reload)| / max|logits| in fp32 on one window: the
two implementations differ only in summation order (mamba_ssm's scan kernel, Triton RMSNorm)."""


def reload_saved(args, device: torch.device):
    """The saved fp16 weights in an fp32 model of the training backend, eval mode."""
    from safetensors.torch import load_file
    from transformers import MambaForCausalLM

    if args.arch == "mamba2":  # read back by the loader every edge-quamba command uses
        from edge_quamba.models.loading import load_fp_model

        return ReferenceForTraining(load_fp_model(args.out, dtype=torch.float32)).to(device).eval()
    if args.backend == "transformers":
        return MambaForCausalLM.from_pretrained(args.out, dtype=torch.float32).to(device).eval()
    saved = load_file(str(args.out / "model.safetensors"))
    config = json.loads((args.out / "config.json").read_text())
    ssm_config = mamba_ssm_names.mamba_ssm_config(d_model=config["hidden_size"], n_layer=config["num_hidden_layers"],
                                                  vocab_size=config["vocab_size"])
    model = MambaSsmLM(ssm_config, device)
    state = mamba_ssm_names.to_mamba_ssm_names({k: v.float() for k, v in saved.items()})
    state.setdefault("lm_head.weight", state["backbone.embedding.weight"])  # tied: saved once
    model.lm.load_state_dict(state, strict=True)
    return model.eval()


@torch.no_grad()
def check_conversion(args, reloaded, eval_stream: torch.Tensor, device: torch.device) -> dict:
    """mamba_ssm reload vs transformers' MambaForCausalLM on the saved folder (fp32, one 256-token window)."""
    from transformers import MambaForCausalLM

    hf = MambaForCausalLM.from_pretrained(args.out, dtype=torch.float32).to(device).eval()
    ids = eval_stream[:256].unsqueeze(0).to(device)
    expected = hf(input_ids=ids, use_cache=False).logits
    got = reloaded(input_ids=ids).logits
    max_diff = (got - expected).abs().max().item()
    scale = expected.abs().max().item()
    print(f"saved folder: transformers vs mamba_ssm fp32 logits on 256 tokens: max |diff| {max_diff:.3e} "
          f"(max |logit| {scale:.2f}, tolerance {CONVERSION_TOLERANCE:g} x that)", flush=True)
    if not max_diff <= CONVERSION_TOLERANCE * scale:
        raise SystemExit(f"the saved transformers folder does not reproduce the trained mamba_ssm model "
                         f"(max |diff| {max_diff:.3e} > {CONVERSION_TOLERANCE:g} x {scale:.2f})")
    del hf
    return {"tokens": 256, "max_abs_diff": max_diff, "max_abs_logit": scale, "tolerance": CONVERSION_TOLERANCE}
