"""The task's own test metrics: one `trainer.test` pass of its test step, the same code that scores
the splits after training (so loss, accuracy, F1 and the confusion matrix have one definition)."""
from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader

from ..progress import progress_bar


def test_metrics(task: L.LightningModule, loader: DataLoader, accelerator: str, split: str = "test") -> dict:
    """`task.final[split]` after its test step has run over every batch of `loader`, the split's (fp32)."""
    trainer = L.Trainer(accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
                        enable_model_summary=False, callbacks=[progress_bar()])
    task.test_splits = (split,)
    trainer.test(task, dataloaders=loader, verbose=False)
    return task.final[split]
