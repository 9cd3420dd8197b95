"""`python -m gptft.bench --profile ROW`: torch.profiler over one training row, phase by phase.

Profiled: the first training epoch (it also fills the frozen-prefix cache), the second (the cached steady
state), each with its validation, and the final scoring of the splits. Each phase writes a table of the
operators by self CPU time (`<phase>.txt`) and a Chrome / Perfetto trace (`<phase>.trace.json`, open it at
ui.perfetto.dev); the steps are split into forward, backward and optimizer ranges named `gptft: ...`.
"""
from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import torch
from torch.profiler import ProfilerActivity, profile, record_function

from ..atomic import write_text

PHASE_EPOCHS = 2  # epoch 0 fills the prefix cache; epoch 1 is what every later epoch costs
STEP_PARTS = ("gptft: forward", "gptft: backward", "gptft: optimizer step and hooks", "gptft: validation")


class PhaseProfiler(L.Callback):
    def __init__(self, out: Path, row_limit: int = 30):
        self.out, self.row_limit = out, row_limit
        self.prof = self.range = None
        self.phases: dict[str, dict] = {}

    def _start(self, phase: str) -> None:
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
        self.prof, self.phase, self.t0 = profile(activities=activities), phase, time.perf_counter()
        self.prof.__enter__()

    def _stop(self) -> None:
        if self.prof is None:
            return
        self._close_range()
        self.prof.__exit__(None, None, None)
        wall = time.perf_counter() - self.t0
        averages = self.prof.key_averages()
        parts = {e.key: e.cpu_time_total / 1e6 for e in averages if e.key in STEP_PARTS}
        table = averages.table(sort_by="self_cpu_time_total", row_limit=self.row_limit)
        head = [f"phase {self.phase}: {wall:.1f} s wall"] + [f"  {k}: {v:.1f} s" for k, v in parts.items()]
        write_text(self.out / f"{self.phase}.txt", "\n".join(head) + "\n\n" + table + "\n")
        trace = self.out / f"{self.phase}.trace.json"
        self.prof.export_chrome_trace(str(trace))
        self.phases[self.phase] = {"wall_s": wall, "parts_s": parts, "table": str(self.out / f"{self.phase}.txt"),
                                   "trace": str(trace)}
        self.prof = None

    def _open_range(self, name: str) -> None:
        if self.prof is not None:
            self._close_range()
            self.range = record_function(name)
            self.range.__enter__()

    def _close_range(self) -> None:
        if self.range is not None:
            self.range.__exit__(None, None, None)
            self.range = None

    def on_train_epoch_start(self, trainer, task):
        if trainer.current_epoch < PHASE_EPOCHS:
            self._start(f"train-epoch-{trainer.current_epoch + 1}")

    def on_train_batch_start(self, trainer, task, batch, batch_idx):
        self._open_range(STEP_PARTS[0])

    def on_before_backward(self, trainer, task, loss):
        self._open_range(STEP_PARTS[1])

    def on_after_backward(self, trainer, task):
        self._open_range(STEP_PARTS[2])

    def on_train_batch_end(self, trainer, task, outputs, batch, batch_idx):
        self._close_range()

    def on_validation_start(self, trainer, task):
        self._open_range(STEP_PARTS[3])

    def on_validation_end(self, trainer, task):
        self._close_range()

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
