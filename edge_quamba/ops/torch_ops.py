"""PyTorch custom ops ``torch.ops.edge_quamba.*``: the only arithmetic the quantized reference model calls.

The model (:mod:`edge_quamba.quant.flow`) calls these ops and nothing else for its int8 work, so a backend is a
registration of the same ops, never a second model: the CPU kernels below are the references
(:mod:`edge_quamba.quant.qops`, :mod:`edge_quamba.quant.primitives`), and a CUDA binding registers its kernels for
the same schemas with ``torch.library.register_kernel("edge_quamba::<name>", "cuda", fn)``.

    op                           ONNX lowering                         reference
    quantize                     QuantizeLinear (+ Max at -127 s)      primitives.quantize
    rms_norm_quantize            RMSNorm nodes -> QuantizeLinear       quantize(RMSNorm(x))  (Norm.forward's order)
    int8_linear                  DequantizeLinear -> MatMul (+ Add)    primitives.int8_linear (+ bias)
    int8_linear_quantize         ... -> QuantizeLinear                 quantize(int8_linear(...))  (fused epilogue)
    int8_linear_residual         (decode: out_proj + the block's add)  residual + int8_linear(...)
    int8_linear_quantize_segments  ... -> Split -> QuantizeLinear each  primitives.quantize_segments(int8_linear(...))
                                 (Mamba2's in_proj: z | xBC | Δ, each at its site's scale; a scale per segment)
    int8_linear_quantize_conv_update   (decode: in_proj, then the conv    int8_linear_quantize_segments ->
                                 step over some of its columns)          int8_causal_conv1d(_channel_scales)_update
    int8_linear_per_channel      the same, weight DequantizeLinear     primitives.int8_linear, w_scale (N,)
    int8_linear_per_channel_quantize   with axis=1 (per output column)  (--weight-scales channel; no CUDA kernel)
    int8_causal_conv1d           custom node Int8CausalConv1d          qops.int8_causal_conv1d
    int8_causal_conv1d_update    (the same node, l = 1)                qops.int8_causal_conv1d_update
    int8_selective_scan          custom node Int8SelectiveScan         qops.int8_selective_scan
    int8_selective_scan_update   (the same node, l = 1)                qops.int8_selective_scan_update
    int8_selective_scan_dt_update  (decode: dt_proj, then the scan step) int8_linear_quantize -> ..._update
    hadamard_quantize            custom node HadamardQuantize          qops.hadamard_quantize
    hadamard_quantize_dynamic    custom node HadamardQuantizeDynamic   qops.hadamard_quantize_dynamic
    int8_linear_per_token        MatMulInteger -> Cast -> Mul (+ Add)  primitives.int8_linear_per_token (+ bias)

The last two are the out_proj input with a per-token scale (``QuantConfig.out_proj_scale = "dynamic"``): the scale
is a float32 tensor made by the Hadamard op and read by out_proj, not a constant.
    w4a8_linear                  DQ(x_q) -> MatMul(DQ(INT4 W, blocked)) qops.w4a8_linear
                                 (TensorRT flavour: custom node W4A8Linear)
    w4a8_linear_quantize         ... -> QuantizeLinear                 qops.w4a8_linear_quantize  (fused epilogue)
                                 (TensorRT flavour: custom node W4A8LinearQuantize)
    w4a8_linear_quantize_segments  ... -> Split -> QuantizeLinear each  quantize_segments(w4a8_linear(...))
                                 (TensorRT flavour: a W4A8LinearQuantize node per segment's rows)
    w4a8_linear_residual, w4a8_linear_quantize_conv_update   the W4A8 forms of int8_linear_residual and
                                 int8_linear_quantize_conv_update (decode)
    w4a16_linear                 DQ(INT4 W) -> MatMul (float16 graph)  qops.w4a16_linear
                                 (TensorRT flavour: custom node W4A16Linear)
  The three 4-bit linears take the packed weight as the artifact stores it, (N, ceil(K / 2)) uint8 (two codes per
  byte, low nibble first), and unpack it in the reference; the CUDA kernels read the packed bytes.
    selective_scan               (W4A16: MambaMixer.forward's graph;   models.mamba.selective_scan (float scan)
                                 TensorRT flavour: SelectiveScanF16)
  Mamba2 (Quamba2), per-channel scales as float32 tensors:
    int8_causal_conv1d_channel_scales(_update)   the conv over x | B | C   qops.int8_causal_conv1d_channel_scales
    int8_ssd_scan(_update)                       the SSD recurrence        qops.int8_ssd_scan
    gated_rms_norm_quantize                      quantize(gated_rms_norm)   qops.gated_rms_norm -> quantize
    gated_rms_norm_hadamard_quantize             ... Hadamard + quantize    qops.gated_rms_norm -> hadamard_quantize
  (the ORT graph writes the gated norm as standard float32 nodes, the TensorRT graph as the custom node
  GatedRMSNorm(Hadamard)Quantize; the fused ops' CPU kernels are the compositions, qops.gated_rms_norm_*quantize)

The schemas of the custom nodes (the three int8 ops, the 4-bit linears) follow :mod:`edge_quamba.ops.specs`
(tensors, then float scales and the int group size; a test checks it). Scales are Python floats: static per-tensor scales are constants, as they are in the graph and in the
TensorRT plugins' fields. Fake (meta) implementations give output shapes and dtypes for tracing. Importing this
module registers the ops.
"""

