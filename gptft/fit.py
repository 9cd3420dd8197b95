"""One training job in this process: fit, score every split with the chosen checkpoint, write metrics.json and
print the summary. The heavy half of `python -m gptft.train` (torch, Lightning), imported once the config passed
its checks, so that a bad command line fails in a second."""
from __future__ import annotations

import contextlib
import copy
import inspect
import logging
import sys
import time
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from .atomic import write_json
from .checkpoint_callback import BestAndLastCheckpoint
from .checkpoint_io import background_atomic_io
from .errors import ConfigError, Stopped
from .memory import peak_rss_mib, reset_peak_rss
from .models.build import build_backbone
from .tasks.base import split_prefix
from .tasks.factory import make_task
from .runtime import resolve_trainer_kwargs
from .progress import progress_bar
from .ranks import gathered
from .run_dir import discarded_on_failure, start_run

log = logging.getLogger("gptft.train")


def build_datamodule(data_cfg, tokenizer, context_length: int):
    """The `data` config's module; its own errors surface as themselves, not as Hydra's wrapper."""
    try:
        return hydra.utils.instantiate(data_cfg, tokenizer=tokenizer, max_length=data_cfg.max_length or context_length,
                                       _convert_="all")
    except InstantiationException as err:
        if err.__cause__ is not None:
            raise err.__cause__ from None
        raise


def instantiate_all(group: DictConfig, kind: str) -> list:
    """One object per `_target_` node of a callbacks/logger group, in order; null entries are skipped."""
    out = []
    for name, node in group.items():
        if node is None:
            continue
        if not isinstance(node, DictConfig) or "_target_" not in node:
            raise ConfigError(f"{kind}.{name} must be a node with a _target_ (or null to leave it out)")
        try:
            out.append(hydra.utils.instantiate(node, _convert_="all"))
        except InstantiationException as err:
            cause = err.__cause__
            if isinstance(cause, ImportError) or "Error locating target" in str(err):
                reason = " ".join(str(cause or err).split())  # Hydra's message spans lines
                raise ConfigError(f"{kind}.{name}: cannot import {node['_target_']} ({reason}); install what it "
                                  f"needs (logger=mlflow: pip install -e '.[mlflow]') or fix the name") from None
            raise
    return out


def log_run_summary(loggers, cfg: DictConfig, final: dict, step: int) -> None:
    """Every logger gets the flat config and the final metrics once, at the end: TensorBoard's HPARAMS
    tab then lists each run's settings beside its scores."""
    params = OmegaConf.to_container(cfg, resolve=True)
    for logger in loggers:
        if "metrics" in inspect.signature(logger.log_hyperparams).parameters:
            logger.log_hyperparams(params, metrics=final, step=step)
        else:
            logger.log_hyperparams(params)
            logger.log_metrics(final, step=step)
        logger.save()


