"""Shared test helpers: compose the real configs, record per-step training losses."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir

CONF = str(Path(__file__).resolve().parents[1] / "conf")


def compose_cfg(run_dir, *overrides):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("train", overrides=[f"run_dir={run_dir}", *overrides])


class LossRecorder(L.Callback):
    def __init__(self):
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def train_ckpt(run_dir, *overrides):
    """Train a run with these overrides in `run_dir`; its best.ckpt."""
    from gptft.train import train

    train(compose_cfg(run_dir, *overrides))
    return run_dir / "checkpoints" / "best.ckpt"


@contextmanager
def torch_threads(n: int):
    """One-token decoding of a tiny model: extra threads only add synchronisation (10x slower on a busy
    2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def subset_csv(shared_data: Path, path: Path, per_class: int = 40) -> Path:
    """The first `per_class` ham and spam messages of the real SMS file as a text,label CSV: a run on it
    takes seconds (README: the tests run its quick trial on this subset)."""
    import csv

    rows, seen = [], {"ham": 0, "spam": 0}
    for line in (shared_data / "sms_spam_collection" / "SMSSpamCollection").read_text(encoding="utf-8").splitlines():
        label, _, text = line.partition("\t")
        if seen[label] < per_class:
            seen[label] += 1
            rows.append((text, label))
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([("text", "label"), *rows])
    return path
