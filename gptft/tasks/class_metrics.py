"""A classifier's scores on one split from its logits: ranking (AUROC, PR-AUC), calibration (ECE) and the
decisions (accuracy, precision and recall of each class) by argmax or by a threshold on the positive class."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import (binary_auroc, binary_average_precision, multiclass_auroc,
                                                    multiclass_average_precision, multiclass_calibration_error,
                                                    multiclass_confusion_matrix, multiclass_precision,
                                                    multiclass_recall)

ECE_BINS = 15


def probabilities(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    return (logits.float() / temperature).softmax(-1)


def decide(probs: torch.Tensor, positive_index: int | None, threshold: float | None) -> torch.Tensor:
    """Argmax, or with a threshold (two classes): the positive class where its probability >= threshold."""
    if threshold is None:
        return probs.argmax(-1)
    return torch.where(probs[:, positive_index] >= threshold, positive_index, 1 - positive_index)


def ece(probs: torch.Tensor, targets: torch.Tensor) -> float:
    """Top-label expected calibration error: 15 equal-width confidence bins, |accuracy - confidence| weighted by
    each bin's share of the rows."""
    return float(multiclass_calibration_error(probs, targets, probs.shape[1], n_bins=ECE_BINS, norm="l1"))


def ranking(probs: torch.Tensor, targets: torch.Tensor, positive_index: int | None) -> dict:
    """auroc, pr_auc (average precision): of the positive class with two classes, else macro one-vs-rest."""
    n = probs.shape[1]
    if positive_index is not None and n == 2:
        score, positive = probs[:, positive_index], (targets == positive_index).long()
        auroc, ap = binary_auroc(score, positive), binary_average_precision(score, positive)
    else:
        auroc = multiclass_auroc(probs, targets, n, average="macro")
        ap = multiclass_average_precision(probs, targets, n, average="macro")
    return {"auroc": float(auroc), "pr_auc": float(ap)}


def decisions(preds: torch.Tensor, targets: torch.Tensor, names: Sequence[str], suffix: str = "") -> dict:
    """acc, precision_<class>, recall_<class> (0 where nothing is predicted / present) and the confusion
    matrix (rows: true, columns: predicted), each key + suffix."""
    n = len(names)
    out = {f"acc{suffix}": float((preds == targets).float().mean())}
    precision = multiclass_precision(preds, targets, n, average="none")
    recall = multiclass_recall(preds, targets, n, average="none")
    for name, p, r in zip(names, precision.tolist(), recall.tolist()):
        out[f"precision_{name}{suffix}"], out[f"recall_{name}{suffix}"] = p, r
    out[f"confusion{suffix}"] = multiclass_confusion_matrix(preds, targets, n).tolist()
    return out


def split_scores(logits: torch.Tensor, targets: torch.Tensor, names: Sequence[str], positive_index: int | None,
                 calibration: dict | None) -> dict:
    """Ranking and per-class decisions of the raw model; with a calibration (temperature, threshold) also the
    calibrated loss and ECE and, with a threshold, the decisions at it (keys ending _at_threshold)."""
    probs = probabilities(logits)
    out = {**ranking(probs, targets, positive_index), "ece": ece(probs, targets),
           **decisions(probs.argmax(-1), targets, names)}
    del out["acc"], out["confusion"]  # the task's own accuracy and confusion matrix report these
    if calibration:
        t = calibration["temperature"]
        out["loss_calibrated"] = float(F.cross_entropy(logits.float() / t, targets))
        out["ece_calibrated"] = ece(probabilities(logits, t), targets)
        if calibration["threshold"] is not None:
            preds = decide(probabilities(logits, t), positive_index, calibration["threshold"])
            out.update(decisions(preds, targets, names, "_at_threshold"))
    return out