def fit_and_test(cfg: DictConfig, run_dir: Path, callbacks: tuple = ()) -> dict:
    """Train, then score every split with the best checkpoint; returns the metrics written to metrics.json."""
    start = time.perf_counter()
    reset_peak_rss()
    cfg = copy.deepcopy(cfg)
    cfg.run_dir = str(run_dir)  # the folder every callback and logger writes to
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    backbone, tokenizer = build_backbone(cfg.model)
    dm = build_datamodule(cfg.data, tokenizer, backbone.context_length)
    dm.setup("fit")
    task = make_task(cfg, backbone, tokenizer, dm)
    if cfg.task.test_ckpt not in ("best", "last"):
        raise ConfigError(f"task.test_ckpt={cfg.task.test_ckpt!r}: use best or last")

    trainer = L.Trainer(
        **resolve_trainer_kwargs(cfg.trainer), callbacks=[*instantiate_all(cfg.callbacks, "callbacks"), *callbacks,
                                                          *([progress_bar()] if cfg.trainer.enable_progress_bar else [])],
        logger=instantiate_all(cfg.logger, "logger"), default_root_dir=str(run_dir),
        # checkpoints are written atomically, by callbacks.model_checkpoint alone (no default ModelCheckpoint)
        plugins=[background_atomic_io()], enable_checkpointing=False,
        use_distributed_sampler=False,  # the data module shards every split itself, without padding (EvalBatches)
    )
    refuse_self_launch_in_sweep(trainer)
    ckpt = next((c for c in trainer.callbacks if isinstance(c, BestAndLastCheckpoint)), None)
    with stopped_by_sigterm(trainer, ckpt, "training"):
        trainer.fit(task, datamodule=dm, ckpt_path=cfg.ckpt_path, weights_only=True)
    last = (ckpt.last_model_path or None) if ckpt else None
    best = (ckpt.best_model_path or last) if ckpt else None
    scored = best if cfg.task.test_ckpt == "best" else last
    with stopped_by_sigterm(trainer, ckpt, "scoring", scored):
        trainer.test(task, dataloaders=[dm.eval_dataloader(s) for s in task.test_splits], ckpt_path=scored,
                     verbose=False, weights_only=True)
    extra = task.after_test(run_dir, scored)  # a classifier: its calibration into the scored checkpoint, plots/
    flat = {f"{s}/{k}": v for s, d in task.final.items() for k, v in d.items() if not isinstance(v, list)}  # "val/acc"
    per_rank = across_ranks(trainer, task)  # every rank takes part; the scores are the same on all of them
    if not trainer.is_global_zero:
        return {"flat": flat}
    log_run_summary(trainer.loggers, cfg, {f"{split_prefix(s)}/{k}": v for s, d in task.final.items()
                                           for k, v in d.items() if not isinstance(v, list)}, trainer.global_step)

    metrics = {
        "task": cfg.task.name,
        "model": cfg.model.name,
        "splits": task.final,
        "best_ckpt": best,
        "scored_ckpt": scored,
        "last_ckpt": last,
        "epochs_trained": trainer.current_epoch,  # below trainer.max_epochs when early stopping ended the run
        "wall_time_s": round(time.perf_counter() - start, 1),
        **per_rank,
        "checkpoint_write_s": round(getattr(ckpt, "write_s", 0.0), 3),  # small models write in milliseconds
        "precision": str(trainer.precision),
        "data": dm.report,
        **extra,
    }
    if task.task_data.label_names:
        metrics["label_names"] = list(task.task_data.label_names)
    metrics["flat"] = flat
    write_json(run_dir / "metrics.json", metrics)
    return metrics


@contextlib.contextmanager
def stopped_by_sigterm(trainer: L.Trainer, ckpt: BestAndLastCheckpoint | None, doing: str, scored: str | None = None):
    """Lightning ends fit/test on SIGTERM with a SystemExit whose status is 0; say where the run stopped and how
    to go on, and exit 143."""
    try:
        yield
    except SIGTERMException:
        last = ckpt.last_model_path if ckpt else ""
        if doing == "scoring":
            then = f"training had finished; score {scored} with python -m gptft.evaluate ckpt={scored}"
        elif last:
            then = f"resume with ckpt_path={last} (step {ckpt.saved_step})"
        else:
            then = "no checkpoint was written yet"
        message = f"stopped by SIGTERM while {doing}, after step {trainer.global_step}: {then}"
        log.warning(message)
        print(message, file=sys.stderr, flush=True)
        raise Stopped(message) from None


def refuse_self_launch_in_sweep(trainer: L.Trainer) -> None:
    """Lightning starts the other ranks by re-running this command, `-m` included: each would run the whole sweep
    again (and a sweeper would hand them other values). In a sweep the ranks must come from the launcher."""
    env = getattr(trainer.strategy, "cluster_environment", None)
    if (trainer.world_size > 1 and HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
            and not (env is not None and env.creates_processes_externally)):
        raise ConfigError(f"-m with trainer.strategy={trainer.strategy.__class__.__name__} on {trainer.world_size} "
                          f"processes: Lightning would start the other ranks by re-running the whole sweep; run the "
                          f"jobs one process each (device=cpu / gpu), launch each job alone (without -m), or sweep "
                          f"with a launcher that starts every job's ranks (launcher=submitit_slurm: one SLURM task per "
                          f"rank)")


