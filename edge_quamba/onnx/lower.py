"""Lowering: the quantized reference model (:mod:`edge_quamba.quant.qmodel`) -> one ONNX graph.

The graph is not a hand copy of the model: each mixer is lowered by running the model's own data flow,
:func:`edge_quamba.quant.flow.mamba1_mixer_flow`, with :class:`edge_quamba.onnx.lower_mamba1.GraphOps`, whose ops emit
nodes instead of computing. Around it, ``MambaLM.forward``:

    input_ids (b, l) int64 -> Gather(embeddings) -> resid (b, l, d) float32
    per layer i:  resid = resid + mixer_flow(resid)             the pre-norm from standard ops, float32;
                  the flow's quantize -> Max + QuantizeLinear, linear -> int8 Q/DQ MatMul, conv / scan /
                  Hadamard -> the custom nodes Int8CausalConv1d, Int8SelectiveScan, HadamardQuantize
    logits (b, l, v) = Norm_f(resid) @ lm_head^T                float32 Gemm (tied: the embedding matrix itself)

Every int8 tensor is named ``layers.<i>.mixer.<code>`` after its site (:mod:`edge_quamba.quant.sites`); a site the
graph splits (x|z, Δ_r|B|C) is split in float and each piece quantized at the site's scale (elementwise, so the same
codes), which ONNX Runtime's QDQ fusion needs (a QuantizeLinear directly before each linear's DequantizeLinear).

The lowering modules form a tree, no import circle among them (tests/test_import_graph.py holds it). This one is
the top for Mamba1 and Mamba2: it walks the model and picks the lowering of each kind of model (:func:`lower_model`);
nothing below imports it. Below it, each building only on the ones listed after it (all in :mod:`edge_quamba.onnx`):
    lower_mamba2        Mamba2GraphOps: a Quamba2 mixer (builds on GraphOps)
    lower_mamba1        GraphOps: a Mamba1 mixer; the TensorRT flavour's GEMMs and W4A8 plugin nodes
    lower_mamba2_w4a16, lower_w4a16
                        the float graphs (W4A16, fp32) of Mamba2 and Mamba1
    graph_builder       GraphBuilder: initializers, the node groups every lowering repeats, and what ONNX Runtime
                        fuses (why the int8 nodes are written as they are)
    functions_mamba2, functions, functions_int4
                        the custom ops' function bodies
    nodes               Body, the node writer of the bodies and of GraphBuilder
The hybrid models have their own top, :mod:`edge_quamba.onnx.lower_hybrid` (above lower_hybrid_float and
hybrid_nodes), on the same modules.

Mamba2 (Quamba2 W8A8 and W4A8, both flavours): :class:`edge_quamba.onnx.lower_mamba2.Mamba2GraphOps` runs
:func:`edge_quamba.quant.flow.mamba2_mixer_flow` the same way; its conv and SSD scan are the custom nodes
Int8CausalConv1dChannelScales and Int8SSDScan (``MAMBA2_SPECS``), per-channel scales as float32 initializers; states
are (b, conv_dim, k) int8 and (b, h, p, n). Its TensorRT flavour (three in_proj GEMMs, one per output scale, and the
fused gated-norm node) is described in that module.
W4A16 graphs (no int8 codes; custom ops only in the TensorRT flavour) are lowered apart:
:mod:`edge_quamba.onnx.lower_w4a16` (Mamba1, both flavours) and
:mod:`edge_quamba.onnx.lower_mamba2_w4a16` (Mamba2); so is the fp model itself, as the float32 baseline graph
(``export --bits fp32``), by the same two modules.

Names: ``layers.{i}.mixer.<tensor>`` as in the reference state dict; every scale a float32 scalar initializer,
one shared int8 zero point. Batch b and length l are symbolic: one graph serves prefill (l >= 1) and decode (l = 1).
"""

from __future__ import annotations

import onnx
import torch
from onnx import TensorProto, helper
from tqdm import tqdm

