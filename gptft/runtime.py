"""Turn the `trainer` config into Lightning Trainer arguments, resolving `auto` precision."""
from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError


def _accelerator(name: str) -> str:
    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "gpu"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def check_accelerator(name: str) -> None:
    """Refuse an accelerator this machine lacks before anything is built (Lightning's own error is a traceback)."""
    if name in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device=gpu (trainer.accelerator={name}) but torch {torch.__version__} sees no CUDA GPU; "
                          f"use device=cpu or device=auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("device=mps (trainer.accelerator=mps) but this machine has no usable Apple GPU; "
                          "use device=cpu or device=auto")


ALIASES = {"32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed", "64": "64-true"}


def resolve_precision(precision: str, accelerator: str) -> str:
    """`auto`: bf16 autocast where it is fast and safe (CPU, bf16-capable GPUs), else fp32."""
    acc = _accelerator(accelerator)
    precision = ALIASES.get(precision, precision)
    if precision != "auto" and precision not in ALIASES.values() and precision not in ("bf16-true", "16-true"):
        raise ConfigError(f"precision={precision!r} is not one of auto, 32, bf16, 16 (or a Lightning name "
                         f"such as bf16-true)")
    if precision == "auto":
        if acc == "cpu" or (acc == "gpu" and torch.cuda.is_bf16_supported()):
            return "bf16-mixed"
        return "32-true"
    if precision.startswith("16") and acc == "cpu":
        raise ConfigError(
            "precision=16 (float16 autocast) needs a GPU; on a CPU use precision=bf16 or precision=32"
        )
    return precision


def resolve_trainer_kwargs(trainer_cfg: DictConfig | dict) -> dict:
    kw = OmegaConf.to_container(trainer_cfg, resolve=True) if isinstance(trainer_cfg, DictConfig) else dict(trainer_cfg)
    kw["precision"] = resolve_precision(str(kw.get("precision", "auto")), str(kw.get("accelerator", "auto")))
    return kw
