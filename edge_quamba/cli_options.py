"""The flags several ``edge-quamba`` commands share: ``--model``, ``--backend``, ``--tokenizer``, ``--threads``, and
the quantization recipe's options of ``quantize`` and ``export`` with the :class:`QuantConfig` they make (which of
them apply to a run is :mod:`edge_quamba.recipe_options`). Declared once here so that every command spells and
explains them alike; the commands are :mod:`edge_quamba.cli`.
"""

from __future__ import annotations

import os

import click

from edge_quamba.quant.sites import DEFAULT_PERCENTILE_SITES, OUT_PROJ_SCALES, SITE_NAMES
from edge_quamba.runtime import BACKENDS

MODEL_HELP = (
    "Model: a folder (fp checkpoint of Mamba1 or Mamba2 in transformers or mamba_ssm layout, quantized artifact, or "
    "export folder; or a hybrid Mamba2 + attention Nemotron-H / Bamba checkpoint), a Hugging Face hub id, or a shipped "
    "demo model: demo (Mamba1, the default), demo-mamba2 (Mamba2; quantize it with --method quamba2) or demo-hybrid "
    "(a tiny Nemotron-H; --method quamba2)."
)


def model_option(func):
    return click.option("--model", "model", default=None, metavar="M", help=MODEL_HELP)(func)


def backend_option(func):
    return click.option(
        "--backend", type=click.Choice(BACKENDS), default="ref", show_default=True,
        help="ref: PyTorch reference (anywhere); ort: ONNX Runtime on an export folder; cuda: int8 CUDA kernels; "
        "tensorrt: a TensorRT engine (Jetson).",
    )(func)


def tokenizer_option(func):
    return click.option(
        "--tokenizer", default=None, metavar="FILE_OR_ID",
        help="tokenizer.json, a folder holding one, or a hub id; for checkpoints without one (mamba_ssm layout).",
    )(func)


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask; os.cpu_count() where there is none)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _at_most_the_cpus(ctx, param, value):
    """--threads beyond the CPUs only contends; far beyond, torch's thread pool crashed (segmentation fault) and
    ONNX Runtime's hung creating threads. Refused in one line instead."""
    if value is not None and value > available_cpus():
        raise click.BadParameter(f"{value} is more than the {available_cpus()} CPUs this process may use", ctx, param)
    return value


def threads_option(func):
    return click.option("--threads", type=click.IntRange(min=1), default=None, callback=_at_most_the_cpus,
                        help="Intra-op threads (torch for ref, ONNX Runtime for ort), at most the CPUs this process "
                        "may use. Default: the runtime's own.")(func)


