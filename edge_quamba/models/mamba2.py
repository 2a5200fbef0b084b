"""The floating-point reference Mamba2 (SSD) language model: readable, dtype-agnostic, the ground truth for Mamba2.

It computes what ``transformers.Mamba2ForCausalLM`` and mamba_ssm's ``MambaLMHeadModel`` with Mamba2 blocks compute
(tests hold it to 1e-9 in float64), written from the Mamba2 paper (Dao & Gu 2024, "Transformers are SSMs", the SSD
algorithm of its section 6) for reading rather than speed, in the style of :mod:`edge_quamba.models.mamba`, whose
residual block, norms, causal convolution and state container it reuses.

Glossary (code name: paper symbol, meaning)
    b: batch size                       l: sequence length
    d / d_model: D, residual width       d_in / d_inner: expand * D, width inside the mixer
    h / nheads: H, heads                 p / headdim: P, channels per head (d_in = h * p)
    n / d_state: N, SSM state size       g / ngroups: G, groups of heads sharing B and C (head i reads group
                                         i // (h / g), as in grouped-query attention)
    k / d_conv: causal conv width        q / chunk_size: Q, chunk length of the chunked SSD
    conv_dim: d_in + 2 g n, the conv runs over x | B | C together
    z: (b, l, d_in) the gate branch of in_proj
    x: (b, l, h, p) the SSM input (the x part of the conv output after SiLU)
    B, C: (b, l, g, n) input-dependent input and output projections of the state
    dt: Δ, (b, l, h) per-token, per-head step = softplus(dt_raw + dt_bias)
    A: (h,) = -exp(A_log), one scalar decay rate per head (Mamba1 has a (d_in, n) matrix)
    D: (h,) skip connection, one per head
    ssm_state: (b, h, p, n) the recurrent state, in at least float32 (mamba_ssm's layout)
    conv_state: (b, conv_dim, k) the last k conv inputs, oldest first (mamba_ssm's layout)

The recurrence (per head; x_t is a p-vector, B_t and C_t n-vectors of the head's group, h_t a (p, n) matrix):
    h_t = exp(Δ_t A) h_{t-1} + Δ_t x_t B_tᵀ          y_t = h_t C_t + D x_t
then the gated RMSNorm before out_proj: out = out_proj(rmsnorm_g(y * silu(z)) * weight), normalized over groups of
d_in / g channels (mamba_ssm's ``RMSNormGated(group_size=d_in // ngroups, norm_before_gate=False)``; transformers'
``MambaRMSNormGated`` computes the same).

Optimized twins: ``ssd_chunked`` mirrors mamba_ssm's ``mamba_chunk_scan_combined`` (the Triton SSD kernels) and
transformers' ``torch_forward`` chunk path; ``ssd_step`` mirrors ``selective_state_update``; ``Mamba2Mixer.step``
mirrors mamba_ssm's ``Mamba2.step``. ``ssd_sequential`` is the recurrence written out, the chunked form's test oracle.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_quamba.models.config import Mamba2Config
from edge_quamba.models.mamba import LayerState, MambaLM, causal_conv1d, compute_dtype


def heads_from_groups(t: Tensor, nheads: int) -> Tensor:
    """(..., g, n) -> (..., h, n): head i reads group i // (h / g) (consecutive heads share a group)."""
    return t.repeat_interleave(nheads // t.shape[-2], dim=-2)


def ssd_step(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, ssm_state: Tensor
             ) -> tuple[Tensor, Tensor]:
    """One token of the SSD recurrence.

    Args:
        x: (b, h, p).   dt: (b, h) Δ after softplus.   A: (h,).   B, C: (b, g, n).   D: (h,).
        ssm_state: (b, h, p, n) the state before this token.
    Returns:
        y: (b, h, p) = h_t C_t + D x_t, and h_t (b, h, p, n), both in the compute dtype (at least float32).
    """
    dtype = compute_dtype(x.dtype)
    x, dt, A, B, C, D = (t.to(dtype) for t in (x, dt, A, B, C, D))
    B, C = heads_from_groups(B, x.shape[1]), heads_from_groups(C, x.shape[1])  # (b, h, n)
    decay = torch.exp(dt * A)  # (b, h) exp(Δ A), the discretized A
    h = decay[:, :, None, None] * ssm_state.to(dtype) + (dt[:, :, None] * x)[..., None] * B[:, :, None, :]
    y = torch.einsum("bhpn,bhn->bhp", h, C)
    return y + D[:, None] * x, h


def ssd_sequential(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, ssm_state: Tensor
                   ) -> tuple[Tensor, Tensor]:
    """The recurrence token by token (the definition; slow): x (b, l, h, p), dt (b, l, h), B, C (b, l, g, n),
    ssm_state (b, h, p, n) -> y (b, l, h, p) and the state after the last token."""
    ys = []
    for t in range(x.shape[1]):
        y, ssm_state = ssd_step(x[:, t], dt[:, t], A, B[:, t], C[:, t], D, ssm_state)
        ys.append(y)
    return torch.stack(ys, dim=1), ssm_state.to(compute_dtype(x.dtype))


def ssd_chunked(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, ssm_state: Tensor,
                chunk_size: int) -> tuple[Tensor, Tensor]:
    """The same recurrence in chunks of q tokens (SSD, section 6 of the Mamba2 paper): matrix products inside a chunk,
    the recurrence only between chunks. Shapes as :func:`ssd_sequential`; returns y and the final state.

    With a_t = Δ_t A (the log of the step's decay, <= 0) and its running sum within the chunk, cum_t:
      1. within the chunk (the "diagonal blocks", a masked attention):
             y_t = Σ_{s<=t} exp(cum_t - cum_s) (C_t · B_s) Δ_s x_s
      2. the state the chunk adds from zero:  S = Σ_s exp(cum_q - cum_s) Δ_s x_s B_sᵀ
      3. across chunks, one step per chunk:    H_next = exp(cum_q) H + S        (H_0 = ssm_state)
      4. the chunk's start state seen at t:    y_t += exp(cum_t) H C_t
    then y += D x. Padding the last chunk with Δ = 0 adds nothing and decays nothing, so the final state is exact.
    Memory: (b, l/q, q, q, h) for the masked scores; chunk_size trades that against the sequential step count.
    """
    dtype = compute_dtype(x.dtype)
    x, dt, A, B, C, D = (t.to(dtype) for t in (x, dt, A, B, C, D))
    b, l, h, p = x.shape
    B, C = heads_from_groups(B, h), heads_from_groups(C, h)  # (b, l, h, n)
    q = chunk_size
    pad = (-l) % q
    chunks = (l + pad) // q

    def to_chunks(t: Tensor) -> Tensor:  # (b, l, ...) -> (b, chunks, q, ...), zero-padded at the end
        t = F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad))
        return t.reshape(b, chunks, q, *t.shape[2:])

    x_dt = to_chunks(x * dt[..., None])  # (b, c, q, h, p) Δ_s x_s
    Bc, Cc = to_chunks(B), to_chunks(C)  # (b, c, q, h, n)
    cum = torch.cumsum(to_chunks(dt) * A, dim=2)  # (b, c, q, h)

    # 1. within each chunk: decay[t, s] = exp(cum_t - cum_s) for s <= t, 0 above the diagonal (masked before exp,
    #    where the difference is positive and could overflow).
    causal = torch.ones(q, q, dtype=torch.bool, device=x.device).tril()
    segment = (cum[:, :, :, None, :] - cum[:, :, None, :, :]).masked_fill(~causal[:, :, None], -torch.inf)
    scores = torch.einsum("bcthn,bcshn->bctsh", Cc, Bc) * torch.exp(segment)  # (b, c, t, s, h)
    y = torch.einsum("bctsh,bcshp->bcthp", scores, x_dt)

    # 2. the state each chunk adds, starting from zero.
    to_end = torch.exp(cum[:, :, -1:, :] - cum)  # (b, c, q, h) decay from s to the chunk's end
    added = torch.einsum("bcsh,bcshp,bcshn->bchpn", to_end, x_dt, Bc)

    # 3. the recurrence between chunks (c steps instead of l).
    chunk_decay = torch.exp(cum[:, :, -1, :])  # (b, c, h)
    state = ssm_state.to(dtype)
    starts = []
    for c in range(chunks):
        starts.append(state)
        state = chunk_decay[:, c, :, None, None] * state + added[:, c]
    start_states = torch.stack(starts, dim=1)  # (b, c, h, p, n)

    # 4. each chunk's start state, decayed to t and read out by C_t.
    y = y + torch.einsum("bcthn,bchpn->bcthp", Cc, start_states) * torch.exp(cum)[..., None]
    y = y.reshape(b, chunks * q, h, p)[:, :l]
    return y + D[:, None] * x, state


