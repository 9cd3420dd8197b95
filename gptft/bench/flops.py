"""Analytic matmul FLOPs of a fine-tuning step, and the machine's measured matmul peak.

An estimate, not a profile: only matrix products count (2 FLOPs per multiply-add); layer
norms, GELU, softmax, the optimizer and the embedding lookup are left out. Per block and
token, forward = 2 * (weights of its Linear layers) + 4 * width * d for attention (QK^T and
AV over every key of the padded row, which is what a dense kernel computes); a classifier's top block
computes one position per row (keys and values still over the row). Backward is 2x
forward (input grads + weight grads) for the blocks at and above the first trainable one
and for the head; the frozen prefix gets no backward when nothing below it trains, since
autograd then stops at the first trainable block.
"""
from __future__ import annotations

import time

import torch
import torch.nn as nn

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def matmul_peak(dtype: str, n: int = 2048, reps: int = 5) -> float:
    """Best FLOP/s of an n x n x n torch.mm in `dtype` ("fp32" | "bf16") over `reps` runs."""
    a = torch.randn(n, n, dtype=DTYPES[dtype])
    b = torch.randn(n, n, dtype=DTYPES[dtype])
    for _ in range(2):  # warm-up: thread pool, oneDNN kernel selection
        torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def linear_weights(module: nn.Module) -> int:
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, nn.Linear))


class StepFlops:
    """FLOPs of one training step of a FinetuneTask, from the batch's shapes."""

    def __init__(self, backbone: nn.Module, boundary: int):
        self.boundary = boundary
        self.block_w = [linear_weights(b) for b in backbone.blocks]
        top = backbone.blocks[-1]  # its projections that see every position even when one row is read
        self.kv_w = sum(share * linear_weights(top.get_submodule(name))
                        for name, share in backbone.every_position_linears.items())
        self.d_attn = backbone.config.n_embd
        self.head_w = linear_weights(backbone.head)
        # below the boundary only the (frozen) embedding can train; full mode trains it
        self.prefix_backward = boundary == 0 or any(p.requires_grad for p in backbone.embedding.parameters())

    def blocks(self, start: int, stop: int, rows: int, width: int) -> float:
        tokens = rows * width
        return sum(2 * w * tokens + 4 * width * self.d_attn * tokens for w in self.block_w[start:stop])

    def step(self, rows: int, width: int, prefix_rows: int, prefix_width: int, head_positions: int,
             pooled: bool = False) -> float:
        """rows x width: the batch as the trainable blocks see it; prefix_rows x prefix_width: the rows
        whose frozen prefix is computed this step (0 when all are cached); head_positions: rows the
        head runs on (one per example for a classifier, the target positions for an LM); pooled: the top
        block computes one position per row (a classifier): keys and values over the row, the rest once."""
        prefix = self.blocks(0, self.boundary, prefix_rows, prefix_width)
        n = len(self.block_w)
        if pooled and self.boundary < n:
            kv, rest = self.kv_w, self.block_w[-1] - self.kv_w
            last = 2 * kv * rows * width + 2 * rest * rows + 4 * width * self.d_attn * rows
            top = self.blocks(self.boundary, n - 1, rows, width) + last
        else:
            top = self.blocks(self.boundary, n, rows, width)
        head = 2 * self.head_w * head_positions
        return prefix * (3 if self.prefix_backward else 1) + 3 * (top + head)
