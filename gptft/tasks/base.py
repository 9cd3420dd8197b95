"""What every task shares: freezing, the frozen-prefix cache, the optimizer and schedule, checkpoint metadata.

A task class is built with `cls(backbone, data=TaskData, tokenizer=..., name=..., finetune=..., meta=...,
optimizer=..., scheduler=..., test_splits=..., checkpoint_full=..., **its own plain values)`: by the factory from the
`task.module` config, or from a checkpoint's metadata. Its own values must be plain (str, numbers,
bools, None, lists), so the checkpoint can store them as data.
"""
from __future__ import annotations

import inspect
import itertools
import logging
from collections.abc import Callable, Mapping, Sequence

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException
import torch
import torch.nn as nn
from torchmetrics import MeanMetric, Metric, SumMetric

from ..data.handoff import TaskData
from ..errors import CheckpointError, ConfigError
from ..models import reference
from ..models.kv_cache import rows_at
from ..models.lora import merge_lora
from ..progress import iterate
from .finetune import PrefixCache, configure_trainable, linears_cast_once, set_train_mode

log = logging.getLogger(__name__)

CACHE_DTYPES = {"auto": None, "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# a resumed checkpoint must agree with the run on these, or its weights mean something else
_RESUME_KEYS = ("task", "task_class", "label_names", "prompt_style", "positive_index")


def exact_sum(metric: Metric) -> Metric:
    """The metric summing in float64: float32 losses add up exactly there in any order, so the ranks of a
    multi-process run, each summing its share, give the bits one process gives (MPS has no float64: see setup)."""
    return metric.set_dtype(torch.float64)


def split_prefix(split: str) -> str:
    """Metric prefix of a split scored after fitting: test/..., final_train/..., final_val/..."""
    return "test" if split == "test" else f"final_{split}"


class FinetuneTask(L.LightningModule):
    # the task's own constructor values that a resumed checkpoint must share (e.g. the pooling rule)
    resume_args: tuple[str, ...] = ()

    def __init__(self, backbone: torch.nn.Module, *, data: TaskData, tokenizer, name: str, finetune: Mapping,
                 meta: Mapping, optimizer: Callable | None = None, scheduler: Callable | None = None,
                 test_splits: Sequence[str] = ("test",), checkpoint_full: bool = False):
        """optimizer: params -> torch optimizer; scheduler: (optimizer[, total_steps=]) -> LR scheduler
        stepped every optimizer step (both None when only predicting). test_splits: the splits
        `trainer.test` scores, in the order of its dataloaders. checkpoint_full: checkpoints also hold the
        frozen tensors (else they refer to the backbone's source, meta["backbone_ref"])."""
        super().__init__()
        self.backbone = backbone
        self.task_data = data
        self.tokenizer = tokenizer
        self.task_name = name
        self.finetune = dict(finetune)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.test_splits = tuple(test_splits)
        self.meta = dict(meta)
        self.checkpoint_full = checkpoint_full
        self.prefix_cache: PrefixCache | None = None
        self.boundary = 0
        self.final: dict[str, dict] = {}

    def setup(self, stage: str) -> None:
        if self.trainer.strategy.root_device.type == "mps":  # no float64 there: exact_sum's sums stay float32
            for metric in self.modules():
                if isinstance(metric, (MeanMetric, SumMetric)):
                    metric.set_dtype(torch.float32)

    def freeze_body(self) -> None:
        """Call once the head is in place: set requires_grad and decide on the prefix cache."""
        ft = self.finetune
        lora = ft["lora"] if ft["mode"] == "lora" else None  # older checkpoints have no lora settings
        self.boundary = configure_trainable(self.backbone, ft["mode"], int(ft["trainable_blocks"]), lora)
        set_train_mode(self.backbone, self.boundary, True)
        self.backbone.activation_checkpointing = bool(ft.get("activation_checkpointing", False))  # older checkpoints: off
        dtype = str(ft["cache_dtype"])
        if dtype not in CACHE_DTYPES:
            raise ConfigError(f"finetune.cache_dtype={dtype!r} is not one of {', '.join(CACHE_DTYPES)}")
        self._cache_dtype = CACHE_DTYPES[dtype]
        self._cache_wanted = bool(ft["cache_prefix"]) and self.boundary > 0
        reason = self.cache_blocker()
        if self._cache_wanted and reason:
            log.info("frozen-prefix cache off: %s", reason)
            self._cache_wanted = False

    def merge_adapters(self) -> None:
        """Fold LoRA adapters into the base weights (after loading a checkpoint, for prediction speed and export)."""
        merge_lora(self.backbone)

    def cache_blocker(self) -> str | None:
        """Why the prefix cache would be wrong for this task's settings (None: it is valid)."""
        return None

    def _new_cache(self) -> PrefixCache:
        return PrefixCache(self.boundary, self._cache_dtype, int(float(self.finetune["cache_max_gb"]) * 2**30))

    # -- the forward pass every task uses ---------------------------------------------------
    def hidden_states(self, batch: Mapping[str, torch.Tensor], at: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, d) after the final norm; with `at` ((B,), one position per row) only those rows, (B, 1, d): the
        top block then computes just them (unless it is frozen and cached: head_only)."""
        bb, ids = self.backbone, batch["input_ids"]
        if self._cache_wanted and self.prefix_cache is None:
            self.prefix_cache = self._new_cache()
        if self.prefix_cache is not None:
            x = self.prefix_cache.hidden(bb, ids, batch["lengths"], batch["example_id"])
        else:
            x = bb.run_blocks(bb.embed(ids), 0, self.boundary)
        if at is not None and self.boundary == len(bb.blocks):
            x = rows_at(x, at)
        return bb.final_norm(bb.run_blocks(x, self.boundary, None, at=at))

    def on_fit_start(self) -> None:
        """finetune.compile: torch.compile each trained block in place (state-dict names unchanged), with dynamic
        shapes: batches differ in length. Compiled at its first call, so the first steps carry the compile time."""
        if self.finetune.get("compile", False):
            for block in self.backbone.blocks[self.boundary:]:
                block.compile(dynamic=True)

    def on_train_start(self) -> None:
        """Fill the prefix cache up front for every example this process will train on or score (train, val and
        the splits scored after fitting), in the batches each split is scored in, with the frozen weights cast once
        to the autocast dtype. A cached row's last bits depend on the batch that computed it: filled this way
        they are the same in every run (a resumed run, whose first epoch is a later, differently shuffled one,
        continues bit for bit), and the run's scores are those of rescoring its checkpoint without a cache."""
        dm = self.trainer.datamodule
        if not self._cache_wanted or not hasattr(dm, "eval_dataloader"):
            return
        if self.prefix_cache is None:
            self.prefix_cache = self._new_cache()
        set_train_mode(self.backbone, self.boundary, True)
        bb = self.backbone
        loaders = [dm.eval_dataloader(split) for split in dict.fromkeys(("train", "val", *self.test_splits))]
        batches = itertools.chain.from_iterable(loaders)
        with self.trainer.precision_plugin.forward_context(), linears_cast_once(bb.blocks[: self.boundary],
                                                                                 self.device.type):
            for batch in iterate(batches, "filling the frozen-prefix cache", sum(map(len, loaders)), "batches"):
                if self.trainer.received_sigterm:  # Lightning looks only between steps; this pass can take minutes
                    raise SIGTERMException
                batch = self.transfer_batch_to_device(batch, self.device, 0)
                self.prefix_cache.fill(bb, batch["input_ids"], batch["lengths"], batch["example_id"])
        log.info("frozen-prefix cache filled: %d examples", len(self.prefix_cache))

    def on_train_epoch_start(self) -> None:
        # Lightning puts every module in train mode; the frozen prefix must run without dropout
        set_train_mode(self.backbone, self.boundary, True)

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise ConfigError("this task was built without an optimizer (rebuilt from a checkpoint for predictions); "
                              "train with python -m gptft.train")
        optimizer = self.optimizer_factory([p for p in self.parameters() if p.requires_grad])
        if self.scheduler_factory is None:
            return optimizer
        kwargs = {}
        if "total_steps" in inspect.signature(self.scheduler_factory).parameters:
            kwargs["total_steps"] = self.trainer.estimated_stepping_batches
        scheduler = self.scheduler_factory(optimizer, **kwargs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def cache_stats(self) -> dict | None:
        """The frozen-prefix cache's size (None: no cache), for metrics.json."""
        return None if self.prefix_cache is None else {**self.prefix_cache.stats(), "boundary_block": self.boundary}

    def on_train_epoch_end(self) -> None:
        if self.prefix_cache is not None and self.current_epoch == 0:
            stats = self.prefix_cache.stats()
            log.info("frozen-prefix cache: %d examples, %.1f MiB", stats["examples"], stats["mib"])
            self.log("cache/size_mib", stats["mib"], sync_dist=True, reduce_fx="sum")  # all ranks' caches

    def on_test_epoch_start(self) -> None:
        self.final = {}

    def after_test(self, run_dir, scored_ckpt: str | None) -> dict:
        """Called once the splits are scored after training: extra files and metrics.json entries (none here)."""
        return {}

    def text_to_tensorboard(self, tag: str, text: str) -> None:
        exp = getattr(self.logger, "experiment", None)
        if exp is not None and hasattr(exp, "add_text"):
            exp.add_text(tag, text, self.global_step)

    # -- checkpoints ---------------------------------------------------------------------------
    def frozen_state_dict(self) -> dict[str, torch.Tensor]:
        """The state_dict entries of frozen parameters: what a small checkpoint leaves to the backbone's source."""
        return {k: v.detach() for k, v in self.state_dict(keep_vars=True).items()
                if isinstance(v, nn.Parameter) and not v.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["gptft"] = {**self.meta, "frozen_included": self.checkpoint_full}
        if not self.checkpoint_full:
            for key in self.frozen_state_dict():
                del checkpoint["state_dict"][key]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Refuse a checkpoint whose weights would mean something else in this run; give a small one this run's
        frozen tensors, which must be those it was trained with."""
        meta = checkpoint.get("gptft")
        if meta is None:
            raise CheckpointError("the checkpoint has no gptft metadata; resume only from a gptft best.ckpt/last.ckpt")
        if meta.get("task") != self.task_name:
            raise CheckpointError(f"the checkpoint is from task={meta.get('task')}, this run is task={self.task_name}; "
                                  f"resume with the task it was trained on")
        problems = []
        shape = lambda m: {k: v for k, v in (m.get("backbone_config") or {}).items() if k != "dropout"}
        if shape(meta) != shape(self.meta):
            diff = {k: (shape(meta).get(k), v) for k, v in shape(self.meta).items() if shape(meta).get(k) != v}
            problems.append(f"the backbone differs from model={self.meta.get('model', {}).get('name')}: {diff}")
        mine_ft, theirs_ft = self.meta.get("finetune_cfg") or {}, meta.get("finetune_cfg") or {}
        for key in ("mode", "trainable_blocks", *(("lora",) if mine_ft.get("mode") == "lora" else ())):
            if mine_ft.get(key) != theirs_ft.get(key):
                problems.append(f"finetune.{key}: checkpoint {theirs_ft.get(key)!r}, this run {mine_ft.get(key)!r}")
        for key in _RESUME_KEYS:
            if meta.get(key) != self.meta.get(key):
                problems.append(f"{key}: checkpoint {meta.get(key)!r}, this run {self.meta.get(key)!r}")
        mine_args, theirs_args = self.meta.get("task_args") or {}, meta.get("task_args") or {}
        defaults = inspect.signature(type(self).__init__).parameters  # what an older checkpoint did not record
        for key in self.resume_args:
            theirs = theirs_args.get(key, getattr(defaults.get(key), "default", None))
            if mine_args.get(key) != theirs:
                problems.append(f"{key}: checkpoint {theirs!r}, this run {mine_args.get(key)!r}")
        if (meta.get("tokenizer") or {}).get("name") != (self.meta.get("tokenizer") or {}).get("name"):
            problems.append("the tokenizer differs")
        if not problems:
            problems += self._frozen_problems(checkpoint)
        if problems:
            raise CheckpointError("cannot resume from this checkpoint: " + "; ".join(problems) +
                             ". Resume with the settings it was trained with, or start a new run.")
        checkpoint["state_dict"] = {**self.frozen_state_dict(), **checkpoint["state_dict"]}

    def _frozen_problems(self, checkpoint: dict) -> list[str]:
        """This run's frozen tensors must be the checkpoint's: by reference for a small one, by value for a full one."""
        meta, state = checkpoint["gptft"], checkpoint["state_dict"]
        frozen = self.frozen_state_dict()
        if meta.get("frozen_included", True):
            if all(k in state and torch.equal(state[k].to(v.device), v) for k, v in frozen.items()):
                return []
        elif reference.same_backbone(meta.get("backbone_ref"), self.meta.get("backbone_ref")):
            return []
        return [f"the frozen backbone differs: checkpoint {reference.shown(meta.get('backbone_ref'))}, this run "
                f"{reference.shown(self.meta.get('backbone_ref'))}"]
