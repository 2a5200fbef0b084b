"""The quantized reference Mamba2 model (Quamba2 W8A8): integer arithmetic emulated exactly, prefill and step.

The fp :class:`Mamba2LM` with every block swapped for a :class:`QuantMamba2Block`; embeddings, norms outside the
mixers, the residual stream and lm_head stay floating point (stored fp16, computed in float32), as in
:mod:`edge_quamba.quant.qmodel` (Quamba, Mamba1), whose conventions this module follows.

What is quantized, at which scale and in which order: the sites ``MAMBA2_SITES`` of :mod:`edge_quamba.quant.sites`
and the flow :func:`edge_quamba.quant.flow.mamba2_mixer_flow` (Quamba2, arXiv 2503.22879). Weights: in_proj, the
depthwise conv (over x | B | C) and out_proj are per-tensor int8; the out_proj weight is rotated offline (W Hᵀ) when
Hadamard is on. dt_bias, A = -exp(A_log) and D (one per head) and the gated norm's weight stay float32.
Activations: static per-tensor scales, except the conv output ``ssm_input`` = x | B | C:

    x       Quamba2's sort-and-cluster: the channels are reordered offline (:mod:`edge_quamba.quant.cluster`) and
            cut into groups; ``x_scale`` (g, head_groups, dim_groups) holds one scale per group and ``x_group``
            (d_in,) the flat group index of each channel. Off (``sort_cluster=False``): one scale, shape (1, 1, 1).
    B, C    one scale per state group (the g groups of heads that share B and C), ``B_scale``/``C_scale`` (g,);
            ``per_group_bc=False``: one scale each, shape (1,).

The ops take each channel's scale (``Mamba2QuantOps``: the group scales gathered once into per-channel float32
vectors), so a group scale is a lookup, not a second quantization convention.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from edge_quamba.errors import ConfigError
from edge_quamba.models.config import Mamba2Config
from edge_quamba.models.mamba import LayerState, Norm
from edge_quamba.models.mamba2 import Mamba2LM, Mamba2Mixer
from edge_quamba.ops import torch_ops  # noqa: F401  (registers torch.ops.edge_quamba.*)
from edge_quamba.quant.cluster import ClusterPlan
from edge_quamba.quant.flow import Tap, in_proj_split_conv_composed, mamba2_mixer_flow
from edge_quamba.quant.hadamard import rotate_linear_input
from edge_quamba.quant.primitives import code_label, quantize_weight_per_tensor, scale_from_amax
from edge_quamba.quant.config import QuantConfig
from edge_quamba.quant.linears import Int4Linear, QuantLinear, scalar_buffer
from edge_quamba.quant.qmodel import FLOAT_STORAGE_DTYPE, W4A16_DTYPE, QuantBlock, QuantOps
from edge_quamba.quant.sites import MAMBA2_IN_PROJ_SITES, MAMBA2_SITE_BY_NAME, MAMBA2_SITE_NAMES

FOUR_BIT_LINEARS_MAMBA2 = ("in_proj", "out_proj")
"""The Mamba2 linears that hold int4 weights at w4a8 and w4a16."""
PER_TENSOR_SITES = tuple(name for name in MAMBA2_SITE_NAMES if name != "ssm_input")

eq = torch.ops.edge_quamba


def x_group_shape(config: Mamba2Config, qconfig: QuantConfig) -> tuple[int, int, int]:
    """The shape of a model's x group scales: (g, head_groups, dim_groups), capped at the heads per SSD group and at
    headdim; (1, 1, 1) without sort-and-cluster."""
    if not qconfig.sort_cluster:
        return (1, 1, 1)
    return (config.ngroups, min(qconfig.head_groups, config.nheads // config.ngroups),
            min(qconfig.dim_groups, config.headdim))


class Mamba2QuantOps(QuantOps):
    """The Mamba2 flow's ops on int8 tensors: :class:`edge_quamba.quant.qmodel.QuantOps` (the same norm, quantize,
    split and linear ops and conventions: every int8 tensor labelled ``layers.<i>.mixer.<code>``, ``tap`` sees
    dequantized codes, ``step`` picks the one-token ops) with Mamba2's sites, conv, SSD scan and gated norm."""

    site_by_name = MAMBA2_SITE_BY_NAME

    def in_proj_split_conv(self, x_q: Tensor, conv_state: Tensor, sizes: list[int]
                           ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """in_proj's z | xBC | Δ, each quantized at its site in the GEMM's epilogue (one op), then the conv over xBC:
        at decode the same GEMV's epilogue runs the conv step (one launch for both); prefill runs the conv as its
        own op. The codes are views of one int8 tensor, each labelled as its site. With the
        fused decode ops off (:func:`edge_quamba.quant.qmodel.fused_decode`) decode runs the composition."""
        m, s = self.m, self.scales
        linear: QuantLinear | Int4Linear = m.in_proj
        labels = tuple(self._code_name(site) for site in MAMBA2_IN_PROJ_SITES)
        out_scales = [s[site] for site in MAMBA2_IN_PROJ_SITES]
        if self.step and not self.fused:  # the separate ops (fused_decode off): float in_proj, three quantizes
            return in_proj_split_conv_composed(self, x_q, conv_state, sizes)
        if self.fused:
            with code_label((*labels, self._code_name("ssm_input"))):
                codes, ssm_in_q, conv_state = self.linear_conv_update("in_proj", x_q, "in_proj_input", out_scales,
                                                                      sizes, sizes[0], conv_state, 1.0,
                                                                      s["ssm_input"])
            z_q, _, dt_q = self._parts(codes, sizes)
            return z_q, dt_q, self._made("ssm_input", ssm_in_q), conv_state
        if isinstance(linear, Int4Linear):  # W4A8
            op, args = eq.w4a8_linear_quantize_segments, (x_q, linear.weight_packed, linear.weight_scale, linear.bias,
                                                         s["in_proj_input"], linear.group_size)
        else:
            op, args = eq.int8_linear_quantize_segments, (x_q, linear.weight, linear.bias, s["in_proj_input"],
                                                         s["in_proj.weight"])
        with code_label(labels):
            codes = op(*args, out_scales, sizes)
        z_q, xBC_q, dt_q = self._parts(codes, sizes)
        ssm_in_q, conv_state = self.causal_conv1d(xBC_q, conv_state)
        return z_q, dt_q, ssm_in_q, conv_state

    def _parts(self, codes: Tensor, sizes: list[int]) -> list[Tensor]:
        """in_proj's codes split into z | xBC | Δ (views), each shown to the tap as its site."""
        return [self._made(site, part)
                for site, part in zip(MAMBA2_IN_PROJ_SITES, codes.split(sizes, dim=-1), strict=True)]

    def causal_conv1d(self, xBC_q: Tensor, conv_state: Tensor) -> tuple[Tensor, Tensor]:
        m, s = self.m, self.scales
        op = eq.int8_causal_conv1d_channel_scales_update if self.step else eq.int8_causal_conv1d_channel_scales
        with self._label("ssm_input"):
            out_q, conv_state = op(xBC_q, conv_state, m.conv_weight, m.conv_bias, s["ssm_input"], s["xBC"],
                                   s["conv.weight"])
        return self._made("ssm_input", out_q), conv_state

    def ssd_scan(self, x_q, dt_q, B_q, C_q, ssm_state) -> tuple[Tensor, Tensor]:
        m, s = self.m, self.scales
        op = eq.int8_ssd_scan_update if self.step else eq.int8_ssd_scan
        return op(x_q, dt_q, B_q, C_q, ssm_state, m.A, m.D, m.dt_bias, s["x"], s["B"], s["C"], s["dt"])

    def gated_norm_quantize(self, y: Tensor, z_q: Tensor, hadamard: bool) -> Tensor:
        """The gated RMSNorm of y and the codes of the out_proj_input site, one op (Hadamard in between when on)."""
        m, c = self.m, self.m.config
        op = eq.gated_rms_norm_hadamard_quantize if hadamard else eq.gated_rms_norm_quantize
        with self._label("out_proj_input"):
            y_q = op(y, z_q, m.norm_weight, self.scales["z"], c.gate_norm_eps, c.d_inner // c.ngroups,
                     self.scales["out_proj_input"])
        return self._made("out_proj_input", y_q)


class QuantMamba2Mixer(nn.Module):
    """The quantized twin of :class:`Mamba2Mixer` (forward / step / empty_state), int8 inside; both run
    :func:`edge_quamba.quant.flow.mamba2_mixer_flow` with :class:`Mamba2QuantOps`."""

    def __init__(self, config: Mamba2Config, qconfig: QuantConfig, layer: int):
        super().__init__()
        c = config
        self.config, self.hadamard, self.layer = config, qconfig.hadamard, layer
        self.tap: Tap | None = None

        def linear(k_in: int, n_out: int, bias: bool) -> QuantLinear | Int4Linear:
            if qconfig.bits == "w4a8":
                return Int4Linear(k_in, n_out, bias, qconfig.group_size)
            return QuantLinear(k_in, n_out, bias)

        self.in_proj = linear(c.d_model, c.d_in_proj, c.proj_bias)
        self.register_buffer("conv_weight", torch.zeros(c.conv_dim, c.d_conv, dtype=torch.int8))
        self.register_buffer("conv_weight_scale", scalar_buffer())
        self.register_buffer("conv_bias", torch.zeros(c.conv_dim) if c.conv_bias else None)
        self.register_buffer("dt_bias", torch.zeros(c.nheads))
        self.register_buffer("A", torch.zeros(c.nheads))
        self.register_buffer("D", torch.zeros(c.nheads))
        self.register_buffer("norm_weight", torch.ones(c.d_inner))
        self.out_proj = linear(c.d_inner, c.d_model, c.proj_bias)
        for name in PER_TENSOR_SITES:
            self.register_buffer(f"{name}_scale", scalar_buffer())
        self.register_buffer("x_scale", torch.ones(x_group_shape(config, qconfig)))
        self.register_buffer("x_group", torch.zeros(c.d_inner, dtype=torch.int64))
        bc_groups = c.ngroups if qconfig.per_group_bc else 1
        self.register_buffer("B_scale", torch.ones(bc_groups))
        self.register_buffer("C_scale", torch.ones(bc_groups))
        self._scales: dict[str, float | Tensor] | None = None
        self.register_load_state_dict_post_hook(lambda module, keys: module.forget_scales())

    @classmethod
    def from_float(cls, mixer: Mamba2Mixer, amax: dict[str, Tensor], plan: ClusterPlan | None,
                   qconfig: QuantConfig, layer: int, hessians: dict[str, Tensor] | None = None
                   ) -> "QuantMamba2Mixer":
        """Quantize an fp mixer (already in the ``plan``'s channel order when sort-and-cluster is on) with calibrated
        amaxes: a 0-dim one per per-tensor site, and for ``ssm_input`` one per channel (conv_dim,). At w4a8,
        ``hessians`` (by linear name; out_proj's is of H y when Hadamard is on) select GPTQ over round-to-nearest."""
        missing = [name for name in MAMBA2_SITE_NAMES if name not in amax]
        if missing:
            raise ConfigError(f"layer {layer}: no calibrated amax for {', '.join(missing)}")
        c = mixer.config
        q = cls(c, qconfig, layer)

        def linear(name: str, weight: Tensor, bias: Tensor | None) -> QuantLinear | Int4Linear:
            if qconfig.bits != "w4a8":
                return QuantLinear.from_weight(weight, bias)
            hessian = None if hessians is None else hessians[name]
            return Int4Linear.from_weight(weight, bias, qconfig.group_size, hessian, qconfig.gptq_damp,
                                          qconfig.gptq_act_order)

        q.in_proj = linear("in_proj", mixer.in_proj.weight, mixer.in_proj.bias)
        q.conv_weight, q.conv_weight_scale = quantize_weight_per_tensor(mixer.conv1d.weight.detach()[:, 0, :])
        if mixer.conv1d.bias is not None:
            q.conv_bias = mixer.conv1d.bias.detach().float().clone()
        q.dt_bias = mixer.dt_bias.detach().float().clone()
        q.A = -torch.exp(mixer.A_log.detach().float())
        q.D = mixer.D.detach().float().clone()
        q.norm_weight = mixer.norm.weight.detach().float().clone()
        out_weight = mixer.out_proj.weight.detach().double()  # rotated in float64: one rounding, the int8 one
        out_weight = rotate_linear_input(out_weight) if qconfig.hadamard else out_weight
        q.out_proj = linear("out_proj", out_weight, mixer.out_proj.bias)
        for name in PER_TENSOR_SITES:
            setattr(q, f"{name}_scale", scale_from_amax(amax[name]))
        channel = amax["ssm_input"].float()  # (conv_dim,)
        x_amax, B_amax, C_amax = channel.split([c.d_inner, c.ngroups * c.d_state, c.ngroups * c.d_state])
        if plan is not None:
            if plan.shape != tuple(q.x_scale.shape):
                raise ConfigError(f"layer {layer}: cluster plan {plan.shape} does not match {tuple(q.x_scale.shape)}")
            q.x_group = plan.group.clone()
        group_amax = torch.zeros(q.x_scale.numel()).scatter_reduce(0, q.x_group, x_amax, "amax")
        q.x_scale = scale_from_amax(group_amax).view(q.x_scale.shape)
        for name, bc_amax in (("B_scale", B_amax), ("C_scale", C_amax)):
            groups = getattr(q, name).numel()
            setattr(q, name, scale_from_amax(bc_amax.view(groups, -1).amax(1)))
        return q

    def scales(self) -> dict[str, float | Tensor]:
        """Per-tensor scales as Python floats (sites by name, weights as ``<linear>.weight`` and ``conv.weight``),
        and per-channel float32 vectors: ``x`` (d_in,), ``B`` and ``C`` (g n,), ``ssm_input`` (conv_dim,) = x | B | C.
        Read from the buffers once and cached."""
        if self._scales is None:
            c = self.config
            scales: dict[str, float | Tensor] = {name: float(getattr(self, f"{name}_scale"))
                                                 for name in PER_TENSOR_SITES}
            scales.update({f"{name}.weight": float(getattr(self, name).weight_scale)
                           for name in ("in_proj", "out_proj") if isinstance(getattr(self, name), QuantLinear)})
            scales["conv.weight"] = float(self.conv_weight_scale)
            scales["x"] = self.x_scale.flatten()[self.x_group].contiguous()
            for name in ("B", "C"):
                per_group = getattr(self, f"{name}_scale")
                scales[name] = per_group.repeat_interleave(c.ngroups * c.d_state // per_group.numel())
            scales["ssm_input"] = torch.cat([scales["x"], scales["B"], scales["C"]])
            self._scales = scales
        return self._scales

    def forget_scales(self) -> None:
        self._scales = None

    def _apply(self, fn, *args, **kwargs):
        """Moving or casting the buffers (``.to``, ``.cuda``) drops the cached scales: the per-channel ones are
        tensors on the buffers' device, so a cache filled on the CPU must not follow the model to the GPU."""
        self.forget_scales()
        return super()._apply(fn, *args, **kwargs)

    def empty_state(self, batch: int) -> LayerState:
        """conv_state: (b, conv_dim, k) int8 at xBC_scale; ssm_state: (b, h, p, n) float32."""
        c = self.config
        return LayerState(
            conv_state=torch.zeros(batch, c.conv_dim, c.d_conv, dtype=torch.int8, device=self.A.device),
            ssm_state=torch.zeros(batch, c.nheads, c.headdim, c.d_state, dtype=torch.float32, device=self.A.device),
        )

    def _flow(self, resid: Tensor, state: LayerState, norm: Norm, step: bool, add_residual: bool = False
              ) -> tuple[Tensor, LayerState]:
        c = self.config
        ops = Mamba2QuantOps(self, norm, step, resid if add_residual else None)
        return mamba2_mixer_flow(ops, resid, state, c.d_inner, c.ngroups * c.d_state, c.nheads, self.hadamard)

    def adds_residual(self, resid: Tensor) -> bool:
        """Whether :meth:`step` can add the residual in out_proj's epilogue: a float32 stream (int8 or W4A8
        out_proj)."""
        return resid.dtype == torch.float32

    def forward(self, resid: Tensor, state: LayerState, norm: Norm) -> tuple[Tensor, LayerState]:
        """Prefill: resid (b, l, d) float -> the mixer's output (b, l, d) float32, continuing from ``state``."""
        return self._flow(resid, state, norm, step=False)

    def step(self, resid: Tensor, state: LayerState, norm: Norm, add_residual: bool = False
             ) -> tuple[Tensor, LayerState]:
        """Decode one token: resid (b, d) -> (b, d), through the one-token ops; with ``add_residual`` (see
        :meth:`adds_residual`) the block's output resid + out, added in out_proj."""
        return self._flow(resid, state, norm, step=True, add_residual=add_residual)


class QuantMamba2Block(QuantBlock):
    """Mamba2's quantized block (:class:`QuantMamba2Mixer`); forward is :class:`QuantBlock`'s."""

    def __init__(self, config: Mamba2Config, qconfig: QuantConfig, layer: int):
        super().__init__()
        self.norm = Norm(config.d_model, config.norm, config.norm_eps, torch.float32)
        self.mixer = QuantMamba2Mixer(config, qconfig, layer)


class W4A16Mamba2Mixer(Mamba2Mixer):
    """W4A16: the fp :class:`Mamba2Mixer` in float16 (forward and step unchanged) whose in_proj and out_proj are
    :class:`Int4Linear`; state-dict keys as the fp mixer's except ``<linear>.weight`` -> ``weight_packed``,
    ``weight_scale``."""

    def __init__(self, config: Mamba2Config, group_size: int):
        super().__init__(config, W4A16_DTYPE)
        for name in FOUR_BIT_LINEARS_MAMBA2:
            fp_linear = getattr(self, name)
            setattr(self, name, Int4Linear(fp_linear.in_features, fp_linear.out_features, fp_linear.bias is not None,
                                           group_size))

    def empty_state(self, batch: int) -> LayerState:
        """conv_state (b, conv_dim, k) float16, ssm_state (b, h, p, n) float32 (as the fp16 reference)."""
        c, weight = self.config, self.conv1d.weight
        return LayerState(
            conv_state=torch.zeros(batch, c.conv_dim, c.d_conv, dtype=weight.dtype, device=weight.device),
            ssm_state=torch.zeros(batch, c.nheads, c.headdim, c.d_state, device=weight.device))


def quantize_mamba2_model(fp_model: Mamba2LM, amaxes: list[dict[str, Tensor]], plans: list[ClusterPlan | None],
                          qconfig: QuantConfig, hessians: list[dict[str, Tensor]] | None = None) -> Mamba2LM:
    """The quantized reference from an fp model (its mixers already in the plans' channel order), per-layer amaxes
    and, for the 4-bit configs, per-layer Hessians of the int4 linears' inputs (None: round-to-nearest)."""
    n_layer = fp_model.config.n_layer
    if len(amaxes) != n_layer or len(plans) != n_layer:
        raise ConfigError(f"calibration gave {len(amaxes)} layers of amaxes and {len(plans)} plans, the model has "
                          f"{n_layer} layers")
    model = empty_quantized_mamba2_model(fp_model.config, qconfig)
    if qconfig.bits == "w4a16":
        model.load_state_dict({k: v.to(W4A16_DTYPE) for k, v in fp_model.state_dict().items()}, strict=False)
        for i, (block, fp_block) in enumerate(zip(model.backbone.layers, fp_model.backbone.layers, strict=True)):
            for name in FOUR_BIT_LINEARS_MAMBA2:
                fp_linear = getattr(fp_block.mixer, name)
                hessian = None if hessians is None else hessians[i][name]
                setattr(block.mixer, name, Int4Linear.from_weight(fp_linear.weight.float(), fp_linear.bias,
                                                                 qconfig.group_size, hessian, qconfig.gptq_damp,
                                                                 qconfig.gptq_act_order))
        return model.eval()
    fp_state = {k: v.to(FLOAT_STORAGE_DTYPE).float() for k, v in fp_model.state_dict().items() if ".mixer." not in k}
    model.load_state_dict(fp_state, strict=False)
    for i, (block, fp_block) in enumerate(zip(model.backbone.layers, fp_model.backbone.layers, strict=True)):
        block.mixer = QuantMamba2Mixer.from_float(copy.deepcopy(fp_block.mixer).float(), amaxes[i], plans[i], qconfig,
                                                  layer=i, hessians=None if hessians is None else hessians[i])
    return model.eval()


def empty_quantized_mamba2_model(config: Mamba2Config, qconfig: QuantConfig) -> Mamba2LM:
    """The module tree of a quantized Mamba2 model with placeholder values, ready for load_state_dict."""
    if qconfig.bits == "w4a16":
        model = Mamba2LM(config, dtype=W4A16_DTYPE)
        for block in model.backbone.layers:
            block.mixer = W4A16Mamba2Mixer(config, qconfig.group_size)
        return model.eval()
    model = Mamba2LM(config, dtype=torch.float32)
    model.backbone.layers = nn.ModuleList(QuantMamba2Block(config, qconfig, layer=i) for i in range(config.n_layer))
    return model.eval()
