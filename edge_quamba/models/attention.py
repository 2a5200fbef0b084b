"""The attention and MLP blocks of the hybrid models (Nemotron-H, Bamba): the fp reference, readable, dtype-agnostic.

It computes what transformers' ``NemotronHAttention`` / ``BambaAttention`` (grouped-query attention, the eager and
SDPA paths) and ``NemotronHMLP`` / ``BambaMLP`` compute (tests hold the whole model to 1e-9 in float64), with the KV
cache as an explicit value, as the Mamba2 states are.

Glossary (code name: meaning)
    b: batch             l: new tokens in this call       t: tokens already cached (past length)    s = t + l
    d: d_model           h: query heads (n_heads)         kv: key/value heads (n_kv_heads)          e: head_dim
    r: rotary_dim (RoPE's rotated leading dims of each head; 0 = no positional encoding)
    q: (b, h, l, e)      k, v: (b, kv, l, e) this call's   key, value: (b, kv, s, e) the cache after this call
    KVState: key, value (b, kv, t, e), oldest first: the attention block's whole state

Attention, per query head j reading kv head j // (h / kv) (consecutive query heads share one, as Mamba2's heads share
B and C), new token i at position t + i:
    score[i, u] = (q_i · key_u) * e^-1/2   for u <= t + i (causal; later positions get -inf)
    out_i = Σ_u softmax_u(score[i, :]) value_u                              then o_proj over the h heads
RoPE (Bamba; :func:`rope`): dims f and f + r/2 of each head (f < r/2) are rotated by the angle pos * θ^(-2f/r), the
angles and their cos/sin computed in float32 (as transformers and the graph compute them), dims r.. pass through.
Nemotron-H has no positional encoding: its Mamba2 layers carry the order.

MLPs: relu² (Nemotron-H) out = down(relu(up x)²); SwiGLU (Bamba) out = down(silu(gate x) * up x).

Optimized twins: ``attend`` mirrors ``torch.nn.functional.scaled_dot_product_attention`` with a causal mask offset by
the cache length (transformers' SDPA path); ``Attention.step`` is one query row against the cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_quamba.models.hybrid_config import HybridConfig
from edge_quamba.models.mamba import compute_dtype


@dataclass
class KVState:
    """An attention block's cache: key and value (b, kv, t, e), oldest first; t grows by the tokens of each call."""

    key: Tensor
    value: Tensor

    @property
    def length(self) -> int:
        """t: the tokens already seen, hence the position of the next one."""
        return self.key.shape[2]


def split_heads(x: Tensor, head_dim: int) -> Tensor:
    """(b, l, heads * e) -> (b, heads, l, e)."""
    return x.unflatten(-1, (-1, head_dim)).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """(b, heads, l, e) -> (b, l, heads * e)."""
    return x.transpose(1, 2).flatten(-2)


def rope_cos_sin(positions: Tensor, rotary_dim: int, theta: float) -> tuple[Tensor, Tensor]:
    """positions (l,) int64 -> cos, sin (l, r) float32: angle[p, f] = p * θ^(-2f/r) for f < r/2, repeated for the
    second half (transformers' ``compute_default_rope_parameters`` and ``emb = cat(freqs, freqs)``)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, rotary_dim, 2, dtype=torch.float32, device=positions.device)
                                / rotary_dim))  # (r/2,)
    freqs = positions.to(torch.float32)[:, None] * inv_freq[None, :]  # (l, r/2)
    angles = torch.cat([freqs, freqs], dim=-1)  # (l, r)
    return angles.cos(), angles.sin()


def rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x (b, heads, l, e) -> the same with its first r dims rotated: x_rot * cos + rotate_half(x_rot) * sin, where
    rotate_half(a | b) = (-b | a) over the two halves of the r dims; cos, sin (l, r) cast to x's dtype."""
    r = cos.shape[-1]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    x_rot, x_pass = x[..., :r], x[..., r:]
    first, second = x_rot.chunk(2, dim=-1)
    rotated = x_rot * cos + torch.cat([-second, first], dim=-1) * sin
    return torch.cat([rotated, x_pass], dim=-1)


def positions(q: Tensor, k: Tensor, past: int, config: HybridConfig) -> tuple[Tensor, Tensor]:
    """q (b, h, l, e), k (b, kv, l, e) at positions t .. t + l - 1 (t = ``past``), rotated when the model has RoPE
    (unchanged for Nemotron-H)."""
    if not config.rotary_dim:
        return q, k
    cos, sin = rope_cos_sin(torch.arange(past, past + q.shape[2], device=q.device), config.rotary_dim,
                            config.rope_theta)
    return rope(q, cos, sin), rope(k, cos, sin)


