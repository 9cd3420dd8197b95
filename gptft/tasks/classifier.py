"""Sequence classification: a backbone whose LM head becomes Linear(d, num_classes)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from .base import FinetuneTask
from .finetune import replace_head

POOLINGS = ("last_token", "last")


def pool(h: torch.Tensor, lengths: torch.Tensor, pooling: str) -> torch.Tensor:
    """One vector per row: the last real token (default), or position -1 as the book does."""
    if pooling == "last_token":
        return h[torch.arange(h.shape[0], device=h.device), lengths - 1]
    if pooling == "last":
        return h[:, -1]
    raise ValueError(f"unknown pooling={pooling!r}; choose one of {', '.join(POOLINGS)}")


def _metrics(num_classes: int) -> MetricCollection:
    # binary: F1 of the positive (second) class, e.g. spam; otherwise macro F1
    f1 = MulticlassF1Score(num_classes, average="none" if num_classes == 2 else "macro")
    return MetricCollection({"acc": MulticlassAccuracy(num_classes, average="micro"), "f1": f1})


SPLITS = ("train", "val", "test")


class ClassifierTask(FinetuneTask):
    task_name = "spam"

    def __init__(
        self,
        backbone: nn.Module,
        *,
        label_names: Sequence[str],
        pooling: str = "last_token",
        meta: Mapping,
        finetune: Mapping,
        optimizer: Mapping,
    ):
        super().__init__(backbone, meta={**meta, "label_names": list(label_names), "pooling": pooling},
                         finetune=finetune, optimizer=optimizer)
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling={pooling!r}; choose one of {', '.join(POOLINGS)}")
        self.pooling = pooling
        self.label_names = list(label_names)
        n = len(label_names)
        replace_head(backbone, nn.Linear(backbone.config.n_embd, n))
        self.freeze_body()
        # ModuleDict keys cannot be "train" (a Module method), hence the suffix
        self.metrics = nn.ModuleDict({f"{s}_": _metrics(n) for s in SPLITS})
        self.confusion = nn.ModuleDict({f"{s}_": MulticlassConfusionMatrix(n) for s in SPLITS})
        self.losses = nn.ModuleDict({f"{s}_": MeanMetric() for s in SPLITS})
        self.final: dict[str, dict] = {}

    def cache_blocker(self) -> str | None:
        if self.pooling == "last":
            return "pooling=last reads a padding position, whose states depend on the batch"
        return None

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Class logits (B, C)."""
        h = self.hidden_states(batch)
        return self.backbone.head(pool(h, batch["lengths"], self.pooling))

    def _step(self, batch, split: str, prefix: str):
        logits = self(batch)
        loss = F.cross_entropy(logits.float(), batch["labels"])
        preds = logits.argmax(-1)
        self.metrics[split + '_'].update(preds, batch["labels"])
        self.confusion[split + '_'].update(preds, batch["labels"])
        self.losses[split + '_'].update(loss.detach(), weight=len(preds))
        on_step = split == "train" and prefix == split
        self.log(f"{prefix}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=on_step,
                 batch_size=len(preds), add_dataloader_idx=False)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train", "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val", "val")

    def test_step(self, batch, batch_idx, dataloader_idx: int = 0):
        split = self.test_splits[dataloader_idx]
        self._step(batch, split, "final_" + split if split != "test" else "test")

    # test runs over every split given to it; `test_splits` names them in order
    test_splits: Sequence[str] = ("test",)

    def _epoch_end(self, splits: Sequence[str], prefix_of) -> None:
        for split in splits:
            vals = self.metrics[split + '_'].compute()
            cm = self.confusion[split + '_'].compute()
            if not int(cm.sum()):
                continue
            prefix = prefix_of(split)
            for name, v in vals.items():
                v = v[-1] if v.ndim else v  # binary F1: the positive class
                self.log(f"{prefix}/{name}", v, prog_bar=prefix == "val", add_dataloader_idx=False)
            self.final[split] = {
                "acc": float(vals["acc"]),
                "f1": float(vals["f1"][-1] if vals["f1"].ndim else vals["f1"]),
                "confusion": cm.tolist(),
                "loss": float(self.losses[split + '_'].compute()),
                "n": int(cm.sum()),
            }
            self.losses[split + '_'].reset()
            self.metrics[split + '_'].reset()
            self.confusion[split + '_'].reset()

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        self._epoch_end(["train"], lambda s: s)

    def on_validation_epoch_end(self) -> None:
        self._epoch_end(["val"], lambda s: s)

    def on_test_epoch_start(self) -> None:
        self.final = {}

    def on_test_epoch_end(self) -> None:
        self._epoch_end(self.test_splits, lambda s: "test" if s == "test" else "final_" + s)
