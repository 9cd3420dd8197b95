"""The one hand-off from a data module to a task: what a task's head and reports need to know."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskData:
    """label_names / positive_index: a classifier's classes and the one binary F1 is reported for.
    pad_width: the fixed width training padded to (None: per batch); classify must pad the same.
    prompt_style: an instruction task's prompt format. sample_prompts: (text, token ids) of a few
    validation prompts answered at every validation (never stored in a checkpoint). class_weights: a classifier's
    training-loss weight per class (data.balance=weighted; None: unweighted; training only, never stored)."""

    label_names: tuple[str, ...] | None = None
    positive_index: int | None = None
    pad_width: int | None = None
    prompt_style: str | None = None
    sample_prompts: tuple[tuple[str, tuple[int, ...]], ...] = ()
    class_weights: tuple[float, ...] | None = None

    STORED = ("label_names", "positive_index", "pad_width", "prompt_style")

    def stored(self) -> dict:
        """The plain values a checkpoint keeps."""
        out = {k: getattr(self, k) for k in self.STORED}
        out["label_names"] = None if self.label_names is None else list(self.label_names)
        return out

    @classmethod
    def from_stored(cls, values: dict) -> "TaskData":
        names = values["label_names"]
        return cls(**{k: values[k] for k in cls.STORED if k != "label_names"},
                   label_names=None if names is None else tuple(names))