def causal_mask(l: int, t: int, device: torch.device) -> Tensor:
    """(l, t + l) bool: True where new token i may read position u (u <= t + i)."""
    return torch.ones(l, t + l, dtype=torch.bool, device=device).tril(diagonal=t)


def attend(q: Tensor, key: Tensor, value: Tensor, past: int) -> Tensor:
    """Causal grouped-query attention of l new queries against the whole cache.

    Args:
        q: (b, h, l, e).   key, value: (b, kv, t + l, e), the first ``past`` = t positions from earlier calls.
    Returns:
        (b, h, l, e) in the compute dtype (at least float32): softmax(q keyᵀ * e^-1/2, causal) value.
    """
    dtype = compute_dtype(q.dtype)
    h, kv = q.shape[1], key.shape[1]
    key = key.to(dtype).repeat_interleave(h // kv, dim=1)  # (b, h, s, e)
    value = value.to(dtype).repeat_interleave(h // kv, dim=1)
    scores = torch.matmul(q.to(dtype), key.transpose(-1, -2)) * q.shape[-1] ** -0.5  # (b, h, l, s)
    scores = scores.masked_fill(~causal_mask(q.shape[2], past, q.device), -torch.inf)
    return torch.matmul(torch.softmax(scores, dim=-1), value)


class Attention(nn.Module):
    """Grouped-query attention with an explicit KV cache. Parameter names and shapes equal transformers' (q_proj,
    k_proj, v_proj, o_proj), so a state dict loads as is."""

    def __init__(self, config: HybridConfig, dtype: torch.dtype):
        super().__init__()
        c, kw = config, dict(dtype=dtype, bias=config.attn_bias)
        self.config, self.cache_dtype = config, dtype
        self.q_proj = nn.Linear(c.d_model, c.n_heads * c.head_dim, **kw)
        self.k_proj = nn.Linear(c.d_model, c.n_kv_heads * c.head_dim, **kw)
        self.v_proj = nn.Linear(c.d_model, c.n_kv_heads * c.head_dim, **kw)
        self.o_proj = nn.Linear(c.n_heads * c.head_dim, c.d_model, **kw)

    def empty_state(self, batch: int) -> KVState:
        """An empty cache: key and value (b, kv, 0, e) in the model dtype (the W4A16 model's int4 linears keep it)."""
        c, device = self.config, next(iter([*self.parameters(), *self.buffers()])).device
        empty = torch.zeros(batch, c.n_kv_heads, 0, c.head_dim, dtype=self.cache_dtype, device=device)
        return KVState(empty, empty.clone())

    def forward(self, hidden: Tensor, state: KVState) -> tuple[Tensor, KVState]:
        """Prefill (or any l): hidden (b, l, d) -> (b, l, d), continuing from the cache ``state``; returns the cache
        with this call's keys and values appended."""
        e = self.config.head_dim
        q, k, v = (split_heads(proj(hidden), e) for proj in (self.q_proj, self.k_proj, self.v_proj))
        q, k = positions(q, k, state.length, self.config)
        key, value = torch.cat([state.key, k], dim=2), torch.cat([state.value, v], dim=2)  # (b, kv, s, e)
        out = merge_heads(attend(q, key, value, state.length))  # (b, l, h e)
        return self.o_proj(out.to(hidden.dtype)), KVState(key, value)

    def step(self, hidden: Tensor, state: KVState) -> tuple[Tensor, KVState]:
        """Decode one token: hidden (b, d) -> (b, d): one query row against the cache."""
        out, state = self(hidden[:, None], state)
        return out[:, 0], state


class MLP(nn.Module):
    """relu² (up_proj, down_proj; Nemotron-H) or SwiGLU (gate_proj, up_proj, down_proj; Bamba), transformers' names.
    Stateless: its state is None."""

    def __init__(self, config: HybridConfig, dtype: torch.dtype):
        super().__init__()
        c, kw = config, dict(dtype=dtype, bias=config.mlp_bias)
        self.config = config
        if c.mlp == "swiglu":
            self.gate_proj = nn.Linear(c.d_model, c.d_ff, **kw)
        self.up_proj = nn.Linear(c.d_model, c.d_ff, **kw)
        self.down_proj = nn.Linear(c.d_ff, c.d_model, **kw)

    def empty_state(self, batch: int) -> None:
        return None

    def activation(self, hidden: Tensor) -> Tensor:
        """(..., d) -> (..., d_ff): relu(up x)² or silu(gate x) * up x."""
        up = self.up_proj(hidden)
        return F.silu(self.gate_proj(hidden)) * up if self.config.mlp == "swiglu" else F.relu(up).square()

    def forward(self, hidden: Tensor, state: None = None) -> tuple[Tensor, None]:
        """hidden (..., d) -> (..., d); prefill and step alike."""
        return self.down_proj(self.activation(hidden)), None

    step = forward
