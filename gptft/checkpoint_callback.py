"""best.ckpt by the monitored metric, and a last.ckpt that really is the newest state."""
from __future__ import annotations

import os
import time
import warnings

from lightning.pytorch.callbacks import ModelCheckpoint


class BestAndLastCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint with save_top_k=1 refreshes last.ckpt only when best.ckpt was just
    written (save_last=True), or links it to that older best (save_last="link"): after a validation that
    does not improve, last.ckpt silently holds an earlier state, and so do `task.test_ckpt=last` and
    resuming. Here last.ckpt links to best.ckpt only when best.ckpt holds this very step; otherwise it
    is written in full, also at the end of training when the last steps came after the last validation.
    `write_s` sums the time spent writing checkpoints. It overrides private hooks of Lightning 2.x's
    ModelCheckpoint; tests/test_checkpoints.py pins the behaviour, so a Lightning change fails CI.
    """

    def __init__(self, dirpath, monitor: str, mode: str):
        super().__init__(dirpath=dirpath, filename="best", monitor=monitor, mode=mode,
                         save_top_k=1, save_last="link", auto_insert_metric_name=False)
        self.write_s = 0.0

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        if trainer.ckpt_path and not self._last_checkpoint_saved:
            # a resumed run: Lightning keeps neither, and without them refreshes last.ckpt only on a new best
            self._last_checkpoint_saved, self._last_global_step_saved = str(trainer.ckpt_path), trainer.global_step

    def load_state_dict(self, state_dict) -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The dirpath has changed")  # we restore them below
            super().load_state_dict(state_dict)
        if self.best_model_score is None and state_dict.get("best_model_score") is not None:
            # resumed into a new run folder: Lightning drops the best score, so the first validation would
            # become best.ckpt even if worse. The old best.ckpt stays where it is (outside dirpath, never deleted).
            for key in ("best_model_score", "best_k_models", "kth_best_model_path", "kth_value"):
                setattr(self, key, state_dict.get(key, getattr(self, key)))

    def _best_is_current(self, trainer) -> bool:
        return (self._last_global_step_saved == trainer.global_step
                and bool(self.best_model_path) and self._last_checkpoint_saved == self.best_model_path)

    def _save_last_checkpoint(self, trainer, monitor_candidates) -> None:
        if self._best_is_current(trainer):
            return super()._save_last_checkpoint(trainer, monitor_candidates)  # a link to best.ckpt
        if trainer.is_global_zero and self.last_model_path and os.path.islink(self.last_model_path):
            os.remove(self.last_model_path)  # writing through the link would overwrite best.ckpt
        self.save_last = True  # Lightning's own full write, with its version counter
        try:
            super()._save_last_checkpoint(trainer, monitor_candidates)
        finally:
            self.save_last = "link"

    def _save_checkpoint(self, trainer, filepath) -> None:
        start = time.perf_counter()
        super()._save_checkpoint(trainer, filepath)
        self.write_s += time.perf_counter() - start

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.global_step > self._last_global_step_saved and not trainer.fast_dev_run:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
