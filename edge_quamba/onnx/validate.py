"""The numbers of an exported graph on ONNX Runtime against the quantized reference (:func:`validate_on_ort`; float
graphs against their float reference, :func:`validate_float_graph_on_ort`). Its structure is checked before, by
:func:`edge_quamba.onnx.structure_check.check_graph`.

Why the numerical check follows rounding ties
---------------------------------------------
The graph computes every int8 code from float values that differ from the reference's in the last bits (ONNX
Runtime's exp, softplus and reduction order are not torch's). Nearly always both sides round to the same code, but
now and then a value lies within float32 rounding of a .5 tie and the two sides round apart. Measured on the demo
model: one such tie in about every second 128-token prompt, nearly always in the Hadamard-quantized scan output,
each within 4e-6 codes of the tie. In a recurrent model that single code then changes the scan state and every code
after it (thousands of codes by the last layer, logits apart by up to ~1), so a plain comparison either needs a
tolerance too loose to prove anything or fails on correct graphs.

So the reference is run *following the graph's ties*: the graph is also run with its internal int8 tensors as extra
outputs (every site's tensors, :func:`edge_quamba.quant.sites.graph_code_tensors`; taken from ONNX Runtime's
optimized graph, see :func:`expose_codes`, so that the codes are those of the fused kernels the shipped session
runs), and within :func:`edge_quamba.quant.primitives.quantize_hook` each labelled reference ``quantize`` call
(``layers.<i>.mixer.<code>``, the same name the graph gives that tensor) takes the graph's code wherever the two
differ by one AND the reference's own quotient ``x / s`` is within :data:`TIE_TOLERANCE` codes of .5 (a proven
tie). Every other code must be equal. Then:
    * every int8 code inside the graph and the int8 state outputs must be exactly equal (0 differences);
    * logits and ssm states must agree within a relative tolerance (:data:`LOGITS_RTOL`, :data:`SSM_STATE_RTOL`);
    * the ties followed are counted and reported, with their largest distance to .5.
The graph run with extra outputs must give bit-identical standard outputs to the shipped file, which is checked.
Without the tie rule the demo model's plain logits differ by up to ~0.9 on such prompts and greedy continuations can
part where the top two logits are closer than that (benchmarks/results/ort_cpu.json records one such case);
tests/test_export_cli.py shows both sides on 12 windows of held-out text.
"""

from __future__ import annotations

import collections
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper
from torch import Tensor
from tqdm import tqdm

from edge_quamba.models.mamba import MambaLM
from edge_quamba.onnx import LAST_LOGITS, LOGITS, state_names
from edge_quamba.onnx.structure_check import constant_values, initializer_values
from edge_quamba.quant.primitives import quantize_hook
from edge_quamba.models.config import Mamba2Config
from edge_quamba.quant.sites import MAMBA2_SITES, SITES, graph_code_tensors

TIE_TOLERANCE = 1e-4
"""Largest distance of the reference's quotient x / s from k + .5 (in codes) at which the reference may take the
graph's side of the rounding. Ties seen on the demo model are within 4e-6 (float32 rounding of values up to 127)."""

LOGITS_RTOL = 1e-4
"""Logits: max |ort - ref| <= LOGITS_RTOL * max(1, max |ref|). Measured on the demo model: about 5e-7 relative."""

LAST_LOGITS_RTOL = 1e-2
"""The TensorRT flavour's float16 lm_head (input rounded to float16, float16 weights and output):
max |ort - ref| <= LAST_LOGITS_RTOL * max(1, max |ref|) on the last position's logits."""

W4A8_TIE_TOLERANCE = 1e-3
"""The tie distance for graphs with int4 weights: ONNX Runtime's MatMulNBits sums the float32 products of a whole
row in its own order, while the reference sums exact int32 partial products per group and combines the groups in
float32, so the requantized outputs of the 4-bit linears (xz, dbc, dt) differ from the reference's in the last
float bits before rounding. Measured on the demo model (64-token prompt, 4 decode steps): 11 ties, all within
2.1e-5 codes of .5; the tolerance leaves room for longer rows. A code farther from .5 is still an error."""

W4A16_RTOL = 1e-2
"""A W4A16 graph (no int8 codes) against its float16 reference, every output (logits, conv and ssm states):
max |ort - ref| <= W4A16_RTOL * max(1, max |ref|). float16 has 11 significant bits (a relative step of 4.9e-4 to
9.8e-4), and the graph's float32 sums round to float16 after another order than torch's kernels; measured on the demo
model (64-token prompt, 4 decode steps): logits 1 float16 step (0.016 of 20), conv states 1 step, ssm states up to
2.4e-3 relative."""

