"""The quantized linears' weights: :class:`QuantLinear` (int8, per tensor or per output channel) and
:class:`Int4Linear` (group-wise int4, packed two codes per byte). They hold buffers only; the flow's ops compute
with them (:class:`edge_quamba.quant.qmodel.QuantOps`), except W4A16, whose Int4Linear is called as a module.
The conventions (rounding, ranges, packing, group scales) are :mod:`edge_quamba.quant.primitives`'."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from edge_quamba.ops import torch_ops  # noqa: F401  (registers torch.ops.edge_quamba.*)
from edge_quamba.quant.config import DEFAULT_DAMP
from edge_quamba.quant.gptq import gptq_quantize
from edge_quamba.quant.primitives import (int4_group_count, pack_int4, quantize_weight_int4,
                                          quantize_weight_per_channel, quantize_weight_per_tensor, unpack_int4)

eq = torch.ops.edge_quamba


def scalar_buffer(value: float = 1.0) -> Tensor:
    """A 0-dim float32 tensor: a per-tensor scale buffer (1.0 until calibrated or loaded)."""
    return torch.tensor(float(value), dtype=torch.float32)


class QuantLinear(nn.Module):
    """The int8 weight of an nn.Linear: ``weight`` (out, in) int8 at ``weight_scale`` (float32: 0-dim per tensor, or
    (out,) per output channel when ``per_channel``), ``bias`` (out,) float32 or None. The mixer's flow calls
    ``torch.ops.edge_quamba.int8_linear`` (``int8_linear_per_channel``) with them."""

    def __init__(self, in_features: int, out_features: int, bias: bool, per_channel: bool = False):
        super().__init__()
        self.per_channel = per_channel
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out_features) if per_channel else scalar_buffer())
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    @classmethod
    def from_weight(cls, weight: Tensor, bias: Tensor | None, per_channel: bool = False) -> "QuantLinear":
        module = cls(weight.shape[1], weight.shape[0], bias is not None, per_channel)
        quantize_weight = quantize_weight_per_channel if per_channel else quantize_weight_per_tensor
        module.weight, module.weight_scale = quantize_weight(weight.detach())
        if bias is not None:
            module.bias = bias.detach().float().clone()
        return module


class Int4Linear(nn.Module):
    """The group-wise int4 weight of an nn.Linear (:mod:`edge_quamba.quant.primitives`, int4 section):
    ``weight_packed`` (out, ceil(in / 2)) uint8 (two codes per byte, low nibble first), ``weight_scale`` (out, G)
    float32, ``bias`` (out,) float32 or None. ``codes()`` unpacks once (cached until the buffers are reloaded), for
    the graph lowering; the ops take ``weight_packed`` itself (they unpack in the reference, and the CUDA kernels
    read the packed bytes, so a model on the GPU holds 4 bits per weight).

    Called as a module (``forward``), it is the W4A16 linear (``torch.ops.edge_quamba.w4a16_linear``); the W4A8
    mixer passes its buffers to ``w4a8_linear(_quantize)`` instead."""

    def __init__(self, in_features: int, out_features: int, bias: bool, group_size: int):
        super().__init__()
        self.in_features, self.group_size = in_features, group_size
        self.register_buffer("weight_packed", torch.zeros(out_features, -(-in_features // 2), dtype=torch.uint8))
        self.register_buffer("weight_scale", torch.ones(out_features, int4_group_count(in_features, group_size)))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self._codes: Tensor | None = None
        self.register_load_state_dict_post_hook(lambda module, keys: setattr(module, "_codes", None))

    @classmethod
    def from_weight(cls, weight: Tensor, bias: Tensor | None, group_size: int, hessian: Tensor | None,
                    damp: float = DEFAULT_DAMP, act_order: bool = False) -> "Int4Linear":
        """Quantize ``weight`` (out, in): GPTQ with ``hessian`` (in, in) (in activation order when ``act_order``),
        or round-to-nearest when it is None."""
        module = cls(weight.shape[1], weight.shape[0], bias is not None, group_size)
        w = weight.detach().float()
        q, scales = quantize_weight_int4(w, group_size) if hessian is None else \
            gptq_quantize(w, hessian, group_size, damp, act_order)
        module.weight_packed, module.weight_scale = pack_int4(q), scales
        if bias is not None:
            module.bias = bias.detach().float().clone()
        return module

    def codes(self) -> Tensor:
        """(out, in) int8 codes in [-7, 7]."""
        if self._codes is None or self._codes.device != self.weight_packed.device:
            self._codes = unpack_int4(self.weight_packed, self.in_features)
        return self._codes

    def forward(self, x: Tensor) -> Tensor:
        """W4A16: x (..., in) float16 -> (..., out) float16."""
        return eq.w4a16_linear(x, self.weight_packed, self.weight_scale, self.bias, self.group_size)
