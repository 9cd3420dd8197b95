"""Batch builders shared by the data modules: padding collates and a length-bucketing sampler.

Collates are classes (not closures) so DataLoader workers can pickle them.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence, Sized

import torch
from torch.utils.data import BatchSampler, RandomSampler, Sampler

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


class EpochShuffle(RandomSampler):
    """A shuffled order of `data_source` that depends on (seed, epoch) alone, not on how many epochs this
    process has already drawn: a resumed run sees the order an uninterrupted one would. Lightning calls
    `set_epoch` before each epoch; being a RandomSampler tells Lightning that it shuffles.

    With several ranks (`world_size` > 1) every rank draws the same order and takes every world_size-th
    example from position `rank`, after dropping the remainder (under world_size examples, different ones
    each epoch), so all ranks train the same number of batches."""

    def __init__(self, data_source: Sized, seed: int, rank: int = 0, world_size: int = 1):
        super().__init__(data_source)
        self.seed = seed
        self.epoch = 0
        self.rank, self.world_size = rank, world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.data_source) // self.world_size

    def __iter__(self) -> Iterator[int]:
        # replay the draws a seeded DataLoader(shuffle=True) made per epoch under Lightning (a worker base
        # seed, then the permutation): the orders of earlier gptft versions, so their results reproduce
        g, n = torch.Generator().manual_seed(self.seed), len(self.data_source)
        for _ in range(self.epoch + 1):
            torch.empty((), dtype=torch.int64).random_(generator=g)
            order = torch.randperm(n, generator=g)
        if self.world_size > 1:
            order = order[self.rank : n // self.world_size * self.world_size : self.world_size]
        return iter(order.tolist())


class EvalBatches(Sampler[list[int]]):
    """Every example of an evaluation split exactly once, in the batches one process makes: `batch_size`
    consecutive examples (in order, or longest first when `lengths` are given, so a batch holds rows of nearly
    one length and little padding); with `max_tokens` and lengths, a batch of short rows grows past batch_size
    while rows x its longest row stay within max_tokens (no gradients: bigger batches only run faster), in at
    least MIN_EVAL_BATCHES batches where batch_size allows. With
    several ranks each takes every world_size-th of those same batches (no padding, no duplicates:
    DistributedSampler would repeat examples to even the ranks out), so a batch's results are those of one
    process and summed counts are the split's. A split with fewer batches than ranks is cut into world_size
    nearly equal batches instead (it needs n >= world_size)."""

    def __init__(self, n: int, batch_size: int, rank: int = 0, world_size: int = 1, lengths: list[int] | None = None,
                 max_tokens: int | None = None):
        order = list(range(n)) if lengths is None else sorted(range(n), key=lambda i: -lengths[i])  # stable
        if lengths is None or max_tokens is None:
            batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
        else:
            batches = _token_batches(order, lengths, batch_size, max_tokens)
        if len(batches) < world_size:
            batches = [order[k * n // world_size:(k + 1) * n // world_size] for k in range(world_size)]
        self.batches = batches[rank::world_size]

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)


MIN_EVAL_BATCHES = 8  # a budget never leaves fewer: up to 8 processes then share the batches one process makes


def _token_batches(order: list[int], lengths: list[int], batch_size: int, max_tokens: int) -> list[list[int]]:
    """Cut `order` (longest first) into batches of at least batch_size rows, more while rows x the batch's
    first (longest) row fit in max_tokens, and at most n / MIN_EVAL_BATCHES rows (rounded up) beyond that."""
    cap = max(batch_size, -(-len(order) // MIN_EVAL_BATCHES))
    batches, i = [], 0
    while i < len(order):
        rows = min(cap, max(batch_size, max_tokens // max(lengths[order[i]], 1)))
        batches.append(order[i:i + rows])
        i += rows
    return batches


class ResumableBatchSampler(BatchSampler):
    """torch's BatchSampler whose next pass can begin after `skip_next(n)` batches: a run resumed mid-epoch
    continues with the batch it would have trained next."""

    def __init__(self, sampler: Sampler[int], batch_size: int, drop_last: bool):
        super().__init__(sampler, batch_size, drop_last)
        self.skip = 0

    def skip_next(self, batches: int) -> None:
        self.skip = batches

    def __iter__(self) -> Iterator[list[int]]:
        skip, self.skip = self.skip, 0  # once: later epochs start at their first batch
        return itertools.islice(self.batches(), skip, None)

    def batches(self) -> Iterator[list[int]]:
        return super().__iter__()


class BucketBatchSampler(ResumableBatchSampler):
    """Batches of similar length: take the sampler's order, sort chunks of `chunk_batches` batches by length,
    cut into batches, shuffle the batches (seeded by the sampler's `seed + epoch`, so a resumed run matches).
    Keeps BatchSampler's (sampler, batch_size, drop_last) arguments, so Lightning can re-create it around a
    sampler of its own (e.g. a DistributedSampler)."""

    def __init__(self, sampler: Sampler[int], batch_size: int, drop_last: bool, lengths: Sequence[int],
                 chunk_batches: int = 50):
        super().__init__(sampler, batch_size, drop_last)
        self.lengths = list(lengths)
        self.chunk_batches = chunk_batches

    def batches(self) -> Iterator[list[int]]:
        order = list(self.sampler)
        if self.drop_last:  # drop a random remainder, not the longest examples
            order = order[: len(order) // self.batch_size * self.batch_size]
        chunk = self.batch_size * self.chunk_batches
        batches = []
        for start in range(0, len(order), chunk):
            part = sorted(order[start : start + chunk], key=self.lengths.__getitem__)
            batches += [part[j : j + self.batch_size] for j in range(0, len(part), self.batch_size)]
        g = torch.Generator().manual_seed(getattr(self.sampler, "seed", 0) + getattr(self.sampler, "epoch", 0))
        return iter([batches[k] for k in torch.randperm(len(batches), generator=g).tolist()])
