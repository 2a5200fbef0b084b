"""The quantized reference model (Quamba W8A8): integer arithmetic emulated exactly, prefill and step.

It is the fp :class:`MambaLM` with every block swapped for a :class:`QuantResidualBlock` (gpt-fast's "swap modules at
load"); embeddings, norm weights, the residual stream and lm_head stay floating point (stored fp16, computed in
float32).

What is quantized, at which scale and in which order is written once: the sites in :mod:`edge_quamba.quant.sites`,
the data flow in :func:`edge_quamba.quant.flow.mamba1_mixer_flow` (Quamba, arXiv 2410.13229, and the official
code's data flow). This module holds the mixers' weights and scales the flow reads, and :class:`QuantOps`, the
flow's int8 ops; the recipe's knobs are :class:`edge_quamba.quant.config.QuantConfig`, the linears' weights
:mod:`edge_quamba.quant.linears`. The out_proj weight is rotated offline (W Hᵀ) so that out_proj(H y) = W y;
dt_proj's bias is kept apart and added inside the scan in float32 (so that the GEMM output stays a pure
int32 * scale).
A_log, D and dt_bias stay float32 (d_in * (n + 2) numbers, about 0.1% of the weights): A is stored as the float32
value -exp(A_log) so that every backend uses the identical A rather than recomputing exp. All weights are per-tensor
int8 (``quantize_weight_per_tensor``) unless ``weight_scales="channel"`` (the linears per output channel); all
activation scales are static per-tensor, except, with ``QuantConfig(out_proj_scale="dynamic")``, out_proj's input,
whose scale is computed per token from the Hadamard-rotated values at run time (op ``hadamard_quantize_dynamic``; no
``out_proj_input_scale`` buffer then). Per-channel weights and the per-token scale are W8A8 options.

Bit widths (``QuantConfig.bits``, Quamba2 arXiv 2503.22879's three configs):
    w8a8    the above.
    w4a8    the same flow and int8 activations; in_proj, x_proj, dt_proj and out_proj hold group-wise int4 weights
            (:class:`Int4Linear`, rounded with GPTQ from calibration Hessians, or round-to-nearest), computed by
            ``w4a8_linear(_quantize)`` (per-group int32 partial sums, float32 combine, the same requantizing
            epilogue). The depthwise conv weight stays int8 (k * d_in numbers).
    w4a16   no activation quantization: the fp model in float16 (norm, conv, scan and residual as the fp16
            reference computes them) whose four linears are :class:`Int4Linear` computed by ``w4a16_linear``.
            Hadamard is off (it exists for the int8 out_proj input).
"""

from __future__ import annotations

import copy
import os

import torch
from torch import Tensor, nn

from edge_quamba.errors import ConfigError, InputError
from edge_quamba.models.config import MambaConfig
from edge_quamba.models.mamba import LayerState, MambaLM, MambaMixer, Norm
from edge_quamba.ops import torch_ops  # noqa: F401  (registers torch.ops.edge_quamba.*)
from edge_quamba.quant.config import FOUR_BIT_LINEARS, QuantConfig, check_method
from edge_quamba.quant.flow import Tap, dt_proj_scan_composed, in_proj_conv_composed, mamba1_mixer_flow
from edge_quamba.quant.hadamard import rotate_linear_input
from edge_quamba.quant.linears import Int4Linear, QuantLinear, scalar_buffer
from edge_quamba.quant.primitives import code_label, dequantize, quantize_weight_per_tensor, scale_from_amax
from edge_quamba.quant.sites import SITE_BY_NAME, static_site_names, tensor_name

eq = torch.ops.edge_quamba


FUSED_DECODE_ENV = "EDGE_QUAMBA_FUSED_DECODE"


def fused_decode() -> bool:
    """Whether decode runs the fused ops (in_proj + the conv step, dt_proj + the scan step, out_proj + the residual
    add; each bit-exact with the ops it replaces): yes unless EDGE_QUAMBA_FUSED_DECODE=0, which keeps the separate
    ops, so that a benchmark can time both in one run. Any other value is an error."""
    value = os.environ.get(FUSED_DECODE_ENV, "1")
    if value not in ("0", "1"):
        raise InputError(f"{FUSED_DECODE_ENV} must be 0 or 1, not {value!r}")
    return value == "1"


