"""`python -m gptft.train task=spam|instruct ...`: fine-tune, test on the best checkpoint, report."""
from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path

import hydra
import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from .checkpoint_callback import BestAndLastCheckpoint
from .errors import GptftError, friendly_errors
from .memory import peak_rss_mib, reset_peak_rss
from .models.build import build_backbone
from .tasks.factory import make_task
from .runtime import resolve_trainer_kwargs
from .run_dir import start_run

log = logging.getLogger("gptft.train")


def build_datamodule(data_cfg, tokenizer, context_length: int):
    """The `data` config's module; its own errors surface as themselves, not as Hydra's wrapper."""
    data_cfg = OmegaConf.create(data_cfg) if isinstance(data_cfg, dict) else data_cfg
    max_length = data_cfg.get("max_length") or context_length
    try:
        return hydra.utils.instantiate(data_cfg, tokenizer=tokenizer, max_length=max_length, _convert_="all")
    except InstantiationException as err:
        if err.__cause__ is not None:
            raise err.__cause__ from None
        raise


def fit_and_test(cfg: DictConfig, run_dir: Path, callbacks: tuple = ()) -> dict:
    """Train, then score every split with the best checkpoint; returns the metrics written to metrics.json."""
    start = time.perf_counter()
    reset_peak_rss()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    backbone, tokenizer = build_backbone(cfg.model)
    dm = build_datamodule(cfg.data, tokenizer, backbone.context_length)
    dm.setup("fit")
    task = make_task(cfg, backbone, tokenizer, dm)

    monitor, mode = cfg.task.monitor, cfg.task.monitor_mode
    ckpt = BestAndLastCheckpoint(run_dir / "checkpoints", monitor=monitor, mode=mode)
    logger = TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="", default_hp_metric=False)
    trainer = L.Trainer(
        **resolve_trainer_kwargs(cfg.trainer), callbacks=[ckpt, *callbacks], logger=logger, default_root_dir=str(run_dir)
    )
    trainer.fit(task, datamodule=dm, ckpt_path=cfg.get("ckpt_path"))
    best = ckpt.best_model_path or ckpt.last_model_path or None
    which = cfg.task.get("test_ckpt", "best")
    if which not in ("best", "last"):
        raise GptftError(f"task.test_ckpt={which!r}: use best or last")
    scored = best if which == "best" else (ckpt.last_model_path or None)
    task.test_splits = tuple(cfg.task.final_splits)
    trainer.test(task, dataloaders=[dm.eval_dataloader(s) for s in task.test_splits], ckpt_path=scored, verbose=False)

    metrics = {
        "task": cfg.task.name,
        "model": cfg.model.name,
        "splits": task.final,
        "best_ckpt": best,
        "scored_ckpt": scored,
        "last_ckpt": ckpt.last_model_path or None,
        "wall_time_s": round(time.perf_counter() - start, 1),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "checkpoint_write_s": round(ckpt.write_s, 3),  # small models write in milliseconds
        "precision": str(trainer.precision),
        "data": getattr(dm, "report", {}),
        "prefix_cache": None if task.prefix_cache is None else {
            "examples": len(task.prefix_cache), "mib": round(task.prefix_cache.nbytes / 2**20, 2),
            "dtype": task.prefix_cache.stored_dtype, "boundary_block": task.boundary},
    }
    if getattr(task, "label_names", None):
        metrics["label_names"] = task.label_names
    metrics["flat"] = {f"{s}/{k}": v for s, d in task.final.items() for k, v in d.items() if not isinstance(v, list)}
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def summary(metrics: dict, run_dir: Path) -> str:
    lines = [f"gptft {metrics['task']} with {metrics['model']}: done in {metrics['wall_time_s']} s, "
             f"peak memory {metrics['peak_rss_mib'] / 1024:.2f} GiB, precision {metrics['precision']}"]
    splits = metrics["splits"]
    cols = [k for k in ("acc", "f1", "loss", "ppl") if any(k in d for d in splits.values())]
    lines.append("  split  " + "".join(f"{c:>12}" for c in cols))
    for s, d in splits.items():
        lines.append(f"  {s:<6} " + "".join(f"{d[c]:>12.4f}" if c in d else f"{'':>12}" for c in cols))
    if metrics.get("label_names") and "test" in splits:
        names = metrics["label_names"]
        lines.append("  test confusion (rows: true, columns: predicted)")
        lines.append("  " + " " * 12 + "".join(f"{n[:10]:>12}" for n in names))
        for n, row in zip(names, splits["test"]["confusion"]):
            lines.append(f"  {n[:10]:>10}  " + "".join(f"{v:>12}" for v in row))
    lines.append(f"  run folder:  {run_dir}")
    lines.append(f"  best ckpt:   {metrics['best_ckpt']}")
    lines.append(f"  TensorBoard: tensorboard --logdir {run_dir / 'tensorboard'}")
    return "\n".join(lines)


def train(cfg: DictConfig) -> float | None:
    """Run one job; return the value of `cfg.optimized_metric` (for sweepers)."""
    run_dir = start_run(cfg)  # config checks, then this job's claim on its folder
    metrics = fit_and_test(cfg, run_dir)
    print(summary(metrics, run_dir), flush=True)
    return metrics["flat"].get(cfg.get("optimized_metric"))


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
@friendly_errors
def main(cfg: DictConfig) -> float | None:
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")  # frozen prefix
    return train(cfg)


if __name__ == "__main__":
    main()
