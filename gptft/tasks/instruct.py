"""Instruction tuning: next-token loss on the response tokens, with the LM head."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchmetrics import SumMetric

from .base import FinetuneTask, exact_sum, split_prefix
from .finetune import head_trains, replace_head
from .head_loss import fused_head_loss, fuses

IGNORE = -100


def untie_head(backbone: nn.Module) -> None:
    """Give the head its own weight so it can train while the input embedding stays frozen."""
    head = backbone.head
    if head.weight is backbone.embedding.weight:
        new = nn.Linear(head.in_features, head.out_features, bias=head.bias is not None)
        with torch.no_grad():
            new.weight.copy_(head.weight)
            if head.bias is not None:
                new.bias.copy_(head.bias)
        replace_head(backbone, new)


def target_loss(backbone: nn.Module, h: torch.Tensor, targets: torch.Tensor, targets_only: bool = True):
    """(sum of token losses, number of target tokens).

    targets_only runs the vocabulary-sized head only where a target exists, fused with the loss (head_loss.py);
    the result is the same.
    """
    if targets_only:
        keep = targets != IGNORE
        if fuses(backbone.head):
            return fused_head_loss(backbone.head, h[keep], targets[keep]), int(keep.sum())
        logits = backbone.head(h[keep])
        total = F.cross_entropy(logits.float(), targets[keep], reduction="sum")
        return total, int(keep.sum())
    logits = backbone.head(h)
    total = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE, reduction="sum")
    return total, int((targets != IGNORE).sum())


class InstructTask(FinetuneTask):
    """data: prompt_style, sample_prompts (answered in TensorBoard at every validation, up to
    `sample_tokens` new tokens each). targets_only: run the LM head only where a target exists."""

    def __init__(self, backbone: nn.Module, *, targets_only: bool, sample_tokens: int, **common):
        super().__init__(backbone, **common)
        if self.finetune["mode"] != "full" and head_trains(self.finetune):
            untie_head(backbone)  # tied head would train the frozen embedding too
        self.freeze_body()
        self.targets_only = targets_only
        self.sample_prompts = list(self.task_data.sample_prompts)
        self.sample_tokens = sample_tokens
        self.sums = nn.ModuleDict({f"{s}_{k}": exact_sum(SumMetric()) for s in ("train", "val", "test") for k in ("loss", "n")})

    def _loss(self, batch):
        h = self.hidden_states(batch)
        total, n = target_loss(self.backbone, h, batch["targets"], self.targets_only)
        return total, n

    def training_step(self, batch, batch_idx):
        total, n = self._loss(batch)
        loss = total / max(1, n)  # an all-masked batch gives 0, not NaN
        # weighted by target tokens, so the epoch value compares with val/loss
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=max(1, n), sync_dist=True)
        return loss

    def _eval_step(self, batch, split: str):
        total, n = self._loss(batch)
        self.sums[f"{split}_loss"].update(total.detach())
        self.sums[f"{split}_n"].update(torch.tensor(float(n)))

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val")

    def test_step(self, batch, batch_idx, dataloader_idx: int = 0):
        self._eval_step(batch, self.test_splits[dataloader_idx])

    def _close(self, split: str, prefix: str) -> None:
        total, n = self.sums[f"{split}_loss"].compute(), self.sums[f"{split}_n"].compute()
        self.sums[f"{split}_loss"].reset()
        self.sums[f"{split}_n"].reset()
        if float(n) == 0:
            return
        loss = float(total) / float(n)
        ppl = math.exp(min(loss, 50.0))
        self.log(f"{prefix}/loss", loss, prog_bar=prefix == "val", sync_dist=True)  # the same on every rank
        self.log(f"{prefix}/ppl", ppl, sync_dist=True)
        self.final[split] = {"loss": loss, "ppl": ppl, "tokens": int(n)}

    def on_validation_epoch_end(self) -> None:
        self._close("val", "val")
        if not self.trainer.sanity_checking:
            self._log_samples()

    def on_test_epoch_end(self) -> None:
        for split in self.test_splits:
            self._close(split, split_prefix(split))

    def _log_samples(self) -> None:
        """Responses to a few fixed validation prompts, as TensorBoard text."""
        from ..models.generation import generate

        if not self.sample_prompts:
            return
        lines = []
        for prompt, ids in self.sample_prompts:
            out = generate(self.backbone, list(ids), self.sample_tokens, eos_id=self.tokenizer.eot_id)
            lines.append(f"**prompt**\n\n```\n{prompt}\n```\n\n**response**\n\n```\n{self.tokenizer.decode(out)}\n```")
        self.text_to_tensorboard("val/samples", "\n\n---\n\n".join(lines))
