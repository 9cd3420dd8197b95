"""Sweeps in parallel: the joblib launcher preset runs a sweep's jobs at the same time, each pinned to its
share of the cores, and the sweep summary lists them all (real `python -m gptft.train -m` on gpt2-tiny)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import subset_csv

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model=gpt2-tiny", "trainer.max_epochs=1", "trainer.limit_train_batches=4", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false", "task.final_splits=[test]"]


def test_joblib_sweep_runs_its_jobs_at_once_and_summarizes_them(tmp_path, shared_data):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    data = subset_csv(shared_data, tmp_path / "sms.csv", per_class=30)
    proc = subprocess.run([sys.executable, "-m", "gptft.train", "-m", "launcher=joblib", *TINY, f"data.path={data}",
                           "seed=1,2"], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = next((tmp_path / "outputs" / "spam" / "multirun").iterdir())
    jobs = [sweep / "0", sweep / "1"]
    spans = [((job / ".hydra" / "config.yaml").stat().st_mtime, (job / "metrics.json").stat().st_mtime) for job in jobs]
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1], spans  # the two jobs' times overlap
    table = (sweep / "summary.md").read_text().splitlines()
    assert len(table) == 4 and "seed=1" in table[2] and "seed=2" in table[3]  # header, rule, one row per job
    assert "sweep summary" in proc.stdout


def test_the_slurm_preset_gives_every_rank_a_task_and_a_gpu():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["launcher=submitit_slurm", "trainer.devices=8", "trainer.num_nodes=2",
                                          "run_dir=/tmp/x"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 8, 8)
    assert cfg.trainer.strategy == "ddp" and cfg.threads == cfg.hydra.launcher.cpus_per_task


def test_optuna_search_maximizes_val_acc_and_names_the_best_trial(tmp_path, shared_data):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    import yaml

    data = subset_csv(shared_data, tmp_path / "sms.csv", per_class=30)
    proc = subprocess.run([sys.executable, "-m", "gptft.train", "-m", "sweep=optuna", "hydra.sweeper.n_trials=2",
                           *TINY, "task.final_splits=[val]", f"data.path={data}"], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Directions: ['maximize']" in proc.stderr + proc.stdout  # spam's monitor_mode is max
    sweep = next((tmp_path / "outputs" / "spam" / "multirun").iterdir())
    scores = {job.name: yaml.safe_load((job / "metrics.json").read_text())["flat"]["val/acc"]
              for job in sweep.iterdir() if (job / "metrics.json").is_file()}
    assert len(scores) == 2
    best = max(scores, key=lambda j: (scores[j], -int(j)))
    assert yaml.safe_load((sweep / "optimization_results.yaml").read_text())["best_value"] == scores[best]
    assert f"best: job {best} (" in (sweep / "summary.md").read_text() and f"val/acc {scores[best]:.4f}" in proc.stdout
