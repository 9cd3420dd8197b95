"""`python -m gptft.bench --profile ROW`: torch.profiler over one training row, phase by phase.

Profiled: the start of training (where the frozen-prefix cache is filled, one pass over the train split), the
first training epoch (it also caches the val split's prefixes), the second (the steady state), each with its
validation, and the final scoring of the splits. Each phase writes a table of the
operators by self CPU time (`<phase>.txt`) and a Chrome / Perfetto trace (`<phase>.trace.json`, open it at
ui.perfetto.dev), headed by the seconds the training steps spent in their forward, backward and optimizer parts
and in validation.
"""
from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import torch
from torch.profiler import ProfilerActivity, profile

from ..atomic import write_text

PHASE_EPOCHS = 2  # the first epoch also caches the val prefixes; the second costs what every later one does
STEP_PARTS = ("gptft: forward", "gptft: backward", "gptft: optimizer step and hooks", "gptft: validation")


class PhaseProfiler(L.Callback):
    def __init__(self, out: Path, row_limit: int = 30):
        self.out, self.row_limit = out, row_limit
        self.prof = self.phase = self.part = None
        self.phases: dict[str, dict] = {}

    def _start(self, phase: str) -> None:
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
        self.prof, self.phase, self.t0 = profile(activities=activities), phase, time.perf_counter()
        self.parts: dict[str, float] = {}
        self.prof.__enter__()

    def _stop(self) -> None:
        if self.prof is None:
            return
        self.prof.__exit__(None, None, None)
        wall = time.perf_counter() - self.t0
        table = self.prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=self.row_limit)
        head = [f"phase {self.phase}: {wall:.1f} s wall"] + [f"  {k}: {v:.1f} s" for k, v in self.parts.items()]
        write_text(self.out / f"{self.phase}.txt", "\n".join(head) + "\n\n" + table + "\n")
        trace = self.out / f"{self.phase}.trace.json"
        self.prof.export_chrome_trace(str(trace))
        self.phases[self.phase] = {"wall_s": wall, "parts_s": self.parts, "table": str(self.out / f"{self.phase}.txt"),
                                   "trace": str(trace)}
        self.prof = self.phase = None

    # The parts of a step are timed between hooks, not marked as profiler ranges: Lightning runs the forward and
    # backward inside the optimizer's step (its closure), so a range from batch start to backward would cross the
    # step's own range and garble the operator tree's self times.
    def _part(self, name: str | None) -> None:
        now = time.perf_counter()
        if self.prof is not None and self.part is not None:
            self.parts[self.part] = self.parts.get(self.part, 0.0) + now - self.part_t0
        self.part, self.part_t0 = name, now

    def on_train_start(self, trainer, task):  # callbacks run first: before the task fills the prefix cache
        self._start("train-start")

    def on_train_epoch_start(self, trainer, task):
        if self.phase == "train-start":
            self._stop()
        if trainer.current_epoch < PHASE_EPOCHS:
            self._start(f"train-epoch-{trainer.current_epoch + 1}")

    def on_train_batch_start(self, trainer, task, batch, batch_idx):
        self._part(STEP_PARTS[0])

    def on_before_backward(self, trainer, task, loss):
        self._part(STEP_PARTS[1])

    def on_after_backward(self, trainer, task):
        self._part(STEP_PARTS[2])

    def on_train_batch_end(self, trainer, task, outputs, batch, batch_idx):
        self._part(None)

    def on_validation_start(self, trainer, task):
        self._part(STEP_PARTS[3])

    def on_validation_end(self, trainer, task):
        self._part(None)

    def on_train_epoch_end(self, trainer, task):
        self._stop()

    def on_test_start(self, trainer, task):
        self._start("scoring")

    def on_test_end(self, trainer, task):
        self._stop()


def profile_row(name: str, overrides: list[str], out: Path) -> dict:
    """Run one training row with the profiler; returns each phase's wall time, step parts and file paths."""
    from ..fit import fit_and_test
    from .rows import compose

    folder = out / "profile"
    folder.mkdir(parents=True, exist_ok=True)
    profiler = PhaseProfiler(folder)
    metrics = fit_and_test(compose(out / "runs" / name, overrides), out / "runs" / name, callbacks=(profiler,))
    return {"row": name, "wall_time_s": metrics.get("wall_time_s"), "phases": profiler.phases}
