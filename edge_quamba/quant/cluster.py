"""Quamba2's sort-and-cluster of the SSD input x: a channel order and channel groups, each group with its own scale.

Why: x = silu(conv1d(...)) of a Mamba2 mixer has a few heads and, within heads, a few channels with a much larger
range than the rest; one per-tensor int8 scale wastes most of the codes on the many small channels. Quamba2
(arXiv 2503.22879, section 4) observes that the channel ranges are stable across inputs, so it fixes offline
(from calibration statistics) an order of the heads and of the channels in which similar ranges sit next to each
other, cuts them into groups and gives each group one static scale. The order is applied to the weights that
make and consume x (:func:`permute_mamba2_mixer`), so the fp model's output does not change and no kernel ever
permutes at run time; the groups are then contiguous ranges of channels.

Layout (the paper's): scales shaped (g, head_groups, dim_groups), g the number of SSD groups (heads of one SSD group
share B and C and the gated norm's group, so heads never move between SSD groups):

  1. within each SSD group, heads are sorted by their largest channel range and cut into ``head_groups`` clusters;
  2. within each head group, channels (one order for all heads of the group, by the largest range over those heads)
     are sorted and cut into ``dim_groups`` clusters.

Clustering (deterministic, no random start): the sorted ranges are cut into k contiguous clusters by dynamic
programming, minimizing the total resolution lost, sum over members of log2(group amax / member amax): the bits a
channel gives up by sharing its group's (largest) scale. This is the exact optimum over all contiguous cuts of the
sorted values (the official code runs k-means on the values; the objective here measures what quantization loses,
and it needs no seed). Ties in a sort keep the original order (stable sort).

Glossary: :mod:`edge_quamba.models.mamba2` (h heads of p channels, g groups; d_in = h p).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from edge_quamba.models.mamba2 import Mamba2Mixer
from edge_quamba.quant.primitives import AMAX_FLOOR


@dataclass(frozen=True)
class ClusterPlan:
    """The channel order and groups of x for one mixer.

    channel_order: (d_in,) int64, new channel j holds old channel channel_order[j] (heads move with their channels).
    head_order: (h,) int64, new head i is old head head_order[i].
    group: (d_in,) int64, the flat index into (g, head_groups, dim_groups) of each channel in the new order.
    shape: (g, head_groups, dim_groups), the layout of the group scales.
    """

    channel_order: Tensor
    head_order: Tensor
    group: Tensor
    shape: tuple[int, int, int]


def cut_sorted(values: list[float], k: int) -> list[int]:
    """The cluster label (0..k'-1, k' = min(k, len(values))) of each of ``values`` (ascending, > 0), from the cut into
    k' contiguous clusters minimizing sum over members of log(cluster max / member); the first best cut wins ties."""
    m = len(values)
    k = min(k, m)
    logs = [math.log(v) for v in values]
    prefix = [0.0]
    for v in logs:
        prefix.append(prefix[-1] + v)

    def cost(i: int, j: int) -> float:  # members i..j-1 share the scale of the largest, values[j - 1]
        return (j - i) * logs[j - 1] - (prefix[j] - prefix[i])

    inf = math.inf
    best = [[inf] * (m + 1) for _ in range(k + 1)]  # best[c][j]: first j values in c clusters
    start = [[0] * (m + 1) for _ in range(k + 1)]
    best[0][0] = 0.0
    for c in range(1, k + 1):
        for j in range(c, m + 1):
            for i in range(c - 1, j):
                total = best[c - 1][i] + cost(i, j)
                if total < best[c][j] - 1e-12:
                    best[c][j], start[c][j] = total, i
    labels = [0] * m
    j = m
    for c in range(k, 0, -1):
        i = start[c][j]
        labels[i:j] = [c - 1] * (j - i)
        j = i
    return labels


def sort_and_cluster(amax: Tensor, ngroups: int, head_groups: int, dim_groups: int) -> ClusterPlan:
    """The plan for one mixer from the calibrated range of every x channel.

    amax: (h, p) max |x| per head and channel (>= 0). ngroups: g SSD groups (h a multiple of g).
    head_groups, dim_groups: the number of clusters wanted, capped at the heads per SSD group and at p.
    """
    h, p = amax.shape
    heads_per_group = h // ngroups
    hg, dg = min(head_groups, heads_per_group), min(dim_groups, p)
    amax = amax.double().clamp(min=AMAX_FLOOR)
    head_order, channel_order, group = [], [], []
    for g in range(ngroups):
        heads = torch.arange(g * heads_per_group, (g + 1) * heads_per_group)
        by_range = heads[torch.sort(amax[heads].amax(1), stable=True).indices]
        head_label = cut_sorted(amax[by_range].amax(1).tolist(), hg)
        for cluster in range(hg):
            members = by_range[[i for i, label in enumerate(head_label) if label == cluster]]
            channel_range = amax[members].amax(0)  # (p,) the widest over the cluster's heads
            channels = torch.sort(channel_range, stable=True).indices
            dim_label = cut_sorted(channel_range[channels].tolist(), dg)
            for head in members.tolist():
                head_order.append(head)
                channel_order.extend((head * p + channels).tolist())
                group.extend((g * hg + cluster) * dg + label for label in dim_label)
    return ClusterPlan(torch.tensor(channel_order), torch.tensor(head_order), torch.tensor(group), (ngroups, hg, dg))


@torch.no_grad()
def permute_mamba2_mixer(mixer: Mamba2Mixer, plan: ClusterPlan) -> None:
    """Reorder the x channels and heads of an fp mixer in place, so that its x comes out in the plan's order and its
    output is unchanged.

    x channel c feeds: in_proj's x row and z row c (z gates y channel by channel), conv channel c, the state row
    and y channel c, the gated norm's weight c and out_proj's column c; a head carries its Δ row of in_proj, its
    dt_bias, A_log and D. B and C rows do not move (heads stay in their SSD group, and the norm groups equal the SSD
    groups, so every sum the model takes is over the same set of channels)."""
    c = mixer.config
    order, heads = plan.channel_order, plan.head_order
    d_in, conv_dim = c.d_inner, c.conv_dim
    rows = torch.cat([order, d_in + order, torch.arange(2 * d_in, d_in + conv_dim),
                      d_in + conv_dim + heads])  # in_proj rows: z | x | B C | dt
    mixer.in_proj.weight.copy_(mixer.in_proj.weight[rows])
    if mixer.in_proj.bias is not None:
        mixer.in_proj.bias.copy_(mixer.in_proj.bias[rows])
    conv_rows = torch.cat([order, torch.arange(d_in, conv_dim)])
    mixer.conv1d.weight.copy_(mixer.conv1d.weight[conv_rows])
    if mixer.conv1d.bias is not None:
        mixer.conv1d.bias.copy_(mixer.conv1d.bias[conv_rows])
    for param in (mixer.dt_bias, mixer.A_log, mixer.D):
        param.copy_(param[heads])
    mixer.norm.weight.copy_(mixer.norm.weight[order])
    mixer.out_proj.weight.copy_(mixer.out_proj.weight[:, order])
