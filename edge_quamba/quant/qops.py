"""Reference implementations of the int8 custom ops: the definitions every lowering is checked against.

Each prefill function here is one custom op of ``edge_quamba.ops.specs`` (same name, inputs, attributes, outputs):
the ONNX function bodies, the CUDA kernels in ``plugins/kernels`` and the TensorRT plugins must reproduce it. The
``*_update`` functions are the one-token decode forms (mamba_ssm's ``causal_conv1d_update`` / ``selective_state_update``
shapes: no l axis), written out as the recurrence itself; a test holds them equal to the prefill ops at l = 1 and
step-by-step decode equal to prefill. All rounding goes through :mod:`edge_quamba.quant.primitives`; the prefill
scan is the fp reference's :func:`selective_scan`, whose float order is fixed there.

Layout: activations are (b, l, channels) as the linears produce them; states are mamba_ssm's (b, d_in, k) and
(b, d_in, n). Float arithmetic is float32 (the scales are float32), and a product of two scales is rounded to
float32 once before it multiplies an int32 accumulator, the order a kernel epilogue uses.

Glossary: see :mod:`edge_quamba.models.mamba` (b, l, d_in, n, k, u, z, Δ, A, B, C, D).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from edge_quamba.models.mamba import selective_scan
from edge_quamba.models.mamba2 import heads_from_groups
from edge_quamba.quant.hadamard import hadamard_transform
from edge_quamba.quant import primitives
from edge_quamba.quant.primitives import dequantize, per_token_scale, quantize, read_codes


def int8_causal_conv1d(
    x_q: Tensor, conv_state_q: Tensor, weight_q: Tensor, bias: Tensor | None,
    x_scale: float, weight_scale: float, out_scale: float,
) -> tuple[Tensor, Tensor]:
    """Depthwise causal conv on int8 input with int8 weight, + bias, SiLU, requantized: op ``Int8CausalConv1d``.

    Args:
        x_q: (b, l, d_in) int8 at ``x_scale`` (the x half of in_proj's output).
        conv_state_q: (b, d_in, k) int8 at ``x_scale``: the last k inputs before x, oldest first.
        weight_q: (d_in, k) int8 at ``weight_scale``; bias: (d_in,) float32 or None.
        out_scale: the scan-input scale (percentile-clipped in Quamba).
    Returns:
        u_q: (b, l, d_in) int8 = quantize(silu(acc * (x_scale * weight_scale) + bias), out_scale), where
        acc = sum_j weight_q[:, j] * input_q[t-k+1+j] is exact in int32 (|acc| <= 127*127*k);
        new conv_state_q: (b, d_in, k) int8, the last k inputs (the state stays int8 at x_scale, no requantization).
    Input codes are read as :func:`~edge_quamba.quant.primitives.read_codes` says (-128 as -127; the state keeps
    them so).
    """
    k = weight_q.shape[1]
    history = read_codes(torch.cat([conv_state_q, x_q.transpose(1, 2)], dim=2))  # (b, d_in, k + l) int8
    windows = history[:, :, 1:].unfold(2, k, 1)  # (b, d_in, l, k): window t = inputs t-k+1..t
    acc = (windows.to(torch.int32) * weight_q.to(torch.int32)[None, :, None, :]).sum(-1)  # (b, d_in, l) exact
    alpha = torch.as_tensor(x_scale, dtype=torch.float32) * torch.as_tensor(weight_scale, dtype=torch.float32)
    y = acc.to(torch.float32) * alpha
    if bias is not None:
        y = y + bias.to(torch.float32)[None, :, None]
    u_q = quantize(F.silu(y).transpose(1, 2), out_scale)  # quantized in the (b, l, d_in) layout it is returned in
    return u_q.contiguous(), history[:, :, -k:].contiguous()


def int8_causal_conv1d_update(
    x_q: Tensor, conv_state_q: Tensor, weight_q: Tensor, bias: Tensor | None,
    x_scale: float, weight_scale: float, out_scale: float,
) -> tuple[Tensor, Tensor]:
    """One decode token of :func:`int8_causal_conv1d`: x_q (b, d_in) int8 -> u_q (b, d_in) int8, new state.

    The state (b, d_in, k) drops its oldest column and takes x as its newest; the output is the k-tap dot product of
    the new state with the filter (exact int32), then the same epilogue as prefill.
    """
    state = read_codes(torch.cat([conv_state_q[:, :, 1:], x_q.unsqueeze(-1)], dim=-1))  # (b, d_in, k), oldest first
    acc = (state.to(torch.int32) * weight_q.to(torch.int32)).sum(-1)  # (b, d_in) exact
    alpha = torch.as_tensor(x_scale, dtype=torch.float32) * torch.as_tensor(weight_scale, dtype=torch.float32)
    y = acc.to(torch.float32) * alpha
    if bias is not None:
        y = y + bias.to(torch.float32)
    return quantize(F.silu(y), out_scale), state


def int8_selective_scan(
    u_q: Tensor, dt_q: Tensor, B_q: Tensor, C_q: Tensor, z_q: Tensor, ssm_state: Tensor,
    A: Tensor, D: Tensor, dt_bias: Tensor,
    u_scale: float, dt_scale: float, B_scale: float, C_scale: float, z_scale: float,
) -> tuple[Tensor, Tensor]:
    """Selective scan on int8 inputs with a float32 state, gated: op ``Int8SelectiveScan``.

    Args:
        u_q: (b, l, d_in) int8 scan input.             dt_q: (b, l, d_in) int8 dt_proj output (no bias).
        B_q, C_q: (b, l, n) int8.                      z_q: (b, l, d_in) int8 gate.
        ssm_state: (b, d_in, n) float32 state before these tokens.
        A: (d_in, n) float32 = -exp(A_log).  D: (d_in,) float32.  dt_bias: (d_in,) float32 (dt_proj's bias, folded
        in here so that dt_proj's output can stay int8).
    Returns:
        y: (b, l, d_in) float32 = (C·h + D*u) * silu(z) with Δ = softplus(dt + dt_bias);
        the new ssm_state (b, d_in, n) float32.
    """
    u = dequantize(u_q, u_scale)
    delta = F.softplus(dequantize(dt_q, dt_scale) + dt_bias.to(torch.float32))
    y, state = selective_scan(u, delta, A.float(), dequantize(B_q, B_scale), dequantize(C_q, C_scale), D.float(),
                              ssm_state.float())
    return y * F.silu(dequantize(z_q, z_scale)), state


def int8_selective_scan_update(
    u_q: Tensor, dt_q: Tensor, B_q: Tensor, C_q: Tensor, z_q: Tensor, ssm_state: Tensor,
    A: Tensor, D: Tensor, dt_bias: Tensor,
    u_scale: float, dt_scale: float, B_scale: float, C_scale: float, z_scale: float,
) -> tuple[Tensor, Tensor]:
    """One decode token of :func:`int8_selective_scan`: u_q, dt_q, z_q (b, d_in), B_q, C_q (b, n) int8,
    ssm_state (b, d_in, n) float32 -> y (b, d_in) float32 and the new state. The float order is the prefill scan's
    (:func:`edge_quamba.models.mamba.selective_scan`): dA = exp(Δ A); dBu = (Δ u) B; h = dA h + dBu; y = C·h + D u.
    """
    u = dequantize(u_q, u_scale)  # (b, d_in)
    delta = F.softplus(dequantize(dt_q, dt_scale) + dt_bias.to(torch.float32))
    B, C = dequantize(B_q, B_scale), dequantize(C_q, C_scale)  # (b, n)
    dA = torch.exp(delta[:, :, None] * A.float())  # (b, d_in, n)
    dBu = (delta * u)[:, :, None] * B[:, None, :]
    h = dA * ssm_state.float() + dBu
    y = torch.matmul(h, C[:, :, None])[:, :, 0] + u * D.float()
    return y * F.silu(dequantize(z_q, z_scale)), h


def hadamard_quantize(y: Tensor, out_scale: float) -> Tensor:
    """Orthonormal Hadamard transform over channels, then int8 at ``out_scale``: op ``HadamardQuantize``.

    y: (b, l, d_in) float -> (b, l, d_in) int8 = quantize(y @ H_n^T / sqrt(n), out_scale). The transform spreads
    the few outlier channels of y over all channels, so the per-tensor out_proj input scale wastes less range; the
    out_proj weight is rotated offline to match (``rotate_linear_input``).
    """
    return quantize(hadamard_transform(y.float()), out_scale)


def hadamard_quantize_dynamic(y: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`hadamard_quantize` with a per-token scale computed from the rotated values: op
    ``HadamardQuantizeDynamic`` (``QuantConfig.out_proj_scale = "dynamic"``).

    y: (b, l, d_in) float -> y_q (b, l, d_in) int8 and y_scale (b, l) float32, where v = y @ H_n^T / sqrt(n) (the
    same float order as the static op), y_scale = max(amax_channels |v|, AMAX_FLOOR) / 127 per token and
    y_q = quantize(v, y_scale[..., None]) (:func:`edge_quamba.quant.primitives.per_token_scale`). Each token's
    largest rotated value becomes +-127, so no token saturates and a quiet token keeps its resolution; out_proj
    then reads y_scale per row (:func:`edge_quamba.quant.primitives.int8_linear_per_token`).
    """
    v = hadamard_transform(y.float())
    y_scale = per_token_scale(v)
    return quantize(v, y_scale[..., None]), y_scale
# Mamba2 (Quamba2) ops. Glossary: :mod:`edge_quamba.models.mamba2` (h heads of p channels, g groups of n states,
# conv_dim = d_in + 2 g n). Their scales are per channel (float32 vectors, one entry per channel, expanded from the
# group scales of :mod:`edge_quamba.quant.mamba2_qmodel`), so a group's scale is a gather, not a second convention.


def w4a8_linear(x_q: Tensor, weight_packed: Tensor, weight_scale: Tensor, bias: Tensor | None, x_scale: float,
                group_size: int) -> Tensor:
    """W4A8 linear: op ``W4A8Linear``.

    Args:
        x_q: (..., K) int8 at ``x_scale``, read raw (a GEMM's input never holds -128: see the TensorRT lowering).
        weight_packed: (N, ceil(K / 2)) uint8, the artifact's int4 codes two per byte, low nibble first
            (:func:`~edge_quamba.quant.primitives.pack_int4`); weight_scale: (N, G) float32, G = ceil(K / group_size).
        bias: (N,) float32 or None.
    Returns:
        (..., N) float32: per group the exact int32 partial sum times float32(x_scale * weight_scale[n, g]), groups
        summed in float32 in ascending order (:func:`~edge_quamba.quant.primitives.int4_group_linear`), + bias.
    K is x_q's last dim; the codes are unpacked here, so kernels read the packed bytes the artifact stores.
    """
    w_q = primitives.unpack_int4(weight_packed, x_q.shape[-1])
    y = primitives.int4_group_linear(x_q, x_scale, w_q, weight_scale, group_size)
    return y if bias is None else y + bias.to(torch.float32)


def w4a8_linear_quantize(x_q: Tensor, weight_packed: Tensor, weight_scale: Tensor, bias: Tensor | None,
                         x_scale: float, group_size: int, out_scale: float) -> Tensor:
    """:func:`w4a8_linear` requantized at ``out_scale`` (the GEMM epilogue): op ``W4A8LinearQuantize``,
    x_q (..., K) int8 -> (..., N) int8."""
    return quantize(w4a8_linear(x_q, weight_packed, weight_scale, bias, x_scale, group_size), out_scale)


def w4a16_linear(x: Tensor, weight_packed: Tensor, weight_scale: Tensor, bias: Tensor | None,
                 group_size: int) -> Tensor:
    """W4A16 linear: op ``W4A16Linear``. x (..., K) float16, the int4 weight as :func:`w4a8_linear`'s
    -> (..., N) in x's dtype: ``float32(x) @ dequantize_int4(W)^T + bias`` accumulated in float32 (the weight
    dequantized in float32, one rounding per element), rounded once to x's dtype at the end (an fp16 GEMM with
    float32 accumulation and an fp16 output). The sum order is the BLAS's: kernels agree within float tolerance."""
    w_q = primitives.unpack_int4(weight_packed, x.shape[-1])
    w = primitives.dequantize_int4(w_q, weight_scale, group_size)  # (N, K) float32
    y = torch.matmul(x.to(torch.float32), w.T)
    if bias is not None:
        y = y + bias.to(torch.float32)
    return y.to(x.dtype)


def int8_causal_conv1d_channel_scales(
    x_q: Tensor, conv_state_q: Tensor, weight_q: Tensor, bias: Tensor | None, out_scales: Tensor,
    x_scale: float, weight_scale: float,
) -> tuple[Tensor, Tensor]:
    """Mamba2's int8 conv over x | B | C: :func:`int8_causal_conv1d` whose output is quantized per channel.

    x_q: (b, l, conv_dim) int8 at ``x_scale``; conv_state_q: (b, conv_dim, k) int8; weight_q: (conv_dim, k) int8;
    out_scales: (conv_dim,) float32, the scale of each output channel (x at its sort-and-cluster group's scale,
    B and C at their state group's). Returns the codes (b, l, conv_dim) int8 and the new state.
    """
    return int8_causal_conv1d(x_q, conv_state_q, weight_q, bias, x_scale, weight_scale, out_scales.float())


def int8_causal_conv1d_channel_scales_update(
    x_q: Tensor, conv_state_q: Tensor, weight_q: Tensor, bias: Tensor | None, out_scales: Tensor,
    x_scale: float, weight_scale: float,
) -> tuple[Tensor, Tensor]:
    """One decode token of :func:`int8_causal_conv1d_channel_scales`: x_q (b, conv_dim) int8."""
    return int8_causal_conv1d_update(x_q, conv_state_q, weight_q, bias, x_scale, weight_scale, out_scales.float())


def _ssd_inputs(x_q: Tensor, dt_q: Tensor, B_q: Tensor, C_q: Tensor, dt_bias: Tensor, x_scales: Tensor,
                dt_scale: float, B_scales: Tensor, C_scales: Tensor, nheads: int, ngroups: int
                ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Dequantized SSD inputs, float32: x (..., h, p), Δ = softplus(dt + dt_bias) (..., h), B and C (..., g, n)."""
    x = dequantize(x_q, x_scales.float()).unflatten(-1, (nheads, -1))
    delta = F.softplus(dequantize(dt_q, dt_scale) + dt_bias.to(torch.float32))
    B = dequantize(B_q, B_scales.float()).unflatten(-1, (ngroups, -1))
    C = dequantize(C_q, C_scales.float()).unflatten(-1, (ngroups, -1))
    return x, delta, B, C


def _ssd_token(state: Tensor, decay: Tensor, dtx: Tensor, B: Tensor, C: Tensor, out: Tensor, scratch: Tensor
               ) -> None:
    """One token of the SSD recurrence in place, the float order shared by prefill and decode (float32, the product
    rounded before the add: no fused multiply-add): state (b, h, p, n) <- decay (b, h, 1, 1) * state + dtx (b, h, p, 1)
    * B (b, h, 1, n); out (b, h, p, 1) = state C with C (b, h, n, 1), a dot product over n (its summation order is
    the library's). ``scratch`` is a buffer shaped like the state."""
    torch.mul(dtx, B, out=scratch)
    state.mul_(decay).add_(scratch)
    torch.matmul(state, C, out=out)


def int8_ssd_scan(
    x_q: Tensor, dt_q: Tensor, B_q: Tensor, C_q: Tensor, ssm_state: Tensor, A: Tensor, D: Tensor, dt_bias: Tensor,
    x_scales: Tensor, B_scales: Tensor, C_scales: Tensor, dt_scale: float,
) -> tuple[Tensor, Tensor]:
    """The Mamba2 SSD recurrence on int8 inputs with a float32 state (no gate: Mamba2 gates in its norm).

    Args:
        x_q: (b, l, d_in) int8, channel c = head c // p, at ``x_scales[c]`` ((d_in,) float32).
        dt_q: (b, l, h) int8 in_proj output (without dt_bias) at ``dt_scale``.
        B_q, C_q: (b, l, g n) int8, channel j = group j // n, at ``B_scales[j]``, ``C_scales[j]`` ((g n,) float32).
        ssm_state: (b, h, p, n) float32 state before these tokens.
        A: (h,) float32 = -exp(A_log).  D: (h,).  dt_bias: (h,).
    Returns:
        y: (b, l, d_in) float32 = h_t C_t + D x_t with Δ = softplus(dt + dt_bias), and the new state (b, h, p, n).
    Per token (:func:`edge_quamba.models.mamba2.ssd_step`'s recurrence, float32, each step rounded):
        decay = exp(Δ A);  h = decay h + (Δ x) Bᵀ;  y = h C;  then y + D x.
    The recurrence runs token by token (the definition; :func:`int8_ssd_scan_update` is the same token step, so
    decode equals prefill), with one state buffer updated in place (never a (b, l, h, p, n) tensor).
    """
    nheads, d_state = ssm_state.shape[1], ssm_state.shape[3]
    x, delta, B, C = _ssd_inputs(x_q, dt_q, B_q, C_q, dt_bias, x_scales, dt_scale, B_scales, C_scales, nheads,
                                 B_q.shape[-1] // d_state)
    b, l, h, p = x.shape
    B, C = heads_from_groups(B, h), heads_from_groups(C, h)  # (b, l, h, n)
    decay = torch.exp(delta * A.float())  # (b, l, h)
    dtx = delta[..., None] * x  # (b, l, h, p)
    state = ssm_state.float().clone()
    y, scratch = torch.empty(b, l, h, p, 1), torch.empty_like(state)
    for t in range(l):
        _ssd_token(state, decay[:, t, :, None, None], dtx[:, t, :, :, None], B[:, t, :, None, :],
                   C[:, t, :, :, None], y[:, t], scratch)
    return (y[..., 0] + D.float()[:, None] * x).flatten(-2), state


def int8_ssd_scan_update(
    x_q: Tensor, dt_q: Tensor, B_q: Tensor, C_q: Tensor, ssm_state: Tensor, A: Tensor, D: Tensor, dt_bias: Tensor,
    x_scales: Tensor, B_scales: Tensor, C_scales: Tensor, dt_scale: float,
) -> tuple[Tensor, Tensor]:
    """One decode token of :func:`int8_ssd_scan`: x_q (b, d_in), dt_q (b, h), B_q, C_q (b, g n) int8 -> y (b, d_in)
    float32 and the new state (b, h, p, n), through the same token step."""
    nheads, d_state = ssm_state.shape[1], ssm_state.shape[3]
    x, delta, B, C = _ssd_inputs(x_q, dt_q, B_q, C_q, dt_bias, x_scales, dt_scale, B_scales, C_scales, nheads,
                                 B_q.shape[-1] // d_state)
    B, C = heads_from_groups(B, nheads), heads_from_groups(C, nheads)  # (b, h, n)
    decay = torch.exp(delta * A.float())  # (b, h)
    state = ssm_state.float().clone()
    y = torch.empty(*x.shape, 1)
    _ssd_token(state, decay[:, :, None, None], (delta[..., None] * x)[..., None], B[:, :, None, :], C[..., None], y,
               torch.empty_like(state))
    return (y[..., 0] + D.float()[:, None] * x).flatten(-2), state


def gated_rms_norm(y: Tensor, z_q: Tensor, weight: Tensor, z_scale: float, eps: float, group_size: int) -> Tensor:
    """Mamba2's gated RMSNorm on the scan output and the int8 gate: y (..., d_in) float32, z_q (..., d_in) int8 at
    ``z_scale``, weight (d_in,) -> (..., d_in) float32 = rmsnorm_groups(y * silu(z)) * weight, the RMS over groups
    of ``group_size`` channels (:class:`edge_quamba.models.mamba2.GatedRMSNorm`, in float32)."""
    gated = y.float() * F.silu(dequantize(z_q, z_scale))
    groups = gated.unflatten(-1, (-1, group_size))
    normed = groups * torch.rsqrt(groups.pow(2).mean(-1, keepdim=True) + eps)
    return weight.float() * normed.flatten(-2)


def gated_rms_norm_quantize(y: Tensor, z_q: Tensor, weight: Tensor, z_scale: float, eps: float, group_size: int,
                            out_scale: float) -> Tensor:
    """The gated norm and the quantize of out_proj's input, one op (``GatedRMSNormQuantize``): y (..., d_in)
    float32, z_q (..., d_in) int8 -> (..., d_in) int8 = quantize(:func:`gated_rms_norm`, out_scale)."""
    return quantize(gated_rms_norm(y, z_q, weight, z_scale, eps, group_size), out_scale)


def gated_rms_norm_hadamard_quantize(y: Tensor, z_q: Tensor, weight: Tensor, z_scale: float, eps: float,
                                     group_size: int, out_scale: float) -> Tensor:
    """The same with the Hadamard transform between norm and quantize (``GatedRMSNormHadamardQuantize``, the out_proj
    input of a Hadamard-rotated Mamba2 model): :func:`hadamard_quantize` of :func:`gated_rms_norm`."""
    return hadamard_quantize(gated_rms_norm(y, z_q, weight, z_scale, eps, group_size), out_scale)
