"""Batch builders shared by the data modules: padding collates and a length-bucketing sampler.

Collates are classes (not closures) so DataLoader workers can pickle them.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch.utils.data import Sampler

IGNORE_INDEX = -100  # torch.nn.functional.cross_entropy's default ignore_index


class ClassificationCollate:
    """Right-pads `input_ids` with `pad_id` to the longest member, or to `pad_to` (truncating longer ones).

    Batch: input_ids (B,T), lengths (B,) real lengths, labels (B,), example_id (B,), all int64.
    """

    def __init__(self, pad_id: int, pad_to: int | None = None):
        self.pad_id = pad_id
        self.pad_to = pad_to

    def __call__(self, batch: Sequence[dict]) -> dict[str, torch.Tensor]:
        seqs = [ex["input_ids"] for ex in batch]
        width = self.pad_to if self.pad_to is not None else max(len(s) for s in seqs)
        input_ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        lengths = torch.empty(len(seqs), dtype=torch.long)
        for i, s in enumerate(seqs):
            n = min(len(s), width)
            input_ids[i, :n] = torch.as_tensor(s[:n], dtype=torch.long)
            lengths[i] = n
        return {
            "input_ids": input_ids,
            "lengths": lengths,
            "labels": torch.tensor([ex["label"] for ex in batch], dtype=torch.long),
            "example_id": torch.tensor([ex["example_id"] for ex in batch], dtype=torch.long),
        }


class InstructCollate:
    """Next-token inputs/targets for instruction tuning.

    Each sequence gets `eot_id` appended and is padded to (longest + 1) with `pad_id`;
    inputs = seq[:-1], targets = seq[1:]. Targets past the appended end-of-text are
    IGNORE_INDEX (the end-of-text itself stays a target, so the model learns to stop).
    `mask_prompt` also ignores targets that predict prompt tokens: targets[:prompt_len-1].
    `max_length` truncates inputs and targets (positions, not examples).
    Batch: input_ids (B,T), targets (B,T), lengths (B,) real input lengths, example_id (B,).
    """

    def __init__(self, eot_id: int, pad_id: int | None = None, max_length: int | None = None,
                 mask_prompt: bool = False, ignore_index: int = IGNORE_INDEX):
        self.eot_id = eot_id
        self.pad_id = eot_id if pad_id is None else pad_id
        self.max_length = max_length
        self.mask_prompt = mask_prompt
        self.ignore_index = ignore_index

    def __call__(self, batch: Sequence[dict]) -> dict[str, torch.Tensor]:
        longest = max(len(ex["input_ids"]) for ex in batch)
        seqs = torch.full((len(batch), longest + 1), self.pad_id, dtype=torch.long)
        targets = torch.full((len(batch), longest), self.ignore_index, dtype=torch.long)
        lengths = torch.empty(len(batch), dtype=torch.long)
        for i, ex in enumerate(batch):
            n = len(ex["input_ids"])
            seqs[i, : n + 1] = torch.as_tensor(list(ex["input_ids"]) + [self.eot_id], dtype=torch.long)
            # by position, not by value, so an end-of-text id inside the text is still a target
            targets[i, :n] = seqs[i, 1 : n + 1]
            if self.mask_prompt:
                targets[i, : max(ex["prompt_len"] - 1, 0)] = self.ignore_index
            lengths[i] = n
        width = longest if self.max_length is None else min(longest, self.max_length)
        return {
            "input_ids": seqs[:, :width].contiguous(),
            "targets": targets[:, :width].contiguous(),
            "lengths": lengths.clamp_(max=width),
            "example_id": torch.tensor([ex["example_id"] for ex in batch], dtype=torch.long),
        }


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of similar length: shuffle, sort chunks of `chunk_batches` batches by length,
    cut into batches, shuffle the batches. Seeded by `seed + epoch` (Lightning calls set_epoch)."""

    def __init__(self, lengths: Sequence[int], batch_size: int, drop_last: bool, seed: int,
                 chunk_batches: int = 50):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.seed = seed
        self.chunk = batch_size * chunk_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.lengths)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        self.epoch += 1  # a new order next time even if nobody calls set_epoch
        order = torch.randperm(len(self.lengths), generator=g).tolist()
        if self.drop_last:  # drop a random remainder, not the longest examples
            order = order[: len(self) * self.batch_size]
        batches = []
        for start in range(0, len(order), self.chunk):
            part = sorted(order[start : start + self.chunk], key=self.lengths.__getitem__)
            batches += [part[j : j + self.batch_size] for j in range(0, len(part), self.batch_size)]
        for k in torch.randperm(len(batches), generator=g).tolist():
            yield batches[k]
