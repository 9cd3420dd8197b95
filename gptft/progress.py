"""Progress of long work: a bar in a terminal, plain lines elsewhere (a file, a pipe, nohup, CI, a notebook).

Outside a terminal a carriage-return bar writes nothing readable, so every long phase instead prints one
line every GPTFT_PROGRESS_EVERY_S seconds (default 30) to stderr, with its rate and ETA, and a line when
an epoch ends. stdout stays for results (classify's table, generate's text, the run summary).
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator

import lightning as L
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar
from tqdm import tqdm

from .errors import ConfigError

ENV = "GPTFT_PROGRESS_EVERY_S"


def every_s() -> float:
    raw = os.environ.get(ENV, "30")
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ConfigError(f"{ENV}={raw!r}: give the seconds between progress lines (a number >= 0)")
    return value


def interactive() -> bool:
    """A person watches a terminal: Lightning's bar (it draws on stdout) is readable there."""
    return sys.stdout.isatty() and sys.stderr.isatty()


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Lines:
    """One phase's plain progress lines: at most one per `every_s()` seconds, with rate and ETA."""

    def __init__(self, desc: str, total: int | float | None, unit: str):
        self.desc, self.total, self.unit = desc, total, unit
        self.interval = every_s()
        self.start = self.last = time.monotonic()
        self.done = 0
        self.printed = False

    def status(self) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = self.done / elapsed
        known = isinstance(self.total, int) and self.total > 0
        text = f"{self.desc}: {self.done}/{self.total if known else '?'} {self.unit}"
        if known:
            text += f" ({100 * self.done / self.total:.0f}%)"
        text += f", {rate:.2f} {self.unit}/s" if rate < 10 else f", {rate:.0f} {self.unit}/s"
        if known and rate > 0:
            text += f", ETA {duration((self.total - self.done) / rate)}"
        return text

    def update(self, n: int = 1, extra: str = "") -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last, self.printed = now, True
            say(f"[progress] {self.status()}{extra}")

    def close(self, always: bool = False, extra: str = "") -> None:
        """The phase's last line: always for epochs; for other phases only when it already printed one."""
        if always or self.printed:
            say(f"[progress] {self.desc}: {self.done} {self.unit} in {duration(time.monotonic() - self.start)}{extra}")


def iterate(items: Iterable, desc: str, total: int | None = None, unit: str = "it") -> Iterator:
    """`items`, showing progress: tqdm in a terminal, plain lines otherwise."""
    total = total if total is not None else (len(items) if hasattr(items, "__len__") else None)
    if interactive():
        yield from tqdm(items, desc=desc, total=total, unit=unit, leave=False)
        return
    lines = Lines(desc, total, unit)
    for item in items:
        yield item
        lines.update()
    lines.close()


def _metrics_text(metrics: dict) -> str:
    shown = [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items() if k != "v_num"]
    return ("; " + ", ".join(shown)) if shown else ""


class _HideSanityMetrics:
    """The sanity check's two validation batches log val/* before any training: a bar showing them as the
    first epoch's scores misleads, so they stay hidden until a real validation has run."""

    def on_sanity_check_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_sanity_check_end(trainer, pl_module)
        self._sanity_keys = set(trainer.progress_bar_metrics)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not trainer.sanity_checking:
            self._sanity_keys = set()

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        hidden = getattr(self, "_sanity_keys", set())
        return {k: v for k, v in super().get_metrics(trainer, pl_module).items() if k not in hidden}


class TerminalBar(_HideSanityMetrics, TQDMProgressBar):
    """Lightning's tqdm bar, without the sanity check's scores."""


class PlainProgress(_HideSanityMetrics, ProgressBar):
    """Plain lines for training (train batches, validation, test), through Lightning's public callback hooks."""

    def __init__(self) -> None:
        super().__init__()
        self._showing = True
        self._lines: Lines | None = None

    def disable(self) -> None:
        self._showing = False

    def enable(self) -> None:
        self._showing = True

    def _begin(self, desc: str, total, unit: str = "batches") -> None:
        self._lines = Lines(desc, total, unit) if self._showing else None

    def _step(self, trainer: L.Trainer, pl_module: L.LightningModule, train: bool = False) -> None:
        if self._lines is not None:
            extra = _metrics_text(self.get_metrics(trainer, pl_module)) if train else ""
            self._lines.update(1, extra)

    def _end(self, always: bool = False, extra: str = "") -> None:
        if self._lines is not None:
            self._lines.close(always, extra)
        self._lines = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._begin(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}", self.total_train_batches)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._step(trainer, pl_module, train=True)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end(always=True, extra=_metrics_text(self.get_metrics(trainer, pl_module)))

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._train_lines, self._lines = self._lines, None  # validation can run inside an epoch
            self._begin("validation", None)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.sanity_checking and self._lines is not None:
            self.has_dataloader_changed(dataloader_idx)
            self._lines.total = self.total_val_batches_current_dataloader
            self._step(trainer, pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not trainer.sanity_checking:
            self._end()
            self._lines = getattr(self, "_train_lines", None)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.reset_dataloader_idx_tracker()

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if self.has_dataloader_changed(dataloader_idx):  # one line series per scored split
            self._end()
            loaders = trainer.num_test_batches
            which = f" {dataloader_idx + 1}/{len(loaders)}" if isinstance(loaders, list) and len(loaders) > 1 else ""
            self._begin(f"test{which}", self.total_test_batches_current_dataloader)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._step(trainer, pl_module)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end()


def progress_bar() -> ProgressBar:
    """The bar for a Trainer: Lightning's in a terminal, plain lines elsewhere."""
    return TerminalBar() if interactive() else PlainProgress()
