"""What every backbone offers the tasks, written once.

A backbone provides `blocks`, `final_norm` and `embedding`, its LM head as the direct child
`lm_head`, `lora_groups` (the LoRA target groups `attention` and `mlp` -> the block submodule each
names), and:
  embed(idx, pos_offset)                        token ids -> input hidden states
  run_blocks(x, start, stop, kv_caches, pos_offset, at)   a slice of the block stack (at: (B,) positions, one per
                                                row: the slice's last block computes only those rows, (B, 1, d))
This base adds `head` (swapped by the tasks with `replace_head`), `context_length`,
`new_kv_caches()` for `generation.generate`, and `forward(idx, kv_caches, pos_offset) -> logits`.
The weight loaders set `weights_source`, which small checkpoints refer to (gptft/models/reference.py).
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from .kv_cache import KVCache
from ..errors import GptftError


class Backbone(nn.Module):
    arch = "base"
    lora_groups: dict[str, str] = {}
    every_position_linears: dict[str, float] = {}  # block projection -> the share of its outputs computed at every
                                                   # position also with `at` (the bench's FLOP count)
    weights_source: str | None = None  # the file or folder pretrained weights were read from; None: random init
    activation_checkpointing = False   # finetune.activation_checkpointing: recompute blocks in the backward pass

    @property
    def head(self) -> nn.Module:
        return self.lm_head

    def __setattr__(self, name: str, value) -> None:
        # nn.Module.__setattr__ would register a new child "head" beside lm_head, silently unused
        super().__setattr__("lm_head" if name == "head" else name, value)

    @property
    def context_length(self) -> int:
        return self.config.context_length

    def check_length(self, pos_offset: int, t: int) -> None:
        if pos_offset + t > self.context_length:
            raise GptftError(f"sequence of {pos_offset + t} tokens exceeds the context length "
                             f"{self.context_length}; truncate the input")

    def call_block(self, block: nn.Module, *args, cache: KVCache | None = None,
                   at: torch.Tensor | None = None) -> torch.Tensor:
        """One block; with activation checkpointing on and gradients wanted, its activations are not kept but
        recomputed in the backward pass (same gradients, about a third more compute, memory of one block)."""
        if cache is None and self.activation_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, *args, None, at, use_reentrant=False)
        return block(*args, cache, at)

    def new_kv_caches(self) -> list[KVCache]:
        return [KVCache() for _ in self.blocks]

    def forward(self, idx: torch.Tensor, kv_caches: list[KVCache] | None = None, pos_offset: int = 0) -> torch.Tensor:
        x = self.run_blocks(self.embed(idx, pos_offset), kv_caches=kv_caches, pos_offset=pos_offset)
        return self.head(self.final_norm(x))
