"""The quantized reference model (Quamba W8A8): integer arithmetic emulated exactly, prefill and step.

It is the fp :class:`MambaLM` with every block swapped for a :class:`QuantResidualBlock` (gpt-fast's "swap modules at
load"); embeddings, norm weights, the residual stream and lm_head stay floating point (stored fp16, computed in
float32).

What is quantized, at which scale and in which order is written once: the sites in :mod:`edge_quamba.quant.sites`,
the data flow in :func:`edge_quamba.quant.flow.mamba1_mixer_flow` (Quamba, arXiv 2410.13229, and the official
code's data flow). This module holds the weights and scales the flow reads, and :class:`QuantOps`, the flow's int8
ops. The out_proj weight is rotated offline (W Hᵀ) so that out_proj(H y) = W y; dt_proj's bias is kept apart and
added inside the scan in float32 (so that the GEMM output stays a pure int32 * scale).
A_log, D and dt_bias stay float32 (d_in * (n + 2) numbers, about 0.1% of the weights): A is stored as the float32
value -exp(A_log) so that every backend uses the identical A rather than recomputing exp. All weights are per-tensor
int8 (``quantize_weight_per_tensor``) unless ``weight_scales="channel"`` (the linears per output channel); all
activation scales are static per-tensor, except, with ``QuantConfig(out_proj_scale="dynamic")``, out_proj's input,
whose scale is computed per token from the Hadamard-rotated values at run time (op ``hadamard_quantize_dynamic``; no
``out_proj_input_scale`` buffer then).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from edge_quamba.errors import ConfigError
from edge_quamba.models.config import MambaConfig
from edge_quamba.models.mamba import LayerState, MambaLM, MambaMixer, Norm
from edge_quamba.ops import torch_ops  # noqa: F401  (registers torch.ops.edge_quamba.*)
from edge_quamba.quant.flow import Tap, mamba1_mixer_flow
from edge_quamba.quant.hadamard import rotate_linear_input
from edge_quamba.quant.observers import DEFAULT_MOMENTUM, DEFAULT_PERCENTILE
from edge_quamba.quant.primitives import (code_label, dequantize, quantize_weight_per_channel,
                                           quantize_weight_per_tensor, scale_from_amax)
from edge_quamba.quant.sites import (DEFAULT_PERCENTILE_SITES, OUT_PROJ_SCALES, SITE_BY_NAME, SITE_NAMES,
                                     static_site_names, tensor_name)

QUANT_FORMAT_VERSION = 1

WEIGHT_SCALES = ("tensor", "channel")
"""QuantConfig.weight_scales: one scale per weight tensor, or one per output channel (row) of each linear."""

eq = torch.ops.edge_quamba


@dataclass(frozen=True)
class QuantConfig:
    """Every knob of the recipe; serialized into quant_config.json.

    ``percentile`` clips the activations named in ``percentile_activations`` (default: the scan input u, as the paper
    does); ``percentile=None`` means abs-max scales everywhere. Clipping other inputs (e.g. in_proj_input) is an
    extension beyond the paper, measured in benchmarks/quality.py.

    ``calib_seed``: None takes the first ``calib_samples`` windows of the calibration text in file order; an int
    draws the windows' start offsets with that seed (:func:`edge_quamba.quant.calibrate.load_calibration_data`), to
    measure how much the result depends on the calibration draw.
    ``weight_scales``: "tensor" (one scale per weight, the paper's) or "channel" (one scale per output row of each
    linear, :func:`edge_quamba.quant.primitives.quantize_weight_per_channel`); the conv1d weight stays per tensor.
    ``out_proj_scale``: "static" quantizes out_proj's input at the calibrated per-tensor scale of the site
    out_proj_input (the paper); "dynamic" at a per-token scale computed inside Hadamard + quantize (needs
    ``hadamard``; the site then has no static scale to calibrate or clip). An artifact written before this key
    existed reads as "static".
    """

    method: str = "quamba-w8a8"
    percentile: float | None = DEFAULT_PERCENTILE
    percentile_momentum: float = DEFAULT_MOMENTUM
    percentile_activations: tuple[str, ...] = DEFAULT_PERCENTILE_SITES
    hadamard: bool = True
    out_proj_scale: str = "static"
    calib_samples: int = 256
    calib_seq_len: int = 512
    calib_seed: int | None = None
    weight_scales: str = "tensor"
    format_version: int = QUANT_FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.method != "quamba-w8a8":
            raise ConfigError(f"quantization method {self.method!r} is not supported (supported: quamba-w8a8)")
        if self.percentile is not None and not 0.0 < self.percentile <= 1.0:
            raise ConfigError(f"--percentile {self.percentile} must be a fraction in (0, 1], e.g. 0.99999")
        object.__setattr__(self, "percentile_activations", tuple(self.percentile_activations))  # JSON gives a list
        unknown = [a for a in self.percentile_activations if a not in SITE_NAMES]
        if unknown or not self.percentile_activations:
            raise ConfigError(f"percentile activations {list(self.percentile_activations)} must be a non-empty "
                              f"subset of {', '.join(SITE_NAMES)}")
        if self.out_proj_scale not in OUT_PROJ_SCALES:
            raise ConfigError(f"--out-proj-scale {self.out_proj_scale!r} is not one of {', '.join(OUT_PROJ_SCALES)}")
        if self.out_proj_scale == "dynamic" and not self.hadamard:
            raise ConfigError("--out-proj-scale dynamic needs the Hadamard rotation (the per-token scale is computed "
                              "inside Hadamard + quantize); drop --no-hadamard")
        if self.out_proj_scale == "dynamic" and "out_proj_input" in self.percentile_activations:
            raise ConfigError("--percentile-on out_proj_input: with --out-proj-scale dynamic that site has no static "
                              "scale to clip")
        if self.calib_samples < 1 or self.calib_seq_len < 2:
            raise ConfigError("--calib-samples must be >= 1 and --calib-seq-len >= 2")
        if self.calib_seed is not None and (isinstance(self.calib_seed, bool) or not isinstance(self.calib_seed, int)
                                            or self.calib_seed < 0):
            raise ConfigError(f"--calib-seed {self.calib_seed!r} must be an integer >= 0")
        if self.weight_scales not in WEIGHT_SCALES:
            raise ConfigError(f"--weight-scales {self.weight_scales!r} must be one of {', '.join(WEIGHT_SCALES)}")
        if self.weight_scales == "channel" and self.out_proj_scale == "dynamic":
            raise ConfigError("--weight-scales channel with --out-proj-scale dynamic is not built: the per-token "
                              "out_proj op takes one weight scale; choose one of the two")
        if self.format_version != QUANT_FORMAT_VERSION:
            raise ConfigError(f"quantized artifact format {self.format_version} is not {QUANT_FORMAT_VERSION}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "QuantConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown quantization config keys: {', '.join(unknown)}")
        return cls(**data)


def _scalar(value: float = 1.0) -> Tensor:
    return torch.tensor(float(value), dtype=torch.float32)


class QuantLinear(nn.Module):
    """The int8 weight of an nn.Linear: ``weight`` (out, in) int8 at ``weight_scale`` (float32: 0-dim per tensor, or
    (out,) per output channel when ``per_channel``), ``bias`` (out,) float32 or None. The mixer's flow calls
    ``torch.ops.edge_quamba.int8_linear`` (``int8_linear_per_channel``) with them."""

    def __init__(self, in_features: int, out_features: int, bias: bool, per_channel: bool = False):
        super().__init__()
        self.per_channel = per_channel
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out_features) if per_channel else _scalar())
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    @classmethod
    def from_weight(cls, weight: Tensor, bias: Tensor | None, per_channel: bool = False) -> "QuantLinear":
        module = cls(weight.shape[1], weight.shape[0], bias is not None, per_channel)
        quantize_weight = quantize_weight_per_channel if per_channel else quantize_weight_per_tensor
        module.weight, module.weight_scale = quantize_weight(weight.detach())
        if bias is not None:
            module.bias = bias.detach().float().clone()
        return module


class QuantOps:
    """The flow's ops on int8 tensors: ``torch.ops.edge_quamba.*`` with this mixer's weights and scales.

    Every int8 tensor the flow makes is labelled (``layers.<i>.mixer.<code>``, :func:`code_label`) so that
    validation can match it with the graph's; ``tap`` (SQNR) sees each site's dequantized codes. ``step`` selects
    the one-token ``*_update`` ops (inputs without the l axis).
    """

    def __init__(self, mixer: "QuantMambaMixer", norm: Norm, step: bool):
        self.m, self.norm, self.step = mixer, norm, step
        self.scales = mixer.scales()

    def _made(self, site: str, q: Tensor, scale: Tensor | None = None) -> Tensor:
        """q, after showing the tap its dequantized values (``scale``: a per-token scale (...) instead of the
        site's static one)."""
        if self.m.tap is not None:
            self.m.tap(site, dequantize(q, self.scales[site] if scale is None else scale[..., None]))
        return q

    def _label(self, site: str):
        return code_label(tensor_name(self.m.layer, SITE_BY_NAME[site].code))

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
        linear: QuantLinear = getattr(self.m, name)
        w_scale = linear.weight_scale if linear.per_channel else self.scales[f"{name}.weight"]
        args = (x_q, linear.weight, linear.bias if bias else None, self.scales[in_site], w_scale)
        plain, requantizing = ((eq.int8_linear_per_channel, eq.int8_linear_per_channel_quantize) if linear.per_channel
                               else (eq.int8_linear, eq.int8_linear_quantize))
        if out_site is None:
            return plain(*args)
        with self._label(out_site):
            return self._made(out_site, requantizing(*args, self.scales[out_site]))

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
                 out_proj_scale: str = "static"):
        super().__init__()
        d, d_in, n, r, k = config.d_model, config.d_inner, config.d_state, config.dt_rank, config.d_conv
        self.config, self.hadamard, self.layer = config, hadamard, layer
        self.out_proj_scale = out_proj_scale
        self.static_sites = static_site_names(out_proj_scale)
        self.tap: Tap | None = None
        self.in_proj = QuantLinear(d, 2 * d_in, config.proj_bias, per_channel)
        self.register_buffer("conv_weight", torch.zeros(d_in, k, dtype=torch.int8))
        self.register_buffer("conv_weight_scale", _scalar())
        self.register_buffer("conv_bias", torch.zeros(d_in) if config.conv_bias else None)
        self.x_proj = QuantLinear(d_in, r + 2 * n, False, per_channel)
        self.dt_proj = QuantLinear(r, d_in, False, per_channel)  # its bias lives in dt_bias, added inside the scan
        self.register_buffer("dt_bias", torch.zeros(d_in))
        self.register_buffer("A", torch.zeros(d_in, n))
        self.register_buffer("D", torch.zeros(d_in))
        self.out_proj = QuantLinear(d_in, d, config.proj_bias, per_channel)
        for name in self.static_sites:
            self.register_buffer(f"{name}_scale", _scalar())
        self._scales: dict[str, float] | None = None
        self.register_load_state_dict_post_hook(lambda module, keys: module.forget_scales())

    @classmethod
    def from_float(cls, mixer: MambaMixer, amax: dict[str, Tensor], hadamard: bool, layer: int,
                   per_channel: bool = False, out_proj_scale: str = "static") -> "QuantMambaMixer":
        """Quantize an fp mixer's weights (the linears per output channel with ``per_channel``) and set its
        activation scales from calibrated amaxes (keys: every static site; others are ignored)."""
        q = cls(mixer.config, hadamard, layer, per_channel, out_proj_scale)
        missing = [name for name in q.static_sites if name not in amax]
        if missing:
            raise ConfigError(f"layer {layer}: no calibrated amax for {', '.join(missing)}")
        q.in_proj = QuantLinear.from_weight(mixer.in_proj.weight, mixer.in_proj.bias, per_channel)
        q.conv_weight, q.conv_weight_scale = quantize_weight_per_tensor(mixer.conv1d.weight.detach()[:, 0, :])
        if mixer.conv1d.bias is not None:
            q.conv_bias = mixer.conv1d.bias.detach().float().clone()
        q.x_proj = QuantLinear.from_weight(mixer.x_proj.weight, None, per_channel)
        q.dt_proj = QuantLinear.from_weight(mixer.dt_proj.weight, None, per_channel)
        q.dt_bias = mixer.dt_proj.bias.detach().float().clone()
        q.A = -torch.exp(mixer.A_log.detach().float())
        q.D = mixer.D.detach().float().clone()
        # Rotate in float64 so that the only rounding is the int8 quantization of the rotated weight.
        out_weight = mixer.out_proj.weight.detach().double()
        out_weight = rotate_linear_input(out_weight) if hadamard else out_weight
        q.out_proj = QuantLinear.from_weight(out_weight, mixer.out_proj.bias, per_channel)
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
                           if not getattr(self, name).per_channel})
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

    def _flow(self, resid: Tensor, state: LayerState, norm: Norm, step: bool) -> tuple[Tensor, LayerState]:
        c = self.config
        return mamba1_mixer_flow(QuantOps(self, norm, step), resid, state, c.d_inner, c.dt_rank, c.d_state,
                                 self.hadamard, self.out_proj_scale)

    def forward(self, resid: Tensor, state: LayerState, norm: Norm) -> tuple[Tensor, LayerState]:
        """Prefill: the residual stream (b, l, d) float and the block's pre-norm -> the mixer's output (b, l, d)
        float32, continuing from ``state``."""
        return self._flow(resid, state, norm, step=False)

    def step(self, resid: Tensor, state: LayerState, norm: Norm) -> tuple[Tensor, LayerState]:
        """Decode one token: resid (b, d) -> (b, d), through the one-token ops (conv state roll, one scan step)."""
        return self._flow(resid, state, norm, step=True)