class GatedRMSNorm(nn.Module):
    """rmsnorm(y * silu(z)) * weight, the RMS taken over groups of ``group_size`` channels, in at least float32."""

    def __init__(self, d: int, group_size: int, eps: float, dtype: torch.dtype):
        super().__init__()
        self.group_size, self.eps = group_size, eps
        self.weight = nn.Parameter(torch.ones(d, dtype=dtype))

    def forward(self, y: Tensor, z: Tensor) -> Tensor:
        """y, z: (..., d_in) -> (..., d_in) in the weight's dtype."""
        dtype = compute_dtype(y.dtype)
        gated = y.to(dtype) * F.silu(z.to(dtype))
        groups = gated.unflatten(-1, (-1, self.group_size))  # (..., g, d_in / g)
        normed = groups * torch.rsqrt(groups.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.flatten(-2).to(self.weight.dtype)


class Mamba2Mixer(nn.Module):
    """One Mamba2 mixer: in_proj -> z | xBC | dt; causal conv over xBC + SiLU; SSD; gated RMSNorm; out_proj.

    Parameter names and shapes equal transformers' ``Mamba2Mixer`` and mamba_ssm's ``Mamba2`` (in_proj rows
    ordered z | x | B | C | dt), so a state dict loads as is. ``conv1d`` is kept as an ``nn.Conv1d`` only for its
    (conv_dim, 1, k) weight layout; its forward is not used.
    """

    def __init__(self, config: Mamba2Config, dtype: torch.dtype):
        super().__init__()
        d, d_in, h = config.d_model, config.d_inner, config.nheads
        kw = dict(dtype=dtype)
        self.config = config
        self.in_proj = nn.Linear(d, config.d_in_proj, bias=config.proj_bias, **kw)
        self.conv1d = nn.Conv1d(config.conv_dim, config.conv_dim, config.d_conv, groups=config.conv_dim,
                                padding=config.d_conv - 1, bias=config.conv_bias, **kw)
        self.dt_bias = nn.Parameter(torch.zeros(h, **kw))
        self.A_log = nn.Parameter(torch.zeros(h, **kw))
        self.D = nn.Parameter(torch.ones(h, **kw))
        self.norm = GatedRMSNorm(d_in, d_in // config.ngroups, config.gate_norm_eps, dtype)
        self.out_proj = nn.Linear(d_in, d, bias=config.proj_bias, **kw)

    def empty_state(self, batch: int) -> LayerState:
        """Zeros: conv_state (b, conv_dim, k) in the model dtype, ssm_state (b, h, p, n) in at least float32."""
        c = self.config
        weight = self.in_proj.weight
        return LayerState(
            conv_state=torch.zeros(batch, c.conv_dim, c.d_conv, dtype=weight.dtype, device=weight.device),
            ssm_state=torch.zeros(batch, c.nheads, c.headdim, c.d_state, dtype=compute_dtype(weight.dtype),
                                  device=weight.device),
        )

    def split_projection(self, zxbcdt: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(..., d_in_proj) -> z (..., d_in), xBC (..., conv_dim), dt_raw (..., h)."""
        c = self.config
        return zxbcdt.split([c.d_inner, c.conv_dim, c.nheads], dim=-1)

    def ssm_inputs(self, xBC: Tensor, dt_raw: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Conv output after SiLU (..., conv_dim) and dt_raw (..., h) -> x (..., h, p), Δ (..., h), A (h,),
        B and C (..., g, n)."""
        c = self.config
        x, B, C = xBC.split([c.d_inner, c.ngroups * c.d_state, c.ngroups * c.d_state], dim=-1)
        A = -torch.exp(self.A_log.to(compute_dtype(self.A_log.dtype)))
        dt = F.softplus(dt_raw.to(A.dtype) + self.dt_bias.to(A.dtype))
        return (x.unflatten(-1, (c.nheads, c.headdim)), dt, A, B.unflatten(-1, (c.ngroups, c.d_state)),
                C.unflatten(-1, (c.ngroups, c.d_state)))

    def forward(self, hidden: Tensor, state: LayerState) -> tuple[Tensor, LayerState]:
        """Prefill: hidden (b, l, d) -> (b, l, d), continuing from ``state``; returns the state after the last
        token. The SSD runs chunked (:func:`ssd_chunked`, chunk_size from the config)."""
        z, xBC, dt_raw = self.split_projection(self.in_proj(hidden))
        conv_out, conv_state = causal_conv1d(xBC, self.conv1d.weight[:, 0, :], self.conv1d.bias, state.conv_state)
        x, dt, A, B, C = self.ssm_inputs(F.silu(conv_out), dt_raw)
        y, ssm_state = ssd_chunked(x, dt, A, B, C, self.D, state.ssm_state, self.config.chunk_size)
        y = self.norm(y.flatten(-2), z)  # (b, l, d_in)
        return self.out_proj(y.to(hidden.dtype)), LayerState(conv_state, ssm_state)

    def step(self, hidden: Tensor, state: LayerState) -> tuple[Tensor, LayerState]:
        """Decode one token: hidden (b, d) -> (b, d), the recurrence written out (mirrors mamba_ssm ``Mamba2.step``)."""
        z, xBC, dt_raw = self.split_projection(self.in_proj(hidden))
        conv_state = torch.cat([state.conv_state[:, :, 1:], xBC.unsqueeze(-1)], dim=-1)  # (b, conv_dim, k)
        conv_out = (conv_state * self.conv1d.weight[:, 0, :]).sum(-1)
        if self.conv1d.bias is not None:
            conv_out = conv_out + self.conv1d.bias
        x, dt, A, B, C = self.ssm_inputs(F.silu(conv_out), dt_raw)
        y, ssm_state = ssd_step(x, dt, A, B, C, self.D, state.ssm_state)
        y = self.norm(y.flatten(-2), z)  # (b, d_in)
        return self.out_proj(y.to(hidden.dtype)), LayerState(conv_state, ssm_state)


class Mamba2LM(MambaLM):
    """Mamba2 language model: embeddings -> n_layer pre-norm residual blocks of :class:`Mamba2Mixer` -> final norm
    -> lm_head. The module tree (``backbone.embeddings``, ``backbone.layers.i.{norm,mixer}``, ``backbone.norm_f``,
    ``lm_head``) equals transformers' Mamba2ForCausalLM, so its state dict loads directly; forward, step and the
    per-layer :class:`LayerState` list are :class:`MambaLM`'s."""

    mixer_class = Mamba2Mixer
