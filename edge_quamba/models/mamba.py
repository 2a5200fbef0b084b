"""The floating-point reference Mamba1 language model: readable, dtype-agnostic, the ground truth for everything else.

It computes exactly what ``transformers.MambaForCausalLM`` and mamba_ssm's ``MambaLMHeadModel`` compute (tests hold it
to 1e-9 in float64), written for reading rather than speed, after johnma2006/mamba-minimal. Every optimized path of
this project (the quantized reference, ONNX graphs, CUDA kernels, TensorRT plugins) is checked against this file or
against the quantized reference that mirrors it.

Glossary (code name: paper symbol, meaning)
    b: batch size                      l: sequence length
    d / d_model: D, residual width      d_in / d_inner: E*D, width inside the mixer
    n / d_state: N, SSM state size      r / dt_rank: R, rank of the Δ projection
    k / d_conv: width of the causal depthwise convolution
    v / vocab_size: embedding rows
    u: the selective-scan input (the conv output after SiLU), shape (b, l, d_in)
    z: the gate branch of in_proj, shape (b, l, d_in)
    delta: Δ, per-token step size = softplus(dt_proj(Δ_r)), shape (b, l, d_in)
    A: (d_in, n) = -exp(A_log), continuous-time state matrix (diagonal per channel)
    B, C: (b, l, n) input-dependent input and output matrices
    D: (d_in,) skip connection
    h / ssm_state: (b, d_in, n) the recurrent state
    conv_state: (b, d_in, k) the last k conv inputs (oldest first), mamba_ssm's layout

Discretization (zero-order hold for A, Euler for B, as in the paper and the official kernels):
    h_t = exp(Δ_t A) * h_{t-1} + Δ_t B_t u_t         y_t = C_t · h_t + D u_t         out_t = y_t * silu(z_t)

Optimized twins: ``selective_scan`` mirrors mamba_ssm's ``selective_scan_fn`` (state kept in at least float32, as the
kernel does), ``causal_conv1d`` mirrors ``causal_conv1d_fn``, and ``MambaMixer.step`` mirrors ``Mamba.step``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_quamba.models.config import MambaConfig


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype for reductions and the scan state: at least float32, float64 stays float64."""
    return torch.promote_types(dtype, torch.float32)


@dataclass
class LayerState:
    """Recurrent state of one layer, explicit so that decode can resume where prefill stopped.

    conv_state: (b, d_in, k) the last k inputs of the causal conv, oldest first.
    ssm_state:  (b, d_in, n) the selective-scan state h, in at least float32.
    """

    conv_state: Tensor
    ssm_state: Tensor


def causal_conv1d(x: Tensor, weight: Tensor, bias: Tensor | None, conv_state: Tensor) -> tuple[Tensor, Tensor]:
    """Depthwise causal convolution over time, continuing from ``conv_state`` (no activation).

    Args:
        x: (b, l, d_in) new inputs.
        weight: (d_in, k) one filter per channel; output_t = sum_j weight[:, j] * input_{t-k+1+j}.
        bias: (d_in,) or None.
        conv_state: (b, d_in, k) the previous k inputs, oldest first (zeros before the first token).
    Returns:
        y: (b, l, d_in) and the new conv_state (b, d_in, k): the last k inputs seen.
    """
    d_in, k = weight.shape
    history = torch.cat([conv_state.to(x.dtype), x.transpose(1, 2)], dim=2)  # (b, d_in, k + l)
    # Output t sees inputs t-k+1..t, i.e. history[:, :, t+1 : t+k+1]; dropping the oldest state column aligns it.
    y = F.conv1d(history[:, :, 1:], weight.unsqueeze(1), bias, groups=d_in)  # (b, d_in, l)
    return y.transpose(1, 2), history[:, :, -k:]


