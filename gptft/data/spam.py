"""Text classification data: the SMS Spam Collection by default, or the user's own CSV/TSV."""
from __future__ import annotations

import csv
import io
import logging
from collections import Counter
from pathlib import Path
from typing import Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from gptft.data.collate import BucketBatchSampler, ClassificationCollate
from gptft.data.download import SMS_SPAM, ensure_file

log = logging.getLogger(__name__)

SEPARATORS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}


class DataError(ValueError):
    """Bad input data; the message names the file, the place and the fix."""


class SpamDataModule(L.LightningDataModule):
    """Labelled texts -> balanced, shuffled train/val/test splits of token ids.

    path: None -> the SMS Spam Collection in GPTFT_DATA_DIR (downloaded if missing).
      A .csv/.tsv/.tab file (or any file with `sep` set) is a table with a header row and
      columns `text_column` / `label_column` (default "text" / "label"). Any other file is
      read like the SMS file: one `label<TAB>text` per line, no header, no quoting.
    balance: "undersample" (every class down to the smallest) or "none".
    split: train/val/test fractions; train = int(n*f0), val = int(n*f1), test = the rest.
    max_length: truncate longer texts (the model's context; None = no limit).
    pad_to: None (pad each batch to its longest), "longest_train" (the book) or an int.
    Examples are dicts {example_id, input_ids, label}; example_id indexes `self.texts`.
    """

    def __init__(
        self,
        tokenizer,
        path: str | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 123,
        balance: str = "undersample",
        dedup: bool = False,
        split: Sequence[float] = (0.7, 0.1, 0.2),
        text_column: str | None = None,
        label_column: str | None = None,
        label_names: Sequence[str] | None = None,
        positive_label: str | None = None,
        max_length: int | None = None,
        pad_to: str | int | None = None,
        bucket: bool = False,
        sep: str | None = None,
    ):
        super().__init__()
        if balance not in ("undersample", "none"):
            raise ValueError(f"data.balance must be 'undersample' or 'none', got {balance!r}")
        if pad_to is not None and pad_to != "longest_train" and not (isinstance(pad_to, int) and pad_to > 0):
            raise ValueError(f"data.pad_to must be null, 'longest_train' or a positive int, got {pad_to!r}")
        if max_length is not None and not (isinstance(max_length, int) and max_length > 0):
            raise ValueError(f"data.max_length must be null or a positive int, got {max_length!r}")
        if isinstance(pad_to, int) and max_length is not None and pad_to > max_length:
            raise ValueError(f"data.pad_to={pad_to} exceeds max_length={max_length} (the model's context)")
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        self.tokenizer = tokenizer
        self.path = path
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.balance = balance
        self.dedup = dedup
        self.split = _check_split(split)
        self.text_column = text_column
        self.label_column = label_column
        self.given_label_names = None if label_names is None else [str(x) for x in label_names]
        self.positive_label = positive_label
        self.max_length = max_length
        self.pad_to = pad_to
        self.bucket = bucket
        self.sep = sep
        self.report: dict = {}
        self._label_names: list[str] | None = None
        self._ready = False

    # ---- Lightning hooks
    def prepare_data(self) -> None:
        if self.path is None:
            ensure_file(**SMS_SPAM)

    def setup(self, stage: str | None = None) -> None:
        if self._ready:  # Lightning calls setup once per stage; the splits must not change
            return
        file, rows = self._read()
        self.file = file
        self.texts = [text for _, text, _ in rows]
        self.lines = [line for _, _, line in rows]
        self._set_labels(file, rows)
        labels = np.array([self.label_names.index(label) for label, _, _ in rows])

        keep = np.arange(len(rows))
        duplicates = len(rows) - len(set(self.texts))
        if self.dedup:
            first = {}
            for i, text in enumerate(self.texts):
                first.setdefault(text, i)
            keep = np.array(sorted(first.values()))
        rng = np.random.default_rng(self.seed)
        if self.balance == "undersample":
            per_class = [keep[labels[keep] == c] for c in range(self.num_classes)]
            smallest = min(len(idx) for idx in per_class)
            keep = np.concatenate([rng.choice(idx, size=smallest, replace=False) for idx in per_class])
        keep = keep[rng.permutation(len(keep))]

        n_train, n_val, n_test = self._split_sizes(file, len(rows), len(keep))
        ids = {"train": keep[:n_train], "val": keep[n_train : n_train + n_val], "test": keep[n_train + n_val :]}

        token_ids = self._tokenize(keep)
        sets = {
            name: [{"example_id": int(i), "input_ids": token_ids[int(i)], "label": int(labels[i])} for i in idx]
            for name, idx in ids.items()
        }
        self.train_set, self.val_set, self.test_set = sets["train"], sets["val"], sets["test"]
        self.pad_width = self._resolve_pad_to()
        self.collate_fn = ClassificationCollate(self.tokenizer.pad_id, self.pad_width)

        train_texts = {self.texts[i] for i in ids["train"]}
        self.report.update(
            file=str(file),
            rows=len(rows),
            class_counts=dict(Counter(label for label, _, _ in rows)),
            duplicate_texts=duplicates,
            duplicates_removed=duplicates if self.dedup else 0,
            split_sizes={name: len(idx) for name, idx in ids.items()},
            split_class_counts={
                name: {self.label_names[c]: int((labels[idx] == c).sum()) for c in range(self.num_classes)}
                for name, idx in ids.items()
            },
            val_in_train=sum(self.texts[i] in train_texts for i in ids["val"]),
            test_in_train=sum(self.texts[i] in train_texts for i in ids["test"]),
            longest_train=max(len(ex["input_ids"]) for ex in self.train_set),
            pad_to=self.pad_width,
        )
        log.info(
            "%s: %d rows, %d duplicate texts (%d removed); train/val/test %d/%d/%d; "
            "%d val and %d test texts also occur in train",
            file, len(rows), duplicates, self.report["duplicates_removed"], n_train, n_val, n_test,
            self.report["val_in_train"], self.report["test_in_train"],
        )
        self._ready = True

    def train_dataloader(self) -> DataLoader:
        self.setup()
        if len(self.train_set) < self.batch_size:  # drop_last would leave an empty epoch
            raise DataError(
                f"the train split has {len(self.train_set)} examples, fewer than data.batch_size="
                f"{self.batch_size}; lower data.batch_size or use more data"
            )
        common = dict(collate_fn=self.collate_fn, num_workers=self.num_workers,
                      persistent_workers=self.num_workers > 0)
        if self.bucket:
            lengths = [min(len(ex["input_ids"]), self.pad_width or 1 << 30) for ex in self.train_set]
            sampler = BucketBatchSampler(lengths, self.batch_size, drop_last=True, seed=self.seed)
            return DataLoader(self.train_set, batch_sampler=sampler, **common)
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, drop_last=True,
                          generator=torch.Generator().manual_seed(self.seed), **common)

    def val_dataloader(self) -> DataLoader:
        return self.eval_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.eval_dataloader("test")

    # the model's head needs these before fit() runs setup; reading the file here is cheap
    @property
    def label_names(self) -> list[str]:
        if self._label_names is None:
            self.setup()
        return self._label_names

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def eval_dataloader(self, split: str) -> DataLoader:
        """Every example of `split` ("train", "val" or "test") in order: no shuffling, no dropped batch."""
        if split not in ("train", "val", "test"):
            raise ValueError(f"unknown split {split!r}; valid: train, val, test")
        self.setup()
        return DataLoader(getattr(self, f"{split}_set"), batch_size=self.batch_size, shuffle=False,
                          collate_fn=self.collate_fn, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    # ---- helpers
    def _read(self) -> tuple[Path, list[tuple[str, str, int]]]:
        if self.path is None:
            file = ensure_file(**SMS_SPAM)
        else:
            file = Path(self.path).expanduser()
            if not file.is_file():
                raise FileNotFoundError(f"data.path={self.path}: no such file ({file.resolve()})")
        sep = self.sep if self.sep is not None else SEPARATORS.get(file.suffix.lower())
        if sep is None:
            if self.text_column is not None or self.label_column is not None:
                raise DataError(
                    f"{file}: data.text_column/label_column need a table with a header row; "
                    f"name the file .csv or .tsv, or set data.sep"
                )
            return file, read_label_tab_text(file)
        return file, read_table(file, sep, self.text_column or "text", self.label_column or "label")

    def _set_labels(self, file: Path, rows) -> None:
        found = sorted({label for label, _, _ in rows})
        if self.given_label_names is None:
            names = found
        else:
            names = self.given_label_names
            if len(set(names)) != len(names):
                raise DataError(f"data.label_names has repeated names: {names}")
            for label, _, line in rows:
                if label not in names:
                    raise DataError(
                        f"{file}, line {line}: label {label!r} is not one of data.label_names {names}; "
                        f"fix the line or add the label to data.label_names"
                    )
            missing = [name for name in names if name not in found]
            if missing:
                raise DataError(f"{file}: no row has label {missing} from data.label_names; "
                                f"remove it from data.label_names")
        if len(names) < 2:
            raise DataError(f"{file}: every row has the label {names[0]!r}; a classifier needs at least 2 classes")
        self._label_names = names
        if self.positive_label is not None and str(self.positive_label) not in names:
            raise DataError(f"data.positive_label={self.positive_label!r} is not one of the labels {names}")
        # binary metrics need a positive class: the given one, else the second name ("spam")
        self.positive_index = (names.index(str(self.positive_label)) if self.positive_label is not None
                               else 1 if len(names) == 2 else None)

    def _split_sizes(self, file: Path, n_rows: int, n: int) -> tuple[int, int, int]:
        sizes = split_sizes(n, self.split)
        if min(sizes) < 1:
            need = next(m for m in range(3, 10**7) if min(split_sizes(m, self.split)) >= 1)
            kept = (f"; balance=undersample keeps {n} ({n // self.num_classes} per class, "
                    f"data.balance=none keeps all)" if self.balance == "undersample" else "")
            raise DataError(
                f"{file} has {n_rows} rows{kept}: too few for the split {list(self.split)}, which needs "
                f"at least {need} so that train, val and test each get one example"
            )
        return sizes

    def _tokenize(self, keep: np.ndarray) -> dict[int, list[int]]:
        texts = [self.texts[i] for i in keep]
        encode_batch = getattr(self.tokenizer, "encode_batch", None)
        encoded = encode_batch(texts) if encode_batch else [self.tokenizer.encode(t) for t in texts]
        long = 0
        if self.max_length is not None:
            long = sum(len(ids) > self.max_length for ids in encoded)
            if long:
                log.warning("%d of %d texts truncated to %d tokens", long, len(encoded), self.max_length)
            encoded = [ids[: self.max_length] for ids in encoded]
        self.report["truncated"] = long
        return {int(i): ids for i, ids in zip(keep, encoded)}

    def _resolve_pad_to(self) -> int | None:
        if self.pad_to is None:
            return None
        width = max(len(ex["input_ids"]) for ex in self.train_set) if self.pad_to == "longest_train" else self.pad_to
        examples = self.train_set + self.val_set + self.test_set
        long = sum(len(ex["input_ids"]) > width for ex in examples)
        if long:
            log.warning("%d of %d texts truncated to %d tokens (data.pad_to=%s)", long, len(examples), width, self.pad_to)
        self.report["truncated_by_pad_to"] = long
        return width


def split_sizes(n: int, fractions: Sequence[float]) -> tuple[int, int, int]:
    # the epsilon keeps e.g. 0.29 * 100 = 28.999... from rounding down to 28
    n_train = int(n * fractions[0] + 1e-9)
    n_val = int(n * fractions[1] + 1e-9)
    return n_train, n_val, n - n_train - n_val


def _check_split(split) -> tuple[float, float, float]:
    try:
        fractions = tuple(float(f) for f in split)
    except (TypeError, ValueError):
        fractions = ()
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"data.split must be three positive fractions (train, val, test) summing to 1, got {split!r}")
    return fractions


