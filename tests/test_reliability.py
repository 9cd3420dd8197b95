"""Nothing lost: kill -9 at any moment (also inside a checkpoint write), a full disk, and exact resume.

The training runs are real `python -m gptft.train` subprocesses on gpt2-tiny with a few batches; kills are
real SIGKILLs. Resume equality is bit for bit on CPU fp32 (`precision=32`).
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from gptft.atomic import write_atomic, write_json
from gptft.data.base import TextDataModule
from gptft.data.collate import BucketBatchSampler, EpochShuffle

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["task=spam", "model=gpt2-tiny", "precision=32", "trainer.enable_progress_bar=false",
         "trainer.enable_model_summary=false", "trainer.limit_train_batches=6", "trainer.limit_val_batches=2",
         "trainer.limit_test_batches=2", "task.final_splits=[val]", "trainer.num_sanity_val_steps=0"]


def _start(run_dir: Path, tmpdir: Path, *overrides: str) -> subprocess.Popen:
    tmpdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TMPDIR": str(tmpdir)}  # anything written to the system temp folder lands here
    return subprocess.Popen([sys.executable, "-m", "gptft.train", *QUICK, f"hydra.run.dir={run_dir}", *overrides],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> str:
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return err


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)


def _temps(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.tmp")) if folder.is_dir() else []


def _wait_for(condition, proc: subprocess.Popen, poll_s: float = 0.001) -> bool:
    """Poll `condition` until it holds (True) or the process ends (False)."""
    while proc.poll() is None:
        if condition():
            return True
        time.sleep(poll_s)
    return False


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _assert_intact(run_dir: Path, tmpdir: Path) -> set[str]:
    """What a kill may leave: complete, loadable checkpoints and no temp file (beside them or in TMPDIR)."""
    ckpts = run_dir / "checkpoints"
    deadline = time.monotonic() + 10
    while (_temps(ckpts) or _temps(run_dir)) and time.monotonic() < deadline:
        time.sleep(0.05)  # the killed run's janitor removes its unfinished temp file
    assert not _temps(ckpts) and not _temps(run_dir)
    assert not list(tmpdir.iterdir()), list(tmpdir.iterdir())
    present = set()
    for name in ("best.ckpt", "last.ckpt"):
        path = ckpts / name
        if path.exists() or path.is_symlink():
            assert path.exists(), f"{name} is a dangling link"
            assert "state_dict" in _load(path)
            present.add(name)
    return present


def test_kill_9_anywhere_leaves_loadable_checkpoints(tmp_path):
    # one run folder, killed again and again: later runs overwrite the files the earlier ones left
    run, tmpdir, ckpts = tmp_path / "run", tmp_path / "tmp", tmp_path / "run" / "checkpoints"
    rng = random.Random(10)
    in_write = 0
    for attempt in range(5):
        # checkpoint.full=true: 13 MB writes last long enough for the 1 ms poll to catch one mid-write (a small
        # gpt2-tiny checkpoint is under 1 MB); the writing code is the same for both
        proc = _start(run, tmpdir, "trainer.max_epochs=3", "trainer.val_check_interval=3", "checkpoint.full=true")
        if attempt < 3:  # kill while the (attempt+1)-th checkpoint file is being written: its temp file exists
            seen: set[str] = set()

            def writing() -> bool:
                now = {p.name for p in _temps(ckpts)}
                seen.update(now)
                return bool(now) and len(seen) > attempt

            in_write += _wait_for(writing, proc)
        else:  # kill at a random moment after the first checkpoint
            _wait_for(lambda: (ckpts / "best.ckpt").exists(), proc, poll_s=0.01)
            time.sleep(rng.uniform(0, 3))
        _kill(proc)
        present = _assert_intact(run, tmpdir)
        # attempt 0 dies in the first write (best.ckpt), attempt 1 in the second: the first last.ckpt, which a kill
        # may leave unwritten (last.ckpt is its own file now, no longer a link to best.ckpt made in microseconds)
        assert present == {"best.ckpt", "last.ckpt"} or attempt == 0 or (attempt == 1 and present == {"best.ckpt"}), \
            present
    assert in_write == 3  # the kills really hit writes in progress


def _final_state(run_dir: Path) -> dict:
    return _load(run_dir / "checkpoints" / "last.ckpt")["state_dict"]


def _splits(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())["splits"]


def test_resume_after_kill_equals_the_uninterrupted_run(tmp_path):
    # validation every 4 of 6 batches: the kill lands mid-epoch, after a mid-epoch checkpoint; dropout on, so
    # the random generators must be restored too; the frozen-prefix cache on (the default), so it must be
    # refilled exactly as the first run filled it
    recipe = ["trainer.max_epochs=2", "trainer.val_check_interval=4", "model.dropout=0.1",
              "optimizer.lr=1e-3", "scheduler=cosine", "scheduler.warmup_ratio=0.2"]  # the schedule resumes too
    tmpdir = tmp_path / "tmp"
    whole = _start(tmp_path / "whole", tmpdir, *recipe)
    killed = _start(tmp_path / "killed", tmpdir, *recipe)
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    assert _wait_for(last.exists, killed, poll_s=0.01), "the run ended before its first checkpoint"
    _kill(killed)
    assert _load(last)["global_step"] == 4
    _finish(whole)
    resumed = _start(tmp_path / "resumed", tmpdir, *recipe, f"ckpt_path={last}")
    _finish(resumed)
    final, resumed_final = _final_state(tmp_path / "whole"), _final_state(tmp_path / "resumed")
    assert final.keys() == resumed_final.keys()
    assert all(torch.equal(final[k], resumed_final[k]) for k in final), "weights differ"
    assert _splits(tmp_path / "resumed") == _splits(tmp_path / "whole")


@contextlib.contextmanager
def _small_disk(folder: Path):
    """A 64 MB tmpfs at `folder`, or None where mounting is not allowed."""
    folder.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(folder)],
                                           capture_output=True).returncode != 0:
        yield None
        return
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_disk_full_keeps_the_previous_checkpoint_and_stops_with_one_line(tmp_path):
    # lr=0: the second validation ties the first, so only last.ckpt is written, which the full disk refuses.
    # checkpoint.full=true: gpt2-tiny's small last.ckpt (its trained block and optimizer state) fits in the 1 MB
    # left free; the whole model (13 MB) does not
    with _small_disk(tmp_path / "disk") as disk:
        run = (disk or tmp_path) / "run"
        proc = _start(run, tmp_path / "tmp", "trainer.max_epochs=2", "optimizer.lr=0", "checkpoint.full=true")
        best, last = run / "checkpoints" / "best.ckpt", run / "checkpoints" / "last.ckpt"
        assert _wait_for(lambda: best.exists() and last.exists(), proc, poll_s=0.005)  # the first validation's
        if disk:  # fill the disk, leaving 1 MB
            filler = disk / "filler"
            with open(filler, "wb") as f:
                f.truncate(0)
                free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
                f.write(b"\0" * max(free - 2**20, 0))
        else:  # no mount allowed: a 1 MB file size limit on the run (writes beyond it fail with EFBIG)
            resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (2**20, 2**20))
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 2, err[-3000:]
        assert "Traceback" not in err
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "last.ckpt" in errors[0] and "needs about" in errors[0], err[-3000:]
        assert ("No space left on device" if disk else "File too large") in errors[0]
        assert _load(best)["global_step"] == 6 and _load(last)["global_step"] == 6
        assert not _temps(run / "checkpoints")


# ---- the pieces, without training


def test_shuffle_order_is_a_function_of_seed_and_epoch():
    data = list(range(100))
    walked = EpochShuffle(data, seed=5)
    orders = []
    for epoch in range(3):
        walked.set_epoch(epoch)
        orders.append(list(walked))
    fresh = EpochShuffle(data, seed=5)
    fresh.set_epoch(2)
    assert list(fresh) == orders[2] and orders[0] != orders[1] != orders[2]
    assert sorted(orders[1]) == data


class _Lengths(TextDataModule):
    """A data module over made-up examples of lengths 1..7 (only ids and lengths matter here)."""

    default_file = {}

    def __init__(self, bucket: bool):
        super().__init__(tokenizer=None, path=None, batch_size=8, num_workers=0, seed=3, max_length=None,
                         bucket=bucket)

    def prepare_data(self):
        pass

    def _load(self):
        self.train_set = [{"input_ids": [0] * (i % 7 + 1), "example_id": i} for i in range(50)]
        self.val_set = self.test_set = []

    @staticmethod
    def collate_fn(batch):
        return {"example_id": torch.tensor([ex["example_id"] for ex in batch])}

    def predict_dataloader(self):
        return self.train_dataloader()


@pytest.mark.parametrize("bucket", [False, True])
def test_train_loader_starts_where_a_resumed_run_continues(bucket):
    def epoch_batches(dm, epoch):
        loader = dm.train_dataloader()
        loader.batch_sampler.sampler.set_epoch(epoch)  # what Lightning does before each epoch
        return [b["example_id"].tolist() for b in loader]

    dm = _Lengths(bucket)
    whole = epoch_batches(dm, 2)
    dm.start_train_at(2, 3)
    resumed = [b["example_id"].tolist() for b in dm.train_dataloader()]
    assert resumed == whole[3:] and len(whole) == 50 // 8
    assert epoch_batches(dm, 2) == whole  # the start applies to one loader only


class _Ids(L.LightningModule):
    def predict_step(self, batch, batch_idx):
        return batch["example_id"]


@pytest.mark.parametrize("bucket", [False, True])
def test_lightning_can_recreate_the_train_batch_sampler(bucket):
    # predicting, Lightning re-creates the batch sampler (as it does with a distributed sampler), with
    # drop_last=False: every example comes back, so the re-created sampler really ran
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    dm = _Lengths(bucket)
    ids = torch.cat(trainer.predict(_Ids(), datamodule=dm)).tolist()
    assert sorted(ids) == list(range(50))
    assert isinstance(dm.train_dataloader().batch_sampler, BucketBatchSampler) == bucket


def test_results_files_are_replaced_atomically(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"acc": 0.5})
    before = target.stat().st_ino
    write_json(target, {"acc": 0.75})
    assert target.stat().st_ino != before  # a new file renamed over the old one, not the old one rewritten
    assert target.read_text() == '{\n  "acc": 0.75\n}\n' and not _temps(tmp_path)
    def fails_midway(f):
        f.write(b'{"acc": ')
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_atomic(target, fails_midway)
    assert target.read_text() == '{\n  "acc": 0.75\n}\n' and not _temps(tmp_path)


def test_the_checkpoint_callback_refuses_a_trainer_without_atomic_writes(tmp_path):
    from gptft.checkpoint_callback import BestAndLastCheckpoint
    from gptft.errors import ConfigError

    class Fits(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, batch_idx):
            return (self.w - batch.float()).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    ckpt = BestAndLastCheckpoint(tmp_path, monitor="val/loss", mode="min")
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, callbacks=[ckpt], max_steps=1)
    with pytest.raises(ConfigError, match="AtomicCheckpointIO"):
        trainer.fit(Fits(), train_dataloaders=torch.utils.data.DataLoader(list(range(4))))


def test_sigterm_stops_the_frozen_prefix_pass(tmp_path, shared_data):
    """Lightning acts on SIGTERM (a `kill`, a cluster's pre-emption) only between steps; the frozen-prefix pass
    before the first step can take minutes on a real model, so it looks too and stops at its next batch."""
    from gptft.fit import fit_and_test
    from helpers import compose_cfg

    class TermAtTrainStart(L.Callback):  # callbacks' on_train_start runs before the task's, which fills the cache
        def on_train_start(self, trainer, pl_module):
            self.task = pl_module
            os.kill(os.getpid(), signal.SIGTERM)

    term = TermAtTrainStart()
    with pytest.raises(SystemExit) as stopped:
        fit_and_test(compose_cfg(tmp_path, *QUICK), tmp_path, callbacks=(term,))
    assert stopped.value.code == 143 and "no checkpoint was written yet" in str(stopped.value)
    assert term.task.prefix_cache is not None and len(term.task.prefix_cache) == 0
    assert term.task.global_step == 0


def test_sigterm_saves_its_step_and_the_resumed_run_equals_the_whole_one(tmp_path, shared_data):
    """A SIGTERM mid-epoch, between validations: last.ckpt gets that step, the run exits 143 (not Lightning's 0)
    saying how to resume, and the resumed run ends bit for bit as the uninterrupted one (all three in this
    process, the signal sent at a fixed step)."""
    from gptft.fit import fit_and_test
    from helpers import compose_cfg

    class TermAt(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 25:
                os.kill(os.getpid(), signal.SIGTERM)

    recipe = [*QUICK, "trainer.max_epochs=2", "trainer.limit_train_batches=60", "trainer.val_check_interval=20",
              "model.dropout=0.1", "optimizer.lr=1e-3"]
    run = lambda name, *extra, callbacks=(): fit_and_test(  # noqa: E731
        compose_cfg(tmp_path / name, *recipe, *extra), tmp_path / name, callbacks=callbacks)
    last = tmp_path / "termed" / "checkpoints" / "last.ckpt"
    with pytest.raises(SystemExit) as stopped:
        run("termed", callbacks=(TermAt(),))
    assert stopped.value.code == 143 and str(stopped.value).endswith(f"resume with ckpt_path={last} (step 25)")
    assert _load(last)["global_step"] == 25 and not (tmp_path / "termed" / "metrics.json").exists()
    whole = run("whole")
    resumed = run("resumed", f"ckpt_path={last}")
    final, resumed_final = _final_state(tmp_path / "whole"), _final_state(tmp_path / "resumed")
    assert all(torch.equal(final[k], resumed_final[k]) for k in final), "weights differ"
    assert resumed["splits"] == whole["splits"]
