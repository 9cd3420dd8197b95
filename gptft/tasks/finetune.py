"""Which parameters train, and the cache of the frozen prefix's hidden states."""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping

import torch
import torch.nn as nn
from ..errors import ConfigError
from ..models.lora import inject_lora

log = logging.getLogger(__name__)

MODES = ("last_blocks", "full", "head_only", "lora")


def head_trains(finetune: Mapping) -> bool:
    """Whether the task head trains: always, except under LoRA with lora.train_head=false."""
    return finetune["mode"] != "lora" or bool(finetune["lora"]["train_head"])


def configure_trainable(backbone: nn.Module, mode: str, trainable_blocks: int = 1, lora: Mapping | None = None) -> int:
    """Freeze the backbone except what `mode` trains; return the index of the first trainable block.

    last_blocks: the last N blocks, the final norm and the head. full: everything.
    head_only: the head alone. lora: adapters in the blocks `lora` names (settings in gptft.models.lora),
    plus the head if lora.train_head. The input embedding trains only in `full`.
    """
    n = len(backbone.blocks)
    if mode == "lora":
        return inject_lora(backbone, lora)
    if mode == "full":
        backbone.requires_grad_(True)
        return 0
    if mode == "last_blocks":
        if not 1 <= trainable_blocks <= n:
            raise ConfigError(
                f"finetune.trainable_blocks={trainable_blocks} is out of range: the model has {n} "
                f"blocks; use 1..{n}, or finetune.mode=full / head_only"
            )
        boundary = n - trainable_blocks
    elif mode == "head_only":
        boundary = n
    else:
        raise ConfigError(f"unknown finetune.mode={mode!r}; choose one of {', '.join(MODES)}")
    backbone.requires_grad_(False)
    for block in backbone.blocks[boundary:]:
        block.requires_grad_(True)
    if mode == "last_blocks":
        backbone.final_norm.requires_grad_(True)
    backbone.head.requires_grad_(True)
    return boundary


def replace_head(backbone: nn.Module, module: nn.Module) -> None:
    """Swap the backbone's head (a direct child) for `module`."""
    for name, child in backbone.named_children():
        if child is backbone.head:
            setattr(backbone, name, module)
            return
    raise TypeError(f"{type(backbone).__name__}.head is not a direct child module")


@contextlib.contextmanager
def linears_cast_once(module: nn.Module, device_type: str):
    """Under autocast, the frozen nn.Linear weights and biases in `module` are replaced by copies in autocast's
    dtype for the duration. Autocast makes exactly these copies at every call (so the results are the same
    bits); the frozen-prefix pass makes them once instead of once per batch."""
    if not torch.is_autocast_enabled(device_type):
        yield
        return
    dtype, swapped = torch.get_autocast_dtype(device_type), []
    for m in module.modules():
        for name, p in m.named_parameters(recurse=False) if isinstance(m, nn.Linear) else ():
            if not p.requires_grad and p.dtype == torch.float32:
                swapped.append((m, name, p))
                setattr(m, name, nn.Parameter(p.detach().to(dtype), requires_grad=False))
    try:
        yield
    finally:
        for m, name, p in swapped:
            setattr(m, name, p)


def set_train_mode(backbone: nn.Module, boundary: int, training: bool) -> None:
    """Train mode only for what trains: the frozen prefix always runs without dropout."""
    if boundary == 0:
        backbone.train(training)
        return
    backbone.train(False)
    if training:
        for block in backbone.blocks[boundary:]:
            block.train()
        backbone.final_norm.train()
        backbone.head.train()


class PrefixCache:
    """Hidden states after the frozen blocks, per example id, computed once.

    Valid only while the prefix is frozen and runs without dropout; the task checks that.
    Rows are stored at their real length, so a message's cached states never depend on the
    batch it was first seen in (causal attention: real tokens never see right padding).
    """

    def __init__(self, boundary: int, dtype: torch.dtype | None, max_bytes: int):
        # dtype None keeps what the prefix produced (fp32 under autocast): identical to no cache
        self.boundary = boundary
        self.dtype = dtype
        self.max_bytes = max_bytes
        self.rows: dict[int, torch.Tensor] = {}
        self.nbytes = 0
        self.full = False

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def stored_dtype(self) -> str | None:
        return str(next(iter(self.rows.values())).dtype) if self.rows else None

    def stats(self) -> dict:
        """How much the cache holds: examples, MiB, the dtype rows are kept in, whether it hit its limit."""
        return {"examples": len(self.rows), "mib": round(self.nbytes / 2**20, 2), "dtype": self.stored_dtype,
                "full": self.full}

    @torch.no_grad()
    def _compute(self, backbone, input_ids: torch.Tensor) -> torch.Tensor:
        return backbone.run_blocks(backbone.embed(input_ids), 0, self.boundary)

    def fill(self, backbone, input_ids: torch.Tensor, lengths: torch.Tensor, ids: torch.Tensor) -> None:
        """Compute and keep the rows of the batch not cached yet."""
        self._rows(backbone, input_ids, lengths, ids.tolist())

    def hidden(self, backbone, input_ids: torch.Tensor, lengths: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """(B, T, d) prefix output for the batch; rows past each length are zeros."""
        rows = self._rows(backbone, input_ids, lengths, ids.tolist())
        dtype = backbone.embedding.weight.dtype  # hand the trainable blocks what they would get uncached
        x = torch.zeros(len(rows), input_ids.shape[1], rows[0].shape[-1], dtype=dtype, device=input_ids.device)
        for i, row in enumerate(rows):
            x[i, : row.shape[0]] = row
        return x

    def _rows(self, backbone, input_ids: torch.Tensor, lengths: torch.Tensor, keys: list[int]) -> list[torch.Tensor]:
        missing = [i for i, k in enumerate(keys) if k not in self.rows]
        fresh = {}
        if missing:
            sub = input_ids[missing]
            sub_len = lengths[missing]
            out = self._compute(backbone, sub[:, : int(sub_len.max())])
            for j, i in enumerate(missing):
                row = out[j, : int(sub_len[j])]
                row = row if self.dtype is None else row.to(self.dtype)
                fresh[keys[i]] = row
                self._store(keys[i], row)
        return [fresh[k] if k in fresh else self.rows[k] for k in keys]

    def _store(self, key: int, row: torch.Tensor) -> None:
        if self.full:
            return
        size = row.numel() * row.element_size()
        if self.nbytes + size > self.max_bytes:
            self.full = True
            log.warning(
                "prefix cache reached finetune.cache_max_gb=%.2f with %d examples; the rest are "
                "recomputed each time (raise the limit to cache everything)",
                self.max_bytes / 2**30, len(self.rows),
            )
            return
        self.rows[key] = row.clone()
        self.nbytes += size
