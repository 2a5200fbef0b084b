"""The Quamba2 recipe for a Mamba2 model: calibrate, sort and cluster x, reorder the weights, calibrate again,
quantize.

    1. calibration pass 1 (only when sort-and-cluster is on): the range of every x channel (per-channel abs-max of
       the conv output over the calibration windows);
    2. per mixer, the channel order and groups (:func:`edge_quamba.quant.cluster.sort_and_cluster`), applied to the
       fp weights (:func:`edge_quamba.quant.cluster.permute_mamba2_mixer`; the fp model's output is unchanged);
    3. calibration pass 2 on the reordered model: every site's amax. A second pass is needed because the Hadamard
       transform of the out_proj input does not commute with the channel order (H P y != P H y), so that site's
       range changes; every other site's statistics are the first pass's, permuted;
    4. the quantized reference (:func:`edge_quamba.quant.mamba2_qmodel.quantize_mamba2_model`).

At w4a8 and w4a16 pass 2 also accumulates the Hessians of in_proj's and out_proj's float inputs for GPTQ (as
:class:`edge_quamba.quant.calibrate.LinearHessians` does for Mamba1). At w4a16 nothing is quantized to group, so
steps 1 and 2 are skipped.

The fp model runs through the one Mamba2 flow with float ops (:func:`edge_quamba.quant.flow.float_flow`), whose
``quantize`` calls observe the float value at each site of ``MAMBA2_SITES``. Deterministic: fixed windows in file
order, abs-max statistics, a clustering without random starts.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from edge_quamba.models.mamba2 import Mamba2LM
from edge_quamba.quant.calibrate import CalibrationData, run_calibration, site_tap
from edge_quamba.quant.cluster import ClusterPlan, permute_mamba2_mixer, sort_and_cluster
from edge_quamba.quant.flow import float_flow
from edge_quamba.quant.gptq import HessianAccumulator
from edge_quamba.quant.mamba2_qmodel import FOUR_BIT_LINEARS_MAMBA2, quantize_mamba2_model
from edge_quamba.quant.observers import AbsMaxObserver, ChannelAbsMaxObserver
from edge_quamba.quant.config import QuantConfig
from edge_quamba.quant.sites import MAMBA2_SITE_NAMES


class Mamba2SiteObservers:
    """One observer per (layer, site): per-tensor abs-max, per-channel abs-max for ``ssm_input`` (x | B | C)."""

    def __init__(self, n_layer: int):
        def observer(layer: int, site: str):
            name = f"layers.{layer}.mixer.{site}"
            return ChannelAbsMaxObserver(name) if site == "ssm_input" else AbsMaxObserver(name)

        self.observers = [{site: observer(i, site) for site in MAMBA2_SITE_NAMES} for i in range(n_layer)]

    def __call__(self, layer: int, site: str, x: Tensor) -> None:
        self.observers[layer][site].observe(x)

    def amaxes(self) -> list[dict[str, Tensor]]:
        return [{site: obs.amax() for site, obs in layer.items()} for layer in self.observers]


LINEAR_INPUT_SITES_MAMBA2 = {"in_proj_input": "in_proj", "out_proj_input": "out_proj"}
"""The site whose float value is each int4 linear's input (out_proj's sees H y when Hadamard is on)."""


class Mamba2LinearHessians:
    """Per layer, H = 2 X^T X / tokens of in_proj's and out_proj's float inputs (GPTQ's statistic)."""

    def __init__(self, n_layer: int):
        self.layers: list[dict[str, HessianAccumulator]] = [{} for _ in range(n_layer)]

    def __call__(self, layer: int, site: str, x: Tensor) -> None:
        linear = LINEAR_INPUT_SITES_MAMBA2.get(site)
        if linear is not None:
            self.layers[layer].setdefault(linear, HessianAccumulator(x.shape[-1])).add(x)

    def hessians(self) -> list[dict[str, Tensor]]:
        return [{name: layer[name].H for name in FOUR_BIT_LINEARS_MAMBA2} for layer in self.layers]


@torch.inference_mode()
def calibrate_mamba2(model: Mamba2LM, data: CalibrationData, hadamard: bool, batch_size: int = 8,
                     progress: bool = True, desc: str = "calibrating",
                     hessians: Mamba2LinearHessians | None = None) -> list[dict[str, Tensor]]:
    """Per-layer amaxes of every Mamba2 site: 0-dim tensors, (conv_dim,) for ``ssm_input``; ``hessians``, when
    given, accumulates the int4 linears' input Hessians in the same pass."""
    observers = Mamba2SiteObservers(model.config.n_layer)
    run_calibration(model, data, float_flow(model, hadamard, site_tap(observers, hessians)), batch_size, progress, desc)
    return observers.amaxes()


def reorder_for_quamba2(fp_model: Mamba2LM, data: CalibrationData, qconfig: QuantConfig, batch_size: int = 8,
                        progress: bool = True) -> tuple[Mamba2LM, list[ClusterPlan | None]]:
    """Steps 1 and 2: a float32 copy of ``fp_model`` (left unchanged) in the sort-and-cluster channel order, and each
    layer's plan (None where nothing is clustered: ``sort_cluster`` off or w4a16, the copy then keeps the order).

    The copy is the same model (same outputs), and its sites line up channel for channel with those of the model
    that :func:`quantize_reordered` makes from it: it is the fp reference of the per-layer SQNR
    (:func:`edge_quamba.eval.sqnr.layer_sqnr`)."""
    model = copy.deepcopy(fp_model).float()
    c = model.config
    plans: list[ClusterPlan | None] = [None] * c.n_layer
    if qconfig.sort_cluster and qconfig.bits != "w4a16":
        first = calibrate_mamba2(model, data, qconfig.hadamard, batch_size, progress, "calibrating (x ranges)")
        for i, block in enumerate(model.backbone.layers):
            x_amax = first[i]["ssm_input"][:c.d_inner].view(c.nheads, c.headdim)
            plans[i] = sort_and_cluster(x_amax, c.ngroups, qconfig.head_groups, qconfig.dim_groups)
            with torch.no_grad():
                permute_mamba2_mixer(block.mixer, plans[i])
    return model, plans


def quantize_reordered(model: Mamba2LM, plans: list[ClusterPlan | None], data: CalibrationData, qconfig: QuantConfig,
                       batch_size: int = 8, progress: bool = True) -> Mamba2LM:
    """Steps 3 and 4 on :func:`reorder_for_quamba2`'s model (left unchanged) and plans: the quantized reference."""
    hessians = Mamba2LinearHessians(model.config.n_layer) if qconfig.four_bit and qconfig.gptq else None
    amaxes = calibrate_mamba2(model, data, qconfig.hadamard, batch_size, progress, hessians=hessians)
    return quantize_mamba2_model(model, amaxes, plans, qconfig, None if hessians is None else hessians.hessians())


def quamba2_quantize(fp_model: Mamba2LM, data: CalibrationData, qconfig: QuantConfig, batch_size: int = 8,
                     progress: bool = True) -> Mamba2LM:
    """The Quamba2 quantized reference of ``fp_model`` (left unchanged) from the calibration windows ``data``."""
    model, plans = reorder_for_quamba2(fp_model, data, qconfig, batch_size, progress)
    return quantize_reordered(model, plans, data, qconfig, batch_size, progress)
