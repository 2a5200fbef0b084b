"""A hybrid graph on ONNX Runtime against its quantized reference: :func:`edge_quamba.onnx.validate.validate_on_ort`'s
method (module docstring there) with the hybrid's codes and states.

The reference runs following the graph's rounding ties (the graph's int8 codes fetched from ONNX Runtime's optimized
graph, the reference taking the graph's side only at proven ties), then:
    * every int8 code inside the graph equal: the Mamba2 blocks' sites, the attention blocks' qkv_input / o_proj_input
      (and the int8 KV cache's k / v codes), the MLP blocks' mlp_input / down_proj_input;
    * the int8 states equal (conv states; an int8 KV cache);
    * logits within LOGITS_RTOL, ssm states within SSM_STATE_RTOL, a float16 KV cache within :data:`KV_FLOAT16_RTOL`
      (prefill and every decode step; greedy tokens are the reference's, fed to both).

A float graph (W4A16, or the fp32 graph of an fp checkpoint; :mod:`edge_quamba.onnx.lower_hybrid_float`) has no codes:
:func:`validate_hybrid_float_on_ort` compares every output, KV caches included, within one float tolerance
(:data:`edge_quamba.onnx.validate.W4A16_RTOL` or :data:`edge_quamba.onnx.validate.FP32_RTOL`), as
:func:`edge_quamba.onnx.validate.validate_float_graph_on_ort` does for the Mamba graphs.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from tqdm import tqdm

from edge_quamba.models.attention import KVState
from edge_quamba.models.hybrid import HybridLM
from edge_quamba.models.mamba import LayerState
from edge_quamba.onnx import LOGITS
from edge_quamba.onnx.hybrid_io import hybrid_state_names
from edge_quamba.onnx.validate import (LOGITS_RTOL, SSM_STATE_RTOL, TIE_TOLERANCE, W4A8_TIE_TOLERANCE, W4A16_RTOL,
                                       OutputCheck, TieFollower, ValidationReport, _MaxDiff, _site_codes, expose_codes)
from edge_quamba.quant.hybrid_flow import HYBRID_SITE_BY_NAME
from edge_quamba.quant.hybrid_qmodel import QuantHybridMixer
from edge_quamba.quant.primitives import quantize_hook
from edge_quamba.quant.sites import MAMBA2_SITES, tensor_name

KV_FLOAT16_RTOL = 2e-3
"""A float16 KV cache: max |ort - ref| <= KV_FLOAT16_RTOL * max(1, max |ref|). Both round the same float32 keys and
values to float16; the float32 values differ in the last bits (ONNX Runtime's sums), so a value next to a float16
rounding boundary may land one float16 step (<= 9.8e-4 relative) apart."""


def hybrid_code_tensors(model: HybridLM) -> dict[str, tuple[str, ...]]:
    """Per code label, the graph tensors that hold its codes (pieces concatenated in order)."""
    tensors = {}
    for i, block in enumerate(model.backbone.layers):
        mixer = block.mixer
        sites = [HYBRID_SITE_BY_NAME[s] for s in mixer.sites] if isinstance(mixer, QuantHybridMixer) else MAMBA2_SITES
        for site in sites:
            tensors[tensor_name(i, site.code)] = tuple(tensor_name(i, piece) for piece in site.graph_tensors)
    return tensors


def validate_hybrid_on_ort(model: onnx.ModelProto, model_file: Path, reference: HybridLM, prompt: list[int],
                           decode_steps: int, threads: int | None = None, progress: bool = False,
                           bits: str = "w8a8") -> ValidationReport:
    """Run ``model_file`` (whose graph is ``model``) and the reference on ``prompt`` and then ``decode_steps`` greedy
    tokens, each side threading its own states, and compare as the module docstring says (``bits`` "w4a16": the
    float graph, :func:`validate_hybrid_float_on_ort`)."""
    from edge_quamba.runtime.ort_backend import OrtGraph, import_onnxruntime

    if bits == "w4a16":
        return validate_hybrid_float_on_ort(model_file, reference, prompt, decode_steps, threads, progress)
    config = reference.config
    code_tensors = hybrid_code_tensors(reference)
    with tempfile.TemporaryDirectory() as scratch:
        optimized_file = Path(scratch) / "optimized.onnx"
        shipped = OrtGraph(model_file, config, threads, optimized_model_path=optimized_file)
        optimized = onnx.load(str(optimized_file))
    exposed, found = expose_codes(optimized, model, [t for tensors in code_tensors.values() for t in tensors])
    debug = OrtGraph(exposed.SerializeToString(), config, threads,
                     extra_outputs=tuple(dict.fromkeys(tensor for tensor, _ in found.values())), optimize=False)
    state_in, state_out = hybrid_state_names(config)
    out_of = dict(zip(state_in, state_out))
    follower = TieFollower(TIE_TOLERANCE if bits == "w8a8" else W4A8_TIE_TOLERANCE)
    diffs, exact, mismatched = _MaxDiff(), set(), []
    ort_states, ref_states, tokens = None, None, list(prompt)
    with torch.inference_mode(), quantize_hook(follower):
        for step in tqdm(range(decode_steps + 1), desc="validating", unit="step", disable=not progress, leave=False):
            ids = np.array([tokens], np.int64)
            logits, new_states, _ = shipped.run(ids, ort_states)
            d_logits, d_states, extras = debug.run(ids, ort_states)
            if not (np.array_equal(logits, d_logits) and all(np.array_equal(new_states[k], d_states[k])
                                                             for k in new_states)):
                mismatched.append(step)
            codes, _ = _site_codes(code_tensors, extras, found)  # (no -128 code: every quantize clamps at -127 s)
            follower.expect(codes)
            if step == 0:
                ref_logits, ref_states = reference(torch.tensor(ids), None)
            else:
                ref_logits, ref_states = reference.step(torch.tensor(tokens), ref_states)
                ref_logits = ref_logits[:, None]
            follower.finish()
            diffs.add(LOGITS, logits, ref_logits)
            for name, got, ref in _state_pairs(ref_states, new_states):
                diffs.add(out_of[name], got, ref)
                if got.dtype == np.int8:
                    exact.add(out_of[name])
            ort_states = new_states
            tokens = [int(torch.argmax(ref_logits[0, -1]))]

    report = ValidationReport(prompt_tokens=len(prompt), decode_steps=decode_steps,
                              onnxruntime=import_onnxruntime().__version__, flavour="ort", ties=follower.ties,
                              tie_tolerance=follower.tolerance)
    note = (f"{follower.ties} rounding ties followed, max {follower.max_tie_distance:.1e} codes from .5; "
            f"{follower.codes_compared} codes compared")
    if follower.first_other:
        note += f"; first other difference at {follower.first_other}"
    report.checks.append(OutputCheck("int8 codes inside the graph", float(follower.max_other_difference), 0.0,
                                     follower.other_differences == 0, note))
    report.checks.append(OutputCheck("optimized graph + codes", float(len(mismatched)), 0.0, not mismatched,
                                     "bit-identical outputs to the shipped session" if not mismatched
                                     else f"differs at steps {mismatched[:5]}"))
    for name in [LOGITS, *state_out]:
        rtol = LOGITS_RTOL if name == LOGITS else KV_FLOAT16_RTOL if name.startswith("present_") else SSM_STATE_RTOL
        tolerance = 0.0 if name in exact else rtol * max(1.0, diffs.scale[name])
        report.checks.append(OutputCheck(name, diffs.diff[name], tolerance, diffs.diff[name] <= tolerance))
    return report


def _state_pairs(ref_states: list, graph_states: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray, torch.Tensor]]:
    """(state input name, the graph's state, the reference's, float ones as float32) per block: a Mamba2 block's
    conv and ssm states, an attention block's key and value caches, nothing for an MLP block."""
    pairs = []
    for i, state in enumerate(ref_states):
        named = (("conv_state", state.conv_state), ("ssm_state", state.ssm_state)) if isinstance(state, LayerState) \
            else (("past_key", state.key), ("past_value", state.value)) if isinstance(state, KVState) else ()
        pairs += [(f"{name}.{i}", graph_states[f"{name}.{i}"], ref.float() if ref.is_floating_point() else ref)
                  for name, ref in named]
    return pairs


def validate_hybrid_float_on_ort(model_file: Path, reference: HybridLM, prompt: list[int], decode_steps: int,
                                 threads: int | None = None, progress: bool = False,
                                 rtol: float = W4A16_RTOL) -> ValidationReport:
    """A float hybrid graph (W4A16, or the fp32 graph with ``rtol`` FP32_RTOL) against its reference: ``prompt``,
    then ``decode_steps`` greedy tokens (the reference's choice, fed to both; each side threads its own states);
    logits and every state output (conv and ssm states, KV caches) within ``rtol`` * max(1, max |ref|)."""
    from edge_quamba.runtime.ort_backend import OrtGraph, import_onnxruntime

    graph = OrtGraph(model_file, reference.config, threads)
    out_of = dict(zip(graph.state_inputs, graph.state_outputs))
    diffs, ort_states, tokens = _MaxDiff(), None, list(prompt)
    with torch.inference_mode():
        for step in tqdm(range(decode_steps + 1), desc="validating", unit="step", disable=not progress, leave=False):
            ids = np.array([tokens], np.int64)
            logits, ort_states, _ = graph.run(ids, ort_states)
            if step == 0:
                ref_logits, ref_states = reference(torch.tensor(ids), None)
            else:
                ref_logits, ref_states = reference.step(torch.tensor(tokens), ref_states)
                ref_logits = ref_logits[:, None]
            diffs.add(LOGITS, logits, ref_logits.float())
            for name, got, ref in _state_pairs(ref_states, ort_states):
                diffs.add(out_of[name], got, ref)
            tokens = [int(torch.argmax(ref_logits[0, -1]))]
    report = ValidationReport(prompt_tokens=len(prompt), decode_steps=decode_steps,
                              onnxruntime=import_onnxruntime().__version__, flavour="ort", tie_tolerance=0.0,
                              float_rtol=rtol)
    for name in [LOGITS, *graph.state_outputs]:
        tolerance = rtol * max(1.0, diffs.scale[name])
        report.checks.append(OutputCheck(name, diffs.diff[name], tolerance, diffs.diff[name] <= tolerance,
                                         "no int8 codes in a float graph" if name == LOGITS else ""))
    return report