def selective_scan(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, ssm_state: Tensor
) -> tuple[Tensor, Tensor]:
    """The selective scan (Algorithm 2 of the Mamba paper), sequential over time, continuing from ``ssm_state``.

    Args:
        u: (b, l, d_in) scan input.          delta: (b, l, d_in) Δ after softplus.
        A: (d_in, n).                        B, C: (b, l, n).
        D: (d_in,).                          ssm_state: (b, d_in, n) h before the first of these tokens.
    Returns:
        y: (b, l, d_in) = C·h + D*u in the compute dtype (at least float32), and the final h (b, d_in, n).
    The gate (y * silu(z)) is applied by the caller.

    Float order (the one every kernel and ONNX body follows; each step rounded, no fused multiply-add):
        per t:  dA = exp(Δ_t[d] * A[d, n]);  dBu = (Δ_t[d] * u_t[d]) * B_t[n];  h = dA * h + dBu
                y_t[d] = sum_n h[d, n] * C_t[n]  (a dot product: its summation order is the library's, so other
                implementations match it to a tolerance, not bit for bit);  then y + D * u.
    Memory: one (b, d_in, n) buffer each for dA and dBu is reused across time (never a (b, l, d_in, n) tensor),
    which keeps each step in cache: about 6x faster than materializing exp(Δ A) for all l on a CPU.
    """
    dtype = compute_dtype(u.dtype)
    u, delta, A, B, C, D = (t.to(dtype) for t in (u, delta, A, B, C, D))
    b, l, d_in = u.shape
    delta_u = delta * u  # (b, l, d_in)
    h = ssm_state.to(dtype).clone()  # (b, d_in, n), updated in place
    dA, dBu = torch.empty_like(h), torch.empty_like(h)
    y = torch.empty(b, l, d_in, dtype=dtype, device=u.device)
    for t in range(l):
        torch.mul(delta[:, t, :, None], A, out=dA).exp_()  # (b, d_in, n) discretized A
        torch.mul(delta_u[:, t, :, None], B[:, t, None, :], out=dBu)  # (b, d_in, n) discretized B times u
        h.mul_(dA).add_(dBu)
        torch.matmul(h, C[:, t, :, None], out=y[:, t, :, None])  # (b, d_in, 1)
    return y + u * D, h


