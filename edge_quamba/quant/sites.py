"""The quantization sites of a Mamba1 mixer: the one declaration that calibration, the quantized reference, SQNR
taps, the ONNX lowering, validation and the CLI help all read.

A *site* is one static per-tensor int8 scale and the tensor(s) quantized at it. The data flow that uses the sites
is written once, in :func:`edge_quamba.quant.flow.mamba1_mixer_flow`; this table says what each site holds:

    site             codes (graph tensors)        made by                                      read by
    in_proj_input    in_proj.input_q              rms_norm_quantize (the block's pre-norm)     in_proj
    xz               x_q | z_q  (one tensor xz_q) int8_linear_quantize (in_proj)               conv1d (x), scan gate (z)
    u                u_q                          Int8CausalConv1d                             x_proj, scan
    dbc              dt_r_q | B_q | C_q (dbc_q)   int8_linear_quantize (x_proj)                dt_proj (Δ_r), scan (B, C)
    dt               dt_q                         int8_linear_quantize (dt_proj, no bias)      scan (dt_bias added inside)
    out_proj_input   y_q                          HadamardQuantize (quantize without Hadamard) out_proj

``out_proj_input`` is the one site that can instead be quantized with a per-token scale made at run time
(``QuantConfig.out_proj_scale = "dynamic"``, op HadamardQuantizeDynamic): its codes y_q and their name stay the same,
but it then has no static scale, so calibration does not observe it, the mixer holds no ``out_proj_input_scale`` and
the graph no such initializer (:func:`static_site_names`).

The scale of a site is stored as the buffer ``<site>_scale`` of :class:`edge_quamba.quant.qmodel.QuantMambaMixer`.
A site whose codes the graph splits (x|z, Δ_r|B|C) lists its ``pieces``: the graph quantizes each piece at the
site's scale (elementwise, so identical to quantizing the whole and splitting), and validation concatenates them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Site:
    """One static activation scale.

    name: the site (scale buffer ``<name>_scale``, quant_config key, ``--percentile-on`` value).
    holds: what tensor it quantizes, in words.
    code: the int8 tensor's name (``layers.<i>.mixer.<code>`` in the graph and in validation).
    pieces: the graph tensors the codes are split into, in order (empty: the code tensor itself).
    percentile: clipped at a percentile by default (the paper's recipe clips only the scan input u; the rotated
        out_proj input too since 2026-12-01, from the quality table).
    """

    name: str
    holds: str
    code: str
    pieces: tuple[str, ...] = ()
    percentile: bool = False

    @property
    def graph_tensors(self) -> tuple[str, ...]:
        return self.pieces or (self.code,)


SITES: tuple[Site, ...] = (
    Site("in_proj_input", "the norm output entering in_proj", "in_proj.input_q"),
    Site("xz", "in_proj's output: x (conv input) and z (gate) share one scale", "xz_q", ("x_q", "z_q")),
    Site("u", "the selective-scan input u = silu(conv1d(x))", "u_q", percentile=True),
    Site("dbc", "x_proj's output: Δ_r, B and C share one scale", "dbc_q", ("dt_r_q", "B_q", "C_q")),
    Site("dt", "dt_proj's output without its bias (the bias is added inside the scan)", "dt_q"),
    Site("out_proj_input", "the gated scan output y, Hadamard-rotated when on (out_proj's input)", "y_q",
         percentile=True),
)
"""Every site of a mixer, in data-flow order."""

SITE_NAMES: tuple[str, ...] = tuple(site.name for site in SITES)
SITE_BY_NAME: dict[str, Site] = {site.name: site for site in SITES}
DEFAULT_PERCENTILE_SITES: tuple[str, ...] = tuple(site.name for site in SITES if site.percentile)
"""Clipped at the percentile by default: the scan input u (the paper) and the rotated out_proj input (beyond the
paper, the default since it measured better on both models, README "Quality"). PAPER_PERCENTILE_SITES is the
paper's recipe."""

PAPER_PERCENTILE_SITES: tuple[str, ...] = ("u",)


def default_percentile_sites(out_proj_scale: str = "static") -> tuple[str, ...]:
    """The default clipped sites for an out_proj scale: a per-token out_proj scale has no static scale to clip."""
    if out_proj_scale == "static":
        return DEFAULT_PERCENTILE_SITES
    return tuple(name for name in DEFAULT_PERCENTILE_SITES if name != "out_proj_input")


OUT_PROJ_SCALES: tuple[str, ...] = ("static", "dynamic")
"""Values of ``QuantConfig.out_proj_scale`` / ``--out-proj-scale``: out_proj's input quantized at the calibrated
per-tensor scale of the site ``out_proj_input``, or at a per-token scale computed inside Hadamard + quantize."""


def static_site_names(out_proj_scale: str = "static") -> tuple[str, ...]:
    """The sites that have a static (calibrated, stored) scale: all of them, less ``out_proj_input`` when out_proj's
    input scale is dynamic."""
    if out_proj_scale not in OUT_PROJ_SCALES:
        raise ValueError(f"out_proj_scale {out_proj_scale!r} is not one of {OUT_PROJ_SCALES}")
    return SITE_NAMES if out_proj_scale == "static" else tuple(n for n in SITE_NAMES if n != "out_proj_input")
MAMBA2_SITES: tuple[Site, ...] = (
    Site("in_proj_input", "the norm output entering in_proj", "in_proj.input_q"),
    Site("z", "in_proj's gate output z", "z_q"),
    Site("xBC", "in_proj's conv input x | B | C (one scale: the conv state keeps these codes)", "xBC_q"),
    Site("dt", "in_proj's Δ output without dt_bias (the bias is added inside the scan)", "dt_q"),
    Site("ssm_input", "the conv output silu(conv1d(xBC)) = x | B | C, per channel group: x at its sort-and-cluster "
                      "group's scale, B and C at their state group's", "ssm_input_q", ("x_q", "B_q", "C_q")),
    Site("out_proj_input", "the gated-norm output, Hadamard-rotated when on (out_proj's input)", "y_q"),
)
"""Every site of a Mamba2 mixer (:func:`edge_quamba.quant.mamba2_flow.mamba2_mixer_flow`), in data-flow order. All
per tensor except ``ssm_input``, whose scales are per group (:mod:`edge_quamba.quant.mamba2_qmodel`)."""

MAMBA2_IN_PROJ_SITES = ("z", "xBC", "dt")
"""The sites of in_proj's output parts z | xBC | Δ, in column order (one op quantizes all three)."""

MAMBA2_SITE_NAMES: tuple[str, ...] = tuple(site.name for site in MAMBA2_SITES)
MAMBA2_SITE_BY_NAME: dict[str, Site] = {site.name: site for site in MAMBA2_SITES}


def tensor_name(layer: int, code: str) -> str:
    """The name of a mixer's int8 tensor in the graph and in validation: ``layers.<layer>.mixer.<code>``."""
    return f"layers.{layer}.mixer.{code}"


def graph_code_tensors(n_layer: int, sites: tuple[Site, ...] = SITES) -> dict[str, tuple[str, ...]]:
    """Per code label (one per site and layer), the graph tensors that hold its codes, in concatenation order."""
    return {tensor_name(i, site.code): tuple(tensor_name(i, piece) for piece in site.graph_tensors)
            for i in range(n_layer) for site in sites}
