"""Key/value cache for incremental decoding, shared by every backbone."""
from __future__ import annotations

import torch

from .short_attention import causal_fp32_backward, wants_fp32_backward


class KVCache:
    """Keys and values of one attention layer, grown along the time axis."""

    def __init__(self) -> None:
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.k is None else self.k.shape[-2]

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.k = k if self.k is None else torch.cat([self.k, k], dim=-2)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=-2)
        return self.k, self.v


def causal_attention(q, k, v, past: int, dropout_p: float = 0.0):
    """SDPA with a causal mask that accounts for `past` cached positions.

    q: (B, H, T, D); k, v: (B, H, past + T, D).
    """
    import torch.nn.functional as F

    t = q.shape[-2]
    if past == 0 and wants_fp32_backward(q, k, v, dropout_p):
        return causal_fp32_backward(q, k, v)
    if past == 0:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout_p)
    if t == 1:  # one new token sees everything before it
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    mask = torch.ones(t, past + t, dtype=torch.bool, device=q.device).tril(diagonal=past)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


def rows_at(x, at):
    """(B, T, ...) -> (B, 1, ...): each row's position at[b] (at: (B,)), or x itself when at is None."""
    if at is None:
        return x
    return x[torch.arange(x.shape[0], device=x.device), at].unsqueeze(1)


def attention_at(q, k, v, at, dropout_p: float = 0.0):
    """Causal attention for one query per row: q (B, H, 1, D) at position at[b] sees keys 0..at[b].

    k, v: (B, H, T, D)."""
    import torch.nn.functional as F

    mask = torch.arange(k.shape[-2], device=k.device) <= at[:, None]  # (B, T)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None], dropout_p=dropout_p)
