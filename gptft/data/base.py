"""What the data modules share: setting checks, the data file, a setup that runs once, and the loaders."""
from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from gptft.data.collate import BucketBatchSampler, EpochShuffle, EvalBatches, ResumableBatchSampler
from gptft.data.download import ensure_file
from gptft.errors import GptftError

SPLITS = ("train", "val", "test")


class DataError(GptftError):
    """Bad input data or a bad data setting; the message names the file, the place and the fix."""


class MissingDataFile(DataError, FileNotFoundError):
    """data.path names no file (still a FileNotFoundError for callers that catch that)."""


def read_utf8(file: Path) -> str:
    raw = file.read_bytes()
    try:
        return raw.decode("utf-8-sig")  # -sig: drop the byte-order mark Excel writes
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(f"{file}, line {line}: not valid UTF-8 ({err.reason}); re-save the file as UTF-8") from None


class TextDataModule(L.LightningDataModule):
    """Base of the data modules: subclasses set `default_file` (download spec for path=None) and
    `collate_fn`, and implement `_load()` to fill train_set / val_set / test_set and `report`."""

    default_file: dict

    def __init__(self, tokenizer, path: str | None, batch_size: int, num_workers: int, seed: int,
                 max_length: int | None, bucket: bool, eval_batch_tokens: int | None = None):
        super().__init__()
        if max_length is not None and not (isinstance(max_length, int) and max_length > 0):
            raise DataError(f"data.max_length must be null or a positive int, got {max_length!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise DataError(f"data.batch_size must be a positive integer, got {batch_size!r}")
        if eval_batch_tokens is not None and (isinstance(eval_batch_tokens, bool) or not isinstance(eval_batch_tokens, int)
                                              or eval_batch_tokens < 1):
            raise DataError(f"data.eval_batch_tokens must be null or a positive integer, got {eval_batch_tokens!r}")
        self.tokenizer = tokenizer
        self.path = path
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.max_length = max_length
        self.bucket = bucket
        self.eval_batch_tokens = eval_batch_tokens
        self.report: dict = {}
        self._ready = False
        self._train_start: tuple[int, int] | None = None

    def _load(self) -> None:
        raise NotImplementedError

    def bucket_lengths(self) -> list[int]:
        """What the bucketing sampler sorts train examples by: their length in a batch."""
        return [len(ex["input_ids"]) for ex in self.train_set]

    def data_file(self) -> Path:
        """data.path, or the default file (downloaded if missing)."""
        if self.path is None:
            return ensure_file(**self.default_file)
        file = Path(self.path).expanduser()
        if file.is_dir():
            raise DataError(f"data.path={self.path} is a directory; give the data file inside it")
        if not file.is_file():
            raise MissingDataFile(f"data.path={self.path}: no such file ({file.resolve()})")
        return file

    # ---- Lightning hooks
    def prepare_data(self) -> None:
        if self.path is None:
            ensure_file(**self.default_file)

    def setup(self, stage: str | None = None) -> None:
        if not self._ready:  # Lightning calls setup once per stage; the splits must not change
            self._load()
            self._ready = True

    def start_train_at(self, epoch: int, batch: int) -> None:
        """Make the next train loader begin at `epoch` after its first `batch` batches (a resumed run)."""
        self._train_start = (epoch, batch)

    def train_dataloader(self) -> DataLoader:
        """Shuffled batches; the order depends on (seed, epoch) alone, so a resumed run trains on what an
        uninterrupted one would (see start_train_at)."""
        self.setup()
        if len(self.train_set) < self.batch_size:  # drop_last would leave an empty epoch
            raise DataError(
                f"the train split has {len(self.train_set)} examples, fewer than data.batch_size="
                f"{self.batch_size}; lower data.batch_size or use more data"
            )
        rank, world = self.ranks()
        if world > 1 and len(self.train_set) // world < self.batch_size:
            raise DataError(f"the train split has {len(self.train_set)} examples: {len(self.train_set) // world} for each "
                            f"of the {world} processes, fewer than data.batch_size={self.batch_size}; lower "
                            f"data.batch_size or trainer.devices")
        order = EpochShuffle(self.train_set, seed=self.seed, rank=rank, world_size=world)
        if self.bucket:
            batches = BucketBatchSampler(order, self.batch_size, drop_last=True, lengths=self.bucket_lengths())
        else:
            batches = ResumableBatchSampler(order, self.batch_size, drop_last=True)
        epoch, skip = self._train_start or (self.trainer.current_epoch if self.trainer else 0, 0)
        self._train_start = None
        order.set_epoch(epoch)  # Lightning sets it only after its first batch of a (resumed) fit is drawn
        batches.skip_next(skip)
        return self._loader(self.train_set, batch_sampler=batches)

    def ranks(self) -> tuple[int, int]:
        """(this process's rank, number of processes) of the trainer using this module; (0, 1) without one.
        The loaders shard the data themselves (the trainer runs with use_distributed_sampler=False)."""
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def val_dataloader(self) -> DataLoader:
        return self.eval_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.eval_dataloader("test")

    def eval_dataloader(self, split: str) -> DataLoader:
        """Every example of `split` ("train", "val" or "test"), longest first (little padding), in batches of
        batch_size rows or, for short rows, up to eval_batch_tokens tokens: no shuffling, no dropped batch; with
        several processes each scores its share of the same batches (EvalBatches)."""
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        self.setup()
        data, (rank, world) = getattr(self, f"{split}_set"), self.ranks()
        if 0 < len(data) < world:
            raise DataError(f"the {split} split has {len(data)} examples, fewer than the {world} processes that "
                            f"score it; use more data or lower trainer.devices")
        lengths = [len(ex["input_ids"]) for ex in data]
        budget = None if getattr(self, "pad_width", None) else self.eval_batch_tokens  # fixed padding: the book's batches
        return self._loader(data, batch_sampler=EvalBatches(len(data), self.batch_size, rank, world, lengths, budget))

    def _loader(self, dataset: list[dict], **kwargs) -> DataLoader:
        # an own generator: each new iterator draws a worker seed from it, which would otherwise move the
        # global generator (dropout) by a number of draws that differs between a resumed and a whole run
        return DataLoader(dataset, collate_fn=self.collate_fn, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, generator=torch.Generator().manual_seed(self.seed),
                          **kwargs)
