"""The LM head and its cross-entropy in one autograd function, the softmax taken a few rows at a time.

The plain path (`F.cross_entropy(head(h).float(), ...)`) materialises the vocabulary-wide logits three more
times for the whole batch: in fp32, as fp32 log-probabilities, and as their fp32 gradient, each a fresh buffer.
Here the logits are made once in the matmul dtype; every ROWS rows are taken to fp32 (a buffer that stays in
cache), scored, and overwritten in place by their gradient (softmax - one-hot). The backward pass is then the
two matmuls the plain path runs, scaled by the incoming gradient afterwards (the product is linear in it).
"""
from __future__ import annotations

import torch
import torch.nn as nn

ROWS = 32  # 32 x 50,257 fp32 logits: 6.4 MB at a time


def _compute_dtype(h: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    kind = h.device.type
    if torch.is_autocast_enabled(kind):
        return torch.get_autocast_dtype(kind)
    return weight.dtype


class _HeadLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, bias, targets, dtype, keep_grad):
        kind = h.device.type
        with torch.autocast(kind, enabled=False):
            hc, wc = h.to(dtype), weight.to(dtype)
            logits = hc @ wc.t()
            if bias is not None:
                logits += bias.to(dtype)
            total = torch.zeros((), dtype=torch.float32, device=h.device)
            for start in range(0, logits.shape[0], ROWS):
                z = logits[start:start + ROWS].float()
                t = targets[start:start + ROWS]
                lse = torch.logsumexp(z, dim=1)
                rows = torch.arange(len(t), device=h.device)
                total += (lse - z[rows, t]).sum()
                if keep_grad:
                    z.sub_(lse[:, None]).exp_()
                    z[rows, t] -= 1.0
                    logits[start:start + ROWS] = z
        if keep_grad:
            ctx.save_for_backward(hc, wc, logits)
            ctx.has_bias = bias is not None
            ctx.dtypes = (h.dtype, weight.dtype, bias.dtype if bias is not None else None)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        hc, wc, dlogits = ctx.saved_tensors
        h_dtype, w_dtype, b_dtype = ctx.dtypes
        scale = grad_total.float()
        with torch.autocast(hc.device.type, enabled=False):
            dh = dw = db = None
            if ctx.needs_input_grad[0]:
                dh = (dlogits @ wc).to(h_dtype).mul_(scale)
            if ctx.needs_input_grad[1]:
                dw = (dlogits.t() @ hc).to(w_dtype).mul_(scale)
            if ctx.has_bias and ctx.needs_input_grad[2]:
                db = dlogits.float().sum(0).to(b_dtype).mul_(scale)
        return dh, dw, db, None, None, None


def fused_head_loss(head: nn.Module, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum over rows of -log softmax(head(h))[target]; h (rows, width), targets (rows,) all real targets."""
    weight, bias = head.weight, head.bias
    keep_grad = torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad
                                             or (bias is not None and bias.requires_grad))
    return _HeadLoss.apply(h, weight, bias, targets, _compute_dtype(h, weight), keep_grad)


def fuses(head: nn.Module) -> bool:
    """Plain linear heads only (it reads their weight and bias): any other module, adapters included, keeps its
    own forward."""
    return type(head) is nn.Linear
