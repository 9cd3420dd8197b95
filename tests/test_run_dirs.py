"""Run folders are unique and owned: runs started at the same moment get separate folders, and a folder a live
run holds is refused before anything is written into it; a killed run's claim goes with its process."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gptft.errors import ConfigError
from gptft.run_dir import OWNER_FILE, claim

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model=gpt2-tiny", "trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
        "task.final_splits=[test]"]


def start(cwd: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "gptft.train", "-cd", str(ROOT / "conf"), *args], cwd=cwd,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]


def test_runs_started_together_get_their_own_folders(tmp_path, shared_data):
    procs = [start(tmp_path, *TINY, f"seed={s}") for s in (1, 2)]  # two runs, then two sweeps, at once
    procs += [start(tmp_path, "-m", *TINY, f"seed={s}") for s in (3, 4)]
    finish(procs)
    runs = sorted(p for p in (tmp_path / "outputs" / "spam").iterdir() if p.name != "multirun")
    sweeps = sorted((tmp_path / "outputs" / "spam" / "multirun").iterdir())
    assert len(runs) == 2 and len(sweeps) == 2
    jobs = [run for run in runs] + [sweep / "0" for sweep in sweeps]
    seeds = sorted((job / ".hydra" / "overrides.yaml").read_text().split("seed=")[1].split()[0] for job in jobs)
    assert seeds == ["1", "2", "3", "4"]  # each folder holds one run's config ...
    for job in jobs:  # ... and that run's own results, nothing of the other's
        assert sorted(p.name for p in (job / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
        assert (job / "metrics.json").is_file() and (job / OWNER_FILE).is_file()


def test_a_claim_is_reentrant_and_dies_with_its_process(tmp_path):
    folder = tmp_path / "run"
    assert claim(folder) == claim(folder) == folder.resolve()  # one process: a sweep job, a second train()
    other = tmp_path / "other"
    holder = subprocess.Popen([sys.executable, "-c", f"from gptft.run_dir import claim; claim({str(other)!r}); "
                               "print('held', flush=True); import time; time.sleep(600)"],
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=rf"run_dir={other} is in use by a live run \(pid {holder.pid} "):
            claim(other)
    finally:
        holder.send_signal(signal.SIGKILL)  # no clean-up code runs: the kernel drops the lock
        holder.wait()
    assert claim(other) == other.resolve()


def test_the_disk_line_counts_only_this_runs_files(tmp_path):
    """A reused folder (a fixed hydra.run.dir) keeps an earlier run's files: they are not this run's writes."""
    from gptft.fit import written_mib

    old = tmp_path / "earlier" / "checkpoints" / "best.ckpt"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"x" * 2**20)
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    started = time.time()
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "best.ckpt").write_bytes(b"x" * 2**21)
    (tmp_path / "metrics.json").write_bytes(b"x" * 2**19)
    assert written_mib(tmp_path, started) == (2.5, 2.0)