class Norm(nn.Module):
    """RMSNorm (Mamba's default) or LayerNorm (mamba_ssm with rms_norm=False), computed in at least float32."""

    def __init__(self, d: int, kind: str, eps: float, dtype: torch.dtype):
        super().__init__()
        self.kind, self.eps = kind, eps
        self.weight = nn.Parameter(torch.ones(d, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(d, dtype=dtype)) if kind == "layernorm" else None

    def forward(self, x: Tensor) -> Tensor:
        """x: (..., d) -> (..., d) in the weight's dtype."""
        xf = x.to(compute_dtype(x.dtype))
        if self.kind == "rmsnorm":
            xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        else:
            xf = F.layer_norm(xf, xf.shape[-1:], eps=self.eps)
        out = self.weight * xf.to(self.weight.dtype)
        return out if self.bias is None else out + self.bias


class MambaMixer(nn.Module):
    """One Mamba mixer: in_proj -> causal conv -> SiLU -> selective scan (gated by z) -> out_proj.

    Parameter names and shapes equal transformers' ``MambaMixer`` (and mamba_ssm's ``Mamba``), so a state dict loads
    as is. ``conv1d`` is kept as an ``nn.Conv1d`` only for its (d_in, 1, k) weight layout; its forward is not used.
    """

    scan = staticmethod(selective_scan)
    """The prefill scan :func:`selective_scan`; a subclass may route the same call through a custom op (W4A16's
    mixer calls ``torch.ops.edge_quamba.selective_scan``, which is this function on the CPU and a kernel on a GPU)."""

    def __init__(self, config: MambaConfig, dtype: torch.dtype):
        super().__init__()
        d, d_in, n, r, k = config.d_model, config.d_inner, config.d_state, config.dt_rank, config.d_conv
        kw = dict(dtype=dtype)
        self.config = config
        self.in_proj = nn.Linear(d, 2 * d_in, bias=config.proj_bias, **kw)
        self.conv1d = nn.Conv1d(d_in, d_in, k, groups=d_in, padding=k - 1, bias=config.conv_bias, **kw)
        self.x_proj = nn.Linear(d_in, r + 2 * n, bias=False, **kw)
        self.dt_proj = nn.Linear(r, d_in, bias=True, **kw)
        self.A_log = nn.Parameter(torch.zeros(d_in, n, **kw))
        self.D = nn.Parameter(torch.ones(d_in, **kw))
        self.out_proj = nn.Linear(d_in, d, bias=config.proj_bias, **kw)

    def empty_state(self, batch: int) -> LayerState:
        """The state before the first token: zeros (conv_state in the model dtype, ssm_state in at least float32)."""
        d_in, n, k = self.config.d_inner, self.config.d_state, self.config.d_conv
        weight = self.in_proj.weight
        return LayerState(
            conv_state=torch.zeros(batch, d_in, k, dtype=weight.dtype, device=weight.device),
            ssm_state=torch.zeros(batch, d_in, n, dtype=compute_dtype(weight.dtype), device=weight.device),
        )

    def ssm_parameters(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """u: (..., d_in) -> A (d_in, n), delta (..., d_in), B (..., n), C (..., n)."""
        r, n = self.config.dt_rank, self.config.d_state
        A = -torch.exp(self.A_log.to(compute_dtype(self.A_log.dtype)))
        delta_r, B, C = self.x_proj(u).split([r, n, n], dim=-1)
        delta = F.softplus(self.dt_proj(delta_r).to(A.dtype))
        return A, delta, B, C

    def forward(self, x: Tensor, state: LayerState) -> tuple[Tensor, LayerState]:
        """Prefill: x (b, l, d) -> (b, l, d), continuing from ``state``; returns the state after the last token."""
        x_in, z = self.in_proj(x).chunk(2, dim=-1)  # (b, l, d_in) each
        conv_out, conv_state = causal_conv1d(x_in, self.conv1d.weight[:, 0, :], self.conv1d.bias, state.conv_state)
        u = F.silu(conv_out)
        A, delta, B, C = self.ssm_parameters(u)
        y, ssm_state = self.scan(u, delta, A, B, C, self.D, state.ssm_state)
        y = y * F.silu(z.to(y.dtype))
        return self.out_proj(y.to(x.dtype)), LayerState(conv_state, ssm_state)

    def step(self, x: Tensor, state: LayerState) -> tuple[Tensor, LayerState]:
        """Decode one token: x (b, d) -> (b, d), the recurrence written out (mirrors mamba_ssm ``Mamba.step``)."""
        x_in, z = self.in_proj(x).chunk(2, dim=-1)  # (b, d_in)
        conv_state = torch.cat([state.conv_state[:, :, 1:], x_in.unsqueeze(-1)], dim=-1)  # (b, d_in, k)
        conv_out = (conv_state * self.conv1d.weight[:, 0, :]).sum(-1)
        if self.conv1d.bias is not None:
            conv_out = conv_out + self.conv1d.bias
        u = F.silu(conv_out)  # (b, d_in)
        A, delta, B, C = self.ssm_parameters(u)
        uf = u.to(A.dtype)
        h = torch.exp(delta.unsqueeze(-1) * A) * state.ssm_state + (delta * uf).unsqueeze(-1) * B.to(A.dtype).unsqueeze(1)
        y = torch.einsum("bdn,bn->bd", h, C.to(A.dtype)) + uf * self.D.to(A.dtype)
        y = y * F.silu(z.to(y.dtype))
        return self.out_proj(y.to(x.dtype)), LayerState(conv_state, h)


class ResidualBlock(nn.Module):
    """Pre-norm residual block: resid + mixer(norm(resid)). The residual stream is float32 when residual_in_fp32."""

    def __init__(self, config: MambaConfig, dtype: torch.dtype, mixer_class: type[nn.Module] = MambaMixer):
        super().__init__()
        self.norm = Norm(config.d_model, config.norm, config.norm_eps, dtype)
        self.mixer = mixer_class(config, dtype)

    def forward(self, resid: Tensor, state: LayerState, step: bool = False) -> tuple[Tensor, LayerState]:
        """resid: (b, l, d) (or (b, d) with step=True) -> same shape, new state."""
        hidden = self.norm(resid.to(self.norm.weight.dtype))
        mix = self.mixer.step if step else self.mixer
        out, state = mix(hidden, state)
        return resid + out, state


class MambaLM(nn.Module):
    """Mamba language model: embeddings -> n_layer residual blocks -> final norm -> lm_head (tied by default).

    The module tree (``backbone.embeddings``, ``backbone.layers.i.{norm,mixer}``, ``backbone.norm_f``, ``lm_head``)
    equals transformers' MambaForCausalLM, so its state dict loads directly. A subclass changes only
    ``mixer_class`` (:class:`edge_quamba.models.mamba2.Mamba2LM`).
    """

    mixer_class: type[nn.Module] = MambaMixer

    def __init__(self, config: MambaConfig, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.config = config
        self.dtype = dtype
        self.backbone = nn.Module()
        self.backbone.embeddings = nn.Embedding(config.vocab_size, config.d_model, dtype=dtype)
        self.backbone.layers = nn.ModuleList(ResidualBlock(config, dtype, self.mixer_class)
                                             for _ in range(config.n_layer))
        self.backbone.norm_f = Norm(config.d_model, config.norm, config.norm_eps, dtype)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False, dtype=dtype)
        if config.tie_embeddings:
            self.lm_head.weight = self.backbone.embeddings.weight
        self.residual_storage: torch.dtype | None = None
        """The residual stream's dtype between blocks when set (the quantized reference's float16 "float parts",
        :func:`edge_quamba.quant.qmodel.use_float_parts`); None: :meth:`residual_dtype`'s default."""

    @property
    def device(self) -> torch.device:
        """Where the weights live; token tensors are moved here by callers that batch on the CPU."""
        return self.backbone.embeddings.weight.device

    def residual_dtype(self) -> torch.dtype:
        if self.residual_storage is not None:
            return self.residual_storage
        return compute_dtype(self.dtype) if self.config.residual_in_fp32 else self.dtype

    def empty_states(self, batch: int) -> list[LayerState]:
        """Per-layer zero states; each mixer knows its own state dtypes (the quantized mixer keeps an int8 conv state)."""
        return [block.mixer.empty_state(batch) for block in self.backbone.layers]

    def residual_stream(self, tokens: Tensor, states: list[LayerState] | None = None, step: bool = False
                        ) -> tuple[Tensor, list[LayerState]]:
        """tokens (b, l) (or (b,) with step=True) -> the residual stream after the last layer (b, l, d), and the
        per-layer states. Calibration stops here: it needs every mixer's input, not the logits."""
        states = states if states is not None else self.empty_states(tokens.shape[0])
        resid = self.backbone.embeddings(tokens).to(self.residual_dtype())
        new_states = []
        for block, state in zip(self.backbone.layers, states, strict=True):
            resid, state = block(resid, state, step=step)
            new_states.append(state)
        return resid, new_states

    def _run(self, tokens: Tensor, states: list[LayerState] | None, step: bool) -> tuple[Tensor, list[LayerState]]:
        resid, new_states = self.residual_stream(tokens, states, step)
        hidden = self.backbone.norm_f(resid.to(self.dtype))
        return self.lm_head(hidden), new_states

    def forward(self, tokens: Tensor, states: list[LayerState] | None = None) -> tuple[Tensor, list[LayerState]]:
        """Prefill. tokens: (b, l) int64 -> logits (b, l, v) and the per-layer states after the last token."""
        return self._run(tokens, states, step=False)

    def step(self, token: Tensor, states: list[LayerState]) -> tuple[Tensor, list[LayerState]]:
        """Decode one token. token: (b,) int64 -> logits (b, v) and the states after it."""
        return self._run(token, states, step=True)
