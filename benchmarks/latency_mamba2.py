"""The Mamba2 rows of benchmarks/bench_latency.py (shapes ``m2-130m`` and ``m2-2.7b`` there): edge-quamba ``--backend
cuda`` at each bit width beside mamba_ssm's Mamba2 in fp16 with CUDA-graph decode, random weights.

Shapes: the public state-spaces/mamba2 checkpoints, d_state 128, headdim 64, ngroups 1, expand 2, d_conv 4:
    m2-130m: d_model 768, 24 layers (24 heads)      m2-2.7b: d_model 2560, 64 layers (80 heads)
with bench_latency's vocabulary (50277 padded to 50280; the public Mamba2 checkpoints pad to 50288: 8 rows, no
measurable difference).

edge-quamba rows (``--impls edge-quamba`` W8A8, ``edge-quamba-w4a8``, ``edge-quamba-w4a16``, the row names of the
Mamba1 rows): the quantized reference model of that width built directly with random weights (as bench_latency builds
the Mamba1 one: random int8 / int4 codes, synthetic static scales, mamba_ssm's A, dt_bias and D initializations), on
the cuda backend, timed with the same protocol as Mamba1 (``latency_common.edge_quamba_rows``: greedy tokens chosen
on the device and/or the host per --token-choice, the graph replay alone, host time per token, the per-kernel table).
W4A16 is the float16 fp Mamba2 mixer with 4-bit linears: its conv, chunked SSD (prefill), token step and gated norm
are the float16 reference's torch ops on the GPU. A width the backend refuses is a row with its one-line reason.
mamba_ssm row: ``MambaLMHeadModel(ssm_cfg={"layer": "Mamba2"})`` in fp16, ``generate(cg=True, top_k=1)`` as for
Mamba1: prefill through its chunked SSD (Triton ``mamba_chunk_scan_combined``), decode from its CUDA graph with the
Triton ``selective_state_update``; causal_conv1d is not installed, so its conv runs the PyTorch path.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

from edge_quamba.models.config import Mamba2Config
from edge_quamba.models.mamba import MambaLM
from edge_quamba.quant.mamba2_qmodel import empty_quantized_mamba2_model
from edge_quamba.quant.primitives import scale_from_amax
from edge_quamba.quant.qmodel import QuantConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
import latency_common  # noqa: E402  (beside this file)

SHAPES = {"m2-130m": (768, 24), "m2-2.7b": (2560, 64)}
"""name -> (d_model, n_layer) of the public state-spaces/mamba2-* checkpoints."""
SYNTHETIC_AMAX = {"in_proj_input": 4.0, "z": 8.0, "xBC": 8.0, "dt": 4.0, "out_proj_input": 4.0, "x": 4.0, "B": 4.0,
                  "C": 4.0, "weight": 0.1}
"""Stand-ins for calibrated activation amaxes and weight amaxes (values do not change the speed)."""
MAMBA_SSM_CFG = {"layer": "Mamba2", "d_state": 128, "headdim": 64, "ngroups": 1, "expand": 2}
"""mamba_ssm's Mamba2 mixer at the public checkpoints' settings (the shapes above)."""


def mamba2_config(shape: str, vocab_size: int) -> Mamba2Config:
    d_model, n_layer = SHAPES[shape]
    return Mamba2Config(d_model=d_model, n_layer=n_layer, vocab_size=vocab_size, d_state=128, d_conv=4, expand=2,
                        headdim=64, ngroups=1)


def random_quantized_mamba2_model(config: Mamba2Config, bits: str, seed: int, device) -> MambaLM:
    """A quantized reference Mamba2 model of width ``bits`` with random weights (module docstring), on ``device``."""
    with torch.device("meta"):
        model = empty_quantized_mamba2_model(config, QuantConfig(method="quamba2", bits=bits))
    shapes = {k: (v.shape, v.dtype) for k, v in model.state_dict().items()}
    model = model.to_empty(device=device)
    if config.tie_embeddings:
        model.lm_head.weight = model.backbone.embeddings.weight  # to_empty gives the tied pair two tensors
    gen = torch.Generator(device=device).manual_seed(seed)
    model.load_state_dict({key: random_tensor(key, shape, dtype, gen, device)
                           for key, (shape, dtype) in shapes.items()})
    return model.eval()


def random_tensor(key: str, shape, dtype, gen: torch.Generator, device) -> torch.Tensor:
    """One tensor of the random quantized Mamba2 model, by the role its state-dict key names."""
    name = key.rsplit(".", 1)[-1]
    if dtype == torch.int8:
        return torch.randint(-127, 128, shape, dtype=dtype, generator=gen, device=device)
    if dtype == torch.uint8:  # two int4 codes in [-7, 7] per byte, low nibble first
        low, high = (torch.randint(-7, 8, shape, generator=gen, device=device) & 0xF for _ in range(2))
        return (low | (high << 4)).to(dtype)
    if dtype == torch.int64:  # x_group: channel -> flat x group (any valid index)
        return torch.arange(shape[0], device=device) % 16
    if name.endswith("scale"):
        site = name[: -len("_scale")]
        if key.endswith("weight_scale") and len(shape) == 2:  # int4 group scales (N, G)
            return torch.full(shape, 0.1 / 7, dtype=dtype, device=device)
        return torch.full(shape, float(scale_from_amax(SYNTHETIC_AMAX.get(site, SYNTHETIC_AMAX["weight"]))),
                          dtype=dtype, device=device)
    if name == "A":  # -exp(A_log), A_log ~ log U(1, 16) (mamba_ssm's A_init_range)
        return -torch.exp(torch.rand(shape, generator=gen, device=device) * math.log(16)).to(dtype)
    if name == "A_log":
        return (torch.rand(shape, generator=gen, device=device) * math.log(16)).to(dtype)
    if name == "D" or name == "norm_weight" or key.endswith("norm.weight") or key.endswith("norm_f.weight"):
        return torch.ones(shape, dtype=dtype, device=device)
    if name == "dt_bias":  # softplus^-1 of dt in [1e-3, 1e-1], as mamba_ssm initializes it
        dt = torch.exp(torch.rand(shape, generator=gen, device=device) * math.log(100.0) + math.log(1e-3))
        return (dt + torch.log(-torch.expm1(-dt))).to(dtype)
    return (torch.randn(shape, generator=gen, device=device) * 0.02).to(dtype)  # embeddings, fp weights, biases


def bench_edge_quamba(shape, bits, impl, prompt, new_tokens, repeats, seed, copy_bw, profile_kernels,
                      vocab_size, token_choices, prefill_graphs=True) -> list[dict]:
    from edge_quamba.errors import BackendUnavailableError
    from edge_quamba.runtime.cuda_backend import CudaBackend

    model = random_quantized_mamba2_model(mamba2_config(shape, vocab_size), bits, seed, "cuda")
    try:
        backend = CudaBackend(model, prefill_graphs=prefill_graphs)
    except BackendUnavailableError as exc:
        return [latency_common.skipped(shape, impl, f"unavailable: {exc}")]
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    rows = latency_common.edge_quamba_rows(backend, shape, impl, prompt, new_tokens, repeats, copy_bw,
                                           profile_kernels, token_choices)
    del backend, model
    return rows


def bench(shape: str, impl: str, prompt, args, copy_bw: float, vocab: int, padded_vocab: int) -> dict:
    """The row of one (Mamba2 shape, --impls entry): edge-quamba at a width, mamba_ssm, or (transformers) a row saying
    it is not run for Mamba2."""
    if impl == "edge-quamba" or impl in latency_common.FOUR_BIT_IMPLS:
        bits, name = ("w8a8", latency_common.IMPLS[0]) if impl == "edge-quamba" else latency_common.FOUR_BIT_IMPLS[impl]
        return bench_edge_quamba(shape, bits, name, prompt, args.new_tokens, args.repeats, args.seed, copy_bw,
                                 not args.no_profile, padded_vocab, args.token_choices, args.prefill == "graphs")
    if impl == "mamba_ssm":
        return latency_common.bench_mamba_ssm(shape, *SHAPES[shape], vocab, MAMBA_SSM_CFG, prompt, args.new_tokens,
                                              args.repeats, args.seed, copy_bw)
    return latency_common.skipped(shape, latency_common.IMPLS[2], "not run for Mamba2 shapes")
