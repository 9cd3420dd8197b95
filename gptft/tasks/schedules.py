"""Learning-rate schedules stepped once per optimizer step: linear warmup, then constant, cosine or linear decay."""
from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from ..errors import ConfigError

SHAPES = ("constant", "cosine", "linear")


def warmup_steps_of(total_steps: float, warmup_steps: int, warmup_ratio: float) -> int:
    if warmup_steps < 0 or not 0 <= warmup_ratio < 1:
        raise ConfigError(f"scheduler.warmup_steps={warmup_steps} / warmup_ratio={warmup_ratio}: use steps >= 0 "
                          f"and a ratio in [0, 1)")
    if warmup_steps and warmup_ratio:
        raise ConfigError("give scheduler.warmup_steps or scheduler.warmup_ratio, not both")
    if warmup_ratio and math.isinf(total_steps):
        raise ConfigError("scheduler.warmup_ratio needs a finite run; set trainer.max_epochs, or use warmup_steps")
    return warmup_steps or round(warmup_ratio * total_steps)


def warmup_schedule(optimizer: Optimizer, *, shape: str, warmup_steps: int, warmup_ratio: float,
                    total_steps: float) -> LambdaLR:
    """The rate of optimizer step s (from 0) is lr * factor(s): (s+1)/W during the first W steps, then
    1 (constant), or a cosine / straight line from 1 down to 0 over the remaining steps.
    `total_steps` is the trainer's estimate of the run's optimizer steps."""
    if shape not in SHAPES:
        raise ConfigError(f"scheduler.shape={shape!r} is not one of {', '.join(SHAPES)}")
    if shape != "constant" and math.isinf(total_steps):
        raise ConfigError(f"scheduler.shape={shape} decays over the whole run, which has no end "
                          f"(trainer.max_epochs=-1); set trainer.max_epochs")
    warmup = warmup_steps_of(total_steps, warmup_steps, warmup_ratio)
    decay = max(1.0, total_steps - warmup)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if shape == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / decay)
        return 0.5 * (1 + math.cos(math.pi * progress)) if shape == "cosine" else 1.0 - progress

    return LambdaLR(optimizer, factor)
