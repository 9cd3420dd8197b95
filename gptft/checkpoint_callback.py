"""best.ckpt by the monitored metric, and a last.ckpt that really is the newest state."""
from __future__ import annotations

import os

from lightning.pytorch.callbacks import ModelCheckpoint


class BestAndLastCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint with save_top_k=1 refreshes last.ckpt only when best.ckpt was just
    written (save_last=True), or links it to that older best (save_last="link"): after a validation that
    does not improve, last.ckpt silently holds an earlier state, and so do `task.test_ckpt=last` and
    resuming. Here last.ckpt links to best.ckpt only when best.ckpt holds this very step; otherwise it
    is written in full, also at the end of training when the last steps came after the last validation.
    """

    def __init__(self, dirpath, monitor: str, mode: str):
        super().__init__(dirpath=dirpath, filename="best", monitor=monitor, mode=mode,
                         save_top_k=1, save_last="link", auto_insert_metric_name=False)

    def _best_is_current(self, trainer) -> bool:
        return (self._last_global_step_saved == trainer.global_step
                and bool(self.best_model_path) and self._last_checkpoint_saved == self.best_model_path)

    def _save_last_checkpoint(self, trainer, monitor_candidates) -> None:
        if self._best_is_current(trainer):
            return super()._save_last_checkpoint(trainer, monitor_candidates)
        path = self.last_model_path or self.format_checkpoint_name(monitor_candidates, self.CHECKPOINT_NAME_LAST)
        if trainer.is_global_zero and os.path.islink(path):
            os.remove(path)  # writing through the link would overwrite best.ckpt
        self.last_model_path = path
        self._save_checkpoint(trainer, path)

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.global_step > self._last_global_step_saved and not trainer.fast_dev_run:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
