"""Text classification data: the SMS Spam Collection by default, or the user's own CSV/TSV."""
from __future__ import annotations

import logging
from collections import Counter
from typing import Sequence

import numpy as np

from gptft.data.base import DataError, TextDataModule
from gptft.data.collate import ClassificationCollate
from gptft.data.download import SMS_SPAM
from gptft.data.handoff import TaskData
from gptft.data.prompts import STYLES, encode_texts
from gptft.data.tables import MAX_CLASSES, read_rows, resolve_labels

log = logging.getLogger(__name__)
BALANCES = ("undersample", "none", "weighted")


class SpamDataModule(TextDataModule):
    """Labelled texts -> balanced, shuffled train/val/test splits of token ids.

    path: None -> the SMS Spam Collection in GPTFT_DATA_DIR (downloaded if missing).
      A .csv/.tsv/.tab file (or any file with `sep` set) is a table with a header row and
      columns `text_column` / `label_column` (default "text" / "label"). Any other file is
      read like the SMS file: one `label<TAB>text` per line, no header, no quoting.
    header: False for a table without a header row; text_column / label_column are then 0-based positions
      (default: label 0, text 1).
    encoding: the file's text encoding; "auto" reads UTF-8, else cp1252, else Latin-1 (with a warning).
    balance: "undersample" (every class down to the smallest), "none" (every row) or "weighted" (every row; the
      classifier's training loss weighs each class by n / (classes * n_class), see `class_weights`).
    train_on_dropped: with balance="undersample", val and test stay balanced while the rows undersampling leaves
      out join the train split (those whose text is in val or test excepted), under the class-weighted loss.
    stratify: split each class in the split's proportions ("auto": yes, except the SMS Spam Collection under
      balance=undersample, which keeps the plain shuffled split its published results were measured on).
    split: train/val/test fractions; train = int(n*f0), val = int(n*f1), test = the rest.
    train_rows: None, or train on this many rows of the train split only (a stratified, seeded subset; val and
      test stay as they are): learning curves on one fixed test set.
    max_length: truncate longer texts (the model's context; None = no limit).
    pad_to: None (pad each batch to its longest), "longest_train" (the book) or an int.
    eval_batch_tokens: None, or evaluation batches of short rows grow past batch_size up to this many tokens
      (ignored under pad_to, whose batches stay the book's).
    max_classes: refuse more distinct labels than this (a label column of free text, not classes).
    prompt_style / instruction: None (the text as it is), or a prompt style (alpaca, phi3, chatml) in which each
      text becomes the user turn after `instruction`: an instruction-tuned model is asked, and its state where
      the answer would begin is classified (see `gptft.data.prompts.encode_texts`).
    Examples are dicts {example_id, input_ids, label}; example_id indexes `self.texts`.
    """

    default_file = SMS_SPAM

    def __init__(
        self,
        tokenizer,
        path: str | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 123,
        balance: str = "undersample",
        stratify: bool | str = "auto",
        dedup: bool = False,
        split: Sequence[float] = (0.7, 0.1, 0.2),
        train_rows: int | None = None,
        text_column: str | None = None,
        label_column: str | None = None,
        label_names: Sequence[str] | None = None,
        positive_label: str | None = None,
        max_length: int | None = None,
        pad_to: str | int | None = None,
        bucket: bool = False,
        eval_batch_tokens: int | None = None,
        sep: str | None = None,
        max_classes: int = MAX_CLASSES,
        encoding: str = "auto",
        header: bool = True,
        prompt_style: str | None = None,
        instruction: str | None = None,
        train_on_dropped: bool = False,
    ):
        if balance not in BALANCES:
            raise DataError(f"data.balance must be one of {', '.join(BALANCES)}, got {balance!r}")
        if not isinstance(train_on_dropped, bool) or (train_on_dropped and balance != "undersample"):
            raise DataError(f"data.train_on_dropped=true adds the rows data.balance=undersample leaves out to the "
                            f"train split, so it needs data.balance=undersample (got data.balance={balance}, "
                            f"data.train_on_dropped={train_on_dropped!r}); data.balance=none or weighted trains on "
                            f"every row already")
        if stratify not in (True, False, "auto"):
            raise DataError(f"data.stratify must be auto, true or false, got {stratify!r}")
        if pad_to is not None and pad_to != "longest_train" and not (isinstance(pad_to, int) and pad_to > 0):
            raise DataError(f"data.pad_to must be null, 'longest_train' or a positive int, got {pad_to!r}")
        if not isinstance(header, bool):
            raise DataError(f"data.header must be true or false, got {header!r}")
        if isinstance(max_classes, bool) or not isinstance(max_classes, int) or max_classes < 2:
            raise DataError(f"data.max_classes must be an integer >= 2, got {max_classes!r}")
        if prompt_style is not None and prompt_style not in STYLES:
            raise DataError(f"data.prompt_style must be null or one of {', '.join(STYLES)}, got {prompt_style!r}")
        if (prompt_style is None) != (instruction is None) or (instruction is not None and not str(instruction).strip()):
            raise DataError(f"data.prompt_style and data.instruction go together (got {prompt_style!r} and "
                            f"{instruction!r}): e.g. data.prompt_style=chatml data.instruction='Is this message "
                            f"spam?', or both null for the plain text")
        if prompt_style is not None and pad_to is not None:
            raise DataError(f"data.pad_to={pad_to} cuts rows at their end, which would drop the prompt's closing "
                            f"markup that data.prompt_style={prompt_style} is read at; use data.pad_to=null")
        super().__init__(tokenizer, path, batch_size, num_workers, seed, max_length, bucket, eval_batch_tokens)
        if isinstance(pad_to, int) and max_length is not None and pad_to > max_length:
            raise DataError(f"data.pad_to={pad_to} exceeds max_length={max_length} (the model's context)")
        self.balance = balance
        self.stratify = stratify
        self.dedup = dedup
        self.split = _check_split(split)
        if train_rows is not None and (isinstance(train_rows, bool) or not isinstance(train_rows, int)
                                       or train_rows < 1):
            raise DataError(f"data.train_rows must be null or a positive integer, got {train_rows!r}")
        self.train_rows = train_rows
        self.text_column = text_column
        self.label_column = label_column
        self.given_label_names = None if label_names is None else [str(x) for x in label_names]
        self.positive_label = positive_label
        self.pad_to = pad_to
        self.sep = sep
        self.max_classes = max_classes
        self.encoding = encoding
        self.header = header
        self.prompt_style, self.instruction = prompt_style, instruction
        self.train_on_dropped = train_on_dropped
        self._label_names: list[str] | None = None

    # the model's head needs these before fit() runs setup; reading the file here is cheap
    @property
    def label_names(self) -> list[str]:
        if self._label_names is None:
            self.setup()
        return self._label_names

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def task_data(self, sample_prompts: int = 0) -> TaskData:
        """What the classifier head needs (sample prompts are an instruction task's)."""
        self.setup()
        return TaskData(label_names=tuple(self.label_names), positive_index=self.positive_index,
                        pad_width=self.pad_width, class_weights=self.class_weights())

    def class_weights(self) -> tuple[float, ...] | None:
        """balance=weighted or train_on_dropped: n / (classes * n_c) over the train split (sklearn's "balanced"), so
        every class adds the same total weight to the loss; else None (an unweighted loss)."""
        if self.balance != "weighted" and not self.train_on_dropped:
            return None
        counts = np.bincount([ex["label"] for ex in self.train_set], minlength=self.num_classes)
        return tuple(float(len(self.train_set) / (self.num_classes * max(int(c), 1))) for c in counts)

    def _load(self) -> None:
        """read -> balance -> split -> tokenize -> pad width, collate and report."""
        self.file = file = self.data_file()
        rows = read_rows(file, self.sep, self.text_column, self.label_column, self.encoding, self.header,
                         report=self.report)
        self.texts = [text for _, text, _ in rows]
        self.lines = [line for _, _, line in rows]
        self._label_names, self.positive_index = resolve_labels(
            file, rows, self.given_label_names, self.positive_label, self.max_classes, self.label_column)
        labels = np.array([self.label_names.index(label) for label, _, _ in rows])

        keep = self._balance(labels)
        n_train, n_val, _ = self._split_sizes(len(rows), len(keep))
        rng = np.random.default_rng(self.seed)
        order = stratified_order(labels[keep], rng) if self._stratified() else np.arange(len(keep))
        ids = {"train": order[:n_train], "val": order[n_train : n_train + n_val], "test": order[n_train + n_val :]}
        ids = {name: keep[rng.permutation(idx) if self._stratified() else idx] for name, idx in ids.items()}
        if self.train_on_dropped:
            ids["train"] = self._with_dropped(ids, keep, rng)
        if self.train_rows is not None:
            ids["train"] = self._fewer_train_rows(ids["train"], labels, rng)

        token_ids = self._tokenize(np.concatenate(list(ids.values())))
        sets = {
            name: [{"example_id": int(i), "input_ids": token_ids[int(i)], "label": int(labels[i])} for i in idx]
            for name, idx in ids.items()
        }
        self.train_set, self.val_set, self.test_set = sets["train"], sets["val"], sets["test"]
        self.pad_width = self._resolve_pad_to()
        self.collate_fn = ClassificationCollate(self.tokenizer.pad_id, self.pad_width)
        self._report(rows, labels, ids)

    def bucket_lengths(self) -> list[int]:
        return [min(len(ex["input_ids"]), self.pad_width or 1 << 30) for ex in self.train_set]

    # ---- the steps of _load
    def _balance(self, labels: np.ndarray) -> np.ndarray:
        """Row indices kept: the first of each text if dedup, undersampled per class if asked, shuffled."""
        keep = np.arange(len(labels))
        if self.dedup:
            keep = self._unique_rows()
        rng = np.random.default_rng(self.seed)
        if self.balance == "undersample":
            per_class = [keep[labels[keep] == c] for c in range(self.num_classes)]
            smallest = min(len(idx) for idx in per_class)
            keep = np.concatenate([rng.choice(idx, size=smallest, replace=False) for idx in per_class])
        return keep[rng.permutation(len(keep))]

    def _with_dropped(self, ids: dict[str, np.ndarray], keep: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The train split plus the rows undersampling left out, but for texts that are in val or test."""
        held_out = {self.texts[i] for name in ("val", "test") for i in ids[name]}
        candidates = self._unique_rows() if self.dedup else np.arange(len(self.texts))
        dropped = np.setdiff1d(candidates, keep)
        dropped = dropped[[self.texts[i] not in held_out for i in dropped]]
        self.report["dropped_rows_added_to_train"] = len(dropped)
        return rng.permutation(np.concatenate([ids["train"], dropped]))

    def _unique_rows(self) -> np.ndarray:
        first = {}
        for i, text in enumerate(self.texts):
            first.setdefault(text, i)
        return np.array(sorted(first.values()))

    def _fewer_train_rows(self, train: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.train_rows > len(train):
            raise DataError(f"data.train_rows={self.train_rows} exceeds the {len(train)} rows of the train split of "
                            f"{self.file}; give at most {len(train)} (or null for all)")
        return train[np.sort(stratified_order(labels[train], rng)[: self.train_rows])]

    def _stratified(self) -> bool:
        if self.stratify == "auto":
            return not (self.path is None and self.balance == "undersample")
        return self.stratify

    def _split_sizes(self, n_rows: int, n: int) -> tuple[int, int, int]:
        sizes = split_sizes(n, self.split)
        if min(sizes) < 1:
            need = next(m for m in range(3, 10**7) if min(split_sizes(m, self.split)) >= 1)
            kept = (f"; balance=undersample keeps {n} ({n // self.num_classes} per class, "
                    f"data.balance=none or weighted keeps all)" if self.balance == "undersample" else "")
            raise DataError(
                f"{self.file} has {n_rows} rows{kept}: too few for the split {list(self.split)}, which needs "
                f"at least {need} so that train, val and test each get one example"
            )
        return sizes

    def _tokenize(self, keep: np.ndarray) -> dict[int, list[int]]:
        texts = [self.texts[i] for i in keep]
        encoded = encode_texts(self.tokenizer, texts, self.prompt_style, self.instruction, self.max_length)
        long = sum(cut for _, cut in encoded)
        if long:
            log.warning("%d of %d texts truncated to %d tokens", long, len(encoded), self.max_length)
        self.report["truncated"] = long
        return {int(i): ids for i, (ids, _) in zip(keep, encoded)}

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

    def _report(self, rows, labels: np.ndarray, ids: dict[str, np.ndarray]) -> None:
        duplicates = len(rows) - len(set(self.texts))
        train_texts = {self.texts[i] for i in ids["train"]}
        self.report.update(
            file=str(self.file),
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
            self.file, len(rows), duplicates, self.report["duplicates_removed"],
            *(len(ids[name]) for name in ("train", "val", "test")),
            self.report["val_in_train"], self.report["test_in_train"],
        )


def stratified_order(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A permutation of range(len(labels)) whose every prefix holds each class in proportion (within one
    example): each class is shuffled and its j-th of n_c members placed at (j + u) / n_c (u: a random offset
    per class), then all are sorted by place. Cut at the split sizes, it gives stratified train/val/test."""
    place = np.empty(len(labels))
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        place[rng.permutation(members)] = (np.arange(len(members)) + rng.random()) / len(members)
    return np.argsort(place, kind="stable")


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
        raise DataError(f"data.split must be three positive fractions (train, val, test) summing to 1, got {split!r}")
    return fractions
