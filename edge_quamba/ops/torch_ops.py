"""PyTorch custom ops ``torch.ops.edge_quamba.*``, one per spec, with the qops reference as their CPU kernel.

The schemas (argument names, order, types) follow :mod:`edge_quamba.ops.specs`: tensors, then float scales. A CUDA
binding registers its kernel for the same schema with ``int8_causal_conv1d.register_kernel("cuda")`` (and likewise),
so callers never change. Fake (meta) implementations give output shapes and dtypes for tracing and torch.compile.
Importing this module registers the ops.
"""

from __future__ import annotations

import torch
from torch import Tensor

from edge_quamba.quant import qops


@torch.library.custom_op("edge_quamba::int8_causal_conv1d", mutates_args=(), device_types="cpu")
def int8_causal_conv1d(x_q: Tensor, conv_state_q: Tensor, weight_q: Tensor, bias: Tensor | None,
                       x_scale: float, weight_scale: float, out_scale: float) -> tuple[Tensor, Tensor]:
    """x_q (b, l, d_in) int8, conv_state_q (b, d_in, k) int8 -> u_q (b, l, d_in) int8, conv_state_out (b, d_in, k)."""
    return qops.int8_causal_conv1d(x_q, conv_state_q, weight_q, bias, x_scale, weight_scale, out_scale)


@int8_causal_conv1d.register_fake
def _(x_q, conv_state_q, weight_q, bias, x_scale, weight_scale, out_scale):
    return torch.empty_like(x_q), torch.empty_like(conv_state_q)


@torch.library.custom_op("edge_quamba::int8_selective_scan", mutates_args=(), device_types="cpu")
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


@torch.library.custom_op("edge_quamba::hadamard_quantize", mutates_args=(), device_types="cpu")
def hadamard_quantize(y: Tensor, out_scale: float) -> Tensor:
    """y (b, l, d_in) float -> y_q (b, l, d_in) int8."""
    return qops.hadamard_quantize(y, out_scale)


@hadamard_quantize.register_fake
def _(y, out_scale):
    return torch.empty_like(y, dtype=torch.int8)


OPS = {"Int8CausalConv1d": int8_causal_conv1d, "Int8SelectiveScan": int8_selective_scan,
       "HadamardQuantize": hadamard_quantize}
"""The torch custom op of each spec, by ONNX op_type."""
