"""`python -m gptft.train task=spam|instruct ...`: fine-tune, test on the best checkpoint, report.

Only Hydra is imported up front: the config is checked (gptft.run_dir.RunGuard) before torch and Lightning
load, so a mistyped setting is reported in a second, not after the ten that importing them takes."""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from .errors import friendly_errors
from .quiet import quiet


def train(cfg: DictConfig) -> float | None:
    """Run one job; return the value of `cfg.optimized_metric` (for sweepers)."""
    from .fit import run

    return run(cfg)[0]["flat"].get(cfg.optimized_metric)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
@friendly_errors
def main(cfg: DictConfig) -> float | None:
    quiet()
    return train(cfg)


if __name__ == "__main__":
    main()