class QuantResidualBlock(nn.Module):
    """The quantized model's block: resid + mixer(resid), the pre-norm inside the mixer's flow (so that it can be
    fused with the quantize after it). Same state-dict keys as :class:`ResidualBlock` (``norm.*``, ``mixer.*``)."""

    def __init__(self, config: MambaConfig, hadamard: bool, layer: int, per_channel: bool = False,
                 out_proj_scale: str = "static"):
        super().__init__()
        self.norm = Norm(config.d_model, config.norm, config.norm_eps, torch.float32)
        self.mixer = QuantMambaMixer(config, hadamard, layer, per_channel, out_proj_scale)

    def forward(self, resid: Tensor, state: LayerState, step: bool = False) -> tuple[Tensor, LayerState]:
        """resid: (b, l, d) (or (b, d) with step=True) -> same shape, new state."""
        out, state = (self.mixer.step if step else self.mixer)(resid, state, self.norm)
        return resid + out, state


# Floating-point weights outside the mixers (embeddings, norms, lm_head) are stored in fp16.
FLOAT_STORAGE_DTYPE = torch.float16


def quantize_model(fp_model: MambaLM, amaxes: list[dict[str, Tensor]], qconfig: QuantConfig) -> MambaLM:
    """The quantized reference from an fp model and per-layer calibrated amaxes (one dict per layer)."""
    if len(amaxes) != fp_model.config.n_layer:
        raise ConfigError(f"calibration gave amaxes for {len(amaxes)} layers, the model has {fp_model.config.n_layer}")
    model = empty_quantized_model(fp_model.config, qconfig)
    fp_state = {k: v.to(FLOAT_STORAGE_DTYPE).float() for k, v in fp_model.state_dict().items() if ".mixer." not in k}
    model.load_state_dict(fp_state, strict=False)
    for i, (block, fp_block, layer_amax) in enumerate(zip(model.backbone.layers, fp_model.backbone.layers, amaxes,
                                                          strict=True)):
        block.mixer = QuantMambaMixer.from_float(copy.deepcopy(fp_block.mixer).float(), layer_amax, qconfig.hadamard,
                                                 layer=i, per_channel=qconfig.weight_scales == "channel",
                                                 out_proj_scale=qconfig.out_proj_scale)
    return model.eval()


def empty_quantized_model(config: MambaConfig, qconfig: QuantConfig) -> MambaLM:
    """The module tree of a quantized model with placeholder values, ready for load_state_dict."""
    model = MambaLM(config, dtype=torch.float32)
    model.backbone.layers = nn.ModuleList(
        QuantResidualBlock(config, qconfig.hadamard, layer=i, per_channel=qconfig.weight_scales == "channel",
                           out_proj_scale=qconfig.out_proj_scale)
        for i in range(config.n_layer))
    return model.eval()
