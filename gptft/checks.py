"""Check the composed run config before anything heavy runs: a table of key -> rule.

Hydra accepts any value for any key (`seed=abc` arrives as the string "abc"), so without this a wrong
value fails minutes later, deep inside Lightning or torch. Each rule returns None (fine) or what is
wrong; `validate` raises a ConfigError naming the key, the value and the fix. Absent keys are skipped.
"""
from __future__ import annotations

import math
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .errors import CheckpointError, ConfigError

ABSENT = object()
MAX_SEED = 2**32 - 1  # numpy's (and so Lightning's) seed range


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def positive_int(v, cfg=None):
    return None if _is_int(v) and v >= 1 else "must be a positive integer"


def non_negative_int(v, cfg=None):
    return None if _is_int(v) and v >= 0 else "must be an integer >= 0"


def optional_positive_int(v, cfg=None):
    return None if v is None or (_is_int(v) and v >= 1) else "must be null or a positive integer"


def positive_number(v, cfg=None):
    return None if _is_number(v) and math.isfinite(v) and v > 0 else "must be a finite number > 0"


def non_negative_number(v, cfg=None):
    return None if _is_number(v) and math.isfinite(v) and v >= 0 else "must be a finite number >= 0"


def seed(v, cfg=None):
    return None if _is_int(v) and 0 <= v <= MAX_SEED else f"must be an integer from 0 to {MAX_SEED}"


def max_epochs(v, cfg):
    if _is_int(v) and v >= 1:
        return None
    if v == -1 and _is_int(v):
        # Lightning reads -1 as "no limit": allowed only with another stopping rule
        trainer = cfg.get("trainer") or {}
        if (trainer.get("max_steps") or -1) > 0 or trainer.get("max_time"):
            return None
        return ("trains forever; give a number of epochs, or keep -1 and stop by "
                "+trainer.max_steps=N or +trainer.max_time=DD:HH:MM:SS")
    if v == 0 and _is_int(v):
        return ("trains nothing and would score an untrained model; use trainer.max_epochs>=1 "
                "(python -m gptft.evaluate scores a trained checkpoint)")
    return "must be a positive integer"


def boolean(v, cfg=None):
    return None if isinstance(v, bool) else "must be true or false"


def optional_precision(v, cfg=None):
    return None if v is None or (_is_number(v) and 0 < v <= 1) else "must be a precision in (0, 1], or null"


def stratify(v, cfg=None):
    return None if v in (True, False, "auto") else "must be auto, true or false"


def test_ckpt(v, cfg=None):
    return None if v in ("best", "last") else "must be best or last"


def data_file(v, cfg=None):
    if v is None:
        return None
    path = Path(str(v)).expanduser()
    if path.is_dir():
        return "is a directory; give the data file inside it"
    if not path.is_file():
        return f"does not exist ({path.resolve()})"
    return None


def weights_path(v, cfg=None):
    # a folder is valid here (a Hugging Face save_pretrained folder); the loader checks what is inside
    if v is None or Path(str(v)).expanduser().exists():
        return None
    return "does not exist; give a weights file or folder (or model.pretrained=false for random weights)"


def strategy(v, cfg=None):
    name = str(v.get("_target_", "")) if isinstance(v, DictConfig) else str(v)
    if any(word in name.lower() for word in ("spawn", "fork", "notebook")):
        return ("trains in worker processes that this process starts and cannot read back, so no scores, "
                "metrics.json or summary would come out of them; use trainer.strategy=ddp (or device=cpu-ddp / "
                "gpu-ddp), which starts the other ranks as processes of their own")
    return None


RULES = {
    "seed": seed,
    "optimizer.lr": non_negative_number,
    "optimizer.weight_decay": non_negative_number,
    "data.batch_size": positive_int,
    "data.num_workers": non_negative_int,
    "data.max_length": optional_positive_int,
    "data.max_classes": positive_int,
    "data.path": data_file,
    "model.checkpoint": weights_path,
    "trainer.max_epochs": max_epochs,
    "trainer.accumulate_grad_batches": positive_int,
    "trainer.log_every_n_steps": positive_int,
    "trainer.strategy": strategy,
    "trainer.num_nodes": positive_int,
    "task.test_ckpt": test_ckpt,
    "checkpoint.full": boolean,
    "finetune.compile": boolean,
    "finetune.activation_checkpointing": boolean,
    "data.stratify": stratify,
    "data.train_rows": optional_positive_int,
    "data.eval_batch_tokens": optional_positive_int,
    "calibration.temperature": boolean,
    "threshold.precision": optional_precision,
}


def _shown(v) -> str:
    return "null" if v is None else str(v)


def validate(cfg: DictConfig) -> None:
    """Raise a ConfigError (or CheckpointError) for the first setting that cannot work."""
    for key, rule in RULES.items():
        value = OmegaConf.select(cfg, key, default=ABSENT)
        if value is ABSENT:
            continue
        problem = rule(value, cfg)
        if problem:
            raise ConfigError(f"{key}={_shown(value)} {problem}")
    from .runtime import check_accelerator, resolve_precision  # imports torch: after the checks that need none

    accelerator = str(OmegaConf.select(cfg, "trainer.accelerator", default="auto"))
    check_accelerator(accelerator)
    precision = OmegaConf.select(cfg, "trainer.precision", default=None)
    if precision is not None:
        resolve_precision(str(precision), accelerator)
    check_resume(OmegaConf.select(cfg, "ckpt_path", default=None))


def check_resume(ckpt_path) -> None:
    """A resume checkpoint must be readable and gptft's: found out now, not after the model is built."""
    if ckpt_path is None:
        return
    from .models.checkpoint_files import read_torch_file

    ckpt = read_torch_file(str(ckpt_path), "ckpt_path", mmap=True)  # structure only: cheap for any size
    if not (isinstance(ckpt, dict) and ckpt.get("gptft") and "state_dict" in ckpt):
        raise CheckpointError(f"ckpt_path={ckpt_path} is not a gptft training checkpoint; "
                              f"resume from the last.ckpt of a python -m gptft.train run")
    if "optimizer_states" not in ckpt:
        raise CheckpointError(f"ckpt_path={ckpt_path} holds the model for using it (a best.ckpt: no optimizer or "
                              f"loop state); resume from the last.ckpt beside it")
