"""The recipe for a hybrid model: Quamba2 on its Mamba2 blocks, static per-tensor scales on its attention and MLP
sites, in the steps of :mod:`edge_quamba.quant.quamba2`:

    1. calibration pass 1 (only when sort-and-cluster is on, not at w4a16): every Mamba2 block's x channel ranges;
    2. per Mamba2 block, the channel order and groups, applied to the fp weights (the fp model's output unchanged);
    3. calibration pass 2 on the reordered model: every site's amax, Mamba2's and the attention / MLP blocks'
       (:data:`edge_quamba.quant.hybrid_flow.ATTENTION_SITES`, :data:`MLP_SITES`), and at w4a8 / w4a16 the Hessians
       of every int4 linear's input (GPTQ);
    4. the quantized reference (:func:`edge_quamba.quant.hybrid_qmodel.quantize_hybrid_model`).

The fp model runs every block through its flow with float ops (:func:`edge_quamba.quant.hybrid_flow.hybrid_float_flow`).
Deterministic as Quamba2's: fixed windows in file order, abs-max statistics, a clustering without random starts.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from edge_quamba.models.hybrid import HybridLM
from edge_quamba.quant.calibrate import CalibrationData, run_calibration, site_tap
from edge_quamba.quant.cluster import ClusterPlan, permute_mamba2_mixer, sort_and_cluster
from edge_quamba.quant.gptq import HessianAccumulator
from edge_quamba.quant.hybrid_flow import ATTENTION_SITES, LINEAR_INPUTS, MLP_SITES, hybrid_float_flow
from edge_quamba.quant.hybrid_qmodel import linear_names, quantize_hybrid_model
from edge_quamba.quant.observers import AbsMaxObserver, ChannelAbsMaxObserver
from edge_quamba.quant.config import QuantConfig
from edge_quamba.quant.quamba2 import LINEAR_INPUT_SITES_MAMBA2
from edge_quamba.quant.sites import MAMBA2_SITE_NAMES

SITES_OF = {"M": MAMBA2_SITE_NAMES, "*": tuple(s.name for s in ATTENTION_SITES),
            "-": tuple(s.name for s in MLP_SITES)}
"""The sites observed in each kind of block."""


class HybridObservers:
    """One observer per (block, site) of that block's kind: per-channel abs-max for Mamba2's ``ssm_input``, per-tensor
    abs-max everywhere else. Taps of other names (linear outputs) are ignored."""

    def __init__(self, pattern: str):
        def observer(block: int, site: str):
            name = f"layers.{block}.mixer.{site}"
            return ChannelAbsMaxObserver(name) if site == "ssm_input" else AbsMaxObserver(name)

        self.observers = [{site: observer(i, site) for site in SITES_OF[kind]} for i, kind in enumerate(pattern)]

    def __call__(self, block: int, site: str, x: Tensor) -> None:
        observer = self.observers[block].get(site)
        if observer is not None:
            observer.observe(x)

    def amaxes(self) -> list[dict[str, Tensor]]:
        return [{site: obs.amax() for site, obs in block.items()} for block in self.observers]


class HybridHessians:
    """Per block, H = 2 X^T X / tokens of each int4 linear's float input, accumulated once per input site (q, k and
    v share qkv_input's; gate and up mlp_input's)."""

    def __init__(self, model: HybridLM, attn_mlp: bool):
        self.config, self.attn_mlp = model.config, attn_mlp
        self.sites: list[dict[str, HessianAccumulator]] = [{} for _ in range(model.config.n_layer)]

    def linears_of(self, block: int, site: str) -> tuple[str, ...]:
        kind = self.config.kind(block)
        if kind == "M":
            linear = LINEAR_INPUT_SITES_MAMBA2.get(site)
            return (linear,) if linear else ()
        if not self.attn_mlp:
            return ()
        return tuple(n for n in LINEAR_INPUTS.get(site, ()) if n in linear_names(kind, self.config))

    def __call__(self, block: int, site: str, x: Tensor) -> None:
        if self.linears_of(block, site):
            self.sites[block].setdefault(site, HessianAccumulator(x.shape[-1])).add(x)

    def hessians(self) -> list[dict[str, Tensor]]:
        return [{name: accumulator.H for site, accumulator in block.items() for name in self.linears_of(i, site)}
                for i, block in enumerate(self.sites)]


@torch.inference_mode()
def calibrate_hybrid(model: HybridLM, data: CalibrationData, hadamard: bool, batch_size: int = 8,
                     progress: bool = True, desc: str = "calibrating",
                     hessians: HybridHessians | None = None) -> list[dict[str, Tensor]]:
    """Per-block amaxes of every site (0-dim; (conv_dim,) for ssm_input); ``hessians``, when given, accumulates the
    int4 linears' input Hessians in the same pass."""
    observers = HybridObservers(model.config.pattern)
    run_calibration(model, data, hybrid_float_flow(model, hadamard, site_tap(observers, hessians)), batch_size, progress, desc)
    return observers.amaxes()


def reorder_hybrid(fp_model: HybridLM, data: CalibrationData, qconfig: QuantConfig, batch_size: int = 8,
                   progress: bool = True) -> tuple[HybridLM, list[ClusterPlan | None]]:
    """Steps 1 and 2: a float32 copy of ``fp_model`` (left unchanged) with every Mamba2 block in its sort-and-cluster
    channel order, and each block's plan (None for attention / MLP blocks, and everywhere without clustering). The
    copy is the same model: the fp reference of the per-layer SQNR."""
    model = copy.deepcopy(fp_model).float()
    c = model.config
    plans: list[ClusterPlan | None] = [None] * c.n_layer
    if qconfig.sort_cluster and qconfig.bits != "w4a16" and "M" in c.pattern:
        first = calibrate_hybrid(model, data, qconfig.hadamard, batch_size, progress, "calibrating (x ranges)")
        m2 = c.mamba2()
        for i in c.blocks_of("M"):
            x_amax = first[i]["ssm_input"][:m2.d_inner].view(m2.nheads, m2.headdim)
            plans[i] = sort_and_cluster(x_amax, m2.ngroups, qconfig.head_groups, qconfig.dim_groups)
            with torch.no_grad():
                permute_mamba2_mixer(model.backbone.layers[i].mixer, plans[i])
    return model, plans


def quantize_reordered_hybrid(model: HybridLM, plans: list[ClusterPlan | None], data: CalibrationData,
                              qconfig: QuantConfig, batch_size: int = 8, progress: bool = True) -> HybridLM:
    """Steps 3 and 4 on :func:`reorder_hybrid`'s model (left unchanged) and plans."""
    hessians = HybridHessians(model, qconfig.quantize_attn_mlp) if qconfig.four_bit and qconfig.gptq else None
    amaxes = calibrate_hybrid(model, data, qconfig.hadamard, batch_size, progress, hessians=hessians)
    return quantize_hybrid_model(model, amaxes, plans, qconfig, None if hessians is None else hessians.hessians())


def hybrid_quantize(fp_model: HybridLM, data: CalibrationData, qconfig: QuantConfig, batch_size: int = 8,
                    progress: bool = True) -> HybridLM:
    """The quantized reference of the hybrid ``fp_model`` (left unchanged) from the calibration windows ``data``."""
    model, plans = reorder_hybrid(fp_model, data, qconfig, batch_size, progress)
    return quantize_reordered_hybrid(model, plans, data, qconfig, batch_size, progress)
