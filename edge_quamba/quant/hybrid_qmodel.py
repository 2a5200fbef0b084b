"""The quantized reference of a hybrid model: Quamba2 Mamba2 blocks, int8 (or int4) attention and MLP linears.

The fp :class:`HybridLM` with every block swapped (gpt-fast's "swap modules at load"): Mamba2 blocks hold
:class:`edge_quamba.quant.mamba2_qmodel.QuantMamba2Mixer` (Quamba2, unchanged), attention blocks
:class:`QuantAttention`, MLP blocks :class:`QuantMLP`, each with its float32 pre-norm, all running their flows
(:func:`mamba2_mixer_flow`, :func:`attention_flow`, :func:`mlp_flow`) with int8 ops. Embeddings, norms, the residual
stream and lm_head stay floating point (stored fp16, computed in float32), as for the Mamba models.

Attention and MLP linears (q/k/v/o_proj, gate/up/down_proj) follow ``QuantConfig.bits``: W8A8 int8 weights per tensor
(:class:`QuantLinear`), W4A8 group-wise int4 weights (:class:`Int4Linear`, GPTQ), both on int8 activations at the
static per-tensor scales of :data:`ATTENTION_SITES` / :data:`MLP_SITES`; with ``quantize_attn_mlp = False`` they stay
float linears (stored float16, computed in float32; no input site). The KV cache (``kv_cache``) holds float16 values or
int8 codes at the static scales of k_cache / v_cache. W4A16: the fp model in float16 with every linear group-wise int4.

Decode equals prefill bit for bit: the quantized attention computes a prefill row by row, each row exactly as the
decode step of that token computes it (the same shapes, hence the same float sums), so an int8 code never depends on
whether its token came in a prompt or one at a time.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_quamba.errors import ConfigError
from edge_quamba.models.attention import KVState, MLP, Attention, merge_heads, split_heads
from edge_quamba.models.hybrid import HybridLM
from edge_quamba.models.hybrid_config import HybridConfig
from edge_quamba.models.mamba import Norm
from edge_quamba.models.mamba2 import Mamba2Mixer
from edge_quamba.ops import torch_ops  # noqa: F401  (registers torch.ops.edge_quamba.*)
from edge_quamba.quant.cluster import ClusterPlan
from edge_quamba.quant.flow import Tap
from edge_quamba.quant.hybrid_flow import (HYBRID_SITE_BY_NAME, attention_flow, block_sites, mlp_activation,
                                           mlp_flow, rope_flat)
from edge_quamba.quant.mamba2_qmodel import QuantMamba2Mixer, W4A16Mamba2Mixer
from edge_quamba.quant.primitives import dequantize, scale_from_amax
from edge_quamba.quant.config import QuantConfig
from edge_quamba.quant.linears import Int4Linear, QuantLinear
from edge_quamba.quant.qmodel import FLOAT_STORAGE_DTYPE, W4A16_DTYPE, QuantOps

eq = torch.ops.edge_quamba
LINEAR_NAMES = {"*": ("q_proj", "k_proj", "v_proj", "o_proj"), "-": ("gate_proj", "up_proj", "down_proj")}
"""The linears of an attention ("*") and an MLP ("-") block (gate_proj only in SwiGLU MLPs)."""


def linear_names(kind: str, config: HybridConfig) -> tuple[str, ...]:
    names = LINEAR_NAMES[kind]
    return names if kind == "*" or config.mlp == "swiglu" else names[1:]


def attend_rows(q: Tensor, key: Tensor, value: Tensor, past: int) -> Tensor:
    """Causal attention one query row at a time (module docstring: decode == prefill): q (b, h, l, e) float32,
    key, value (b, kv, t + l, e) float32 -> (b, h, l, e) float32. Row i reads positions 0 .. t + i."""
    h, kv, e = q.shape[1], key.shape[1], q.shape[-1]
    key, value = key.repeat_interleave(h // kv, dim=1), value.repeat_interleave(h // kv, dim=1)
    rows = []
    for i in range(q.shape[2]):
        s = past + i + 1
        scores = torch.matmul(q[:, :, i:i + 1], key[:, :, :s].transpose(-1, -2)) * e ** -0.5  # (b, h, 1, s)
        rows.append(torch.matmul(torch.softmax(scores, dim=-1), value[:, :, :s]))
    return torch.cat(rows, dim=2)


class HybridQuantOps(QuantOps):
    """The attention and MLP flows' ops on int8 tensors (:class:`QuantOps`'s norm, quantize and linear ops and
    labels, with these blocks' sites). A site the block holds no scale for (a float linear's input) passes the float
    value on; a float linear is ``F.linear``. The tap also sees each linear's output under its name."""

    site_by_name = HYBRID_SITE_BY_NAME

    def norm_quantize(self, resid: Tensor, site: str) -> Tensor:
        return super().norm_quantize(resid, site) if site in self.scales else self.norm(resid)

    def quantize(self, x: Tensor, site: str) -> Tensor:
        return super().quantize(x, site) if site in self.scales else x

    def linear(self, name: str, x: Tensor, in_site: str, bias: bool = True, out_site: str | None = None) -> Tensor:
        module = getattr(self.m, name)
        if isinstance(module, nn.Linear):  # float16 values, float32 GEMM
            y = F.linear(x, module.weight.float(), None if module.bias is None else module.bias.float())
        else:
            y = super().linear(name, x, in_site)
        if self.m.tap is not None:
            self.m.tap(name, y)
        return y

    def rope(self, q: Tensor, k: Tensor, state: KVState) -> tuple[Tensor, Tensor]:
        return rope_flat(self.m.config, q, k, state)

    def _cache(self, x: Tensor, site: str, past: Tensor) -> Tensor:
        """(b, l, kv e) float32 -> the cache (b, kv, t + l, e): float16 values or int8 codes appended."""
        x = split_heads(x, self.m.config.head_dim)
        x = self.quantize(x, site) if site in self.scales else x.to(torch.float16)
        return torch.cat([past, x], dim=2)

    def kv_append(self, k: Tensor, v: Tensor, state: KVState) -> tuple[Tensor, Tensor]:
        return self._cache(k, "k_cache", state.key), self._cache(v, "v_cache", state.value)

    def attend(self, q: Tensor, key: Tensor, value: Tensor, state: KVState) -> Tensor:
        def floats(cache: Tensor, site: str) -> Tensor:
            return dequantize(cache, self.scales[site]) if site in self.scales else cache.float()

        q = split_heads(q, self.m.config.head_dim)
        return merge_heads(attend_rows(q, floats(key, "k_cache"), floats(value, "v_cache"), state.length))

    def mlp_activation(self, up: Tensor, gate: Tensor | None) -> Tensor:
        return mlp_activation(up, gate)


