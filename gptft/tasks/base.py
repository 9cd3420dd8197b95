"""What both tasks share: freezing, the frozen-prefix cache, the optimizer, checkpoint metadata."""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import lightning as L
import torch

from ..errors import GptftError
from .finetune import PrefixCache, configure_trainable, set_train_mode

log = logging.getLogger(__name__)

CACHE_DTYPES = {"auto": None, "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# a resumed checkpoint must agree with the run on these, or its weights mean something else
_RESUME_KEYS = ("label_names", "pooling", "prompt_style", "positive_index")


def split_prefix(split: str) -> str:
    """Metric prefix of a split scored after fitting: test/..., final_train/..., final_val/..."""
    return "test" if split == "test" else f"final_{split}"


class FinetuneTask(L.LightningModule):
    task_name = "base"
    # splits that `trainer.test` scores, in the order of its dataloaders
    test_splits: Sequence[str] = ("test",)

    def __init__(self, backbone: torch.nn.Module, *, meta: Mapping, finetune: Mapping, optimizer: Mapping):
        super().__init__()
        self.backbone = backbone
        self.finetune = dict(finetune)
        self.optim = dict(optimizer)
        self.meta = {**meta, "task": self.task_name}
        self.prefix_cache: PrefixCache | None = None
        self.boundary = 0
        self.final: dict[str, dict] = {}

    def freeze_body(self) -> None:
        """Call once the head is in place: set requires_grad and decide on the prefix cache."""
        ft = self.finetune
        self.boundary = configure_trainable(self.backbone, ft.get("mode", "last_blocks"), int(ft.get("trainable_blocks", 1)))
        set_train_mode(self.backbone, self.boundary, True)
        dtype = str(ft.get("cache_dtype", "auto"))
        if dtype not in CACHE_DTYPES:
            raise GptftError(f"finetune.cache_dtype={dtype!r} is not one of {', '.join(CACHE_DTYPES)}")
        self._cache_dtype = CACHE_DTYPES[dtype]
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
            max_gb = float(self.finetune.get("cache_max_gb", 4.0))
            self.prefix_cache = PrefixCache(self.boundary, self._cache_dtype, int(max_gb * 2**30))
        if self.prefix_cache is not None:
            x = self.prefix_cache.hidden(bb, ids, batch["lengths"], batch["example_id"])
        else:
            x = bb.run_blocks(bb.embed(ids), 0, self.boundary)
        return bb.final_norm(bb.run_blocks(x, self.boundary, None))

    def on_train_epoch_start(self) -> None:
        # Lightning puts every module in train mode; the frozen prefix must run without dropout
        set_train_mode(self.backbone, self.boundary, True)

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        # fused: one kernel over all tensors instead of a loop (a third of a cached spam step on a CPU)
        fused = bool(self.optim.get("fused", True)) and all(p.dtype.is_floating_point for p in params)
        return torch.optim.AdamW(params, lr=float(self.optim.get("lr", 5e-5)),
                                 weight_decay=float(self.optim.get("weight_decay", 0.1)), fused=fused)

    def on_train_epoch_end(self) -> None:
        if self.prefix_cache is not None and self.current_epoch == 0:
            c = self.prefix_cache
            log.info("frozen-prefix cache: %d examples, %.1f MiB", len(c), c.nbytes / 2**20)
            self.log("cache/size_mib", c.nbytes / 2**20)

    def on_test_epoch_start(self) -> None:
        self.final = {}

    def text_to_tensorboard(self, tag: str, text: str) -> None:
        exp = getattr(self.logger, "experiment", None)
        if exp is not None and hasattr(exp, "add_text"):
            exp.add_text(tag, text, self.global_step)

    # -- checkpoints ---------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["gptft"] = self.meta

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Refuse a checkpoint whose weights would mean something else in this run."""
        meta = checkpoint.get("gptft")
        if meta is None:
            raise GptftError("the checkpoint has no gptft metadata; resume only from a gptft best.ckpt/last.ckpt")
        if meta.get("task") != self.task_name:
            raise GptftError(f"the checkpoint is from task={meta.get('task')}, this run is task={self.task_name}; "
                             f"resume with the task it was trained on")
        problems = []
        shape = lambda m: {k: v for k, v in (m.get("backbone_config") or {}).items() if k != "dropout"}
        if shape(meta) != shape(self.meta):
            diff = {k: (shape(meta).get(k), v) for k, v in shape(self.meta).items() if shape(meta).get(k) != v}
            problems.append(f"the backbone differs from model={self.meta.get('model', {}).get('name')}: {diff}")
        mine_ft, theirs_ft = self.meta.get("finetune_cfg") or {}, meta.get("finetune_cfg") or {}
        for key in ("mode", "trainable_blocks"):
            if mine_ft.get(key) != theirs_ft.get(key):
                problems.append(f"finetune.{key}: checkpoint {theirs_ft.get(key)!r}, this run {mine_ft.get(key)!r}")
        for key in _RESUME_KEYS:
            if meta.get(key) != self.meta.get(key):
                problems.append(f"{key}: checkpoint {meta.get(key)!r}, this run {self.meta.get(key)!r}")
        if (meta.get("tokenizer") or {}).get("name") != (self.meta.get("tokenizer") or {}).get("name"):
            problems.append("the tokenizer differs")
        if problems:
            raise GptftError("cannot resume from this checkpoint: " + "; ".join(problems) +
                             ". Resume with the settings it was trained with, or start a new run.")