FP32_RTOL = 1e-4
"""The fp32 graph (``export --bits fp32``) against the float32 fp reference, every output (logits, conv and ssm
states): max |ort - ref| <= FP32_RTOL * max(1, max |ref|). Only the sum orders of MatMul, Conv, the norms and the scan
readout differ (and exp / softplus in the last bit). Measured on the demo models (128-token prompt, 8 decode steps,
ORT 1.32, one thread): Mamba1 logits 1.1e-5 of max |ref| 19.7 (6e-7 relative), states up to 1.7e-5 relative;
Mamba2 logits 6.7e-6 of 12.5, states up to 4e-6 relative."""

SSM_STATE_RTOL = 1e-4
"""ssm states: max |ort - ref| <= SSM_STATE_RTOL * max(1, max |ref|), per layer. Measured: about 3e-7 relative."""


@dataclass
class OutputCheck:
    """One line of the validation report."""

    name: str
    max_abs_diff: float
    tolerance: float
    passed: bool
    note: str = ""

    def line(self) -> str:
        verdict = "pass" if self.passed else "FAIL"
        note = f"  ({self.note})" if self.note else ""
        return f"{self.name:<28} max abs diff {self.max_abs_diff:.3e}  tolerance {self.tolerance:.3e}  {verdict}{note}"


@dataclass
class ValidationReport:
    prompt_tokens: int
    decode_steps: int
    onnxruntime: str
    flavour: str = "ort"
    checks: list[OutputCheck] = field(default_factory=list)
    ties: int = 0  # rounding ties at which the reference took the graph's side
    tie_tolerance: float = TIE_TOLERANCE
    float_rtol: float | None = None  # a float graph (no int8 codes): the one rtol of every output

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    def lines(self) -> list[str]:
        return [check.line() for check in self.checks]

    def to_dict(self) -> dict:
        return {"passed": self.passed, "flavour": self.flavour, "prompt_tokens": self.prompt_tokens,
                "decode_steps": self.decode_steps, "onnxruntime": self.onnxruntime, "ties_followed": self.ties,
                "tie_tolerance_codes": self.tie_tolerance,
                "logits_rtol": self.float_rtol or (LOGITS_RTOL if self.flavour == "ort" else LAST_LOGITS_RTOL),
                "ssm_state_rtol": self.float_rtol or SSM_STATE_RTOL,
                "checks": [asdict(check) for check in self.checks]}


class TieFollower:
    """The hook for :func:`quantize_hook`: each labelled reference quantize call takes the graph's codes of the same
    name (given per step with :meth:`expect`) at proven ties, and records every difference."""

    def __init__(self, tolerance: float = TIE_TOLERANCE):
        self.tolerance = tolerance
        self.pending: dict[str, np.ndarray] = {}
        self.ties = 0
        self.max_tie_distance = 0.0
        self.codes_compared = 0
        self.other_differences = 0
        self.max_other_difference = 0
        self.first_other: str | None = None

    def expect(self, codes: dict[str, np.ndarray]) -> None:
        """The graph's codes of one step, by label."""
        self.pending = dict(codes)

    def __call__(self, label: str | None, quotient: Tensor, q: Tensor) -> Tensor:
        if label not in self.pending:
            raise AssertionError(f"the reference made codes {label!r} that the graph does not have (or made them "
                                 f"twice in one step)")
        theirs = torch.from_numpy(self.pending.pop(label))
        if theirs.shape[0] == q.shape[0] and theirs.shape[1:] == (1, *q.shape[1:]):
            theirs = theirs[:, 0]  # a decode step: the graph's (b, 1, ...) is the reference step's (b, ...)
        if theirs.shape != q.shape:
            raise AssertionError(f"{label}: graph codes {tuple(theirs.shape)}, reference {tuple(q.shape)}")
        self.codes_compared += q.numel()
        differ = theirs != q
        if not bool(differ.any()):
            return q
        distance = (quotient - torch.floor(quotient) - 0.5).abs()  # of the quotient from k + .5, in codes
        tie = differ & ((theirs.int() - q.int()).abs() == 1) & (distance <= self.tolerance)
        self.ties += int(tie.sum())
        if bool(tie.any()):
            self.max_tie_distance = max(self.max_tie_distance, float(distance[tie].max()))
        other = differ & ~tie
        if bool(other.any()):
            self.other_differences += int(other.sum())
            self.max_other_difference = max(self.max_other_difference,
                                            int((theirs.int() - q.int())[other].abs().max()))
            self.first_other = self.first_other or label
        return torch.where(tie, theirs, q)

    def finish(self) -> None:
        if self.pending:
            raise AssertionError(f"{len(self.pending)} int8 tensors of the graph were not made by the reference "
                                 f"(first: {next(iter(self.pending))})")


