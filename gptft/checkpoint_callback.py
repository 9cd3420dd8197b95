"""best.ckpt by the monitored metric, a last.ckpt that really is the newest state, and exact resume."""
from __future__ import annotations

import math
import random
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.plugins.io import AsyncCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from .checkpoint_io import writes_atomically
from .errors import CheckpointError, ConfigError


class BestAndLastCheckpoint(L.Callback):
    """After each validation: best.ckpt when the monitored metric strictly improves (a NaN never does, except
    that the first validation always makes a best.ckpt), and last.ckpt. At the end of training last.ckpt is
    written again if steps followed the last validation. Lightning's ModelCheckpoint (save_top_k=1) keeps
    last.ckpt at the last *best* state instead.

    best.ckpt is for using the model: weights and metadata, no optimizer or loop state (Lightning's
    weights_only). last.ckpt is for resuming: weights, optimizer, scheduler, loop and random generator states.
    So last.ckpt is its own file even when it holds the same step as best.ckpt (it was a link to best.ckpt
    when best.ckpt held the resume state too); keeping AdamW's moments out of best.ckpt makes it a third
    of the size. Both are small by default (FinetuneTask.on_save_checkpoint leaves the frozen tensors out).
    Every write goes through `trainer.save_checkpoint` (atomic with gptft.checkpoint_io.AtomicCheckpointIO,
    in a background thread when wrapped in AsyncCheckpointIO). `write_s` sums the time training waited for
    writes: preparing and copying each checkpoint, and at the end the wait for the last write to finish.

    The checkpoint also records where training continues (epoch, batches already done in it) and the random
    generators' states; a resumed run hands the position to the data module (`start_train_at`) and restores
    the generators just before the first training step, so it continues exactly as if never stopped.
    """

    def __init__(self, dirpath, monitor: str, mode: str):
        if mode not in ("min", "max"):
            raise ConfigError(f"checkpoint mode={mode!r}: use min or max")
        self.dirpath = Path(dirpath)
        self.monitor, self.mode = monitor, mode
        self.best_model_path = ""  # may lie in an earlier run's folder after a resume
        self.best_model_score: float | None = None
        self.last_model_path = ""
        self.write_s = 0.0
        self._trainer: L.Trainer | None = None
        self._saved_step = -1    # global step of the newest checkpoint written or resumed from
        self._epoch = 0          # the epoch being trained and the batches it has finished
        self._batches_done = 0
        self._resume_rng: dict | None = None

    @property
    def saved_step(self) -> int:
        """The global step of the newest checkpoint written or resumed from (-1: none)."""
        return self._saved_step

    # ---- decisions
    def _score(self, trainer) -> float:
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            logged = ", ".join(sorted(trainer.callback_metrics)) or "nothing"
            raise ConfigError(f"checkpoint monitor {self.monitor!r} was not logged (logged: {logged}); "
                              f"set task.monitor to one of them")
        return float(value)

    def _improves(self, score: float) -> bool:
        if self.best_model_score is None:
            return True
        if math.isnan(score):
            return False
        best = self.best_model_score
        return math.isnan(best) or (score > best if self.mode == "max" else score < best)

    # ---- writing
    def _save(self, trainer, path: Path, weights_only: bool) -> None:
        start = time.perf_counter()
        trainer.save_checkpoint(path, weights_only=weights_only)  # passing it also silences Lightning's log line
        self.write_s += time.perf_counter() - start

    def _save_last(self, trainer) -> None:
        last = self.dirpath / "last.ckpt"
        self.last_model_path = str(last)
        self._save(trainer, last, weights_only=False)  # the rename replaces a link an older gptft left, not its target
        self._saved_step = trainer.global_step

    def _skip(self, trainer) -> bool:
        return (trainer.sanity_checking or bool(trainer.fast_dev_run) or trainer.state.fn != TrainerFn.FITTING
                or self._saved_step == trainer.global_step)

    # ---- Lightning hooks
    def setup(self, trainer, pl_module, stage: str) -> None:
        self._trainer = trainer
        if not writes_atomically(trainer.strategy.checkpoint_io):  # a lost plugin must not go unseen
            raise ConfigError("BestAndLastCheckpoint writes atomically only with "
                              "L.Trainer(plugins=[gptft.checkpoint_io.AtomicCheckpointIO()])")

    def _continue_data(self) -> None:
        """Hand the position to the data module before Lightning builds its first train iterator (it does so
        while configuring the optimizers when a schedule asks for the total steps)."""
        start = getattr(self._trainer.datamodule, "start_train_at", None)
        if start is None:
            raise CheckpointError(f"ckpt_path={self._trainer.ckpt_path}: resuming needs a gptft data module, "
                                  f"which continues the data where the checkpoint stopped")
        start(self._epoch, self._batches_done)
        if self._batches_done:  # Lightning cannot see that the data module continues mid-epoch exactly
            warnings.filterwarnings("ignore", message=r"You're resuming from a checkpoint that ended before")

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.ckpt_path:
            self._saved_step = trainer.global_step  # the resumed state is saved already
        if self._resume_rng is not None:  # after the sanity check, just before the first training step
            restore_rng(self._resume_rng)
            self._resume_rng = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._epoch, self._batches_done = trainer.current_epoch, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._batches_done = batch_idx + 1

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._skip(trainer):
            return
        score = self._score(trainer)
        if self._improves(score):  # updated first: the checkpoint records this callback's state
            self.best_model_path, self.best_model_score = str(self.dirpath / "best.ckpt"), score
            self._save(trainer, self.dirpath / "best.ckpt", weights_only=True)
        self._save_last(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        if not trainer.fast_dev_run and trainer.global_step > self._saved_step:
            self._save_last(trainer)
        if self._wait_for_writes(trainer):
            trainer.strategy.barrier("gptft: checkpoints written")  # rank 0 writes them; every rank reads best.ckpt

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """SIGTERM (a kill, a cluster's pre-emption): Lightning stops after a finished training batch; last.ckpt then
        holds that step, so resuming loses nothing. Not inside a validation (its loop is half run), nor inside a
        gradient accumulation window (its gradients are in no checkpoint), nor with several processes (they may
        stop a step apart, and saving waits for all of them)."""
        window = self._batches_done % trainer.accumulate_grad_batches == 0 or (
            self._batches_done >= trainer.num_training_batches)
        if (isinstance(exception, SIGTERMException) and trainer.training and trainer.global_step > 0 and window
                and trainer.world_size == 1 and not self._skip(trainer)):
            self._save_last(trainer)
            self._wait_for_writes(trainer)

    def _wait_for_writes(self, trainer) -> bool:
        """Whether writes ran in the background; if so, every file is in place (or its error raised) on return."""
        io = trainer.strategy.checkpoint_io
        if isinstance(io, AsyncCheckpointIO):
            start = time.perf_counter()
            io.teardown()
            self.write_s += time.perf_counter() - start
        return isinstance(io, AsyncCheckpointIO)

    # ---- what a checkpoint keeps of this callback: plain values and the generators' state tensors
    def state_dict(self) -> dict:
        epoch, done = self._epoch, self._batches_done
        if self._trainer is not None and done >= self._trainer.num_training_batches:
            epoch, done = epoch + 1, 0  # the epoch's data is used up: continue with the next one
        return {"monitor": self.monitor, "mode": self.mode, "best_model_path": self.best_model_path,
                "best_model_score": self.best_model_score, "last_model_path": self.last_model_path,
                "next_epoch": epoch, "next_batch": done, "rng": rng_state()}

    def load_state_dict(self, state_dict: dict) -> None:
        if self._trainer is not None and self._trainer.state.fn != TrainerFn.FITTING:
            return  # testing a checkpoint: this run's best and last stay as they are
        # a run resumed into a new folder keeps the earlier best (its best.ckpt stays in the earlier folder),
        # so a worse first validation does not become best.ckpt
        self.best_model_path = state_dict.get("best_model_path") or ""
        self.best_model_score = state_dict.get("best_model_score")
        self.last_model_path = state_dict.get("last_model_path") or ""
        self._epoch = state_dict.get("next_epoch", 0)
        self._batches_done = state_dict.get("next_batch", 0)
        self._resume_rng = state_dict.get("rng")
        self._continue_data()


def rng_state() -> dict:
    """The generators training may draw from (dropout): torch's CPU and CUDA ones and Python's."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
