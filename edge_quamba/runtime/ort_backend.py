"""`--backend ort`: an export folder's model.onnx on ONNX Runtime's CPU execution provider, states as graph I/O.

One InferenceSession serves prefill (l tokens) and decode (l = 1): the graph takes ``input_ids`` and every layer's
``conv_state.i`` / ``ssm_state.i`` and returns the logits and the ``*_out`` states, which are fed back on the next
call (names: :mod:`edge_quamba.onnx`). States are numpy arrays keyed by the graph's *input* names, so a decode step
is one ``session.run`` with no copying beyond ONNX Runtime's own.

Session settings (:func:`session_options`): every graph optimization on (ORT_ENABLE_ALL) and ``intra_op_num_threads``
from ``threads`` (ONNX Runtime's default, one per physical core, when None). ONNX Runtime's own choice of int8 kernels
is kept: on x86 it runs int8 activations as uint8 (exact, zero point 128), which its fast u8 x s8 GEMM needs; the
option ``session.qdqisint8allowed = 1`` would fuse x_proj too but selects an s8 x s8 path that measured 56x slower
(1x384x1536 GEMV: 457 us against 8 us). See :mod:`edge_quamba.onnx.graph_builder` for what fuses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from edge_quamba.errors import BackendUnavailableError, CheckpointError
from edge_quamba.folders import ModelFolder
from edge_quamba.models.config import MambaConfig
from edge_quamba.models.config import Mamba2Config
from edge_quamba.models.hybrid_config import HybridConfig
from edge_quamba.onnx import INPUT_IDS, graph_state_names
from edge_quamba.onnx.hybrid_io import hybrid_empty_states


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise BackendUnavailableError("--backend ort needs onnxruntime, which is not installed "
                                      "(pip install onnxruntime)") from None
    return onnxruntime


def session_options(threads: int | None = None, optimized_model_path: Path | None = None, optimize: bool = True,
                    qdq_int8: bool = False):
    """The SessionOptions every edge-quamba ORT session uses (optionally saving ORT's optimized graph).
    ``optimize=False`` runs a graph as it is (validation runs an already optimized graph this way). ``qdq_int8``
    lets ORT fuse int8 Q/DQ pairs whose codes have several readers (validation of the TensorRT flavour, which has
    no copies: see :mod:`edge_quamba.onnx.graph_builder`); slow s8 x s8 kernels on x86, exact everywhere."""
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads is not None:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only (ORT warns about constants left over after inlining the bodies)
    if optimized_model_path is not None:
        options.optimized_model_filepath = str(optimized_model_path)
    if qdq_int8:
        options.add_session_config_entry("session.qdqisint8allowed", "1")
    # An INT4 blocked DequantizeLinear -> MatMul (the 4-bit linears) becomes MatMulNBits, whose default accuracy
    # level (4) re-quantizes its float input to int8 per block at run time: other numbers than the graph says.
    # Level 0 keeps the float32 input (measured on ORT 1.32: 1e-5 against 0.14 max abs error on a 384-wide GEMV).
    options.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")
    return options


class OrtGraph:
    """One InferenceSession over a graph with the lowering's interface; ``extra_outputs`` names further tensors
    to fetch (validation reads the int8 codes inside the graph this way)."""

    def __init__(self, model: Path | bytes, config: MambaConfig, threads: int | None = None,
                 extra_outputs: tuple[str, ...] = (), optimized_model_path: Path | None = None,
                 optimize: bool = True, qdq_int8: bool = False):
        ort = import_onnxruntime()
        self.config = config
        self.state_inputs, self.state_outputs = graph_state_names(config)
        source = str(model) if isinstance(model, Path) else model
        try:
            self.session = ort.InferenceSession(
                source, session_options(threads, optimized_model_path, optimize, qdq_int8),
                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf/InvalidGraph types
            what = model if isinstance(model, Path) else "the ONNX graph"
            detail = " ".join(str(exc).split())[:300]
            raise CheckpointError(f"{what} is not a model ONNX Runtime can load: {detail}") from None
        self.input_types = types = {i.name: i.type for i in self.session.get_inputs()}
        names = set(types)
        missing = sorted({INPUT_IDS, *self.state_inputs} - names)
        if missing:
            raise CheckpointError(f"the ONNX graph does not have the inputs an edge-quamba export has: {missing[:3]}")
        conv_dtypes = {"tensor(int8)": np.int8, "tensor(float16)": np.float16, "tensor(float)": np.float32}
        self.conv_dtype = conv_dtypes.get(types[self.state_inputs[0]], np.int8)  # int8, W4A16 or fp32 graph
        # logits (b, l, v) float32, or the TensorRT flavour's last_logits (b, v) float16
        self.logits_name = self.session.get_outputs()[0].name
        self.output_names = [self.logits_name, *self.state_outputs, *extra_outputs]

    def empty_states(self, batch: int) -> dict[str, np.ndarray]:
        """Zero states: conv_state.i (b, d_in, k) int8 (float16 / float32 in a W4A16 / fp32 graph: the input's
        declared type) and
        ssm_state.i (b, d_in, n) float32; Mamba2: (b, conv_dim, k) and (b, h, p, n); a hybrid's per block
        (:func:`edge_quamba.onnx.hybrid_io.hybrid_empty_states`)."""
        c = self.config
        if isinstance(c, HybridConfig):
            return hybrid_empty_states(c, batch, self.input_types)
        if isinstance(c, Mamba2Config):
            conv_shape, ssm_shape = (batch, c.conv_dim, c.d_conv), (batch, c.nheads, c.headdim, c.d_state)
        else:
            conv_shape, ssm_shape = (batch, c.d_inner, c.d_conv), (batch, c.d_inner, c.d_state)
        states = {}
        for conv, ssm in zip(self.state_inputs[0::2], self.state_inputs[1::2]):
            states[conv] = np.zeros(conv_shape, self.conv_dtype)
            states[ssm] = np.zeros(ssm_shape, np.float32)
        return states

    def run(self, tokens: np.ndarray, states: dict[str, np.ndarray] | None = None
            ) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
        """tokens (b, l) int64 -> logits (b, l, v) float32 (the TensorRT flavour: (b, v) float16), the states after
        the last token (keyed by input name), and the extra outputs by name."""
        tokens = np.ascontiguousarray(tokens, dtype=np.int64)
        feeds = dict(states if states is not None else self.empty_states(tokens.shape[0]))
        feeds[INPUT_IDS] = tokens
        values = self.session.run(self.output_names, feeds)
        count = len(self.state_outputs)
        new_states = dict(zip(self.state_inputs, values[1:1 + count]))
        return values[0], new_states, dict(zip(self.output_names[1 + count:], values[1 + count:]))


class OrtBackend:
    """The Backend interface (prefill / decode, batch 1) over an export folder, plus ``forward`` for batches."""

    name = "ort"
    device = torch.device("cpu")  # where callers put input ids (the CPU execution provider reads host memory)

    def __init__(self, folder: ModelFolder, threads: int | None = None):
        """folder: an opened export folder (:func:`edge_quamba.folders.open_model`: model.onnx verified)."""
        import_onnxruntime()
        self.graph = OrtGraph(folder.onnx_file("ort"), folder.config, threads)

    def forward(self, tokens: Tensor, states: dict[str, np.ndarray] | None = None
                ) -> tuple[Tensor, dict[str, np.ndarray]]:
        """tokens (b, l) int64 -> logits (b, l, v) float32 and the states after the last token."""
        logits, states, _ = self.graph.run(tokens.cpu().numpy(), states)
        return torch.from_numpy(logits), states

    __call__ = forward  # so that batched evaluation can call it like the reference module

    def prefill(self, tokens: list[int]) -> tuple[Tensor, dict[str, np.ndarray]]:
        logits, states, _ = self.graph.run(np.array([tokens], np.int64))
        return torch.from_numpy(logits[0, -1]), states

    def decode(self, token: int, states: dict[str, np.ndarray]) -> tuple[Tensor, dict[str, np.ndarray]]:
        logits, states, _ = self.graph.run(np.array([[token]], np.int64), states)
        return torch.from_numpy(logits[0, 0]), states
