"""Sequence classification: a backbone whose LM head becomes Linear(d, num_classes)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import logging
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchmetrics import CatMetric, MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from ..data.handoff import TaskData
from ..errors import CheckpointError, ConfigError
from . import calibration as fit
from .base import FinetuneTask, exact_sum, split_prefix
from .class_metrics import split_scores
from .finetune import head_trains, replace_head

log = logging.getLogger(__name__)
POOLINGS = ("last_token", "last")
SPLITS = ("train", "val", "test")
TEXT_CONFUSION_MAX_CLASSES = 20  # wider confusion matrices stay out of TensorBoard text (metrics.json has them)


def pooled_positions(input_ids: torch.Tensor, lengths: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B,) the position each row is classified at: its last real token (default), or -1 as the book does."""
    if pooling == "last_token":
        return lengths - 1
    return torch.full_like(lengths, input_ids.shape[1] - 1)


def confusion_markdown(cm: list[list[int]], names: Sequence[str]) -> str:
    """Rows: true label; columns: predicted."""
    lines = ["| true \\ predicted | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += [f"| {n} | " + " | ".join(str(v) for v in row) + " |" for n, row in zip(names, cm)]
    return "\n".join(lines)


def checked_calibration(calibration):
    """A checkpoint's stored calibration, if it is what gptft writes: T > 0 and a threshold in [0, 1] or None."""
    if calibration is None:
        return None
    number = lambda x: isinstance(x, (int, float)) and not isinstance(x, bool) and x == x
    if not (isinstance(calibration, dict) and number(calibration.get("temperature")) and calibration["temperature"] > 0
            and (calibration.get("threshold") is None or (number(calibration["threshold"]) and
                                                          0 <= calibration["threshold"] <= 1))):
        raise CheckpointError(f"the checkpoint's calibration {calibration!r} is not a positive temperature and a "
                              f"threshold in [0, 1] or null; it is damaged or not from gptft")
    return calibration


class ClassifierTask(FinetuneTask):
    """data: label_names (one output per class), positive_index, pad_width, class_weights (of the training loss).
    pooling: which position's state is classified (see `pool`). head_bias: whether the head has a bias
    (task.head_bias). temperature / threshold_precision: what is fitted on the val split when the splits are
    scored after training (see `calibrate`). The defaults are those of checkpoints written before each option
    existed."""

    resume_args = ("pooling", "head_bias")

    def __init__(self, backbone: nn.Module, *, data: TaskData, pooling: str, head_bias: bool = True,
                 temperature: bool = False, threshold_precision: float | None = None, **common):
        if pooling not in POOLINGS:
            raise ConfigError(f"unknown pooling={pooling!r}; choose one of {', '.join(POOLINGS)}")
        if threshold_precision is not None and not (isinstance(threshold_precision, (int, float)) and
                                                    not isinstance(threshold_precision, bool) and
                                                    0 < threshold_precision <= 1 and len(data.label_names or ()) == 2):
            raise ConfigError(f"threshold.precision={threshold_precision!r}: give a precision in (0, 1] for the "
                              f"positive class of a two-class task, or null")
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
        self.losses = nn.ModuleDict({f"{s}_": exact_sum(MeanMetric()) for s in SPLITS})
        # each row's logits and label, gathered across processes, for the ranking and calibration scores
        self.outputs = nn.ModuleDict({f"{s}_": CatMetric(nan_strategy="disable") for s in SPLITS})
        weights = None if data.class_weights is None else torch.tensor(data.class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", weights, persistent=False)
        self.temperature, self.threshold_precision = temperature, threshold_precision
        self.calibration: dict | None = checked_calibration(self.meta.get("calibration"))  # stored after training
        self.calibrated_now = False
        self.history: list[dict] = []        # per epoch: train and val loss/acc (the curves in plots/)
        self.scored: dict[str, tuple] = {}   # split -> (logits, labels) of the final scoring (the other plots)

    def cache_blocker(self) -> str | None:
        if self.pooling == "last":
            return "pooling=last reads a padding position, whose states depend on the batch"
        return None

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Class logits (B, C), computed at the pooled positions only from the top block up."""
        at = pooled_positions(batch["input_ids"], batch["lengths"], self.pooling)
        return self.backbone.head(self.hidden_states(batch, at)[:, 0])

    def _step(self, batch, split: str, log_name: str):
        logits = self(batch)
        weight = self.class_weights if log_name == "train" else None  # balance=weighted or train_on_dropped: training only
        loss = F.cross_entropy(logits.float(), batch["labels"], weight=weight)
        preds = logits.argmax(-1)
        key = split + "_"
        self.outputs[key].update(torch.cat([logits.detach().float(), batch["labels"][:, None].float()], 1))
        self.metrics[key].update(preds, batch["labels"])
        self.confusion[key].update(preds, batch["labels"])
        self.losses[key].update(loss.detach(), weight=len(preds))
        if log_name == "train":
            self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(preds), sync_dist=True)
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
            logits, labels = self._outputs(split)
            result.update(split_scores(logits, labels, self.label_names, self.positive_index, self.calibration))
            for name, value in result.items():  # train/loss: from the steps
                if not isinstance(value, list) and name != "n" and (prefix, name) != ("train", "loss"):
                    # the scores are already gathered over the ranks (torchmetrics): every rank logs the same value
                    self.log(f"{prefix}/{name}", value, prog_bar=prefix == "val" and name == "acc",
                             add_dataloader_idx=False, sync_dist=True)
            if self.trainer.state.fn == "fit" and not self.trainer.sanity_checking:
                self.history.append({"epoch": self.current_epoch, "split": split, "acc": result["acc"],
                                     "loss": result["loss"]})
            elif self.trainer.state.fn == "test":
                self.scored[split] = (logits, labels)
            if prefix != "train" and len(self.label_names) <= TEXT_CONFUSION_MAX_CLASSES:
                self.text_to_tensorboard(f"{prefix}/confusion", confusion_markdown(result["confusion"], self.label_names))
            self.final[split] = result
        for metrics in (self.metrics, self.confusion, self.losses, self.outputs):
            metrics[key].reset()

    def _outputs(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.outputs[split + "_"].compute().reshape(-1, len(self.label_names) + 1).cpu()
        # one canonical order (by each logit, then the label), so the float sums below do not depend on how the ranks
        # gathered the rows
        for col in range(rows.shape[1] - 1, -1, -1):
            rows = rows[rows[:, col].argsort(stable=True)]
        return rows[:, :-1], rows[:, -1].long()

    def calibrate(self) -> None:
        """After training, on the scored checkpoint's val logits: the temperature (if asked) and the smallest
        threshold whose val precision of the positive class reaches threshold_precision (if set)."""
        logits, labels = self._outputs("val")
        t = fit.fit_temperature(logits, labels) if self.temperature else 1.0
        self.calibration = {"temperature": t, "threshold": None, "fitted_on": "val"}
        if self.temperature and fit.separates(logits, labels):
            self.calibration["temperature_fitted"] = False
            log.warning("every val message is classified correctly, so no temperature fits (the val loss falls "
                        "without end as T -> 0); keeping T = 1: raw probabilities")
        if self.threshold_precision is not None:
            scores = (logits.float() / t).softmax(-1)[:, self.positive_index]
            threshold, precision, met = fit.choose_threshold(scores, labels == self.positive_index,
                                                             self.threshold_precision)
            self.calibration.update(threshold=threshold, threshold_precision_target=self.threshold_precision,
                                    threshold_val_precision=precision, threshold_met=met)
            if not met:
                log.warning("no threshold reaches val precision %.4f for %s; using %.4f, the smallest with the "
                            "highest val precision (%.4f)", self.threshold_precision,
                            self.label_names[self.positive_index], threshold, precision)
        self.calibrated_now = True

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        self._close("train", "train")

    def on_validation_epoch_end(self) -> None:
        self._close("val", "val")

    def after_test(self, run_dir, scored_ckpt: str | None) -> dict:
        """Store this run's calibration in the scored checkpoint (best.ckpt by default); write plots/."""
        from ..checkpoint_io import add_to_metadata
        from ..plots import classifier_figures, plots_available, save_figures

        out = {}
        if self.calibration is not None:
            out["calibration"] = self.calibration
            if self.calibrated_now and scored_ckpt and self.trainer.is_global_zero:
                add_to_metadata(scored_ckpt, "calibration", self.calibration)
        if self.trainer.is_global_zero and not plots_available():
            log.info("plots/ not drawn: matplotlib is not installed (pip install -e '.[plots]')")
        elif self.trainer.is_global_zero:
            figs = classifier_figures(self.history, self.scored, self.label_names, self.positive_index,
                                      self.calibration)
            out["plots"] = save_figures(figs, Path(run_dir) / "plots", self.trainer.loggers, self.global_step)
        return out

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self.scored = {}

    def on_test_epoch_end(self) -> None:
        wanted = self.temperature or self.threshold_precision is not None
        if wanted and self.calibration is None and "val" in self.test_splits:
            self.calibrate()
        for split in self.test_splits:
            self._close(split, split_prefix(split))