def expose_codes(optimized: onnx.ModelProto, model: onnx.ModelProto,
                 sites: list[str]) -> tuple[onnx.ModelProto, dict[str, tuple[str, int]]]:
    """Make the int8 codes of ``sites`` (tensor names of ``model``) outputs of ``optimized``, the graph that ONNX
    Runtime made of ``model`` (saved with optimized_model_filepath). Returns the graph and, per site, the output name
    and the zero point to subtract (ORT on x86 turns int8 Q/DQ pairs into uint8 with zero point 128).

    Adding outputs to the *original* graph would change what ORT fuses (a QuantizeLinear whose output is a graph
    output is not fused), hence different numbers; the optimized graph, run without further optimization, runs the
    same kernels as the shipped session. Where to find each site there: a QuantizeLinear of the main graph keeps its
    node name (the lowering names it after its output); a custom op's output that ORT did not rename keeps its name;
    HadamardQuantize's output, renamed when ORT fused out_proj, is input 0 of the fused ``<linear>.matmul`` node.
    """
    by_name = {node.name: node for node in optimized.graph.node}
    produced = {out: node for node in optimized.graph.node for out in node.output}
    values = {**initializer_values(optimized.graph), **constant_values(optimized.graph.node)}  # zero points
    linear_of = {node.input[0]: node.name[: -len(".input")] for node in model.graph.node
                 if node.op_type == "DequantizeLinear" and node.name.endswith(".input")}
    exposed = onnx.ModelProto()
    exposed.CopyFrom(optimized)
    found: dict[str, tuple[str, int]] = {}
    for site in sites:
        if site in by_name and by_name[site].op_type == "QuantizeLinear":
            tensor = by_name[site].output[0]
        elif site in produced:
            tensor = site
        elif site in linear_of and f"{linear_of[site]}.matmul" in by_name:
            tensor = by_name[f"{linear_of[site]}.matmul"].input[0]
        else:
            raise AssertionError(f"cannot find the codes of {site} in ONNX Runtime's optimized graph")
        producer = produced[tensor]
        if producer.op_type == "QuantizeLinear":
            zero_point = values[producer.input[2]]
        elif producer.op_type == "QLinearMatMul":  # the TensorRT flavour's GEMM -> QuantizeLinear, fused by ORT
            zero_point = values[producer.input[7]]
        elif producer.op_type in ("Split", "Cast"):  # int8 codes split as codes, or a per-channel quantize's Cast
            zero_point = np.zeros(1, np.int8)  # (Mamba2's conv output x | B | C)
        else:
            raise AssertionError(f"{site}: {tensor} is made by {producer.op_type}, not QuantizeLinear")
        elem = TensorProto.INT8 if zero_point.dtype == np.int8 else TensorProto.UINT8
        exposed.graph.output.append(helper.make_tensor_value_info(tensor, elem, None))
        found[site] = (tensor, int(zero_point.reshape(-1)[0]))
    return exposed, found


class _MaxDiff:
    """Running max |a - b| and max |ref| per output name, over prefill and decode."""

    def __init__(self):
        self.diff: dict[str, float] = collections.defaultdict(float)
        self.scale: dict[str, float] = collections.defaultdict(float)

    def add(self, name: str, got: np.ndarray, ref: Tensor) -> None:
        ref_np = ref.detach().cpu().numpy()
        diff = np.abs(got.astype(np.float64) - ref_np.astype(np.float64))
        self.diff[name] = max(self.diff[name], float(diff.max()))
        self.scale[name] = max(self.scale[name], float(np.abs(ref_np).max()))


