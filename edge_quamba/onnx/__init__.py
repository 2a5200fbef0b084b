"""Lowering of the quantized reference model to ONNX (int8 Q/DQ linears + the edge_quamba custom ops), the export
folder, and its validation on ONNX Runtime.

Two flavours of one graph: ``model.onnx`` carries each custom op's body as a model-local FunctionProto, so stock ONNX
Runtime runs it; ``model.trt.onnx`` drops the bodies and tags the custom nodes for TensorRT's plugin lookup.

The graph's interface (what every runtime binds), b and l symbolic, so one graph serves prefill and decode:
    input_ids (b, l) int64,  conv_state.{i} (b, d_in, k) int8,  ssm_state.{i} (b, d_in, n) float32
    -> logits (b, l, v) float32,  conv_state_out.{i} (b, d_in, k) int8,  ssm_state_out.{i} (b, d_in, n) float32
The TensorRT flavour returns ``last_logits`` (b, v) float16 instead of ``logits`` (generation needs no more).
"""

OPSET = 17
"""Default-domain opset: TensorRT 10.x's ONNX parser supports <= 20; 17 has every op the graph needs."""

IR_VERSION = 8
"""The IR version that goes with opset 17 (what TensorRT 10.3's parser and ONNX Runtime both read)."""

INT4_OPSET = 21
"""Default-domain opset of a graph with int4 weights: INT4 initializers and DequantizeLinear's ``block_size``
(blocked, i.e. group-wise, scales) are opset 21. The int8 graphs stay at :data:`OPSET`."""

INT4_IR_VERSION = 10
"""IR version 10 introduced the INT4 element type."""

INPUT_IDS, LOGITS = "input_ids", "logits"
LAST_LOGITS = "last_logits"

TARGETS = ("ort", "tensorrt", "all")
"""Values of ``export --target`` (all: both graphs). Here, in this import-light module, so that the CLI's --help
needs no torch."""
MAX_VALIDATE_PROMPT_LEN, MAX_VALIDATE_DECODE_STEPS = 8192, 4096
"""Longest validation prompt (``export --validate-prompt-len``) and most validated decode steps: checked before any
work (an absurd length used to end in a MemoryError traceback after the quantization had run)."""
"""The TensorRT flavour's first output: logits of the last position only, (b, v) float16."""


def graph_state_names(config) -> tuple[list[str], list[str]]:
    """(state inputs, state outputs) of a model config's graph: :func:`state_names` for the Mamba models, a hybrid's
    per-block states (:func:`edge_quamba.onnx.hybrid_io.hybrid_state_names`)."""
    from edge_quamba.models.hybrid_config import HybridConfig

    if isinstance(config, HybridConfig):
        from edge_quamba.onnx.hybrid_io import hybrid_state_names

        return hybrid_state_names(config)
    return state_names(config.n_layer)


def state_names(n_layer: int) -> tuple[list[str], list[str]]:
    """(state inputs, state outputs), layer by layer: conv_state.i, ssm_state.i / conv_state_out.i, ssm_state_out.i."""
    inputs = [name for i in range(n_layer) for name in (f"conv_state.{i}", f"ssm_state.{i}")]
    outputs = [name for i in range(n_layer) for name in (f"conv_state_out.{i}", f"ssm_state_out.{i}")]
    return inputs, outputs