from edge_quamba.errors import ConfigError, InputError
from edge_quamba.models.config import Mamba2Config
from edge_quamba.models.mamba import LayerState, MambaLM, MambaMixer
from edge_quamba.models.mamba2 import Mamba2Mixer
from edge_quamba.onnx import INPUT_IDS, INT4_IR_VERSION, INT4_OPSET, IR_VERSION, LAST_LOGITS, LOGITS, OPSET, state_names
from edge_quamba.onnx.functions import custom_functions
from edge_quamba.onnx.functions_mamba2 import mamba2_custom_functions
from edge_quamba.onnx.graph_builder import GraphBuilder
from edge_quamba.onnx.lower_mamba1 import GraphOps
from edge_quamba.onnx.lower_mamba2 import Mamba2GraphOps
from edge_quamba.onnx.lower_mamba2_w4a16 import lower_mamba2_fp32, lower_mamba2_w4a16
from edge_quamba.onnx.lower_w4a16 import lower_fp32, lower_w4a16
from edge_quamba.ops.specs import DOMAIN
from edge_quamba.quant.flow import mamba1_mixer_flow, mamba2_mixer_flow
from edge_quamba.quant.mamba2_qmodel import QuantMamba2Mixer, W4A16Mamba2Mixer
from edge_quamba.quant.qmodel import Int4Linear, QuantMambaMixer, W4A16Mixer


def _mixer(g: GraphBuilder, block, resid: str, i: int) -> str:
    """One block's norm and mixer: resid (b, l, d) float32 -> the mixer's output (b, l, d) float32; reads and
    writes layer i's states."""
    c = block.mixer.config
    state = LayerState(f"conv_state.{i}", f"ssm_state.{i}")
    if isinstance(block.mixer, QuantMamba2Mixer):
        out, _ = mamba2_mixer_flow(Mamba2GraphOps(g, block.mixer, block.norm, i), resid, state, c.d_inner,
                                   c.ngroups * c.d_state, c.nheads, block.mixer.hadamard)
        return out
    out, _ = mamba1_mixer_flow(GraphOps(g, block.mixer, block.norm, i), resid,
                               LayerState(f"conv_state.{i}", f"ssm_state.{i}"), c.d_inner, c.dt_rank, c.d_state,
                               block.mixer.hadamard, block.mixer.out_proj_scale)
    return out


TENSORRT_DYNAMIC_REFUSAL = (
    "--target tensorrt: a per-token (dynamic) out_proj input scale has no TensorRT graph (TensorRT's int8 GEMMs take "
    "static per-tensor activation scales; README, TensorRT); export with --target ort or quantize with "
    "--out-proj-scale static")
"""The one-line error for a TensorRT export of a model with ``out_proj_scale = "dynamic"``."""

NO_FP32_TENSORRT = ("--target tensorrt is not built for the fp32 graph (--bits fp32): it needs no plugin, but it has "
                    "never been built or run with TensorRT here; export with --target ort")

NO_MAMBA2_W4A16_TENSORRT = (
    "--target tensorrt is not built for a W4A16 Mamba2 model: its float16 SSD scan has no TensorRT plugin (the "
    "Int8SSDScan plugin reads int8 codes, SelectiveScanF16 is Mamba1's scan); export it with --target ort, or quantize "
    "with --bits w8a8 or w4a8 for a TensorRT graph")
"""The one-line error for a TensorRT export of a W4A16 Mamba2 model."""

FLAVOURS = ("ort", "tensorrt")
"""What each graph is lowered for (the TensorRT flavour then becomes plugin nodes: :mod:`edge_quamba.onnx.tensorrt`)."""