class QuantHybridMixer(nn.Module):
    """The quantized twin of an attention or MLP mixer: its linears (int8, int4 or float), one ``<site>_scale``
    buffer per static site it holds, forward / step / empty_state; both run the block's flow with
    :class:`HybridQuantOps`. ``layer`` is the block index (it names the int8 tensors); ``tap`` as QuantMambaMixer's."""

    def __init__(self, config: HybridConfig, kind: str, qconfig: QuantConfig, layer: int):
        super().__init__()
        self.config, self.kind, self.layer = config, kind, layer
        self.kv_int8 = kind == "*" and qconfig.kv_cache == "int8"
        self.sites = block_sites(kind, self.kv_int8, qconfig.quantize_attn_mlp)
        self.tap: Tap | None = None
        template = Attention(config, torch.float32) if kind == "*" else MLP(config, torch.float32)
        for name in linear_names(kind, config):
            fp = getattr(template, name)
            bias = fp.bias is not None
            if not qconfig.quantize_attn_mlp:
                linear = fp.to(FLOAT_STORAGE_DTYPE)
            elif qconfig.bits == "w4a8":
                linear = Int4Linear(fp.in_features, fp.out_features, bias, qconfig.group_size)
            else:
                linear = QuantLinear(fp.in_features, fp.out_features, bias)
            setattr(self, name, linear)
        for site in self.sites:
            self.register_buffer(f"{site}_scale", torch.tensor(1.0))
        self._scales: dict[str, float] | None = None
        self.register_load_state_dict_post_hook(lambda module, keys: module.forget_scales())

    @classmethod
    def from_float(cls, mixer: Attention | MLP, amax: dict[str, Tensor], qconfig: QuantConfig, layer: int,
                   hessians: dict[str, Tensor] | None = None) -> "QuantHybridMixer":
        """Quantize an fp attention or MLP mixer with calibrated amaxes (one 0-dim per site) and, at w4a8, the
        Hessians of its linears' inputs (None: round-to-nearest)."""
        kind = "*" if isinstance(mixer, Attention) else "-"
        q = cls(mixer.config, kind, qconfig, layer)
        missing = [site for site in q.sites if site not in amax]
        if missing:
            raise ConfigError(f"block {layer}: no calibrated amax for {', '.join(missing)}")
        for name in linear_names(kind, mixer.config):
            fp = getattr(mixer, name)
            if not qconfig.quantize_attn_mlp:  # float: stored float16, computed in float32
                linear = copy.deepcopy(fp).to(FLOAT_STORAGE_DTYPE)
            elif qconfig.bits == "w4a8":
                hessian = None if hessians is None else hessians[name]
                linear = Int4Linear.from_weight(fp.weight, fp.bias, qconfig.group_size, hessian, qconfig.gptq_damp,
                                                qconfig.gptq_act_order)
            else:
                linear = QuantLinear.from_weight(fp.weight.float(), fp.bias)
            setattr(q, name, linear)
        for site in q.sites:
            setattr(q, f"{site}_scale", scale_from_amax(amax[site]))
        return q

    def scales(self) -> dict[str, float]:
        """Site scales and per-tensor int8 weight scales (``<linear>.weight``) as Python floats, read once."""
        if self._scales is None:
            scales = {site: float(getattr(self, f"{site}_scale")) for site in self.sites}
            scales.update({f"{name}.weight": float(getattr(self, name).weight_scale)
                           for name in linear_names(self.kind, self.config)
                           if isinstance(getattr(self, name), QuantLinear)})
            self._scales = scales
        return self._scales

    def forget_scales(self) -> None:
        self._scales = None

    def empty_state(self, batch: int) -> KVState | None:
        """Attention: an empty cache (b, kv, 0, e), int8 codes or float16; MLP: None."""
        if self.kind == "-":
            return None
        c = self.config
        device = next(iter([*self.buffers(), *self.parameters()])).device
        shape, dtype = (batch, c.n_kv_heads, 0, c.head_dim), torch.int8 if self.kv_int8 else torch.float16
        return KVState(torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device))

    def forward(self, resid: Tensor, state: KVState | None, norm: Norm) -> tuple[Tensor, KVState | None]:
        """Prefill: resid (b, l, d) float -> the block's output (b, l, d) float32 and the new state."""
        ops = HybridQuantOps(self, norm, step=False)
        if self.kind == "*":
            return attention_flow(ops, resid, state)
        return mlp_flow(ops, resid, self.config.mlp == "swiglu"), None

    def step(self, resid: Tensor, state: KVState | None, norm: Norm) -> tuple[Tensor, KVState | None]:
        """Decode one token: resid (b, d) -> (b, d), the prefill flow on l = 1."""
        out, state = self(resid[:, None], state, norm)
        return out[:, 0], state


