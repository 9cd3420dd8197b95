"""Instruction data: reading, splits, prompt styles, the collate's exact tensors, bad input."""
from __future__ import annotations

import json
import logging

import pytest
import torch

from gptft.data.collate import InstructCollate
from gptft.data.instruct import InstructDataModule
from gptft.data.prompts import STYLES, get_prompt_style
from gptft.errors import GptftError

E = 50256  # end-of-text, also the pad
X = -100  # ignored target


@pytest.fixture(scope="module")
def book(shared_data, tokenizer):
    dm = InstructDataModule(tokenizer)
    dm.setup("fit")
    return dm


def test_ordered_split_is_the_books(book):
    assert len(book.entries) == 1100
    assert (len(book.train_set), len(book.test_set), len(book.val_set)) == (935, 110, 55)
    assert book.train_entries == book.entries[:935]
    assert book.test_entries == book.entries[935:1045] and book.val_entries == book.entries[1045:]
    assert [ex["example_id"] for ex in book.val_set] == list(range(1045, 1100))
    assert sum(bool(e["input"]) for e in book.entries) == 325


def test_examples_are_prompt_then_response(book, tokenizer):
    for ex in book.train_set[:20]:
        entry = book.entries[ex["example_id"]]
        prompt = book.format_prompt(entry)
        assert ex["input_ids"] == tokenizer.encode(prompt) + tokenizer.encode(entry["output"])
        assert ex["prompt_len"] == len(tokenizer.encode(prompt))
        assert tokenizer.decode(ex["input_ids"]) == prompt + entry["output"]


def test_shuffled_split_is_seeded(shared_data, tokenizer, book):
    a = InstructDataModule(tokenizer, split="shuffled")
    a.setup()
    b = InstructDataModule(tokenizer, split="shuffled")
    b.setup()
    c = InstructDataModule(tokenizer, split="shuffled", seed=1)
    c.setup()
    assert a.train_entries == b.train_entries and a.test_entries == b.test_entries
    assert a.train_entries != c.train_entries and a.train_entries != book.train_entries
    ids = sorted(ex["example_id"] for ex in a.train_set + a.val_set + a.test_set)
    assert ids == list(range(1100)) and (len(a.train_set), len(a.test_set), len(a.val_set)) == (935, 110, 55)


def test_loaders(book):
    train = book.train_dataloader()
    assert len(train) == 935 // 8  # drop_last, like the book
    batch = next(iter(train))
    assert set(batch) == {"input_ids", "targets", "lengths", "example_id"}
    assert batch["input_ids"].shape == batch["targets"].shape == (8, int(batch["lengths"].max()))
    assert [b["example_id"].tolist() for b, _ in zip(book.train_dataloader(), range(2))] == \
        [b["example_id"].tolist() for b, _ in zip(book.train_dataloader(), range(2))]
    for split, first in (("val", 1045), ("test", 935)):  # the book's ordered split; scored longest first
        data = getattr(book, f"{split}_set")
        assert [ex["example_id"] for ex in data[:3]] == [first, first + 1, first + 2]
        longest = sorted(data, key=lambda ex: -len(ex["input_ids"]))[:8]
        assert next(iter(book.eval_dataloader(split)))["example_id"].tolist() == [ex["example_id"] for ex in longest]


def test_eval_loader_report_and_encode_prompt(book, tokenizer):
    seen = [i for b in book.eval_dataloader("train") for i in b["example_id"].tolist()]
    assert sorted(seen) == list(range(935))  # each once, nothing dropped
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        book.eval_dataloader("dev")
    assert json.loads(json.dumps(book.report))["split_sizes"] == {"train": 935, "test": 110, "val": 55}
    ex = book.val_set[0]
    assert book.encode_prompt(book.val_entries[0]) == ex["input_ids"][: ex["prompt_len"]]


def test_bucketed_loader_covers_each_example_once(shared_data, tokenizer):
    dm = InstructDataModule(tokenizer, bucket=True)
    seen = [i for b in dm.train_dataloader() for i in b["example_id"].tolist()]
    assert len(seen) == len(set(seen)) == 935 // 8 * 8