def read_label_tab_text(file: Path) -> list[tuple[str, str, int]]:
    """Rows (label, text, line) of a headerless `label<TAB>text` file, with quoting off:
    quote characters are ordinary text (pandas' default quoting merges SMS lines)."""
    lines = _read_utf8(file).split("\n")  # only \n ends a line; a stray \r stays in the text
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise DataError(f"{file} is empty; expected one 'label<TAB>text' per line")
    rows = []
    for number, line in enumerate(lines, start=1):
        line = line[:-1] if line.endswith("\r") else line
        label, tab, text = line.partition("\t")
        if not tab:
            raise DataError(
                f"{file}, line {number}: no tab; expected 'label<TAB>text' (the SMS Spam Collection layout). "
                f"Fix the line, or give a .csv/.tsv file with a header row"
            )
        if not label.strip():
            raise DataError(f"{file}, line {number}: empty label; fix or remove the line")
        if not text.strip():
            raise DataError(f"{file}, line {number}: empty text; fix or remove the line")
        rows.append((label.strip(), text, number))
    return rows


def read_table(file: Path, sep: str, text_column: str, label_column: str) -> list[tuple[str, str, int]]:
    """Rows (label, text, line) of a CSV/TSV with a header row. Tab-separated files are read
    with quoting off (quotes in messages are text); others with standard CSV quoting."""
    quoting = csv.QUOTE_NONE if sep == "\t" else csv.QUOTE_MINIMAL
    rows = []
    prev = 0  # last physical line read; a failing record starts at prev + 1
    try:
        with io.StringIO(_read_utf8(file), newline="") as f:
            reader = csv.reader(f, delimiter=sep, quoting=quoting, strict=True)
            header = next(reader, None)
            if not header:
                raise DataError(f"{file} is empty; expected a header row naming columns "
                                f"{text_column!r} and {label_column!r}")
            header = [h.strip() for h in header]
            for role, column in (("text", text_column), ("label", label_column)):
                if column not in header:
                    raise DataError(
                        f"{file}, line 1: no column {column!r} in the header {header}; "
                        f"set data.{role}_column=NAME to the column holding the {role}s"
                    )
            t, lab = header.index(text_column), header.index(label_column)
            prev = reader.line_num
            for row in reader:
                line, prev = prev + 1, reader.line_num  # first physical line of this record
                if not row:
                    continue
                if len(row) != len(header):
                    raise DataError(f"{file}, line {line}: {len(row)} fields, but the header has {len(header)}; "
                                    f"fix the line (quote fields that contain {sep!r})")
                label, text = row[lab].strip(), row[t]
                if not label:
                    raise DataError(f"{file}, line {line}: empty label; fix or remove the line")
                if not text.strip():
                    raise DataError(f"{file}, line {line}: empty text; fix or remove the line")
                rows.append((label, text, line))
    except csv.Error as err:
        raise DataError(f"{file}, line {prev + 1}: cannot parse ({err}); check the quoting of this line") from None
    if not rows:
        raise DataError(f"{file}: a header but no rows")
    return rows


def _read_utf8(file: Path) -> str:
    raw = file.read_bytes()
    try:
        return raw.decode("utf-8-sig")  # -sig: drop the byte-order mark Excel writes
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(f"{file}, line {line}: not valid UTF-8 ({err.reason}); re-save the file as UTF-8") from None