class QuantOps:
    """The flow's ops on int8 tensors: ``torch.ops.edge_quamba.*`` with this mixer's weights and scales.

    Every int8 tensor the flow makes is labelled (``layers.<i>.mixer.<code>``, :func:`code_label`) so that
    validation can match it with the graph's; ``tap`` (SQNR) sees each site's dequantized codes. ``step`` selects
    the one-token ``*_update`` ops (inputs without the l axis); at decode the fused ops run unless
    :func:`fused_decode` says otherwise (``fused``).
    """

    site_by_name = SITE_BY_NAME
    """The sites of this mixer kind (their codes name the labels)."""

    def __init__(self, mixer: "QuantMambaMixer", norm: Norm, step: bool, residual: Tensor | None = None):
        self.m, self.norm, self.step = mixer, norm, step
        self.fused = step and fused_decode()
        self.residual = residual
        """The block's residual stream (float32), added in out_proj's epilogue when given (op int8_linear_residual:
        the flow then returns the block's output; :meth:`QuantBlock.forward` at decode)."""
        self.scales = mixer.scales()

    def _made(self, site: str, q: Tensor, scale: Tensor | None = None) -> Tensor:
        """q, after showing the tap its dequantized values (``scale``: a per-token scale (...) instead of the
        site's static one)."""
        if self.m.tap is not None:
            self.m.tap(site, dequantize(q, self.scales[site] if scale is None else scale[..., None]))
        return q

    def _code_name(self, site: str) -> str:
        return tensor_name(self.m.layer, self.site_by_name[site].code)

    def _label(self, site: str):
        return code_label(self._code_name(site))

    def norm_quantize(self, resid: Tensor, site: str) -> Tensor:
        """The block's pre-norm and the quantize after it: one op for RMSNorm (Mamba's default); a LayerNorm
        (mamba_ssm's rms_norm=False) is computed by the Norm module, then quantized."""
        norm = self.norm
        if norm.kind != "rmsnorm":
            return self.quantize(norm(resid), site)
        with self._label(site):
            return self._made(site, eq.rms_norm_quantize(resid, norm.weight, norm.eps, self.scales[site]))

    def quantize(self, x: Tensor, site: str) -> Tensor:
        with self._label(site):
            return self._made(site, eq.quantize(x, self.scales[site]))

    def split(self, x: Tensor, sizes: list[int]) -> list[Tensor]:
        return list(x.split(sizes, dim=-1))  # views: the kernels take strided inputs

    def linear(self, name: str, x_q: Tensor, in_site: str, bias: bool = True, out_site: str | None = None) -> Tensor:
        """int8 linear; with ``out_site`` its output is requantized in the same op (a GEMM epilogue). A per-channel
        weight scale is a (N,) tensor, read from the buffer (on the model's device) by the per-channel ops."""
        linear: QuantLinear | Int4Linear = getattr(self.m, name)
        b = linear.bias if bias else None
        if isinstance(linear, Int4Linear):  # W4A8
            args = (x_q, linear.weight_packed, linear.weight_scale, b, self.scales[in_site], linear.group_size)
            single, fused = eq.w4a8_linear, eq.w4a8_linear_quantize
        elif linear.per_channel:
            args = (x_q, linear.weight, b, self.scales[in_site], linear.weight_scale)
            single, fused = eq.int8_linear_per_channel, eq.int8_linear_per_channel_quantize
        else:
            args = (x_q, linear.weight, b, self.scales[in_site], self.scales[f"{name}.weight"])
            single, fused = eq.int8_linear, eq.int8_linear_quantize
        if name == "out_proj" and self.residual is not None:  # the block's add in the epilogue (adds_residual)
            if isinstance(linear, QuantLinear) and linear.per_channel:
                raise ConfigError(f"layer {self.m.layer}: the residual add runs in a per-tensor int8 or W4A8 out_proj "
                                  f"only")
            residual_op = eq.w4a8_linear_residual if isinstance(linear, Int4Linear) else eq.int8_linear_residual
            return residual_op(*args, self.residual)
        if out_site is None:
            return single(*args)
        with self._label(out_site):
            return self._made(out_site, fused(*args, self.scales[out_site]))

    def in_proj_conv(self, x_q: Tensor, conv_state: Tensor, d_inner: int) -> tuple[Tensor, Tensor, Tensor]:
        """in_proj (xz at its site) and the conv over its x half. Decode with per-tensor int8 or W4A8 weights: one
        op, whose GEMV epilogue runs the conv step; otherwise :func:`edge_quamba.quant.flow.in_proj_conv_composed`."""
        m, s = self.m, self.scales
        if not self.fused or (isinstance(m.in_proj, QuantLinear) and m.in_proj.per_channel):
            return in_proj_conv_composed(self, x_q, conv_state, d_inner)
        with code_label((self._code_name("xz"), self._code_name("u"))):
            xz_q, u_q, conv_state = self.linear_conv_update("in_proj", x_q, "in_proj_input", [s["xz"]], [2 * d_inner],
                                                            0, conv_state, s["u"], None)
        return self._made("xz", xz_q)[..., d_inner:], self._made("u", u_q), conv_state

    def linear_conv_update(self, name: str, x_q: Tensor, in_site: str, out_scales: list[float], sizes: list[int],
                           conv_begin: int, conv_state: Tensor, conv_out_scale: float, conv_out_scales: Tensor | None
                           ) -> tuple[Tensor, Tensor, Tensor]:
        """The one-op decode form of a linear (int8 per tensor or W4A8) whose codes feed the mixer's conv step:
        ``*_linear_quantize_conv_update`` with this mixer's conv weights -> (codes, conv codes, conv state)."""
        m, s = self.m, self.scales
        linear: QuantLinear | Int4Linear = getattr(m, name)
        conv = (conv_begin, conv_state, m.conv_weight, m.conv_bias, s["conv.weight"], conv_out_scale, conv_out_scales)
        if isinstance(linear, Int4Linear):
            return eq.w4a8_linear_quantize_conv_update(x_q, linear.weight_packed, linear.weight_scale, linear.bias,
                                                       s[in_site], linear.group_size, out_scales, sizes, *conv)
        return eq.int8_linear_quantize_conv_update(x_q, linear.weight, linear.bias, s[in_site], s[f"{name}.weight"],
                                                   out_scales, sizes, *conv)

    def causal_conv1d(self, x_q: Tensor, conv_state: Tensor) -> tuple[Tensor, Tensor]:
        m, s = self.m, self.scales
        op = eq.int8_causal_conv1d_update if self.step else eq.int8_causal_conv1d
        with self._label("u"):
            u_q, conv_state = op(x_q, conv_state, m.conv_weight, m.conv_bias, s["xz"], s["conv.weight"], s["u"])
        return self._made("u", u_q), conv_state

    def selective_scan(self, u_q, dt_q, B_q, C_q, z_q, ssm_state) -> tuple[Tensor, Tensor]:
        m, s = self.m, self.scales
        op = eq.int8_selective_scan_update if self.step else eq.int8_selective_scan
        return op(u_q, dt_q, B_q, C_q, z_q, ssm_state, m.A, m.D, m.dt_bias,
                  s["u"], s["dt"], s["dbc"], s["dbc"], s["xz"])

    def dt_proj_scan(self, u_q: Tensor, dt_r_q: Tensor, B_q: Tensor, C_q: Tensor, z_q: Tensor, ssm_state: Tensor
                     ) -> tuple[Tensor, Tensor]:
        """dt_proj and the scan. Decode with per-tensor int8 weights: one op, the scan kernel computes dt_proj
        (and returns its codes, labelled and tapped as the dt site); otherwise
        :func:`edge_quamba.quant.flow.dt_proj_scan_composed`."""
        m, s = self.m, self.scales
        linear = m.dt_proj
        if not self.fused or not isinstance(linear, QuantLinear) or linear.per_channel:
            return dt_proj_scan_composed(self, u_q, dt_r_q, B_q, C_q, z_q, ssm_state)
        with self._label("dt"):
            y, ssm_state, dt_q = eq.int8_selective_scan_dt_update(
                u_q, dt_r_q, B_q, C_q, z_q, ssm_state, m.A, m.D, m.dt_bias, linear.weight, s["u"], s["dbc"],
                s["dt_proj.weight"], s["dt"], s["dbc"], s["dbc"], s["xz"])
        self._made("dt", dt_q)
        return y, ssm_state

    def hadamard_quantize(self, y: Tensor) -> Tensor:
        with self._label("out_proj_input"):
            return self._made("out_proj_input", eq.hadamard_quantize(y, self.scales["out_proj_input"]))

    def hadamard_quantize_dynamic(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """y (..., d_in) float -> codes of the out_proj_input site at a per-token scale, and that scale (...)."""
        with self._label("out_proj_input"):
            y_q, y_scale = eq.hadamard_quantize_dynamic(y)
        return self._made("out_proj_input", y_q, y_scale), y_scale

    def linear_per_token(self, name: str, x_q: Tensor, x_scale: Tensor) -> Tensor:
        """int8 linear, float out, on codes with a per-token scale x_scale (...)."""
        linear: QuantLinear = getattr(self.m, name)
        return eq.int8_linear_per_token(x_q, linear.weight, linear.bias, x_scale, self.scales[f"{name}.weight"])


class QuantMambaMixer(nn.Module):
    """The quantized twin of :class:`MambaMixer`: same interface (forward / step / empty_state), int8 inside.

    Both forward and step run :func:`edge_quamba.quant.flow.mamba1_mixer_flow` with :class:`QuantOps`.
    ``layer`` is the mixer's index in the model (it names its int8 tensors); ``tap`` is None except while a
    measurement (SQNR) watches the sites. ``out_proj_scale`` ("static" | "dynamic", :class:`QuantConfig`) selects
    how out_proj's input is quantized; the mixer holds a ``<site>_scale`` buffer for every static site only.
    """

    def __init__(self, config: MambaConfig, hadamard: bool, layer: int, per_channel: bool = False,
                 out_proj_scale: str = "static", group_size: int | None = None):
        """group_size: None for int8 linears (W8A8, per tensor or, with ``per_channel``, per output channel), else
        the int4 group size (W4A8)."""
        super().__init__()
        d, d_in, n, r, k = config.d_model, config.d_inner, config.d_state, config.dt_rank, config.d_conv
        self.config, self.hadamard, self.layer = config, hadamard, layer
        self.out_proj_scale = out_proj_scale
        self.static_sites = static_site_names(out_proj_scale)
        self.tap: Tap | None = None

        def linear(k_in: int, n_out: int, bias: bool):
            return QuantLinear(k_in, n_out, bias, per_channel) if group_size is None \
                else Int4Linear(k_in, n_out, bias, group_size)

        self.in_proj = linear(d, 2 * d_in, config.proj_bias)
        self.register_buffer("conv_weight", torch.zeros(d_in, k, dtype=torch.int8))
        self.register_buffer("conv_weight_scale", scalar_buffer())
        self.register_buffer("conv_bias", torch.zeros(d_in) if config.conv_bias else None)
        self.x_proj = linear(d_in, r + 2 * n, bias=False)
        self.dt_proj = linear(r, d_in, bias=False)  # its bias lives in dt_bias, added inside the scan
        self.register_buffer("dt_bias", torch.zeros(d_in))
        self.register_buffer("A", torch.zeros(d_in, n))
        self.register_buffer("D", torch.zeros(d_in))
        self.out_proj = linear(d_in, d, config.proj_bias)
        for name in self.static_sites:
            self.register_buffer(f"{name}_scale", scalar_buffer())
        self._scales: dict[str, float] | None = None
        self.register_load_state_dict_post_hook(lambda module, keys: module.forget_scales())

    @classmethod
    def from_float(cls, mixer: MambaMixer, amax: dict[str, Tensor], hadamard: bool, layer: int,
                   qconfig: QuantConfig | None = None,
                   hessians: dict[str, Tensor] | None = None) -> "QuantMambaMixer":
        """Quantize an fp mixer's weights and set its activation scales from calibrated amaxes (keys: every static
        site; others are ignored). ``qconfig`` (default: QuantConfig()) picks the weights: per tensor or per output
        channel at W8A8, or (``bits`` w4a8) :class:`Int4Linear`, with GPTQ when ``hessians`` (by linear name, the
        Hessian of its input as the quantized mixer feeds it: out_proj's is of H y when ``hadamard``) are given."""
        qconfig = QuantConfig() if qconfig is None else qconfig
        four_bit = qconfig.bits == "w4a8"
        per_channel = qconfig.weight_scales == "channel"
        q = cls(mixer.config, hadamard, layer, per_channel, qconfig.out_proj_scale,
                qconfig.group_size if four_bit else None)
        missing = [name for name in q.static_sites if name not in amax]
        if missing:
            raise ConfigError(f"layer {layer}: no calibrated amax for {', '.join(missing)}")

        def linear(name: str, weight: Tensor, bias: Tensor | None):
            if not four_bit:
                return QuantLinear.from_weight(weight, bias, per_channel)
            hessian = None if hessians is None else hessians[name]
            return Int4Linear.from_weight(weight, bias, qconfig.group_size, hessian, qconfig.gptq_damp,
                                          qconfig.gptq_act_order)

        q.in_proj = linear("in_proj", mixer.in_proj.weight, mixer.in_proj.bias)
        q.conv_weight, q.conv_weight_scale = quantize_weight_per_tensor(mixer.conv1d.weight.detach()[:, 0, :])
        if mixer.conv1d.bias is not None:
            q.conv_bias = mixer.conv1d.bias.detach().float().clone()
        q.x_proj = linear("x_proj", mixer.x_proj.weight, None)
        q.dt_proj = linear("dt_proj", mixer.dt_proj.weight, None)
        q.dt_bias = mixer.dt_proj.bias.detach().float().clone()
        q.A = -torch.exp(mixer.A_log.detach().float())
        q.D = mixer.D.detach().float().clone()
        # Rotate in float64 so that the only rounding is the int8 quantization of the rotated weight.
        out_weight = mixer.out_proj.weight.detach().double()
        out_weight = rotate_linear_input(out_weight) if hadamard else out_weight
        q.out_proj = linear("out_proj", out_weight, mixer.out_proj.bias)
        for name in q.static_sites:
            setattr(q, f"{name}_scale", scale_from_amax(amax[name]))
        return q

    def scales(self) -> dict[str, float]:
        """Every static scale as a Python float (sites by name; per-tensor weights as ``<linear>.weight``, and
        ``conv.weight``; a per-channel weight scale stays a tensor, read by QuantOps from its buffer), read
        from the buffers once and cached: the ops take floats, and reading a GPU tensor on every call would
        synchronize the device (and break CUDA-graph capture)."""
        if self._scales is None:
            scales = {name: float(getattr(self, f"{name}_scale")) for name in self.static_sites}
            scales.update({f"{name}.weight": float(getattr(self, name).weight_scale)
                           for name in ("in_proj", "x_proj", "dt_proj", "out_proj")
                           if isinstance(getattr(self, name), QuantLinear)  # int4 scales are tensors
                           and not getattr(self, name).per_channel})  # so are per-channel ones
            scales["conv.weight"] = float(self.conv_weight_scale)
            self._scales = scales
        return self._scales

    def forget_scales(self) -> None:
        """Drop the cached float scales (after the buffers change)."""
        self._scales = None

    def empty_state(self, batch: int) -> LayerState:
        """conv_state: (b, d_in, k) int8 at xz_scale; ssm_state: (b, d_in, n) float32."""
        c = self.config
        return LayerState(
            conv_state=torch.zeros(batch, c.d_inner, c.d_conv, dtype=torch.int8, device=self.A.device),
            ssm_state=torch.zeros(batch, c.d_inner, c.d_state, dtype=torch.float32, device=self.A.device),
        )

    def _flow(self, resid: Tensor, state: LayerState, norm: Norm, step: bool, add_residual: bool = False
              ) -> tuple[Tensor, LayerState]:
        c = self.config
        ops = QuantOps(self, norm, step, resid if add_residual else None)
        return mamba1_mixer_flow(ops, resid, state, c.d_inner, c.dt_rank, c.d_state, self.hadamard,
                                 self.out_proj_scale)

    def adds_residual(self, resid: Tensor) -> bool:
        """Whether :meth:`step` can add the residual in out_proj's epilogue: a float32 stream, a per-tensor int8 or
        W4A8 out_proj at a static input scale."""
        out_proj = self.out_proj
        return (resid.dtype == torch.float32 and self.out_proj_scale == "static"
                and not (isinstance(out_proj, QuantLinear) and out_proj.per_channel))

    def forward(self, resid: Tensor, state: LayerState, norm: Norm) -> tuple[Tensor, LayerState]:
        """Prefill: the residual stream (b, l, d) float and the block's pre-norm -> the mixer's output (b, l, d)
        float32, continuing from ``state``."""
        return self._flow(resid, state, norm, step=False)

    def step(self, resid: Tensor, state: LayerState, norm: Norm, add_residual: bool = False
             ) -> tuple[Tensor, LayerState]:
        """Decode one token: resid (b, d) -> (b, d), through the one-token ops (conv state roll, one scan step);
        with ``add_residual`` (see :meth:`adds_residual`) the block's output resid + out, added in out_proj."""
        return self._flow(resid, state, norm, step=True, add_residual=add_residual)


class QuantBlock(nn.Module):
    """A quantized model's block, Mamba1 or Mamba2: resid + mixer(resid), the pre-norm inside the mixer's flow (so
    that it can be fused with the quantize after it). Subclasses make ``norm`` and ``mixer``; state-dict keys as
    :class:`ResidualBlock`'s (``norm.*``, ``mixer.*``)."""

    def forward(self, resid: Tensor, state: LayerState, step: bool = False) -> tuple[Tensor, LayerState]:
        """resid: (b, l, d) (or (b, d) with step=True) -> same shape, new state. The sum is float32, stored in
        resid's dtype (float32, or float16 with :func:`use_float_parts`: one rounding of the float32 sum)."""
        if step and fused_decode() and self.mixer.adds_residual(resid):  # decode: the add in out_proj's epilogue
            return self.mixer.step(resid, state, self.norm, add_residual=True)
        out, state = (self.mixer.step if step else self.mixer)(resid, state, self.norm)
        return (resid.float() + out).to(resid.dtype), state


class QuantResidualBlock(QuantBlock):
    """Mamba1's quantized block (:class:`QuantMambaMixer`)."""

    def __init__(self, config: MambaConfig, hadamard: bool, layer: int, per_channel: bool = False,
                 out_proj_scale: str = "static", group_size: int | None = None):
        super().__init__()
        self.norm = Norm(config.d_model, config.norm, config.norm_eps, torch.float32)
        self.mixer = QuantMambaMixer(config, hadamard, layer, per_channel, out_proj_scale, group_size)


# Floating-point weights outside the mixers (embeddings, norms, lm_head) are stored in fp16.
FLOAT_STORAGE_DTYPE = torch.float16

FLOAT_PARTS = {"float32": torch.float32, "float16": torch.float16}
"""The residual stream's storage dtype between blocks of a W8A8 model (``export --float-parts``)."""


def use_float_parts(model: MambaLM, float_parts: str) -> MambaLM:
    """Set the residual stream's storage dtype of a quantized Mamba1 or Mamba2 reference (in place; returns it).

    "float32" (the default): the stream, the norms and out_proj's output are float32. "float16": the stream is
    stored in float16 between blocks (embedding rows as stored; each block's sum ``resid + out_proj(...)`` computed
    in float32, then rounded to float16 once), while every norm still computes in float32 from it and out_proj still
    writes float32: the TensorRT graph's float16 float parts (:func:`edge_quamba.onnx.lower.lower_model`), which
    halve the stream's memory traffic. The int8 codes then differ from the float32 model's wherever that rounding
    moves a value across a rounding boundary (benchmarks/float_parts.py measures how often, and the perplexity)."""
    if float_parts not in FLOAT_PARTS:
        raise ConfigError(f"--float-parts {float_parts!r} is not one of {', '.join(FLOAT_PARTS)}")
    if float_parts != "float32" and not all(isinstance(block, QuantBlock) for block in model.backbone.layers):
        raise ConfigError(f"--float-parts {float_parts} applies to quantized Mamba1 and Mamba2 models (the TensorRT "
                          f"graph) only")
    model.residual_storage = None if float_parts == "float32" else FLOAT_PARTS[float_parts]
    return model


W4A16_DTYPE = torch.float16
"""The W4A16 model's activation and float weight dtype (the fp16 reference's)."""


def quantize_model(fp_model: MambaLM, amaxes: list[dict[str, Tensor]], qconfig: QuantConfig,
                   hessians: list[dict[str, Tensor]] | None = None) -> MambaLM:
    """The quantized reference from an fp model and per-layer calibrated amaxes (one dict per layer).

    hessians: per layer, by linear name (:data:`FOUR_BIT_LINEARS`), the (K, K) Hessian of its calibration inputs;
    used by GPTQ at 4 bits (None: round-to-nearest int4 weights). Ignored at w8a8."""
    check_method(fp_model.config, qconfig)
    if len(amaxes) != fp_model.config.n_layer:
        raise ConfigError(f"calibration gave amaxes for {len(amaxes)} layers, the model has {fp_model.config.n_layer}")
    if qconfig.bits == "w4a16":
        return _w4a16_model(fp_model, qconfig, hessians)
    model = empty_quantized_model(fp_model.config, qconfig)
    fp_state = {k: v.to(FLOAT_STORAGE_DTYPE).float() for k, v in fp_model.state_dict().items() if ".mixer." not in k}
    model.load_state_dict(fp_state, strict=False)
    for i, (block, fp_block, layer_amax) in enumerate(zip(model.backbone.layers, fp_model.backbone.layers, amaxes,
                                                          strict=True)):
        block.mixer = QuantMambaMixer.from_float(copy.deepcopy(fp_block.mixer).float(), layer_amax, qconfig.hadamard,
                                                 layer=i, qconfig=qconfig,
                                                 hessians=None if hessians is None else hessians[i])
    return model.eval()


class W4A16Mixer(MambaMixer):
    """The fp mixer in float16 (:class:`MambaMixer`, forward and step unchanged) whose four linears are
    :class:`Int4Linear` (W4A16); same state-dict keys as the fp mixer except ``<linear>.weight`` ->
    ``<linear>.weight_packed`` and ``<linear>.weight_scale``. Its prefill scan is the op ``selective_scan`` (the
    reference function on the CPU, identical numbers)."""

    scan = staticmethod(eq.selective_scan)  # the reference scan as an op: a kernel on the GPU (cuda backend)

    def __init__(self, config: MambaConfig, group_size: int):
        super().__init__(config, W4A16_DTYPE)
        for name in FOUR_BIT_LINEARS:
            fp_linear = getattr(self, name)
            setattr(self, name, Int4Linear(fp_linear.in_features, fp_linear.out_features, fp_linear.bias is not None,
                                           group_size))

    def empty_state(self, batch: int) -> LayerState:
        """conv_state (b, d_in, k) float16, ssm_state (b, d_in, n) float32 (as the fp16 reference)."""
        c, weight = self.config, self.conv1d.weight
        return LayerState(conv_state=torch.zeros(batch, c.d_inner, c.d_conv, dtype=weight.dtype, device=weight.device),
                          ssm_state=torch.zeros(batch, c.d_inner, c.d_state, device=weight.device))


def _w4a16_model(fp_model: MambaLM, qconfig: QuantConfig, hessians: list[dict[str, Tensor]] | None) -> MambaLM:
    """The fp model in float16 with its four mixer linears replaced by int4 ones (quantized from the float32
    weights, GPTQ when ``hessians`` are given)."""
    model = empty_quantized_model(fp_model.config, qconfig)
    model.load_state_dict({k: v.to(W4A16_DTYPE) for k, v in fp_model.state_dict().items()}, strict=False)
    for i, (block, fp_block) in enumerate(zip(model.backbone.layers, fp_model.backbone.layers, strict=True)):
        for name in FOUR_BIT_LINEARS:
            fp_linear = getattr(fp_block.mixer, name)
            hessian = None if hessians is None else hessians[i][name]
            setattr(block.mixer, name, Int4Linear.from_weight(fp_linear.weight.float(), fp_linear.bias,
                                                             qconfig.group_size, hessian, qconfig.gptq_damp,
                                                             qconfig.gptq_act_order))
    return model.eval()


def empty_quantized_model(config: MambaConfig, qconfig: QuantConfig) -> MambaLM:
    """The module tree of a quantized model with placeholder values, ready for load_state_dict."""
    if qconfig.bits == "w4a16":
        model = MambaLM(config, dtype=W4A16_DTYPE)
        for block in model.backbone.layers:
            block.mixer = W4A16Mixer(config, qconfig.group_size)
        return model.eval()
    group_size = qconfig.group_size if qconfig.bits == "w4a8" else None
    model = MambaLM(config, dtype=torch.float32)
    model.backbone.layers = nn.ModuleList(
        QuantResidualBlock(config, qconfig.hadamard, layer=i, per_channel=qconfig.weight_scales == "channel",
                           out_proj_scale=qconfig.out_proj_scale, group_size=group_size)
        for i in range(config.n_layer))
    return model.eval()
