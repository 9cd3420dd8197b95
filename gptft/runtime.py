"""Turn the `trainer` config into Lightning Trainer arguments, resolving `auto` precision."""
from __future__ import annotations

import functools
import time

import hydra
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


@functools.lru_cache(maxsize=1)
def cpu_bf16_is_fast() -> bool:
    """Whether this CPU multiplies bf16 matrices faster than fp32 ones. With native bf16 (AVX512-BF16, AMX,
    Arm BF16) autocast runs about 2.7x faster; without it torch emulates bf16 and runs about 100x SLOWER
    (measured on an AVX2-only EPYC). A 0.1 s probe decides rather than a table of CPU flags."""
    def best_of(dtype, n=256, reps=5):
        a = torch.randn(n, n).to(dtype)
        a @ a  # warm-up: kernel selection
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            a @ a
            times.append(time.perf_counter() - start)
        return min(times)

    return best_of(torch.bfloat16) < best_of(torch.float32)


ALIASES = {"32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed", "64": "64-true"}


def resolve_precision(precision: str, accelerator: str) -> str:
    """`auto`: bf16 autocast where it is fast and safe (CPUs with native bf16, bf16-capable GPUs), else fp32."""
    acc = _accelerator(accelerator)
    precision = ALIASES.get(precision, precision)
    if precision != "auto" and precision not in ALIASES.values() and precision not in ("bf16-true", "16-true"):
        raise ConfigError(f"precision={precision!r} is not one of auto, 32, bf16, 16 (or a Lightning name "
                         f"such as bf16-true)")
    if precision == "auto":
        if (acc == "cpu" and cpu_bf16_is_fast()) or (acc == "gpu" and torch.cuda.is_bf16_supported()):
            return "bf16-mixed"
        return "32-true"
    if precision.startswith("16") and acc == "cpu":
        raise ConfigError(
            "precision=16 (float16 autocast) needs a GPU; on a CPU use precision=bf16 or precision=32"
        )
    return precision


def resolve_trainer_kwargs(trainer_cfg: DictConfig | dict) -> dict:
    kw = OmegaConf.to_container(trainer_cfg, resolve=True) if isinstance(trainer_cfg, DictConfig) else dict(trainer_cfg)
    if isinstance(kw.get("strategy"), dict) and "_target_" in kw["strategy"]:  # a Strategy object from its node
        kw["strategy"] = hydra.utils.instantiate(kw["strategy"])
    kw["precision"] = resolve_precision(str(kw.get("precision", "auto")), str(kw.get("accelerator", "auto")))
    return kw
