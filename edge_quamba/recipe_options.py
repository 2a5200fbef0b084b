"""Options of `quantize` and `export` that do not apply to what was asked are refused, not silently recorded.

``--group-size 128 --bits w8a8`` used to be accepted, written into quant_config.json and ignored. The rule now: an
option *given explicitly* (typed on the command line or set through its environment variable; click's
ParameterSource) that has no effect on this run is a one-line error naming it and why. Defaults are never refused,
so every command that was valid and meant what it said still runs. :data:`RULES` is the whole list, in the order
checked; the first option that does not apply is reported.

What decides: ``--bits`` (int4 options at w4a8 / w4a16 only; nothing of the recipe at export's fp32; no activation
option at w4a16), ``--method`` (sort-and-cluster options at quamba2 only; the percentile options at quamba only),
the ablation switches that turn a knob off (``--no-gptq``, ``--no-sort-cluster``, ``--no-percentile``), export's
``--target`` (``--float-parts`` is for the TensorRT graph), what ``--model`` is (for export: a quantized artifact or
an export folder is exported with the recipe it was quantized with, so no recipe option applies to it) and its
architecture (``--kv-cache`` and ``--float-attn-mlp`` apply to hybrid models only).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from edge_quamba.errors import InputError
from edge_quamba.models.hybrid_config import HybridConfig

if TYPE_CHECKING:
    from edge_quamba.folders import ModelFolder

INT4_OPTIONS = ("group_size", "no_gptq", "gptq_order")
QUAMBA2_OPTIONS = ("head_groups", "dim_groups", "no_sort_cluster", "no_group_bc")
PERCENTILE_OPTIONS = ("percentile", "no_percentile", "percentile_on")
W8A8_OPTIONS = ("weight_scales", "out_proj_scale")
HYBRID_OPTIONS = ("kv_cache", "float_attn_mlp")
CALIBRATION_OPTIONS = ("calib_samples", "calib_seq_len", "calib_seed", "batch_size")
RECIPE_OPTIONS = (*CALIBRATION_OPTIONS, "method", *INT4_OPTIONS, *QUAMBA2_OPTIONS, *PERCENTILE_OPTIONS,
                  "no_hadamard", *W8A8_OPTIONS, *HYBRID_OPTIONS)
"""Everything that shapes a quantization (``--bits`` aside), none of which an fp32 export or a re-export uses."""
MODEL_DEPENDENT = (*RECIPE_OPTIONS, "bits", "tokenizer")
"""Options that do not apply when export's ``--model`` is a quantized artifact or an export folder, or that depend
on the architecture of ``--model`` (the hybrid options)."""

Rule = tuple[tuple[str, ...], Callable[[dict[str, Any]], bool], Callable[[dict[str, Any]], str]]
RULES: tuple[Rule, ...] = (
    (RECIPE_OPTIONS + ("float_parts",), lambda v: v.get("bits") == "fp32",
     lambda v: "--bits fp32 exports the fp checkpoint unquantized"),
    (MODEL_DEPENDENT, lambda v: v.get("kind") not in (None, "fp") and v.get("bits") != "fp32",
     lambda v: f"--model is a {v['kind']} folder, re-exported with the recipe and tokenizer it was quantized with "
               f"(recipe options apply to an fp checkpoint)"),
    (INT4_OPTIONS, lambda v: v["bits"] not in ("w4a8", "w4a16"),
     lambda v: f"it shapes the int4 weights of --bits w4a8 / w4a16, not --bits {v['bits']}"),
    (("gptq_order",), lambda v: v.get("no_gptq"), lambda v: "--no-gptq rounds to nearest, in no GPTQ order"),
    (QUAMBA2_OPTIONS, lambda v: v["method"] != "quamba2", lambda v: "it is a --method quamba2 option"),
    (("head_groups", "dim_groups"), lambda v: v.get("no_sort_cluster"),
     lambda v: "--no-sort-cluster keeps one scale for x, in no groups"),
    (PERCENTILE_OPTIONS, lambda v: v["method"] != "quamba", lambda v: "it is a --method quamba option"),
    (PERCENTILE_OPTIONS + ("no_hadamard",), lambda v: v["bits"] == "w4a16",
     lambda v: "--bits w4a16 quantizes no activation"),
    (("percentile", "percentile_on"), lambda v: v.get("no_percentile"),
     lambda v: "--no-percentile turns percentile clipping off"),
    (W8A8_OPTIONS, lambda v: (v["method"], v["bits"]) != ("quamba", "w8a8"),
     lambda v: f"it is a Quamba W8A8 option, not --method {v['method']} --bits {v['bits']}"),
    (HYBRID_OPTIONS, lambda v: v.get("hybrid") is False,
     lambda v: "it is an option of hybrid (Mamba2 + attention) models; --model is not one"),
    (("float_parts",), lambda v: v.get("target") == "ort" or v["bits"] != "w8a8",
     lambda v: "it sets the residual stream of a W8A8 model's TensorRT graph; "
               + ("this export writes no TensorRT graph (--target ort)" if v.get("target") == "ort" else
                  f"the TensorRT graph of --bits {v['bits']} keeps its own (--target {v.get('target')})")),
)


def refuse_inapplicable(ctx, export: bool) -> Callable[[ModelFolder], None]:
    """Refuse, in one line, an option of the click context ``ctx`` (quantize or export) given explicitly that does not
    apply: now those whose rule needs nothing of ``--model``, and through the returned check those that depend on what
    ``--model`` is (its folder kind for export, whether it is a hybrid). The command passes that check to its library
    call, which runs it on the opened folder before verifying its files (:func:`edge_quamba.folders.open_model`)."""
    given = given_options(ctx)
    values = dict(ctx.params)
    refuse_options(given, values)

    def check(folder: ModelFolder) -> None:
        if values.get("bits") != "fp32" and given.keys() & MODEL_DEPENDENT:
            what = {"kind": folder.kind} if export else {}
            refuse_options(given, {**values, **what, "hybrid": isinstance(folder.config, HybridConfig)})

    return check


def given_options(ctx) -> dict[str, str]:
    """name -> flag (e.g. "group_size" -> "--group-size") of the options of a click context that the user gave,
    on the command line or through an environment variable (not defaults)."""
    from click.core import ParameterSource

    given = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    return {p.name: max(p.opts, key=len) for p in ctx.command.params
            if p.opts and ctx.get_parameter_source(p.name) in given}


def refuse_options(given: dict[str, str], values: dict[str, Any]) -> None:
    """A one-line InputError for the first option in ``given`` (name -> flag) that does not apply to ``values``:
    the command's values by option name (method, bits, no_gptq, target, ...) plus what --model is, where known:
    ``kind`` ("fp", "quantized", "export"; export only) and ``hybrid`` (a Mamba2 + attention model)."""
    for names, does_not_apply, why in RULES:
        for name in names:
            if name in given and does_not_apply(values):
                raise InputError(f"{given[name]} does not apply: {why(values)}")