def test_max_length_logs_truncation(shared_data, tokenizer, caplog):
    with caplog.at_level(logging.WARNING):
        dm = InstructDataModule(tokenizer, max_length=60)
        dm.setup()
    n = sum(dm.report["truncated"].values())
    assert n > 0 and f"{n} of 1100 examples truncated to 60 tokens" in caplog.text
    assert max(b["input_ids"].shape[1] for b in dm.val_dataloader()) <= 60


# ---- prompt styles


def test_alpaca_prompt_text():
    alpaca = get_prompt_style("alpaca")
    head = ("Below is an instruction that describes a task. "
            "Write a response that appropriately completes the request.")
    with_input = {"instruction": "Translate.", "input": "Bonjour", "output": "Hello"}
    assert alpaca.prompt(with_input) == (
        f"{head}\n\n### Instruction:\nTranslate.\n\n### Input:\nBonjour\n\n### Response:\n")
    assert alpaca.prompt({**with_input, "input": ""}) == f"{head}\n\n### Instruction:\nTranslate.\n\n### Response:\n"
    assert alpaca.response("Hello") == "Hello"


def test_phi3_prompt_text_and_registry():
    phi3 = get_prompt_style("phi3")
    assert phi3.prompt({"instruction": "Add.", "input": "1+1"}) == "<|user|>\nAdd.\n1+1\n<|assistant|>\n"
    assert phi3.prompt({"instruction": "Add.", "input": ""}) == "<|user|>\nAdd.\n<|assistant|>\n"
    assert {"alpaca", "phi3"} <= set(STYLES)
    with pytest.raises(ValueError, match="unknown prompt style 'vicuna'; valid names: alpaca, .*phi3"):
        get_prompt_style("vicuna")


def test_format_prompt_defaults_missing_input(tokenizer):
    dm = InstructDataModule(tokenizer, prompt_style="phi3")
    assert dm.format_prompt({"instruction": "Hi"}) == "<|user|>\nHi\n<|assistant|>\n"


# ---- the collate, on hand-made token lists


def ex(ids, prompt_len, example_id=0):
    return {"input_ids": ids, "prompt_len": prompt_len, "example_id": example_id}


def collate(batch, **kwargs):
    out = InstructCollate(eot_id=E, **kwargs)(batch)
    return {k: v.tolist() for k, v in out.items()}


def test_collate_no_mask():
    out = collate([ex([1, 2, 3], 2, 7), ex([4, 5], 1, 3)])
    assert out["input_ids"] == [[1, 2, 3], [4, 5, E]]
    assert out["targets"] == [[2, 3, E], [5, E, X]]  # first end-of-text is a target, the pads are not
    assert out["lengths"] == [3, 2] and out["example_id"] == [7, 3]


def test_collate_mask_prompt():
    out = collate([ex([1, 2, 3, 4], 2), ex([5, 6], 1)], mask_prompt=True)
    assert out["input_ids"] == [[1, 2, 3, 4], [5, 6, E, E]]
    # the target predicting the first response token (position prompt_len - 1) stays
    assert out["targets"] == [[X, 3, 4, E], [6, E, X, X]]


def test_collate_different_lengths():
    out = collate([ex([1], 1), ex([1, 2, 3, 4, 5], 3)])
    assert out["input_ids"] == [[1, E, E, E, E], [1, 2, 3, 4, 5]]
    assert out["targets"] == [[E, X, X, X, X], [2, 3, 4, 5, E]]
    assert out["lengths"] == [1, 5]


def test_collate_truncation():
    out = collate([ex([1, 2, 3, 4], 1), ex([5, 6], 1)], max_length=3)
    assert out["input_ids"] == [[1, 2, 3], [5, 6, E]]
    assert out["targets"] == [[2, 3, 4], [6, E, X]] and out["lengths"] == [3, 2]
    fits = collate([ex([1, 2, 3], 1)], max_length=3)  # exactly max_length: the end-of-text target stays
    assert fits["targets"] == [[2, 3, E]]
    assert collate([ex([1, 2], 1)], max_length=10)["input_ids"] == [[1, 2]]


def test_collate_end_of_text_inside_text_is_still_a_target():
    out = collate([ex([1, E, 2], 1), ex([3], 1)])
    assert out["targets"] == [[E, 2, E], [E, X, X]]