def _site_codes(code_tensors: dict[str, tuple[str, ...]], extras: dict[str, np.ndarray],
                found: dict[str, tuple[str, int]]) -> tuple[dict[str, np.ndarray], int]:
    """Per label, the graph's int8 codes as its readers read them (pieces concatenated along the last axis, zero
    points removed, -128 read as -127: :func:`edge_quamba.quant.primitives.read_codes`), and how many -128 codes
    there were (the TensorRT flavour's bare QuantizeLinear after a GEMM saturates to -128)."""
    saturated = 0

    def codes(tensor: str) -> np.ndarray:
        nonlocal saturated
        exposed, zero_point = found[tensor]
        values = extras[exposed].astype(np.int16) - zero_point
        saturated += int((values == -128).sum())
        return np.maximum(values, -127).astype(np.int8)

    by_label = {label: np.concatenate([codes(t) for t in tensors], axis=-1) for label, tensors in code_tensors.items()}
    return by_label, saturated


def validate_on_ort(model: onnx.ModelProto, model_file: Path, reference: MambaLM, prompt: list[int],
                    decode_steps: int, threads: int | None = None, progress: bool = False,
                    flavour: str = "ort", bits: str = "w8a8") -> ValidationReport:
    """Run ``model_file`` (whose graph is ``model``, lowered for ``flavour``) and the reference on ``prompt`` and
    then ``decode_steps`` greedy tokens (the reference's choice, fed to both; each side threads its own states), and
    compare every output as the module docstring says.

    flavour "tensorrt": the TensorRT lowering *before* its custom nodes become plugin nodes (same nodes, function
    bodies still attached), run with ``session.qdqisint8allowed`` so that ONNX Runtime fuses every int8 linear
    exactly without the ORT flavour's copies; its ``last_logits`` (float16 lm_head, last position) are compared at
    :data:`LAST_LOGITS_RTOL`. This checks everything TensorRT would run except the plugins and TensorRT itself."""
    from edge_quamba.runtime.ort_backend import OrtGraph, import_onnxruntime

    config = reference.config
    code_tensors = graph_code_tensors(config.n_layer, MAMBA2_SITES if isinstance(config, Mamba2Config) else SITES)
    site_names = [tensor for tensors in code_tensors.values() for tensor in tensors]
    with tempfile.TemporaryDirectory() as scratch:
        optimized_file = Path(scratch) / "optimized.onnx"
        shipped = OrtGraph(model_file, config, threads, optimized_model_path=optimized_file,
                           qdq_int8=flavour == "tensorrt")
        optimized = onnx.load(str(optimized_file))
    exposed, found = expose_codes(optimized, model, site_names)
    debug = OrtGraph(exposed.SerializeToString(), config, threads,
                     extra_outputs=tuple(dict.fromkeys(tensor for tensor, _ in found.values())), optimize=False)
    logits_name, logits_rtol = (LOGITS, LOGITS_RTOL) if flavour == "ort" else (LAST_LOGITS, LAST_LOGITS_RTOL)
    state_in, state_out = state_names(config.n_layer)
    # The ORT flavour's W4A8 linears are MatMulNBits (another float order); the TensorRT flavour's run the
    # W4A8Linear(Quantize) bodies, bit-identical to the reference (functions.py): the W8A8 tie rule holds for them.
    follower = TieFollower(TIE_TOLERANCE if bits == "w8a8" or flavour == "tensorrt" else W4A8_TIE_TOLERANCE)
    diffs = _MaxDiff()
    debug_mismatch = []

    ort_states, ref_states = None, None
    minus_128 = 0
    tokens = list(prompt)
    with torch.inference_mode(), quantize_hook(follower):
        for step in tqdm(range(decode_steps + 1), desc="validating", unit="step", disable=not progress,
                         leave=False):
            ids = np.array([tokens], np.int64)
            logits, new_states, _ = shipped.run(ids, ort_states)
            d_logits, d_states, extras = debug.run(ids, ort_states)
            if not (np.array_equal(logits, d_logits) and
                    all(np.array_equal(new_states[k], d_states[k]) for k in new_states)):
                debug_mismatch.append(step)
            codes, saturated = _site_codes(code_tensors, extras, found)
            minus_128 += saturated
            follower.expect(codes)
            if step == 0:
                ref_logits, ref_states = reference(torch.tensor(ids), None)  # prefill: (1, l, v)
            else:
                ref_logits, ref_states = reference.step(torch.tensor(tokens), ref_states)  # decode: (1, v)
                ref_logits = ref_logits[:, None]
            follower.finish()
            diffs.add(logits_name, logits, ref_logits if flavour == "ort" else ref_logits[:, -1])
            for i, state in enumerate(ref_states):
                diffs.add(state_out[2 * i], new_states[state_in[2 * i]], state.conv_state)
                diffs.add(state_out[2 * i + 1], new_states[state_in[2 * i + 1]], state.ssm_state)
            ort_states = new_states
            tokens = [int(torch.argmax(ref_logits[0, -1]))]

    report = ValidationReport(prompt_tokens=len(prompt), decode_steps=decode_steps,
                              onnxruntime=import_onnxruntime().__version__, flavour=flavour, ties=follower.ties,
                              tie_tolerance=follower.tolerance)
    tie_note = (f"{follower.ties} rounding ties followed, max {follower.max_tie_distance:.1e} codes from .5; "
                f"{follower.codes_compared} codes compared")
    if minus_128:
        tie_note += f"; {minus_128} codes of -128 read as -127"
    if follower.first_other:
        tie_note += f"; first other difference at {follower.first_other}"
    report.checks.append(OutputCheck("int8 codes inside the graph", float(follower.max_other_difference), 0.0,
                                     follower.other_differences == 0, tie_note))
    report.checks.append(OutputCheck("optimized graph + codes", float(len(debug_mismatch)), 0.0,
                                     not debug_mismatch, "bit-identical outputs to the shipped session"
                                     if not debug_mismatch else f"differs at steps {debug_mismatch[:5]}"))
    for name in [logits_name, *state_out]:
        if name.startswith("conv_state_out"):
            tolerance = 0.0
        else:
            rtol = logits_rtol if name == logits_name else SSM_STATE_RTOL
            tolerance = rtol * max(1.0, diffs.scale[name])
        report.checks.append(OutputCheck(name, diffs.diff[name], tolerance, diffs.diff[name] <= tolerance))
    return report



