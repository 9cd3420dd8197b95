"""Sequence classification: a backbone whose LM head becomes Linear(d, num_classes)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from ..data.handoff import TaskData
from ..errors import ConfigError
from .base import FinetuneTask, split_prefix
from .finetune import head_trains, replace_head

POOLINGS = ("last_token", "last")
SPLITS = ("train", "val", "test")
TEXT_CONFUSION_MAX_CLASSES = 20  # wider confusion matrices stay out of TensorBoard text (metrics.json has them)


def pool(h: torch.Tensor, lengths: torch.Tensor, pooling: str) -> torch.Tensor:
    """One vector per row: the last real token (default), or position -1 as the book does."""
    if pooling == "last_token":
        return h[torch.arange(h.shape[0], device=h.device), lengths - 1]
    return h[:, -1]


def confusion_markdown(cm: list[list[int]], names: Sequence[str]) -> str:
    """Rows: true label; columns: predicted."""
    lines = ["| true \\ predicted | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += [f"| {n} | " + " | ".join(str(v) for v in row) + " |" for n, row in zip(names, cm)]
    return "\n".join(lines)


class ClassifierTask(FinetuneTask):
    """data: label_names (one output per class), positive_index, pad_width. pooling: which position's
    state is classified (see `pool`). head_bias: whether the head has a bias (task.head_bias; checkpoints
    written before that option existed have one, hence the default here)."""

    resume_args = ("pooling", "head_bias")

    def __init__(self, backbone: nn.Module, *, data: TaskData, pooling: str, head_bias: bool = True, **common):
        if pooling not in POOLINGS:
            raise ConfigError(f"unknown pooling={pooling!r}; choose one of {', '.join(POOLINGS)}")
        if not data.label_names:
            raise ConfigError("a classification task needs label names from its data module")
        n = len(data.label_names)
        super().__init__(backbone, data=data, **common)
        # binary: F1 of the positive class (spam, or data.positive_label); otherwise macro F1
        self.positive_index = (1 if data.positive_index is None else data.positive_index) if n == 2 else None
        self.pooling, self.head_bias = pooling, bool(head_bias)
        self.label_names = list(data.label_names)
        if not head_trains(self.finetune):
            raise ConfigError("lora.train_head=false would leave the classifier's new head at its random start; "
                              "a classifier trains its head (lora.train_head=true)")
        replace_head(backbone, nn.Linear(backbone.config.n_embd, n, bias=self.head_bias))
        self.freeze_body()
        f1 = lambda: MulticlassF1Score(n, average="none" if n == 2 else "macro")
        # ModuleDict keys cannot be "train" (a Module method), hence the suffix
        self.metrics = nn.ModuleDict({f"{s}_": MetricCollection({"acc": MulticlassAccuracy(n, average="micro"),
                                                                 "f1": f1()}) for s in SPLITS})
        self.confusion = nn.ModuleDict({f"{s}_": MulticlassConfusionMatrix(n) for s in SPLITS})
        self.losses = nn.ModuleDict({f"{s}_": MeanMetric() for s in SPLITS})

    def cache_blocker(self) -> str | None:
        if self.pooling == "last":
            return "pooling=last reads a padding position, whose states depend on the batch"
        return None

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Class logits (B, C)."""
        h = self.hidden_states(batch)
        return self.backbone.head(pool(h, batch["lengths"], self.pooling))

    def _step(self, batch, split: str, log_name: str):
        logits = self(batch)
        loss = F.cross_entropy(logits.float(), batch["labels"])
        preds = logits.argmax(-1)
        key = split + "_"
        self.metrics[key].update(preds, batch["labels"])
        self.confusion[key].update(preds, batch["labels"])
        self.losses[key].update(loss.detach(), weight=len(preds))
        if log_name == "train":
            self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(preds))
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train", "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val", "val")

    def test_step(self, batch, batch_idx, dataloader_idx: int = 0):
        split = self.test_splits[dataloader_idx]
        self._step(batch, split, split_prefix(split))

    def _close(self, split: str, prefix: str) -> None:
        """Log and keep the split's epoch metrics, then reset them."""
        key = split + "_"
        cm = self.confusion[key].compute()
        if int(cm.sum()):
            vals = self.metrics[key].compute()
            f1 = vals["f1"][self.positive_index] if vals["f1"].ndim else vals["f1"]
            result = {"acc": float(vals["acc"]), "f1": float(f1), "loss": float(self.losses[key].compute()),
                      "confusion": cm.tolist(), "n": int(cm.sum())}
            for name in ("acc", "f1") if prefix == "train" else ("acc", "f1", "loss"):  # train/loss: from the steps
                self.log(f"{prefix}/{name}", result[name], prog_bar=prefix == "val" and name == "acc",
                         add_dataloader_idx=False)
            if prefix != "train" and len(self.label_names) <= TEXT_CONFUSION_MAX_CLASSES:
                self.text_to_tensorboard(f"{prefix}/confusion", confusion_markdown(result["confusion"], self.label_names))
            self.final[split] = result
        for metrics in (self.metrics, self.confusion, self.losses):
            metrics[key].reset()

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        self._close("train", "train")

    def on_validation_epoch_end(self) -> None:
        self._close("val", "val")

    def on_test_epoch_end(self) -> None:
        for split in self.test_splits:
            self._close(split, split_prefix(split))