def test_collate_can_produce_all_ignored_targets():
    out = InstructCollate(eot_id=E, max_length=3, mask_prompt=True)([ex([1, 2, 3, 4, 5, 6], 5)])
    assert out["targets"].tolist() == [[X, X, X]] and out["input_ids"].tolist() == [[1, 2, 3]]
    assert out["targets"].dtype == out["input_ids"].dtype == torch.long


def test_collate_separate_pad_id():
    out = InstructCollate(eot_id=9, pad_id=0)([ex([1, 2], 1), ex([3], 1)])
    assert out["input_ids"].tolist() == [[1, 2], [3, 9]] and out["targets"].tolist() == [[2, 9], [9, X]]


# ---- bad input


def error_of(tokenizer, path, **kwargs) -> str:
    with pytest.raises(GptftError) as info:  # every bad input is one clean message on the command line
        InstructDataModule(tokenizer, path=str(path), **kwargs).setup()
    return str(info.value)


def entries(n):
    return [{"instruction": f"do {i}", "output": f"done {i}"} for i in range(n)]


def test_jsonl_and_missing_input(tmp_path, tokenizer):
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in entries(20)) + "\n\n", encoding="utf-8")
    dm = InstructDataModule(tokenizer, path=str(path))
    dm.setup()
    assert len(dm.entries) == 20 and dm.entries[0]["input"] == ""
    assert (len(dm.train_set), len(dm.test_set), len(dm.val_set)) == (17, 2, 1)


def test_not_json(tmp_path, tokenizer):
    path = tmp_path / "broken.json"
    path.write_text('[\n  {"instruction": "a", "output": "b"},\n  {oops}\n]', encoding="utf-8")
    msg = error_of(tokenizer, path)
    assert str(path) in msg and "line 3" in msg and "not valid JSON" in msg
    path = tmp_path / "broken.jsonl"
    path.write_text('{"instruction": "a", "output": "b"}\nnot json\n', encoding="utf-8")
    msg = error_of(tokenizer, path)
    assert str(path) in msg and "line 2" in msg and "JSON Lines" in msg
    path = tmp_path / "empty.json"
    path.write_text("  \n", encoding="utf-8")
    assert f"{path} is empty" in error_of(tokenizer, path)
    path.write_text("[]", encoding="utf-8")
    assert "no entries" in error_of(tokenizer, path)
    assert "no such file" in error_of(tokenizer, tmp_path / "absent.json")


@pytest.mark.parametrize("bad, expected", [
    ({"input": "x", "output": "y"}, "missing 'instruction'"),
    ({"instruction": "x"}, "missing 'output'"),
    ({"instruction": "x", "input": 3, "output": "y"}, "'input' must be a string, got int"),
    ({"instruction": "x", "output": ["y"]}, "'output' must be a string, got list"),
    ({"instruction": "x", "output": "  "}, "empty 'output'"),
    ("just text", "expected an object"),
])
def test_bad_entries_name_the_index(tmp_path, tokenizer, bad, expected):
    data = entries(20)
    data[13] = bad
    path = tmp_path / "data.json"
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    msg = error_of(tokenizer, path)
    assert str(path) in msg and "entry 13" in msg and expected in msg
    jsonl = tmp_path / "data.jsonl"
    jsonl.write_text("\n".join(json.dumps(e) for e in data), encoding="utf-8")
    msg = error_of(tokenizer, jsonl)
    assert "entry 13" in msg and "line 14" in msg and expected in msg


def test_too_few_entries_and_bad_arguments(tmp_path, tokenizer):
    path = tmp_path / "few.json"
    path.write_text(json.dumps(entries(9)), encoding="utf-8")
    msg = error_of(tokenizer, path)
    assert str(path) in msg and "has 9 entries" in msg and "at least 10" in msg
    path.write_text(json.dumps(entries(10)), encoding="utf-8")
    with pytest.raises(GptftError, match="train split has 8 examples, fewer than data.batch_size=9"):
        InstructDataModule(tokenizer, path=str(path), batch_size=9).train_dataloader()
    with pytest.raises(GptftError, match="data.split"):
        InstructDataModule(tokenizer, split="random")
    with pytest.raises(GptftError, match="valid names"):
        InstructDataModule(tokenizer, prompt_style="nope")
