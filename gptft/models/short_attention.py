"""Causal self-attention for training on short rows: SDPA's own forward, a backward pass in fp32.

On the CPU, SDPA's fused backward in bf16 is several times slower than its forward and than the same kernel in
fp32 for short rows, which makes it a large share of a bf16 training step with many trained blocks. Here the
forward is the very same SDPA call (the same output bits), and the backward recomputes the attention weights in
fp32 with plain matmuls: faster up to about 160 tokens a row, and closer to the exact gradients than the bf16
kernel.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MAX_ROW = 160  # above it the T x T fp32 products cost more than the fused kernel saves (measured on the CPU)


class _Fp32Backward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v):
        ctx.save_for_backward(q, k, v)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    @staticmethod
    def backward(ctx, grad):
        q, k, v = ctx.saved_tensors
        need_q, need_k, need_v = ctx.needs_input_grad
        t, scale = q.shape[-2], 1 / math.sqrt(q.shape[-1])
        # autocast off: a backward traced by torch.compile (or run inside autocast) would do these in bf16
        with torch.autocast(q.device.type, enabled=False):
            qf, kf, vf, g = q.float(), k.float(), v.float(), grad.float()
            s = qf @ kf.transpose(-1, -2) * scale
            s.masked_fill_(torch.ones(t, t, dtype=torch.bool, device=q.device).triu_(1), float("-inf"))
            p = torch.softmax(s, dim=-1)
            dq = dk = dv = None
            if need_q or need_k:
                dp = g @ vf.transpose(-1, -2)
                ds = p * (dp - (dp * p).sum(-1, keepdim=True))  # softmax backward
                dq = (ds @ kf * scale).to(q.dtype) if need_q else None
                dk = (ds.transpose(-1, -2) @ qf * scale).to(k.dtype) if need_k else None
            if need_v:
                dv = (p.transpose(-1, -2) @ g).to(v.dtype)
        return dq, dk, dv


def wants_fp32_backward(q, k, v, dropout_p: float) -> bool:
    """Whether causal attention over these (B, H, T, D) tensors should use the fp32 backward: a CPU training
    step in bf16 (the dtype it was measured in), rows of at most MAX_ROW tokens, no dropout, queries and keys over
    the same positions."""
    return (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
            and q.device.type == "cpu" and q.dtype == torch.bfloat16 and dropout_p == 0.0
            and q.shape[-2] == k.shape[-2] <= MAX_ROW)


def causal_fp32_backward(q, k, v):
    """SDPA(q, k, v, is_causal=True), differentiated in fp32."""
    return _Fp32Backward.apply(q, k, v)