def validate_float_graph_on_ort(model_file: Path, reference: MambaLM, prompt: list[int], decode_steps: int,
                                threads: int | None = None, progress: bool = False,
                                rtol: float = W4A16_RTOL, flavour: str = "ort") -> ValidationReport:
    """A graph without int8 codes (W4A16, or the fp32 graph with ``rtol`` :data:`FP32_RTOL`) against its reference:
    ``prompt``, then ``decode_steps`` greedy tokens (the reference's choice, fed to both; each side threads its own
    states); every output within ``rtol`` of the reference. There are no codes, hence no rounding ties to follow.
    flavour "tensorrt": W4A16's TensorRT lowering before its custom nodes become plugin nodes; its ``last_logits``
    (b, v) float16 are compared with the reference's last position, at the same ``rtol``."""
    from edge_quamba.runtime.ort_backend import OrtGraph, import_onnxruntime

    config = reference.config
    graph = OrtGraph(model_file, config, threads)
    state_in, state_out = state_names(config.n_layer)
    logits_name = LOGITS if flavour == "ort" else LAST_LOGITS
    diffs = _MaxDiff()
    ort_states, ref_states = None, None
    tokens = list(prompt)
    with torch.inference_mode():
        for step in tqdm(range(decode_steps + 1), desc="validating", unit="step", disable=not progress,
                         leave=False):
            ids = np.array([tokens], np.int64)
            logits, new_states, _ = graph.run(ids, ort_states)
            if step == 0:
                ref_logits, ref_states = reference(torch.tensor(ids), None)
            else:
                ref_logits, ref_states = reference.step(torch.tensor(tokens), ref_states)
                ref_logits = ref_logits[:, None]
            diffs.add(logits_name, logits, (ref_logits if flavour == "ort" else ref_logits[:, -1]).float())
            for i, state in enumerate(ref_states):
                diffs.add(state_out[2 * i], new_states[state_in[2 * i]], state.conv_state.float())
                diffs.add(state_out[2 * i + 1], new_states[state_in[2 * i + 1]], state.ssm_state)
            ort_states = new_states
            tokens = [int(torch.argmax(ref_logits[0, -1]))]
    report = ValidationReport(prompt_tokens=len(prompt), decode_steps=decode_steps,
                              onnxruntime=import_onnxruntime().__version__, flavour=flavour, tie_tolerance=0.0,
                              float_rtol=rtol)
    for name in [logits_name, *state_out]:
        tolerance = rtol * max(1.0, diffs.scale[name])
        report.checks.append(OutputCheck(name, diffs.diff[name], tolerance, diffs.diff[name] <= tolerance,
                                         "no int8 codes in a float graph" if name == logits_name else ""))
    return report
