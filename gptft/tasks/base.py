"""What both tasks share: freezing, the frozen-prefix cache, the optimizer, checkpoint metadata."""
from __future__ import annotations

import logging
from collections.abc import Mapping

import lightning as L
import torch

from .finetune import PrefixCache, configure_trainable, set_train_mode

log = logging.getLogger(__name__)

_STORE_DTYPES = {"bf16-mixed": torch.bfloat16, "bf16-true": torch.bfloat16, "16-mixed": torch.float16}


class FinetuneTask(L.LightningModule):
    task_name = "base"

    def __init__(
        self,
        backbone: torch.nn.Module,
        *,
        meta: Mapping,
        finetune: Mapping,
        optimizer: Mapping,
    ):
        super().__init__()
        self.backbone = backbone
        self.finetune = dict(finetune)
        self.optim = dict(optimizer)
        self.meta = {**meta, "task": self.task_name}
        self.prefix_cache: PrefixCache | None = None
        self.boundary = 0

    def freeze_body(self) -> None:
        """Call once the head is in place: set requires_grad and decide on the prefix cache."""
        ft = self.finetune
        self.boundary = configure_trainable(
            self.backbone, ft.get("mode", "last_blocks"), int(ft.get("trainable_blocks", 1))
        )
        self._cache_wanted = bool(ft.get("cache_prefix", True)) and self.boundary > 0
        reason = self.cache_blocker()
        if self._cache_wanted and reason:
            log.info("frozen-prefix cache off: %s", reason)
            self._cache_wanted = False

    def cache_blocker(self) -> str | None:
        """Why the prefix cache would be wrong for this task's settings (None: it is valid)."""
        return None

    # -- the forward pass every task uses ---------------------------------------------------
    def hidden_states(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(B, T, d) after the final norm."""
        bb, ids = self.backbone, batch["input_ids"]
        if self._cache_wanted and self.prefix_cache is None:
            store = _STORE_DTYPES.get(str(self.trainer.precision), torch.float32) if self._trainer else torch.float32
            max_gb = float(self.finetune.get("cache_max_gb", 4.0))
            self.prefix_cache = PrefixCache(self.boundary, store, int(max_gb * 2**30))
        if self.prefix_cache is not None:
            x = self.prefix_cache.hidden(bb, ids, batch["lengths"], batch["example_id"])
            x = x.to(bb.embedding.weight.dtype)
        else:
            x = bb.run_blocks(bb.embed(ids), 0, self.boundary)
        return bb.final_norm(bb.run_blocks(x, self.boundary, None))

    def train(self, mode: bool = True):
        super().train(mode)
        set_train_mode(self.backbone, self.boundary, mode)
        return self

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.AdamW(
            params, lr=float(self.optim.get("lr", 5e-5)), weight_decay=float(self.optim.get("weight_decay", 0.1))
        )

    def on_train_epoch_end(self) -> None:
        if self.prefix_cache is not None and self.current_epoch == 0:
            mb = self.prefix_cache.nbytes / 2**20
            log.info("frozen-prefix cache: %d examples, %.1f MiB (%s)", len(self.prefix_cache), mb, self.prefix_cache.dtype)
            self.log("cache/size_mib", mb, sync_dist=False)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["gptft"] = self.meta

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Refuse a checkpoint of another task or backbone shape before its weights are read."""
        meta = checkpoint.get("gptft")
        if meta is None:
            raise ValueError("the checkpoint has no gptft metadata; resume only from a gptft best.ckpt/last.ckpt")
        if meta.get("task") != self.task_name:
            raise ValueError(
                f"the checkpoint is from task={meta.get('task')}, this run is task={self.task_name}; "
                f"resume with the task it was trained on"
            )
        mine, theirs = self.meta.get("backbone_config"), meta.get("backbone_config")
        if mine and theirs and mine != theirs:
            diff = {k: (theirs.get(k), mine.get(k)) for k in mine if theirs.get(k) != mine.get(k)}
            raise ValueError(f"the checkpoint's backbone differs from model={self.meta['model'].get('name')}: "
                             f"{diff} (checkpoint, this run)")