from __future__ import annotations

import torch
from torch import Tensor

from edge_quamba.models import mamba
from edge_quamba.quant import primitives, qops


REFERENCES: dict[str, object] = {}
"""Every op's reference implementation (the plain Python function), by op name; device-agnostic torch code, which
:mod:`edge_quamba.ops.reference_cuda` registers for CUDA tensors on explicit request."""


def _op(name: str):
    def define(fn):
        REFERENCES[name] = fn
        return torch.library.custom_op(f"edge_quamba::{name}", mutates_args=(), device_types="cpu")(fn)

    return define


@_op("quantize")
def quantize(x: Tensor, scale: float) -> Tensor:
    """x (...) float -> (...) int8 codes at ``scale`` (the project's one convention)."""
    return primitives.quantize(x, scale)


@quantize.register_fake
def _(x, scale):
    return torch.empty_like(x, dtype=torch.int8)


@_op("rms_norm_quantize")
def rms_norm_quantize(x: Tensor, weight: Tensor, eps: float, scale: float) -> Tensor:
    """x (..., d) float, weight (d,) float32 -> (..., d) int8 codes of RMSNorm(x) at ``scale``: float32
    ``weight * (x * rsqrt(mean(x^2) + eps))`` (:class:`edge_quamba.models.mamba.Norm`), then quantize. A kernel's
    mean sums in its own order, so its codes may differ at .5 ties (validated with the tie rule)."""
    xf = x.to(torch.float32)
    normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return primitives.quantize(weight.to(torch.float32) * normed, scale)


@rms_norm_quantize.register_fake
def _(x, weight, eps, scale):
    return torch.empty_like(x, dtype=torch.int8)


@_op("int8_linear")
def int8_linear(x_q: Tensor, weight_q: Tensor, bias: Tensor | None, x_scale: float, weight_scale: float) -> Tensor:
    """x_q (..., K) int8, weight_q (N, K) int8, bias (N,) float32 or None -> (..., N) float32:
    float32(exact int32 x_q @ weight_q^T) * float32(x_scale * weight_scale) (+ bias)."""
    y = primitives.int8_linear(x_q, x_scale, weight_q, weight_scale)
    return y if bias is None else y + bias.to(torch.float32)


@int8_linear.register_fake
def _(x_q, weight_q, bias, x_scale, weight_scale):
    return x_q.new_empty((*x_q.shape[:-1], weight_q.shape[0]), dtype=torch.float32)


@_op("int8_linear_quantize")
def int8_linear_quantize(x_q: Tensor, weight_q: Tensor, bias: Tensor | None, x_scale: float, weight_scale: float,
                         out_scale: float) -> Tensor:
    """int8_linear followed by quantize at ``out_scale``, in one op (a GEMM with a requantizing epilogue):
    x_q (..., K) int8 -> (..., N) int8. Bit-exact: the same float32 epilogue, then x / out_scale rounded."""
    return primitives.quantize(int8_linear(x_q, weight_q, bias, x_scale, weight_scale), out_scale)


@int8_linear_quantize.register_fake
def _(x_q, weight_q, bias, x_scale, weight_scale, out_scale):
    return x_q.new_empty((*x_q.shape[:-1], weight_q.shape[0]), dtype=torch.int8)


@_op("int8_linear_residual")
def int8_linear_residual(x_q: Tensor, weight_q: Tensor, bias: Tensor | None, x_scale: float, weight_scale: float,
                         residual: Tensor) -> Tensor:
    """The block's residual add in out_proj's epilogue: residual (..., N) float32 + int8_linear(...) (..., N),
    one more rounded float32 add (:class:`edge_quamba.quant.qmodel.QuantBlock`'s ``resid.float() + out``)."""
    return residual + int8_linear(x_q, weight_q, bias, x_scale, weight_scale)