class QuantHybridBlock(nn.Module):
    """resid + mixer(resid), the float32 pre-norm inside the mixer's flow; state-dict keys ``norm.*``, ``mixer.*``."""

    def __init__(self, config: HybridConfig, mixer: nn.Module):
        super().__init__()
        self.norm = Norm(config.d_model, config.norm, config.norm_eps, torch.float32)
        self.mixer = mixer

    def forward(self, resid: Tensor, state, step: bool = False):
        out, state = (self.mixer.step if step else self.mixer)(resid, state, self.norm)
        return resid + out, state


def empty_quantized_hybrid_model(config: HybridConfig, qconfig: QuantConfig) -> HybridLM:
    """The module tree of a quantized hybrid model with placeholder values, ready for load_state_dict."""
    if qconfig.bits == "w4a16":
        model = HybridLM(config, dtype=W4A16_DTYPE)
        for i, block in enumerate(model.backbone.layers):
            if config.kind(i) == "M":
                block.mixer = W4A16Mamba2Mixer(config.mamba2(), qconfig.group_size)
            elif qconfig.quantize_attn_mlp:
                for name in linear_names(config.kind(i), config):
                    fp = getattr(block.mixer, name)
                    setattr(block.mixer, name, Int4Linear(fp.in_features, fp.out_features, fp.bias is not None,
                                                          qconfig.group_size))
        return model.eval()
    model = HybridLM(config, dtype=torch.float32)
    model.backbone.layers = nn.ModuleList(
        QuantHybridBlock(config, QuantMamba2Mixer(config.mamba2(), qconfig, layer=i) if kind == "M" else
                         QuantHybridMixer(config, kind, qconfig, layer=i)) for i, kind in enumerate(config.pattern))
    return model.eval()


