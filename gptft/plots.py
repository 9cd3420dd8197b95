"""A classifier run's figures: curves, confusion matrix, ROC, precision-recall, reliability. PNG files in the
run's plots/ folder (written atomically) and the same images in TensorBoard.

matplotlib is imported only in the functions that draw; figures are drawn on Agg canvases directly (no pyplot:
no global backend, no window, no state)."""
from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .atomic import write_atomic
from torchmetrics.functional.classification import multiclass_confusion_matrix

from .tasks.class_metrics import ECE_BINS, decide, probabilities


def plots_available() -> bool:
    """matplotlib is an optional extra (gptft[plots]); without it a run draws nothing and says so."""
    return importlib.util.find_spec("matplotlib") is not None


def _figure(width: float = 5.0, height: float = 4.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def curves(history: list[dict]):
    fig = _figure(9, 3.6)
    for ax, key in zip(fig.subplots(1, 2), ("loss", "acc")):
        for split in ("train", "val"):
            rows = [h for h in history if h["split"] == split]
            ax.plot([h["epoch"] + 1 for h in rows], [h[key] for h in rows], marker="o", label=split)
        ax.set(xlabel="epoch", ylabel=key, title=f"{key} per epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend()
    return fig


def confusion(matrices: dict[str, list[list[int]]], names: Sequence[str]):
    """title -> matrix (rows: true, columns: predicted), side by side."""
    fig = _figure(4.5 * len(matrices), 4)
    for ax, (title, cm) in zip(np.atleast_1d(fig.subplots(1, len(matrices))), matrices.items()):
        m = np.array(cm)
        ax.imshow(m, cmap="Blues", vmin=0)
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, str(v), ha="center", va="center", color="white" if v > m.max() / 2 else "black")
        ax.set(xticks=range(len(names)), yticks=range(len(names)), xticklabels=names, yticklabels=names,
               xlabel="predicted", ylabel="true", title=title)
    return fig


def roc_and_pr(score: torch.Tensor, positive: torch.Tensor, name: str, split: str):
    from torchmetrics.functional.classification import binary_precision_recall_curve, binary_roc

    fig = _figure(9, 3.8)
    roc_ax, pr_ax = fig.subplots(1, 2)
    fpr, tpr, _ = binary_roc(score, positive)
    roc_ax.plot(fpr, tpr)
    roc_ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC ({name}, {split})")
    precision, recall, _ = binary_precision_recall_curve(score, positive)
    pr_ax.plot(recall, precision)
    pr_ax.set(xlabel="recall", ylabel="precision", title=f"precision-recall ({name}, {split})", ylim=(0, 1.02))
    return fig


def reliability(logits: torch.Tensor, labels: torch.Tensor, temperature: float, split: str):
    """Accuracy against mean confidence of the top label, per equal-width bin (ECE's bins), before and after
    temperature scaling."""
    fig = _figure(4.8, 4.2)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfect")
    edges = torch.linspace(0, 1, ECE_BINS + 1)
    for t, name in ((1.0, "raw"), *(((temperature, f"T = {temperature:.2f}"),) if temperature != 1.0 else ())):
        conf, pred = probabilities(logits, t).max(-1)
        right = (pred == labels).float()
        bins = torch.bucketize(conf, edges[1:-1], right=True)
        used = [b for b in range(ECE_BINS) if (bins == b).any()]
        ax.plot([float(conf[bins == b].mean()) for b in used], [float(right[bins == b].mean()) for b in used],
                marker="o", label=name)
    ax.set(xlabel="confidence (top label)", ylabel="accuracy", title=f"reliability ({split})", xlim=(0, 1),
           ylim=(0, 1.02))
    ax.legend()
    return fig


def classifier_figures(history, scored: dict, names: Sequence[str], positive_index: int | None,
                       calibration: dict | None) -> dict:
    """name -> figure. scored: split -> (logits, labels) of the final scoring; the test split's are drawn
    (else the last scored split's)."""
    figs = {}
    if history:
        figs["curves"] = curves(history)
    if scored:
        split = "test" if "test" in scored else list(scored)[-1]
        logits, labels = scored[split]
        calibration = calibration or {"temperature": 1.0, "threshold": None}
        t, threshold = calibration["temperature"], calibration["threshold"]
        cm = lambda preds: multiclass_confusion_matrix(preds, labels, len(names)).tolist()
        matrices = {f"{split}, argmax": cm(logits.argmax(-1))}
        if threshold is not None:
            matrices[f"{split}, p({names[positive_index]}) >= {threshold:.3f}"] = cm(
                decide(probabilities(logits, t), positive_index, threshold))
        figs["confusion"] = confusion(matrices, names)
        if positive_index is not None:
            score = probabilities(logits)[:, positive_index]
            figs["roc_pr"] = roc_and_pr(score, (labels == positive_index).long(), names[positive_index], split)
        figs["reliability"] = reliability(logits, labels, t, split)
    return figs


def save_figures(figs: dict, folder: Path, loggers: Sequence = (), step: int = 0) -> list[str]:
    """Each figure as folder/<name>.png (atomic) and as the image plots/<name> in every logger that takes
    images (TensorBoard)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fig in figs.items():
        path = folder / f"{name}.png"
        write_atomic(path, lambda f: fig.savefig(f, format="png"))
        written.append(str(path))
        for logger in loggers:
            exp = getattr(logger, "experiment", None)
            if hasattr(exp, "add_image"):
                fig.canvas.draw()
                exp.add_image(f"plots/{name}", np.asarray(fig.canvas.buffer_rgba())[..., :3], step, dataformats="HWC")
    for logger in loggers:
        logger.save()
    return written