@int8_linear_residual.register_fake
def _(x_q, weight_q, bias, x_scale, weight_scale, residual):
    return torch.empty_like(residual)


@_op("int8_linear_quantize_segments")
def int8_linear_quantize_segments(x_q: Tensor, weight_q: Tensor, bias: Tensor | None, x_scale: float,
                                  weight_scale: float, out_scales: list[float], sizes: list[int]) -> Tensor:
    """int8_linear whose output columns are split into consecutive segments (``sizes``, summing to N), segment i
    quantized at ``out_scales[i]``, in one op: x_q (..., K) int8 -> (..., N) int8. Bit-exact: the same float32
    epilogue, then :func:`edge_quamba.quant.primitives.quantize_segments`."""
    return primitives.quantize_segments(int8_linear(x_q, weight_q, bias, x_scale, weight_scale), out_scales, sizes)


@int8_linear_quantize_segments.register_fake
def _(x_q, weight_q, bias, x_scale, weight_scale, out_scales, sizes):
    return x_q.new_empty((*x_q.shape[:-1], weight_q.shape[0]), dtype=torch.int8)


def _conv_step_after(linear_codes, out_scales: list[float], sizes: list[int], conv_begin: int, conv_state: Tensor,
                     conv_weight: Tensor, conv_bias: Tensor | None, conv_weight_scale: float, conv_out_scale: float,
                     conv_out_scales: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """The *_quantize_conv_update references: ``linear_codes()`` (the linear's segment codes, under the first labels
    of :func:`edge_quamba.quant.primitives.split_code_label`), then the conv step over their columns [conv_begin,
    conv_begin + C) at the scale of the segment that holds them -> (codes, conv codes, new state)."""
    linear_label, conv_label = primitives.split_code_label()
    with primitives.code_label(linear_label):
        codes = linear_codes()
    channels = conv_state.shape[1]
    ends = torch.tensor(sizes).cumsum(0).tolist()
    segment = next(i for i, end in enumerate(ends) if conv_begin < end)
    if conv_begin + channels > ends[segment]:
        raise ValueError(f"the conv's columns {conv_begin}..{conv_begin + channels} span two segments of {list(sizes)}")
    x = codes[:, conv_begin:conv_begin + channels]
    with primitives.code_label(conv_label):
        if conv_out_scales is None:
            u, state = qops.int8_causal_conv1d_update(x, conv_state, conv_weight, conv_bias, out_scales[segment],
                                                      conv_weight_scale, conv_out_scale)
        else:
            u, state = qops.int8_causal_conv1d_channel_scales_update(x, conv_state, conv_weight, conv_bias,
                                                                     conv_out_scales, out_scales[segment],
                                                                     conv_weight_scale)
    return codes, u, state


@_op("int8_linear_quantize_conv_update")
def int8_linear_quantize_conv_update(x_q: Tensor, weight_q: Tensor, bias: Tensor | None, x_scale: float,
                                     weight_scale: float, out_scales: list[float], sizes: list[int], conv_begin: int,
                                     conv_state: Tensor, conv_weight: Tensor, conv_bias: Tensor | None,
                                     conv_weight_scale: float, conv_out_scale: float, conv_out_scales: Tensor | None
                                     ) -> tuple[Tensor, Tensor, Tensor]:
    """One decode token of in_proj and the conv after it, in one op: x_q (b, K) int8 -> codes (b, N) int8
    (:func:`int8_linear_quantize_segments`), and the conv step over the codes' columns [conv_begin, conv_begin + C)
    from conv_state (b, C, k): its codes (b, C) and new state (b, C, k). The conv reads those columns at the scale
    of the segment that holds them, and quantizes at ``conv_out_scale`` (Mamba1's u) or per channel at
    ``conv_out_scales`` (C,) (Mamba2's ssm_input). Labels: :func:`edge_quamba.quant.primitives.split_code_label`."""
    return _conv_step_after(
        lambda: int8_linear_quantize_segments(x_q, weight_q, bias, x_scale, weight_scale, out_scales, sizes),
        out_scales, sizes, conv_begin, conv_state, conv_weight, conv_bias, conv_weight_scale, conv_out_scale,
        conv_out_scales)


@int8_linear_quantize_conv_update.register_fake
def _(x_q, weight_q, bias, x_scale, weight_scale, out_scales, sizes, conv_begin, conv_state, conv_weight, conv_bias,
      conv_weight_scale, conv_out_scale, conv_out_scales):
    codes = x_q.new_empty((x_q.shape[0], weight_q.shape[0]), dtype=torch.int8)
    return codes, x_q.new_empty(conv_state.shape[:2], dtype=torch.int8), torch.empty_like(conv_state)


@_op("int8_linear_per_channel")
def int8_linear_per_channel(x_q: Tensor, weight_q: Tensor, bias: Tensor | None, x_scale: float,
                            weight_scale: Tensor) -> Tensor:
    """int8_linear with one weight scale per output channel: weight_scale (N,) float32 ->
    float32(exact int32 x_q @ weight_q^T) * float32(x_scale * weight_scale[None, :]) (+ bias), (..., N) float32."""
    y = primitives.int8_linear(x_q, x_scale, weight_q, weight_scale)
    return y if bias is None else y + bias.to(torch.float32)


@int8_linear_per_channel.register_fake
def _(x_q, weight_q, bias, x_scale, weight_scale):
    return x_q.new_empty((*x_q.shape[:-1], weight_q.shape[0]), dtype=torch.float32)


@_op("int8_linear_per_channel_quantize")
def int8_linear_per_channel_quantize(x_q: Tensor, weight_q: Tensor, bias: Tensor | None, x_scale: float,
                                     weight_scale: Tensor, out_scale: float) -> Tensor:
    """int8_linear_per_channel, then quantize at ``out_scale`` (per tensor): (..., K) int8 -> (..., N) int8."""
    return primitives.quantize(int8_linear_per_channel(x_q, weight_q, bias, x_scale, weight_scale), out_scale)


@int8_linear_per_channel_quantize.register_fake
def _(x_q, weight_q, bias, x_scale, weight_scale, out_scale):
    return x_q.new_empty((*x_q.shape[:-1], weight_q.shape[0]), dtype=torch.int8)


NO_CUDA_KERNEL = {"edge_quamba::int8_linear_per_channel": "--weight-scales channel",
                  "edge_quamba::int8_linear_per_channel_quantize": "--weight-scales channel"}
"""Ops without a CUDA kernel, and the option whose models call them: ``--backend cuda`` refuses such a model in one
line naming the option (:func:`edge_quamba.runtime.cuda_backend.require_cuda_kernels`), never a fallback."""


@_op("int8_causal_conv1d")
def int8_causal_conv1d(x_q: Tensor, conv_state_q: Tensor, weight_q: Tensor, bias: Tensor | None,
                       x_scale: float, weight_scale: float, out_scale: float) -> tuple[Tensor, Tensor]:
    """x_q (b, l, d_in) int8, conv_state_q (b, d_in, k) int8 -> u_q (b, l, d_in) int8, conv_state_out (b, d_in, k)."""
    return qops.int8_causal_conv1d(x_q, conv_state_q, weight_q, bias, x_scale, weight_scale, out_scale)


@int8_causal_conv1d.register_fake
def _(x_q, conv_state_q, weight_q, bias, x_scale, weight_scale, out_scale):
    return torch.empty_like(x_q, memory_format=torch.contiguous_format), torch.empty_like(conv_state_q)


@_op("int8_causal_conv1d_update")
def int8_causal_conv1d_update(x_q: Tensor, conv_state_q: Tensor, weight_q: Tensor, bias: Tensor | None,
                              x_scale: float, weight_scale: float, out_scale: float) -> tuple[Tensor, Tensor]:
    """One token: x_q (b, d_in) int8, conv_state_q (b, d_in, k) int8 -> u_q (b, d_in) int8, new state."""
    return qops.int8_causal_conv1d_update(x_q, conv_state_q, weight_q, bias, x_scale, weight_scale, out_scale)


@int8_causal_conv1d_update.register_fake
def _(x_q, conv_state_q, weight_q, bias, x_scale, weight_scale, out_scale):
    return torch.empty_like(x_q, memory_format=torch.contiguous_format), torch.empty_like(conv_state_q)


@_op("int8_selective_scan")
def int8_selective_scan(u_q: Tensor, dt_q: Tensor, B_q: Tensor, C_q: Tensor, z_q: Tensor, ssm_state: Tensor,
                        A: Tensor, D: Tensor, dt_bias: Tensor, u_scale: float, dt_scale: float, B_scale: float,
                        C_scale: float, z_scale: float) -> tuple[Tensor, Tensor]:
    """u_q, dt_q, z_q (b, l, d_in) and B_q, C_q (b, l, n) int8; ssm_state (b, d_in, n) float32
    -> y (b, l, d_in) float32, ssm_state_out (b, d_in, n) float32."""
    return qops.int8_selective_scan(u_q, dt_q, B_q, C_q, z_q, ssm_state, A, D, dt_bias,
                                    u_scale, dt_scale, B_scale, C_scale, z_scale)


@int8_selective_scan.register_fake
def _(u_q, dt_q, B_q, C_q, z_q, ssm_state, A, D, dt_bias, u_scale, dt_scale, B_scale, C_scale, z_scale):
    return u_q.new_empty(u_q.shape, dtype=torch.float32), torch.empty_like(ssm_state, dtype=torch.float32)


@_op("int8_selective_scan_update")
def int8_selective_scan_update(u_q: Tensor, dt_q: Tensor, B_q: Tensor, C_q: Tensor, z_q: Tensor,
                               ssm_state: Tensor, A: Tensor, D: Tensor, dt_bias: Tensor, u_scale: float,
                               dt_scale: float, B_scale: float, C_scale: float, z_scale: float
                               ) -> tuple[Tensor, Tensor]:
    """One token: u_q, dt_q, z_q (b, d_in), B_q, C_q (b, n) int8, ssm_state (b, d_in, n) float32
    -> y (b, d_in) float32, new state (b, d_in, n) float32."""
    return qops.int8_selective_scan_update(u_q, dt_q, B_q, C_q, z_q, ssm_state, A, D, dt_bias,
                                           u_scale, dt_scale, B_scale, C_scale, z_scale)


@int8_selective_scan_update.register_fake
def _(u_q, dt_q, B_q, C_q, z_q, ssm_state, A, D, dt_bias, u_scale, dt_scale, B_scale, C_scale, z_scale):
    return u_q.new_empty(u_q.shape, dtype=torch.float32), torch.empty_like(ssm_state, dtype=torch.float32)


@_op("int8_selective_scan_dt_update")
def int8_selective_scan_dt_update(u_q: Tensor, dt_r_q: Tensor, B_q: Tensor, C_q: Tensor, z_q: Tensor,
                                  ssm_state: Tensor, A: Tensor, D: Tensor, dt_bias: Tensor, dt_weight: Tensor,
                                  u_scale: float, dt_r_scale: float, dt_weight_scale: float, dt_scale: float,
                                  B_scale: float, C_scale: float, z_scale: float) -> tuple[Tensor, Tensor, Tensor]:
    """One decode token of dt_proj (no bias) and the scan step, in one op: dt_r_q (b, r) int8 at ``dt_r_scale``,
    dt_weight (d_in, r) int8 -> dt_q = int8_linear_quantize(dt_r_q, dt_weight, None, dt_r_scale, dt_weight_scale,
    dt_scale) (b, d_in), then :func:`int8_selective_scan_update` on it. Returns (y (b, d_in), new state, dt_q)."""
    dt_q = int8_linear_quantize(dt_r_q, dt_weight, None, dt_r_scale, dt_weight_scale, dt_scale)
    y, state = qops.int8_selective_scan_update(u_q, dt_q, B_q, C_q, z_q, ssm_state, A, D, dt_bias, u_scale, dt_scale,
                                               B_scale, C_scale, z_scale)
    return y, state, dt_q


@int8_selective_scan_dt_update.register_fake
def _(u_q, dt_r_q, B_q, C_q, z_q, ssm_state, A, D, dt_bias, dt_weight, u_scale, dt_r_scale, dt_weight_scale, dt_scale,
      B_scale, C_scale, z_scale):
    y = u_q.new_empty(u_q.shape, dtype=torch.float32)
    return y, torch.empty_like(ssm_state), u_q.new_empty(u_q.shape, dtype=torch.int8)


@_op("hadamard_quantize")
def hadamard_quantize(y: Tensor, out_scale: float) -> Tensor:
    """y (b, l, d_in) float -> y_q (b, l, d_in) int8."""
    return qops.hadamard_quantize(y, out_scale)


@hadamard_quantize.register_fake
def _(y, out_scale):
    return torch.empty_like(y, dtype=torch.int8)


@_op("hadamard_quantize_dynamic")
def hadamard_quantize_dynamic(y: Tensor) -> tuple[Tensor, Tensor]:
    """y (b, l, d_in) float -> y_q (b, l, d_in) int8, y_scale (b, l) float32 (one scale per token)."""
    return qops.hadamard_quantize_dynamic(y)


@hadamard_quantize_dynamic.register_fake
def _(y):
    return torch.empty_like(y, dtype=torch.int8), y.new_empty(y.shape[:-1], dtype=torch.float32)


@_op("int8_linear_per_token")
def int8_linear_per_token(x_q: Tensor, weight_q: Tensor, bias: Tensor | None, x_scale: Tensor,
                          weight_scale: float) -> Tensor:
    """x_q (..., K) int8 with x_scale (...) float32 per token, weight_q (N, K) int8, bias (N,) float32 or None
    -> (..., N) float32: float32(exact int32 x_q @ weight_q^T) * float32(x_scale[..., None] * weight_scale)
    (+ bias)."""
    y = primitives.int8_linear_per_token(x_q, x_scale, weight_q, weight_scale)
    return y if bias is None else y + bias.to(torch.float32)


@int8_linear_per_token.register_fake
def _(x_q, weight_q, bias, x_scale, weight_scale):
    return x_q.new_empty((*x_q.shape[:-1], weight_q.shape[0]), dtype=torch.float32)


@_op("w4a8_linear")
def w4a8_linear(x_q: Tensor, weight_packed: Tensor, weight_scale: Tensor, bias: Tensor | None, x_scale: float,
                group_size: int) -> Tensor:
    """W4A8: x_q (..., K) int8 at ``x_scale``, weight_packed (N, ceil(K / 2)) uint8 (the artifact's int4 codes, two
    per byte, low nibble first: :func:`edge_quamba.quant.primitives.pack_int4`), weight_scale (N, G) float32
    -> (..., N) float32 (:func:`edge_quamba.quant.qops.w4a8_linear`)."""
    return qops.w4a8_linear(x_q, weight_packed, weight_scale, bias, x_scale, group_size)


@w4a8_linear.register_fake
def _(x_q, weight_packed, weight_scale, bias, x_scale, group_size):
    return x_q.new_empty((*x_q.shape[:-1], weight_packed.shape[0]), dtype=torch.float32)


@_op("w4a8_linear_quantize")
def w4a8_linear_quantize(x_q: Tensor, weight_packed: Tensor, weight_scale: Tensor, bias: Tensor | None,
                         x_scale: float, group_size: int, out_scale: float) -> Tensor:
    """w4a8_linear followed by quantize at ``out_scale`` in one op (the requantizing epilogue W8A8 has):
    x_q (..., K) int8 -> (..., N) int8 (:func:`edge_quamba.quant.qops.w4a8_linear_quantize`)."""
    return qops.w4a8_linear_quantize(x_q, weight_packed, weight_scale, bias, x_scale, group_size, out_scale)


@w4a8_linear_quantize.register_fake
def _(x_q, weight_packed, weight_scale, bias, x_scale, group_size, out_scale):
    return x_q.new_empty((*x_q.shape[:-1], weight_packed.shape[0]), dtype=torch.int8)


@_op("w4a8_linear_quantize_segments")
def w4a8_linear_quantize_segments(x_q: Tensor, weight_packed: Tensor, weight_scale: Tensor, bias: Tensor | None,
                                  x_scale: float, group_size: int, out_scales: list[float], sizes: list[int]
                                  ) -> Tensor:
    """w4a8_linear whose consecutive column segments are quantized at their own scales, in one op (as
    :func:`int8_linear_quantize_segments`): x_q (..., K) int8 -> (..., N) int8."""
    y = qops.w4a8_linear(x_q, weight_packed, weight_scale, bias, x_scale, group_size)
    return primitives.quantize_segments(y, out_scales, sizes)


@w4a8_linear_quantize_segments.register_fake
def _(x_q, weight_packed, weight_scale, bias, x_scale, group_size, out_scales, sizes):
    return x_q.new_empty((*x_q.shape[:-1], weight_packed.shape[0]), dtype=torch.int8)


@_op("w4a8_linear_residual")
def w4a8_linear_residual(x_q: Tensor, weight_packed: Tensor, weight_scale: Tensor, bias: Tensor | None,
                         x_scale: float, group_size: int, residual: Tensor) -> Tensor:
    """residual (..., N) float32 + w4a8_linear(...): out_proj with the block's residual add (int8_linear_residual)."""
    return residual + qops.w4a8_linear(x_q, weight_packed, weight_scale, bias, x_scale, group_size)


@w4a8_linear_residual.register_fake
def _(x_q, weight_packed, weight_scale, bias, x_scale, group_size, residual):
    return torch.empty_like(residual)


@_op("w4a8_linear_quantize_conv_update")
def w4a8_linear_quantize_conv_update(x_q: Tensor, weight_packed: Tensor, weight_scale: Tensor, bias: Tensor | None,
                                     x_scale: float, group_size: int, out_scales: list[float], sizes: list[int],
                                     conv_begin: int, conv_state: Tensor, conv_weight: Tensor,
                                     conv_bias: Tensor | None, conv_weight_scale: float, conv_out_scale: float,
                                     conv_out_scales: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`int8_linear_quantize_conv_update` with W4A8 in_proj weights."""
    return _conv_step_after(
        lambda: w4a8_linear_quantize_segments(x_q, weight_packed, weight_scale, bias, x_scale, group_size, out_scales,
                                              sizes),
        out_scales, sizes, conv_begin, conv_state, conv_weight, conv_bias, conv_weight_scale, conv_out_scale,
        conv_out_scales)


@w4a8_linear_quantize_conv_update.register_fake
def _(x_q, weight_packed, weight_scale, bias, x_scale, group_size, out_scales, sizes, conv_begin, conv_state,
      conv_weight, conv_bias, conv_weight_scale, conv_out_scale, conv_out_scales):
    codes = x_q.new_empty((x_q.shape[0], weight_packed.shape[0]), dtype=torch.int8)
    return codes, x_q.new_empty(conv_state.shape[:2], dtype=torch.int8), torch.empty_like(conv_state)


@_op("w4a16_linear")
def w4a16_linear(x: Tensor, weight_packed: Tensor, weight_scale: Tensor, bias: Tensor | None,
                 group_size: int) -> Tensor:
    """W4A16: x (..., K) float16 activations, weight_packed (N, ceil(K / 2)) uint8 int4 codes (as w4a8_linear) at
    weight_scale (N, G) float32 -> (..., N) in x's dtype, float32 accumulation and one rounding at the end
    (:func:`edge_quamba.quant.qops.w4a16_linear`)."""
    return qops.w4a16_linear(x, weight_packed, weight_scale, bias, group_size)


@w4a16_linear.register_fake
def _(x, weight_packed, weight_scale, bias, group_size):
    return x.new_empty((*x.shape[:-1], weight_packed.shape[0]))
@_op("selective_scan")
def selective_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor,
                   ssm_state: Tensor) -> tuple[Tensor, Tensor]:
    """The fp reference's prefill scan as an op (W4A16's mixer calls it, so that a GPU runs a kernel instead of the
    reference's loop over l): :func:`edge_quamba.models.mamba.selective_scan`, same arguments and float order.
    u, delta (b, l, d_in), A (d_in, n), B, C (b, l, n), D (d_in,), ssm_state (b, d_in, n) -> y (b, l, d_in),
    ssm_state_out (b, d_in, n), both in the compute dtype (at least float32)."""
    return mamba.selective_scan(u, delta, A, B, C, D, ssm_state)


@selective_scan.register_fake
def _(u, delta, A, B, C, D, ssm_state):
    dtype = mamba.compute_dtype(u.dtype)
    return u.new_empty(u.shape, dtype=dtype), ssm_state.new_empty(ssm_state.shape, dtype=dtype)


# Mamba2 (Quamba2): per-channel scales are float32 tensors (a vector is not a plugin-field scalar).


@_op("int8_causal_conv1d_channel_scales")
def int8_causal_conv1d_channel_scales(x_q: Tensor, conv_state_q: Tensor, weight_q: Tensor, bias: Tensor | None,
                                      out_scales: Tensor, x_scale: float, weight_scale: float
                                      ) -> tuple[Tensor, Tensor]:
    """x_q (b, l, conv_dim) int8, conv_state_q (b, conv_dim, k) int8, out_scales (conv_dim,) float32
    -> codes (b, l, conv_dim) int8 (x | B | C, each channel at its scale), conv_state_out (b, conv_dim, k)."""
    return qops.int8_causal_conv1d_channel_scales(x_q, conv_state_q, weight_q, bias, out_scales, x_scale,
                                                  weight_scale)


@int8_causal_conv1d_channel_scales.register_fake
def _(x_q, conv_state_q, weight_q, bias, out_scales, x_scale, weight_scale):
    return torch.empty_like(x_q, memory_format=torch.contiguous_format), torch.empty_like(conv_state_q)


@_op("int8_causal_conv1d_channel_scales_update")
def int8_causal_conv1d_channel_scales_update(x_q: Tensor, conv_state_q: Tensor, weight_q: Tensor,
                                             bias: Tensor | None, out_scales: Tensor, x_scale: float,
                                             weight_scale: float) -> tuple[Tensor, Tensor]:
    """One token: x_q (b, conv_dim) int8 -> codes (b, conv_dim) int8, new state."""
    return qops.int8_causal_conv1d_channel_scales_update(x_q, conv_state_q, weight_q, bias, out_scales, x_scale,
                                                         weight_scale)


@int8_causal_conv1d_channel_scales_update.register_fake
def _(x_q, conv_state_q, weight_q, bias, out_scales, x_scale, weight_scale):
    return torch.empty_like(x_q, memory_format=torch.contiguous_format), torch.empty_like(conv_state_q)


@_op("int8_ssd_scan")
def int8_ssd_scan(x_q: Tensor, dt_q: Tensor, B_q: Tensor, C_q: Tensor, ssm_state: Tensor, A: Tensor, D: Tensor,
                  dt_bias: Tensor, x_scales: Tensor, B_scales: Tensor, C_scales: Tensor, dt_scale: float
                  ) -> tuple[Tensor, Tensor]:
    """x_q (b, l, d_in), dt_q (b, l, h), B_q, C_q (b, l, g n) int8; ssm_state (b, h, p, n) float32
    -> y (b, l, d_in) float32, ssm_state_out (b, h, p, n) float32."""
    return qops.int8_ssd_scan(x_q, dt_q, B_q, C_q, ssm_state, A, D, dt_bias, x_scales, B_scales, C_scales,
                              dt_scale)


@int8_ssd_scan.register_fake
def _(x_q, dt_q, B_q, C_q, ssm_state, A, D, dt_bias, x_scales, B_scales, C_scales, dt_scale):
    return x_q.new_empty(x_q.shape, dtype=torch.float32), torch.empty_like(ssm_state, dtype=torch.float32)


@_op("int8_ssd_scan_update")
def int8_ssd_scan_update(x_q: Tensor, dt_q: Tensor, B_q: Tensor, C_q: Tensor, ssm_state: Tensor, A: Tensor,
                         D: Tensor, dt_bias: Tensor, x_scales: Tensor, B_scales: Tensor, C_scales: Tensor,
                         dt_scale: float) -> tuple[Tensor, Tensor]:
    """One token: x_q (b, d_in), dt_q (b, h), B_q, C_q (b, g n) int8 -> y (b, d_in) float32, new state."""
    return qops.int8_ssd_scan_update(x_q, dt_q, B_q, C_q, ssm_state, A, D, dt_bias, x_scales, B_scales,
                                     C_scales, dt_scale)


@int8_ssd_scan_update.register_fake
def _(x_q, dt_q, B_q, C_q, ssm_state, A, D, dt_bias, x_scales, B_scales, C_scales, dt_scale):
    return x_q.new_empty(x_q.shape, dtype=torch.float32), torch.empty_like(ssm_state, dtype=torch.float32)


@_op("gated_rms_norm_quantize")
def gated_rms_norm_quantize(y: Tensor, z_q: Tensor, weight: Tensor, z_scale: float, eps: float, group_size: int,
                            out_scale: float) -> Tensor:
    """Mamba2's gated norm before out_proj and the quantize of out_proj's input (no Hadamard), in one op:
    y (..., d_in) float32, z_q (..., d_in) int8 -> (..., d_in) int8 = quantize(qops.gated_rms_norm(...), out_scale).
    A kernel's mean of squares sums in its own order, so its codes may differ at .5 ties (the tie rule)."""
    return qops.gated_rms_norm_quantize(y, z_q, weight, z_scale, eps, group_size, out_scale)


@gated_rms_norm_quantize.register_fake
def _(y, z_q, weight, z_scale, eps, group_size, out_scale):
    return torch.empty_like(y, dtype=torch.int8, memory_format=torch.contiguous_format)


@_op("gated_rms_norm_hadamard_quantize")
def gated_rms_norm_hadamard_quantize(y: Tensor, z_q: Tensor, weight: Tensor, z_scale: float, eps: float,
                                     group_size: int, out_scale: float) -> Tensor:
    """The same with the Hadamard transform between norm and quantize (the out_proj input of a Hadamard-rotated
    Mamba2 model): (..., d_in) int8 = qops.hadamard_quantize(qops.gated_rms_norm(...), out_scale)."""
    return qops.gated_rms_norm_hadamard_quantize(y, z_q, weight, z_scale, eps, group_size, out_scale)


@gated_rms_norm_hadamard_quantize.register_fake
def _(y, z_q, weight, z_scale, eps, group_size, out_scale):
    return torch.empty_like(y, dtype=torch.int8, memory_format=torch.contiguous_format)


OPS = {"Int8CausalConv1d": int8_causal_conv1d, "Int8SelectiveScan": int8_selective_scan,
       "HadamardQuantize": hadamard_quantize, "HadamardQuantizeDynamic": hadamard_quantize_dynamic,
       "W4A8Linear": w4a8_linear, "W4A8LinearQuantize": w4a8_linear_quantize, "W4A16Linear": w4a16_linear,
       "SelectiveScanF16": selective_scan, "Int8CausalConv1dChannelScales": int8_causal_conv1d_channel_scales,
       "Int8SSDScan": int8_ssd_scan, "GatedRMSNormQuantize": gated_rms_norm_quantize,
       "GatedRMSNormHadamardQuantize": gated_rms_norm_hadamard_quantize}
"""The torch custom op of each ONNX custom-op spec, by ONNX op_type."""