def across_ranks(trainer: L.Trainer, task) -> dict:
    """metrics.json's per-process figures: peak memory (the largest process's, and each one's) and the frozen-prefix
    caches (their total over all processes). One process: its own figures, as before."""
    cache = task.cache_stats()
    rows = gathered(trainer, [peak_rss_mib(), *((cache["examples"], cache["mib"]) if cache else (0, 0))])
    out = {"peak_rss_mib": round(max(r[0] for r in rows), 1)}
    if len(rows) > 1:
        out.update(processes=len(rows), peak_rss_mib_per_process=[round(r[0], 1) for r in rows])
        if cache:
            cache = {**cache, "examples": int(sum(r[1] for r in rows)), "mib": round(sum(r[2] for r in rows), 2),
                     "processes": len(rows)}
    return {**out, "prefix_cache": cache}


def written_mib(folder: Path, since: float) -> tuple[float, float]:
    """(MiB of the files under `folder` written since `since` (a time.time()), MiB of those in its checkpoints/):
    a reused folder's older files are not this run's; a link counts as nothing."""
    total = ckpts = 0
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.stat().st_mtime >= int(since):  # coarse clocks
            size = path.stat().st_size
            total += size
            ckpts += size if path.parent == folder / "checkpoints" else 0
    return total / 2**20, ckpts / 2**20


def summary(metrics: dict, run_dir: Path, started: float) -> str:
    ranks = f" on {metrics['processes']} processes" if metrics.get("processes") else ""
    lines = [f"gptft {metrics['task']} with {metrics['model']}: done in {metrics['wall_time_s']} s{ranks}, "
             f"peak memory {metrics['peak_rss_mib'] / 1024:.2f} GiB{' per process' if ranks else ''}, "
             f"precision {metrics['precision']}"]
    splits = metrics["splits"]
    cols = [k for k in ("acc", "f1", "loss", "ppl", "auroc", "pr_auc", "ece") if any(k in d for d in splits.values())]
    lines.append("  split  " + "".join(f"{c:>12}" for c in cols))
    for s, d in splits.items():
        lines.append(f"  {s:<6} " + "".join(f"{d[c]:>12.4f}" if c in d else f"{'':>12}" for c in cols))
    if metrics.get("label_names") and "test" in splits:
        names = metrics["label_names"]
        lines.append("  test confusion (rows: true, columns: predicted)")
        lines.append("  " + " " * 12 + "".join(f"{n[:10]:>12}" for n in names))
        for n, row in zip(names, splits["test"]["confusion"]):
            lines.append(f"  {n[:10]:>10}  " + "".join(f"{v:>12}" for v in row))
    if metrics.get("calibration"):  # fitted on val: classify's probabilities and decision rule
        c = metrics["calibration"]
        lines.append(f"  calibration: temperature {c['temperature']:.3f}" + (
            "" if c["threshold"] is None else f", threshold {c['threshold']:.4f} (val precision "
            f"{c['threshold_val_precision']:.4f} for target {c['threshold_precision_target']})"))
    lines.append(f"  run folder:  {run_dir}")
    lines.append(f"  best ckpt:   {metrics['best_ckpt']}")
    total, ckpts = written_mib(run_dir, started)
    lines.append(f"  disk:        {total:.1f} MiB written to the run folder ({ckpts:.1f} MiB checkpoints)")
    lines.append(f"  TensorBoard: tensorboard --logdir {run_dir / 'tensorboard'}")
    return "\n".join(lines)


def run(cfg: DictConfig, callbacks: tuple = ()) -> tuple[dict, Path]:
    """Run one job and print its summary; (metrics.json's content, the run folder)."""
    started = time.time()
    if cfg.threads:  # a sweep's parallel jobs each get their share of the cores (conf/launcher/)
        torch.set_num_threads(int(cfg.threads))
    run_dir = start_run(cfg)  # config checks, then this job's claim on its folder
    with discarded_on_failure(run_dir):
        metrics = fit_and_test(cfg, run_dir, callbacks)
    if "task" in metrics:  # rank 0 (the other ranks of a multi-process run write and print nothing)
        print(summary(metrics, run_dir, started), flush=True)
    return metrics, run_dir