CALIBRATION_OPTIONS = (
    click.option("--calib-data", type=click.Path(exists=True, dir_okay=False), default=None,
                 help="Calibration text (.txt, or .jsonl with a \"text\" field). Default: the shipped calibration "
                 "split."),
    click.option("--calib-samples", type=click.IntRange(min=1), default=256, show_default=True,
                 help="Number of calibration windows."),
    click.option("--calib-seq-len", type=click.IntRange(min=2), default=512, show_default=True,
                 help="Tokens per calibration window."),
    click.option("--calib-seed", type=click.IntRange(min=0), default=None, metavar="N",
                 help="Draw the --calib-samples windows at random offsets of the tokenized calibration text with this "
                 "seed (recorded in quant_config.json). Default: the first windows in file order."),
    click.option("--weight-scales", type=click.Choice(("tensor", "channel")), default="tensor", show_default=True,
                 help="One int8 scale per weight tensor (the paper's), or one per output channel of each linear "
                 "(ONNX per-axis DequantizeLinear; --backend cuda has no kernel for it and refuses such models)."),
    click.option("--method", type=click.Choice(["quamba", "quamba2"]), default="quamba", show_default=True,
                 help="Recipe: quamba (Quamba, arXiv 2410.13229, plus the bit-width configs) for Mamba1 models; "
                 "quamba2 (arXiv 2503.22879: sort-and-cluster of the scan input x, per-state-group B/C scales) for "
                 "Mamba2 models (the --percentile options apply to quamba only)."),
    click.option("--bits", type=click.Choice(["w8a8", "w4a8", "w4a16", "fp32"]), default="w8a8", show_default=True,
                 help="w8a8: int8 weights and activations. w4a8: group-wise int4 weights (GPTQ), int8 activations. "
                 "w4a16: group-wise int4 weights (GPTQ), float16 activations (no activation quantization, so the "
                 "percentile and Hadamard options do not apply). fp32 (export only): no quantization, the fp "
                 "checkpoint's float32 graph (--target ort), the baseline for the quantized graphs' CPU speed; the "
                 "other recipe options do not apply (given, they are refused)."),
    click.option("--group-size", type=click.IntRange(min=1), default=64, show_default=True,
                 help="Input features per int4 weight scale (w4a8, w4a16); a last partial group is allowed. 64 "
                 "measured better than 128 on both demo models for 6% more linear-weight bytes (README, Bit widths)."),
    click.option("--no-gptq", is_flag=True,
                 help="Ablation: round int4 weights to nearest instead of GPTQ's error-compensating rounding."),
    click.option("--gptq-order", type=click.Choice(("natural", "act")), default="natural", show_default=True,
                 help="Order in which GPTQ rounds the input columns (w4a8, w4a16): natural (column 0 first, each "
                 "group's scale from its error-compensated weights) or act (by decreasing mean squared calibration "
                 "input, each group's scale fixed beforehand from its original weights). Both store the same layout "
                 "(no permutation at run time); recorded in quant_config.json as gptq_act_order. act did not help "
                 "consistently on the demo models (README, Bit widths)."),
    click.option("--head-groups", type=click.IntRange(min=1), default=4, show_default=True,
                 help="quamba2: head clusters of the scan input x per SSD group (sort-and-cluster)."),
    click.option("--dim-groups", type=click.IntRange(min=1), default=4, show_default=True,
                 help="quamba2: channel clusters of x per head cluster, each with its own scale."),
    click.option("--no-sort-cluster", is_flag=True, help="quamba2 ablation: one scale for x, channels not reordered."),
    click.option("--no-group-bc", is_flag=True, help="quamba2 ablation: one scale each for B and C (not one per state "
                 "group)."),
    click.option("--kv-cache", type=click.Choice(("float16", "int8")), default="float16", show_default=True,
                 help="Hybrid models: what the attention KV cache holds: float16 values, or int8 codes at static "
                 "per-tensor scales of the keys and values (w8a8, w4a8; README, Hybrid models, measures both)."),
    click.option("--float-attn-mlp", is_flag=True,
                 help="Hybrid models: keep the attention and MLP linears float (only the Mamba2 layers quantized)."),
    click.option("--percentile", type=click.FloatRange(0, 1, min_open=True), default=0.99999, show_default=True,
                 help="Quantile of |x| used as the clipping amax of each --percentile-on site, as a fraction."),
    click.option("--no-percentile", is_flag=True, help="Ablation: abs-max (min-max) scales everywhere."),
    click.option("--percentile-on", default=None, metavar="NAMES",
                 help=f"Comma-separated quantization sites clipped at --percentile, from {', '.join(SITE_NAMES)}. "
                 f"Default: {','.join(DEFAULT_PERCENTILE_SITES)} (u only with --out-proj-scale dynamic). The paper "
                 "clips u only (--percentile-on u); clipping the rotated out_proj input too measured better on the "
                 "demo and the large model (README, Quality)."),
    click.option("--no-hadamard", is_flag=True,
                 help="Ablation: quantize the out_proj input without the Hadamard rotation."),
    click.option("--out-proj-scale", type=click.Choice(OUT_PROJ_SCALES), default="static", show_default=True,
                 help="Scale of the out_proj input: static (one calibrated per-tensor scale, the paper) or dynamic "
                 "(one scale per token, amax / 127 of its Hadamard-rotated values, computed inside Hadamard + "
                 "quantize; needs the Hadamard rotation; export --target ort only, no TensorRT graph)."),
    click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
                 help="Calibration batch size."),
    tokenizer_option,
)


def calibration_options(func):
    """The quantization recipe's options, shared by `quantize` and `export` (which quantizes an fp checkpoint)."""
    for option in reversed(CALIBRATION_OPTIONS):
        func = option(func)
    return func


def quant_config(calib_samples, calib_seq_len, percentile, no_percentile, percentile_on, no_hadamard,
                 calib_seed=None, weight_scales="tensor", out_proj_scale="static", method="quamba", bits="w8a8",
                 group_size=64, no_gptq=False, head_groups=4, dim_groups=4, no_sort_cluster=False, no_group_bc=False,
                 gptq_order="natural", kv_cache="float16", float_attn_mlp=False):
    from edge_quamba.quant.config import QuantConfig

    return QuantConfig(method=method, bits=bits, group_size=group_size, gptq=not no_gptq,
                       gptq_act_order=gptq_order == "act",
                       head_groups=head_groups, dim_groups=dim_groups, sort_cluster=not no_sort_cluster,
                       per_group_bc=not no_group_bc, kv_cache=kv_cache, quantize_attn_mlp=not float_attn_mlp,
                       percentile=None if no_percentile else percentile, hadamard=not no_hadamard,
                       percentile_activations=None if percentile_on is None else
                       tuple(name.strip() for name in percentile_on.split(",")),
                       calib_samples=calib_samples, calib_seq_len=calib_seq_len, calib_seed=calib_seed,
                       weight_scales=weight_scales, out_proj_scale=out_proj_scale)
