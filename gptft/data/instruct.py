"""Instruction-tuning data: {"instruction", "input", "output"} entries -> prompt + response token ids."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from gptft.data.base import DataError, TextDataModule, read_utf8
from gptft.data.collate import InstructCollate
from gptft.data.download import INSTRUCTIONS
from gptft.data.handoff import TaskData
from gptft.data.prompts import PromptStyle, get_prompt_style

log = logging.getLogger(__name__)

TRAIN_FRACTION, TEST_FRACTION = 0.85, 0.10  # the book's split; validation gets the rest

InstructDataError = DataError  # the former name; both data modules raise DataError


class InstructDataModule(TextDataModule):
    """Instruction entries split into train/test/val (the book's 85% / 10% / rest, in that order).

    path: None -> the book's instruction-data.json in GPTFT_DATA_DIR (downloaded if missing);
      else a JSON list or a JSON Lines file of entries. `input` is optional.
    split: "ordered" (file order, as the book) or "shuffled" (a permutation seeded by `seed`).
    eval_batch_tokens: None, or evaluation batches of short entries grow past batch_size up to this many tokens.
    Examples are dicts {example_id, input_ids, prompt_len}; example_id indexes `self.entries`,
    and input_ids = encode(prompt) + encode(response) so prompt_len is exact.
    """

    default_file = INSTRUCTIONS

    def __init__(
        self,
        tokenizer,
        path: str | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 123,
        split: str = "ordered",
        prompt_style: str | PromptStyle = "alpaca",
        mask_prompt: bool = False,
        max_length: int | None = None,
        bucket: bool = False,
        eval_batch_tokens: int | None = None,
    ):
        if split not in ("ordered", "shuffled"):
            raise DataError(f"data.split must be 'ordered' or 'shuffled', got {split!r}")
        super().__init__(tokenizer, path, batch_size, num_workers, seed, max_length, bucket, eval_batch_tokens)
        self.split = split
        self.prompt_style = get_prompt_style(prompt_style)
        self.mask_prompt = mask_prompt
        self.collate_fn = InstructCollate(tokenizer.eot_id, tokenizer.pad_id, max_length, mask_prompt)

    def format_prompt(self, entry: dict) -> str:
        """The text a model is given to generate a response to `entry`."""
        return self.prompt_style.prompt({"input": "", **entry})

    def encode_prompt(self, entry: dict) -> list[int]:
        """Token ids of `format_prompt(entry)`, as each training example begins."""
        return self.prompt_style.encode_prompt(self.tokenizer, entry)

    def task_data(self, sample_prompts: int = 0) -> TaskData:
        """The prompt style, and the first `sample_prompts` validation prompts to answer while training."""
        self.setup()
        samples = tuple((self.format_prompt(e), tuple(self.encode_prompt(e))) for e in self.val_entries[:sample_prompts])
        return TaskData(prompt_style=self.prompt_style.name, sample_prompts=samples)

    def _load(self) -> None:
        self.file = file = self.data_file()
        self.entries = read_entries(file)
        n = len(self.entries)
        n_train, n_test = int(n * TRAIN_FRACTION), int(n * TEST_FRACTION)
        if min(n_train, n_test, n - n_train - n_test) < 1:
            raise DataError(
                f"{file} has {n} entries; the train/test/val split (85%/10%/rest) needs at least 10 "
                f"so that each part gets one"
            )
        order = np.arange(n) if self.split == "ordered" else np.random.default_rng(self.seed).permutation(n)
        ids = {"train": order[:n_train], "test": order[n_train : n_train + n_test], "val": order[n_train + n_test :]}
        self.train_entries, self.val_entries, self.test_entries = (
            [self.entries[i] for i in ids[name]] for name in ("train", "val", "test"))

        examples = self._tokenize()
        self.train_set, self.val_set, self.test_set = (
            [examples[i] for i in ids[name]] for name in ("train", "val", "test"))

        truncated = {}
        if self.max_length is not None:
            truncated = {name: sum(len(examples[i]["input_ids"]) > self.max_length for i in idx)
                         for name, idx in ids.items()}
            if sum(truncated.values()):
                log.warning("%d of %d examples truncated to %d tokens (train %d, val %d, test %d)",
                            sum(truncated.values()), n, self.max_length,
                            truncated["train"], truncated["val"], truncated["test"])
        self.report.update(
            file=str(file), entries=n, split_sizes={name: len(idx) for name, idx in ids.items()},
            truncated=truncated, longest=max(len(ex["input_ids"]) for ex in examples),
        )
        log.info("%s: %d entries; train/val/test %d/%d/%d", file, n,
                 len(self.train_set), len(self.val_set), len(self.test_set))

    def _tokenize(self) -> list[dict]:
        style = self.prompt_style
        prompts = [style.encode_prompt(self.tokenizer, e) for e in self.entries]  # specials need the style
        responses = [style.response(e["output"]) for e in self.entries]
        encode_batch = getattr(self.tokenizer, "encode_batch", None) or (
            lambda texts: [self.tokenizer.encode(t) for t in texts])
        return [
            {"example_id": i, "input_ids": p + r, "prompt_len": len(p)}
            for i, (p, r) in enumerate(zip(prompts, encode_batch(responses)))
        ]


def read_entries(file: Path) -> list[dict]:
    """Entries of a JSON list or JSON Lines file, validated; a missing `input` becomes ""."""
    text = read_utf8(file)
    if not text.strip():
        raise DataError(f"{file} is empty; expected a JSON list of entries or one JSON object per line")

    records: list[tuple[object, int | None]] = []  # (entry, line in a JSONL file)
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{file}, line {err.lineno} column {err.colno}: not valid JSON ({err.msg})") from None
        records = [(entry, None) for entry in data]
    else:
        for number, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                records.append((json.loads(line), number))
            except json.JSONDecodeError as err:
                raise DataError(
                    f"{file}, line {number}: not valid JSON ({err.msg}); expected a JSON list of entries "
                    f"or JSON Lines (one entry object per line)"
                ) from None
    if not records:
        raise DataError(f"{file} holds no entries")
    return [_check_entry(file, i, entry, line) for i, (entry, line) in enumerate(records)]


def _check_entry(file: Path, index: int, entry, line: int | None) -> dict:
    where = f"{file}, entry {index} (counting from 0{f', line {line}' if line else ''})"
    if not isinstance(entry, dict):
        raise DataError(f"{where}: expected an object with 'instruction', 'input', 'output', "
                        f"got {type(entry).__name__}")
    for key in ("instruction", "output"):
        if key not in entry:
            raise DataError(f"{where}: missing {key!r}; each entry needs 'instruction' and 'output'")
    for key in ("instruction", "input", "output"):
        if key in entry and not isinstance(entry[key], str):
            raise DataError(f"{where}: {key!r} must be a string, got {type(entry[key]).__name__}")
    for key in ("instruction", "output"):
        if not entry[key].strip():
            raise DataError(f"{where}: empty {key!r}; fill it in or remove the entry")
    return {**entry, "input": entry.get("input", "")}
