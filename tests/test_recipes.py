"""Recipe pieces from YAML alone: a new optimizer and callback from a test config folder, the cosine
schedule with warmup (read back from the LR monitor's CSV), early stopping, several loggers at once,
TensorBoard's HPARAMS tab and MLflow, each on gpt2-tiny with the real SMS file for a few batches."""
from __future__ import annotations

import csv
import importlib.util
import math

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir

from gptft.fit import fit_and_test
from helpers import CONF, compose_cfg

QUICK = ["task=spam", "model=gpt2-tiny", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
         "trainer.limit_val_batches=2", "trainer.limit_test_batches=2", "trainer.num_sanity_val_steps=0",
         "task.final_splits=[test]", "precision=32"]


class Probe(L.Callback):
    """What the trainer really used: its optimizer, the steps taken and the callbacks it ran."""

    def on_train_end(self, trainer, pl_module):
        self.optimizer = trainer.optimizers[0]
        self.step = trainer.global_step
        self.callbacks = [type(c).__name__ for c in trainer.callbacks]


@pytest.fixture(scope="module")
def cosine_run(tmp_path_factory, shared_data):
    run = tmp_path_factory.mktemp("cosine")
    cfg = compose_cfg(run, *QUICK, "scheduler=cosine", "scheduler.warmup_steps=3", "logger=many",
                      "trainer.max_epochs=2", "trainer.limit_train_batches=5", "optimizer.lr=1e-3",
                      "trainer.log_every_n_steps=1")
    return run, fit_and_test(cfg, run)


def _csv_rows(run):
    with open(run / "csv" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_cosine_warmup_rates_as_logged(cosine_run):
    run, _ = cosine_run
    rates = [float(r["lr-AdamW"]) for r in _csv_rows(run) if r.get("lr-AdamW")]
    # 10 optimizer steps: (s+1)/3 of 1e-3 for s < 3, then a cosine over the remaining 7 steps
    want = [1e-3 * (s + 1) / 3 for s in range(3)] + [1e-3 * 0.5 * (1 + math.cos(math.pi * (s - 3) / 7))
                                                      for s in range(3, 10)]
    assert rates == pytest.approx(want, rel=1e-6)


def test_many_loggers_and_the_hparams_tab(cosine_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    run, metrics = cosine_run
    assert (run / "csv" / "metrics.csv").is_file() and (run / "csv" / "hparams.yaml").is_file()
    assert any(r.get("test/acc") for r in _csv_rows(run))  # the final metrics reach the CSV too
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"tensors": 0}).Reload()
    content = events.PluginTagToContent("hparams")
    # one session, written at the end: an earlier empty one would hide this run's values in the tab
    assert sorted(content) == ["_hparams_/experiment", "_hparams_/session_end_info", "_hparams_/session_start_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    hparams = {k: v.string_value or v.number_value for k, v in start.hparams.items()}
    assert hparams["scheduler/shape"] == "cosine" and hparams["scheduler/warmup_steps"] == 3
    assert hparams["optimizer/_target_"] == "torch.optim.AdamW" and hparams["optimizer/lr"] == 1e-3
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert "test/acc" in {m.name.tag for m in experiment.metric_infos}
    assert events.Scalars("test/acc")[-1].value == pytest.approx(metrics["splits"]["test"]["acc"])


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_new_optimizer_and_callback_from_yaml_files_alone(tmp_path, shared_data):
    extra = tmp_path / "my_conf"
    _write(extra / "optimizer" / "rmsprop.yaml",
           "_target_: torch.optim.RMSprop\n_partial_: true\nlr: 2.0e-4\nalpha: 0.9\n")
    _write(extra / "callbacks" / "accumulate.yaml",
           "defaults:\n  - default\naccumulate:\n  _target_: lightning.pytorch.callbacks.GradientAccumulationScheduler\n"
           "  scheduling: {0: 2}\n")
    run = tmp_path / "run"
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("train", overrides=[f"run_dir={run}", f"hydra.searchpath=[file://{extra}]", *QUICK,
                                          "optimizer=rmsprop", "callbacks=accumulate", "trainer.max_epochs=1",
                                          "trainer.limit_train_batches=6"])
    probe = Probe()
    fit_and_test(cfg, run, callbacks=(probe,))
    assert isinstance(probe.optimizer, torch.optim.RMSprop)
    assert probe.optimizer.defaults["lr"] == 2e-4 and probe.optimizer.defaults["alpha"] == 0.9
    assert probe.step == 3  # 6 batches, gradients accumulated over 2
    assert {"GradientAccumulationScheduler", "BestAndLastCheckpoint", "EarlyStopping",
            "LearningRateMonitor"} <= set(probe.callbacks)
    assert (run / "checkpoints" / "best.ckpt").is_file()


def test_early_stopping_patience(tmp_path, shared_data):
    # lr=0: no validation ever improves on the first, so patience 1 stops after the second of 5 epochs
    probe = Probe()
    cfg = compose_cfg(tmp_path, *QUICK, "callbacks.early_stopping.patience=1", "optimizer.lr=0", "logger=csv",
                      "trainer.max_epochs=5", "trainer.limit_train_batches=3")
    fit_and_test(cfg, tmp_path, callbacks=(probe,))
    assert probe.step == 6


def test_callbacks_and_loggers_can_be_left_out(tmp_path, shared_data):
    probe = Probe()
    cfg = compose_cfg(tmp_path, *QUICK, "callbacks.early_stopping=null", "callbacks.lr_monitor=null", "logger=csv",
                      "trainer.max_epochs=1", "trainer.limit_train_batches=2")
    fit_and_test(cfg, tmp_path, callbacks=(probe,))
    assert "EarlyStopping" not in probe.callbacks and "LearningRateMonitor" not in probe.callbacks
    assert not (tmp_path / "tensorboard").exists()


@pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("mlflow", "sqlalchemy", "alembic")),
                    reason="mlflow (with its SQLite store) is not installed: optional extra, pip install -e '.[mlflow]'")
def test_mlflow_local_store(tmp_path, shared_data):
    from mlflow.tracking import MlflowClient

    run = tmp_path / "run"
    metrics = fit_and_test(compose_cfg(run, *QUICK, "logger=[csv,mlflow]", "trainer.max_epochs=1",
                                       "trainer.limit_train_batches=2"), run)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "gptft-spam"]
    (logged,) = client.search_runs([experiment.experiment_id])
    assert logged.data.params["optimizer/_target_"] == "torch.optim.AdamW"
    assert logged.data.metrics["test/acc"] == pytest.approx(metrics["splits"]["test"]["acc"])