def lower_model(model: MambaLM, flavour: str = "ort", progress: bool = False,
                float_parts: str = "float32") -> onnx.ModelProto:
    """The graph of a quantized reference model, custom ops as model-local functions (an fp model in float32:
    the fp32 baseline graph, standard ops only, "ort" flavour only).

    flavour "ort": logits (b, l, v) float32 from a float32 lm_head (eval needs every position); a linear gets its
    own exact copy of codes that a custom op made and another node reads (x_proj's u_q: DequantizeLinear -> Max ->
    QuantizeLinear), which lets ONNX Runtime on x86 fuse x_proj too (:mod:`edge_quamba.onnx.graph_builder`).
    flavour "tensorrt": no copy; the embedding table stays float16 as stored (Gather, then Cast to float32: the
    values the reference computes with), and only the last position goes through the lm_head, in float16:
    ``last_logits`` (b, v) float16 (generation needs nothing else; a 50k x 2560 head in float32 would read 512 MB
    per token). Everything between is identical. progress: a progress bar on stderr.
    float_parts "float16" (TensorRT flavour only; ``model`` must hold the same setting,
    :func:`edge_quamba.quant.qmodel.use_float_parts`): the residual stream is float16 between blocks (the embedding
    rows as stored; each block ``Cast(Cast(resid, float32) + out, float16)``), the norms and out_proj still float32
    inside (their Casts are what TensorRT fuses into the neighbouring kernels).
    A model with a per-token out_proj input scale has only the "ort" flavour (ConfigError for "tensorrt").
    """
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour {flavour!r} is not one of {FLAVOURS}")
    c = model.config
    mixers = [block.mixer for block in model.backbone.layers]
    if all(type(m) in (MambaMixer, Mamba2Mixer) for m in mixers):  # the fp model: the float32 baseline graph
        if flavour != "ort":
            raise InputError(NO_FP32_TENSORRT)
        return lower_mamba2_fp32(model) if isinstance(model.config, Mamba2Config) else lower_fp32(model)
    if all(isinstance(m, W4A16Mixer) for m in mixers):  # Mamba1 W4A16: the fp16 graph with int4 linears
        if float_parts != "float32":
            raise ValueError("float_parts applies to the int8 graphs (the W4A16 graph is float16 throughout)")
        return lower_w4a16(model, flavour)
    if all(isinstance(m, W4A16Mamba2Mixer) for m in mixers):  # Mamba2 W4A16: the same, with Mamba2 mixers
        if flavour != "ort":
            raise InputError(NO_MAMBA2_W4A16_TENSORRT)
        return lower_mamba2_w4a16(model)
    mamba2 = all(isinstance(m, QuantMamba2Mixer) for m in mixers)
    if not mamba2 and not all(isinstance(m, QuantMambaMixer) for m in mixers):
        raise TypeError("lower_model needs the quantized reference model (load_quantized_model)")
    out_proj_scale = getattr(mixers[0], "out_proj_scale", "static")  # a Quamba W8A8 option (Mamba1)
    if flavour == "tensorrt" and out_proj_scale == "dynamic":
        raise ConfigError(TENSORRT_DYNAMIC_REFUSAL)
    four_bit = isinstance(mixers[0].in_proj, Int4Linear)
    # INT4 initializers need opset 21; the TensorRT flavour has none (its W4A8 linears are plugin nodes over the
    # packed bytes), so it stays at the opset TensorRT 10.3's parser documents
    opset, ir_version = (INT4_OPSET, INT4_IR_VERSION) if four_bit and flavour == "ort" else (OPSET, IR_VERSION)
    half = float_parts == "float16"
    if half != (model.residual_storage == torch.float16) or (half and flavour != "tensorrt"):
        raise ValueError(f"float_parts {float_parts!r} needs the TensorRT flavour and a reference with the same "
                         f"residual dtype (use_float_parts), got {flavour!r} and {model.residual_storage}")
    g = GraphBuilder(opset, flavour)
    table = model.backbone.embeddings.weight  # (v, d) float32 holding float16 values (the artifact stores fp16)
    if flavour == "ort":
        embeddings = g.init("embeddings.weight", table.float())
        resid = g.op("Gather", embeddings, INPUT_IDS, axis=0, out="embeddings.out")  # (b, l, d) float32
    else:
        embeddings = g.init("embeddings.weight", table.half())  # exact: the values are float16 already
        gathered = g.op("Gather", embeddings, INPUT_IDS, axis=0, out="embeddings.gathered")  # (b, l, d) float16
        resid = gathered if half else g.op("Cast", gathered, to=TensorProto.FLOAT, out="embeddings.out")
    layers = tqdm(model.backbone.layers, desc="lowering", unit="layer", disable=not progress, leave=False)
    for i, block in enumerate(layers):
        if half:  # float16 between blocks, float32 inside: the norm and the sum read the float32 copy
            resid32 = g.op("Cast", resid, to=TensorProto.FLOAT, out=f"layers.{i}.residual_in")
            total = g.op("Add", resid32, _mixer(g, block, resid32, i), out=f"layers.{i}.residual_sum")
            resid = g.op("Cast", total, to=TensorProto.FLOAT16, out=f"layers.{i}.residual")  # (b, l, d) float16
        else:
            resid = g.op("Add", resid, _mixer(g, block, resid, i), out=f"layers.{i}.residual")
    if flavour == "ort":
        normed = g.norm(resid, model.backbone.norm_f, "norm_f")  # (b, l, d) float32
        g.give_linears_own_codes()
        head = embeddings if c.tie_embeddings else g.init("lm_head.weight", model.lm_head.weight.float())  # (v, d)
        flat = g.op("Reshape", normed, g.ints(-1, c.d_model))  # (b*l, d)
        flat_logits = g.op("Gemm", flat, head, transB=1, out="lm_head.out")  # (b*l, v): x @ W^T, W not copied
        out_shape = g.op("Concat", g.op("Shape", INPUT_IDS), g.ints(c.vocab_size), axis=0)
        g.op("Reshape", flat_logits, out_shape, out=LOGITS)
        logits = helper.make_tensor_value_info(LOGITS, TensorProto.FLOAT, ["b", "l", c.vocab_size])
    else:
        head = embeddings if c.tie_embeddings else g.init("lm_head.weight", model.lm_head.weight.half())  # (v, d)
        last = g.last_position(resid, "residual.last")  # (b, d): the norm is per position, so only the last one
        if half:
            last = g.op("Cast", last, to=TensorProto.FLOAT, out="residual.last_fp32")
        normed = g.norm(last, model.backbone.norm_f, "norm_f")  # (b, d) float32
        last16 = g.op("Cast", normed, to=TensorProto.FLOAT16, out="norm_f.last_fp16")  # (b, d)
        g.op("Gemm", last16, head, transB=1, out=LAST_LOGITS)  # (b, v) float16
        logits = helper.make_tensor_value_info(LAST_LOGITS, TensorProto.FLOAT16, ["b", c.vocab_size])

    state_in, state_out = state_names(c.n_layer)
    conv_shape, ssm_shape = (["b", c.conv_dim, c.d_conv], ["b", c.nheads, c.headdim, c.d_state]) if mamba2 else \
        (["b", c.d_inner, c.d_conv], ["b", c.d_inner, c.d_state])
    info = helper.make_tensor_value_info
    inputs = [info(INPUT_IDS, TensorProto.INT64, ["b", "l"])]
    outputs = [logits]
    for i in range(c.n_layer):
        inputs += [info(state_in[2 * i], TensorProto.INT8, conv_shape),
                   info(state_in[2 * i + 1], TensorProto.FLOAT, ssm_shape)]
        outputs += [info(state_out[2 * i], TensorProto.INT8, conv_shape),
                    info(state_out[2 * i + 1], TensorProto.FLOAT, ssm_shape)]
    graph = helper.make_graph(g.nodes, "edge_quamba_mamba", inputs, outputs, initializer=g.initializers)
    hadamard = any(m.hadamard for m in mixers)
    onnx_model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(DOMAIN, 1)],
        functions=mamba2_custom_functions(c, hadamard, opset, flavour,
                                          int4_linears="w4a8" if four_bit and flavour == "tensorrt" else None)
        if mamba2 else
        custom_functions(c.d_inner, hadamard, out_proj_scale, opset,
                         int4_linears="w4a8" if four_bit and flavour == "tensorrt" else None),
        producer_name="edge-quamba",
    )
    onnx_model.ir_version = ir_version
    return onnx_model