def quantize_hybrid_model(fp_model: HybridLM, amaxes: list[dict[str, Tensor]], plans: list[ClusterPlan | None],
                          qconfig: QuantConfig, hessians: list[dict[str, Tensor]] | None = None) -> HybridLM:
    """The quantized reference from an fp hybrid model (its Mamba2 mixers already in the plans' channel order),
    per-block amaxes (its sites' keys) and, for the 4-bit configs, per-block Hessians of the int4 linears' inputs."""
    config = fp_model.config
    if len(amaxes) != config.n_layer or len(plans) != config.n_layer:
        raise ConfigError(f"calibration gave {len(amaxes)} blocks of amaxes, the model has {config.n_layer}")
    model = empty_quantized_hybrid_model(config, qconfig)
    pairs = list(zip(model.backbone.layers, fp_model.backbone.layers, strict=True))
    if qconfig.bits == "w4a16":
        model.load_state_dict({k: v.to(W4A16_DTYPE) for k, v in fp_model.state_dict().items()}, strict=False)
        for i, (block, fp_block) in enumerate(pairs):
            names = ("in_proj", "out_proj") if config.kind(i) == "M" else \
                linear_names(config.kind(i), config) if qconfig.quantize_attn_mlp else ()
            for name in names:
                fp = getattr(fp_block.mixer, name)
                hessian = None if hessians is None else hessians[i][name]
                setattr(block.mixer, name, Int4Linear.from_weight(fp.weight.float(), fp.bias, qconfig.group_size,
                                                                  hessian, qconfig.gptq_damp, qconfig.gptq_act_order))
        return model.eval()
    fp_state = {k: v.to(FLOAT_STORAGE_DTYPE).float() for k, v in fp_model.state_dict().items() if ".mixer." not in k}
    model.load_state_dict(fp_state, strict=False)
    for i, (block, fp_block) in enumerate(pairs):
        mixer, h = copy.deepcopy(fp_block.mixer).float(), None if hessians is None else hessians[i]
        block.mixer = QuantMamba2Mixer.from_float(mixer, amaxes[i], plans[i], qconfig, layer=i, hessians=h) \
            if isinstance(mixer, Mamba2Mixer) else QuantHybridMixer.from_float(mixer, amaxes[i], qconfig, i, h)
    return model.eval()
