"""SMS spam data: parsing, balanced split, collate, bucketing, user CSVs, bad input, downloads."""
from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import socket
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from gptft.data.collate import BucketBatchSampler, ClassificationCollate, EpochShuffle
from gptft.data.download import ensure_file
from gptft.data.spam import SpamDataModule
from gptft.data.tables import read_label_tab_text
from gptft.errors import GptftError

PAD = 50256


@pytest.fixture(scope="module")
def sms(shared_data, tokenizer):
    dm = SpamDataModule(tokenizer)
    dm.setup("fit")
    return dm


def ids(dataset):
    return [ex["example_id"] for ex in dataset]


# ---- the real SMS Spam Collection


def test_parse_real_file_with_quoting_off(shared_data):
    rows = read_label_tab_text(shared_data / "sms_spam_collection" / "SMSSpamCollection")
    labels = [label for label, _, _ in rows]
    assert (len(rows), labels.count("ham"), labels.count("spam")) == (5574, 4827, 747)
    assert [line for _, _, line in rows] == list(range(1, 5575))


def test_balanced_split_counts_and_labels(sms):
    assert (len(sms.train_set), len(sms.val_set), len(sms.test_set)) == (1045, 149, 300)
    assert sms.label_names == ["ham", "spam"] and sms.num_classes == 2 and sms.positive_index == 1
    all_examples = sms.train_set + sms.val_set + sms.test_set
    assert len(set(ids(all_examples))) == 1494  # example ids are unique across splits
    labels = torch.tensor([ex["label"] for ex in all_examples])
    assert labels.bincount().tolist() == [747, 747]
    for split in (sms.train_set, sms.val_set, sms.test_set):
        spam_share = sum(ex["label"] for ex in split) / len(split)
        assert 0.35 < spam_share < 0.65
    # labels and token ids belong to the line the example id points at
    lines = (sms.file).read_text(encoding="utf-8").split("\n")
    for ex in all_examples[:50]:
        label, text = lines[ex["example_id"]].split("\t", 1)
        assert sms.label_names[ex["label"]] == label and sms.texts[ex["example_id"]] == text
        assert ex["input_ids"] == sms.tokenizer.encode(text)


def test_split_is_seeded(sms, tokenizer, shared_data):
    again = SpamDataModule(tokenizer)
    again.setup()
    assert ids(again.train_set) == ids(sms.train_set) and ids(again.test_set) == ids(sms.test_set)
    other = SpamDataModule(tokenizer, seed=7)
    other.setup()
    assert ids(other.train_set) != ids(sms.train_set)
    train = ids(sms.train_set)
    sms.setup("test")  # Lightning calls setup per stage: nothing may change
    assert ids(sms.train_set) == train


def test_duplicate_report(sms):
    r = sms.report
    assert r["rows"] == 5574 and r["duplicate_texts"] == 403 and r["duplicates_removed"] == 0
    train_texts = {sms.texts[i] for i in ids(sms.train_set)}
    assert r["test_in_train"] == sum(sms.texts[i] in train_texts for i in ids(sms.test_set)) > 0
    assert r["val_in_train"] == sum(sms.texts[i] in train_texts for i in ids(sms.val_set)) > 0


def test_dedup_removes_duplicates(tokenizer, shared_data):
    dm = SpamDataModule(tokenizer, dedup=True, balance="none")
    dm.setup()
    total = len(dm.train_set) + len(dm.val_set) + len(dm.test_set)
    assert dm.report["duplicates_removed"] == 403 and total == 5574 - 403
    assert dm.report["test_in_train"] == 0 and dm.report["val_in_train"] == 0
    balanced = SpamDataModule(tokenizer, dedup=True)
    balanced.setup()
    assert len(balanced.train_set) + len(balanced.val_set) + len(balanced.test_set) < 1494


def test_train_batches_padded_per_batch(sms):
    loader = sms.train_dataloader()
    assert len(loader) == 1045 // 8  # drop_last, like the book
    by_id = {ex["example_id"]: ex["input_ids"] for ex in sms.train_set}
    for batch, _ in zip(loader, range(3)):
        x, n = batch["input_ids"], batch["lengths"]
        assert x.dtype == torch.long and x.shape == (8, int(n.max()))
        for row, length, eid in zip(x, n, batch["example_id"]):
            assert row[:length].tolist() == by_id[int(eid)]
            assert (row[length:] == PAD).all()
    first = [b["example_id"].tolist() for b, _ in zip(sms.train_dataloader(), range(2))]
    assert first == [b["example_id"].tolist() for b, _ in zip(sms.train_dataloader(), range(2))]
    longest = sorted(sms.val_set, key=lambda ex: -len(ex["input_ids"]))[:8]  # eval batches: longest first
    assert ids(longest) == next(iter(sms.val_dataloader()))["example_id"].tolist()


def test_eval_batches_grow_to_the_token_budget(sms, tokenizer):
    budget = SpamDataModule(tokenizer, eval_batch_tokens=512)
    batches = list(budget.eval_dataloader("train"))
    seen = [i for b in batches for i in b["example_id"].tolist()]
    assert sorted(seen) == sorted(ids(sms.train_set))  # the same split, each example once
    for b in batches:
        rows, width = b["input_ids"].shape
        assert rows >= 8 and (rows == 8 or rows * width <= 512)  # never fewer than batch_size rows
    assert len(batches) < len(sms.eval_dataloader("train")) / 1.5  # short messages: fewer, bigger batches
    lengths = torch.cat([b["lengths"] for b in batches])
    assert (lengths[:-1] >= lengths[1:]).all()
    book = SpamDataModule(tokenizer, eval_batch_tokens=512, pad_to="longest_train")  # the book's fixed padding
    assert len(book.eval_dataloader("val")) == len(sms.eval_dataloader("val"))
    with pytest.raises(ValueError, match="data.eval_batch_tokens must be null or a positive integer, got 0"):
        SpamDataModule(tokenizer, eval_batch_tokens=0)


def test_eval_loader_and_report_for_metrics_json(sms):
    batches = list(sms.eval_dataloader("train"))
    seen = [i for b in batches for i in b["example_id"].tolist()]
    assert sorted(seen) == sorted(ids(sms.train_set))  # each once, nothing dropped
    lengths = torch.cat([b["lengths"] for b in batches])
    assert (lengths[:-1] >= lengths[1:]).all()  # longest first: a batch pads little
    assert sum(b["input_ids"].numel() for b in batches) < 1.05 * int(lengths.sum())
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        sms.eval_dataloader("dev")
    assert json.loads(json.dumps(sms.report))["split_sizes"] == {"train": 1045, "val": 149, "test": 300}


def test_pad_to_longest_train_and_int(tokenizer, shared_data, caplog):
    dm = SpamDataModule(tokenizer, pad_to="longest_train")
    dm.setup()
    longest = max(len(ex["input_ids"]) for ex in dm.train_set)
    assert dm.pad_width == longest == dm.report["longest_train"]
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        assert all(b["input_ids"].shape[1] == longest for b in loader)
    with caplog.at_level(logging.WARNING):
        small = SpamDataModule(tokenizer, pad_to=16)
        small.setup()
    batch = next(iter(small.test_dataloader()))
    assert batch["input_ids"].shape[1] == 16 and batch["lengths"].max() <= 16
    assert small.report["truncated_by_pad_to"] > 0
    assert f"{small.report['truncated_by_pad_to']} of 1494 texts truncated to 16 tokens" in caplog.text


def test_max_length_truncates_and_warns(tokenizer, shared_data, caplog):
    with caplog.at_level(logging.WARNING):
        dm = SpamDataModule(tokenizer, max_length=20)
        dm.setup()
    n = dm.report["truncated"]
    assert n > 0 and f"{n} of 1494 texts truncated to 20 tokens" in caplog.text
    assert max(len(ex["input_ids"]) for ex in dm.train_set + dm.val_set + dm.test_set) == 20


def test_bucketed_loader_covers_each_example_once(tokenizer, shared_data, sms):
    dm = SpamDataModule(tokenizer, bucket=True)
    dm.setup()
    seen = [i for b in dm.train_dataloader() for i in b["example_id"].tolist()]
    assert len(seen) == len(set(seen)) == 1045 // 8 * 8
    padding = lambda loader: sum(b["input_ids"].numel() - int(b["lengths"].sum()) for b in loader)  # noqa: E731
    assert padding(dm.train_dataloader()) < padding(sms.train_dataloader()) / 2


def test_bucket_sampler_yields_all_indices():
    lengths = [5, 1, 9, 3, 3, 7, 2, 8, 6, 4, 1]
    bucket = lambda drop_last, **kw: BucketBatchSampler(EpochShuffle(lengths, seed=0), 3, drop_last, lengths, **kw)  # noqa: E731
    sampler = bucket(False, chunk_batches=100)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(11)) and len(batches) == len(sampler) == 4
    # one sorted chunk: every batch holds neighbours in length order
    spans = sorted((min(lengths[i] for i in b), max(lengths[i] for i in b)) for b in batches)
    assert all(hi <= lo_next for (_, hi), (lo_next, _) in zip(spans, spans[1:]))
    dropped = bucket(True)
    flat = [i for b in dropped for i in b]
    assert len(dropped) == 3 and len(flat) == len(set(flat)) == 9
    assert list(bucket(False)) == list(bucket(False))
    sampler.sampler.set_epoch(1)
    assert list(sampler) != batches


def test_classification_collate_exact():
    batch = [{"input_ids": [1, 2, 3], "label": 1, "example_id": 10}, {"input_ids": [4], "label": 0, "example_id": 3}]
    out = ClassificationCollate(pad_id=0)(batch)
    assert out["input_ids"].tolist() == [[1, 2, 3], [4, 0, 0]]
    assert out["lengths"].tolist() == [3, 1] and out["labels"].tolist() == [1, 0]
    assert out["example_id"].tolist() == [10, 3]
    fixed = ClassificationCollate(pad_id=0, pad_to=2)(batch)
    assert fixed["input_ids"].tolist() == [[1, 2], [4, 0]] and fixed["lengths"].tolist() == [2, 1]


# ---- the user's own files


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def three_class_csv(tmp_path, n=10):
    rows = ["id,text,label"]
    for i in range(n):
        for label in ("pos", "neg", "neu"):
            rows.append(f'{i},"a {label} text, number {i}",{label}')
    return write(tmp_path / "reviews.csv", "\n".join(rows) + "\n")


def test_user_csv_three_classes(tmp_path, tokenizer):
    path = three_class_csv(tmp_path)
    dm = SpamDataModule(tokenizer, path=str(path))
    dm.setup()
    assert dm.label_names == ["neg", "neu", "pos"] and dm.num_classes == 3 and dm.positive_index is None
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (21, 3, 6)
    for ex in dm.train_set + dm.val_set + dm.test_set:  # texts look like "a pos text, number 3"
        text = dm.texts[ex["example_id"]]
        assert text.split()[1] == dm.label_names[ex["label"]] and ", number " in text  # quoted comma kept
    named = SpamDataModule(tokenizer, path=str(path), label_names=["pos", "neu", "neg"], positive_label="pos")
    named.setup()
    assert named.label_names == ["pos", "neu", "neg"] and named.positive_index == 0
    ex = named.train_set[0]
    assert named.texts[ex["example_id"]].split()[1] == named.label_names[ex["label"]]


def test_user_tsv_with_columns_and_quotes(tmp_path, tokenizer):
    lines = ["msg\tkind"] + [f'he said "hi{i}\tham' for i in range(10)] + [f"WIN {i} now\tspam" for i in range(10)]
    path = write(tmp_path / "mine.tsv", "\n".join(lines) + "\n")
    dm = SpamDataModule(tokenizer, path=str(path), text_column="msg", label_column="kind", balance="none")
    dm.setup()
    assert dm.report["rows"] == 20 and dm.texts[0] == 'he said "hi0'  # quoting is off for tabs


def test_user_headerless_file_reads_like_sms(tmp_path, tokenizer):
    path = write(tmp_path / "SMSCopy", "".join(f"{'ham' if i % 2 else 'spam'}\tmessage {i}\n" for i in range(20)))
    dm = SpamDataModule(tokenizer, path=str(path))
    dm.setup()
    assert dm.label_names == ["ham", "spam"] and dm.report["rows"] == 20


def error_of(tokenizer, path, **kwargs) -> str:
    with pytest.raises(GptftError) as info:  # every bad input is one clean message on the command line
        SpamDataModule(tokenizer, path=str(path), **kwargs).setup()
    return str(info.value)


def test_bad_sms_format_lines(tmp_path, tokenizer):
    path = write(tmp_path / "sms", "ham\tok\nspam\tfine\nno tab here\nham\tlast\n")
    msg = error_of(tokenizer, path)
    assert str(path) in msg and "line 3" in msg and "no tab" in msg
    path = write(tmp_path / "empty_text", "ham\tok\nspam\t  \n")
    msg = error_of(tokenizer, path)
    assert str(path) in msg and "line 2" in msg and "empty text" in msg
    path = write(tmp_path / "empty", "")
    assert f"{path} is empty" in error_of(tokenizer, path)
    path = tmp_path / "latin1"
    path.write_bytes("ham\tok\nham\tcaf\xe9\n".encode("latin-1"))
    msg = error_of(tokenizer, path, encoding="utf-8")
    assert str(path) in msg and "line 2" in msg and "not valid utf-8" in msg
    msg = error_of(tokenizer, tmp_path / "missing.csv")
    assert "missing.csv" in msg and "no such file" in msg


def test_bad_labels(tmp_path, tokenizer):
    path = three_class_csv(tmp_path)
    msg = error_of(tokenizer, path, label_names=["pos", "neg"])
    assert str(path) in msg and "line 4" in msg and "'neu'" in msg and "['pos', 'neg']" in msg
    msg = error_of(tokenizer, path, label_names=["pos", "neg", "neu", "other"])
    assert "'other'" in msg and "remove it" in msg
    one = write(tmp_path / "one.csv", "text,label\n" + "".join(f"t{i},a\n" for i in range(20)))
    msg = error_of(tokenizer, one)
    assert str(one) in msg and "at least 2 classes" in msg
    assert "positive_label" in error_of(tokenizer, path, positive_label="nope")


def test_too_few_rows(tmp_path, tokenizer):
    small = write(tmp_path / "small.csv", "text,label\n" + "".join(f"t{i},{'ab'[i % 2]}\n" for i in range(8)))
    msg = error_of(tokenizer, small, balance="none")
    assert str(small) in msg and "has 8 rows" in msg and "needs at least 10" in msg
    skewed = write(tmp_path / "skewed.csv", "text,label\n" + "".join(f"t{i},{'aaab'[i % 4]}\n" for i in range(12)))
    msg = error_of(tokenizer, skewed)
    assert "has 12 rows" in msg and "keeps 6 (3 per class" in msg and "needs at least 10" in msg
    small_batch = SpamDataModule(tokenizer, path=str(skewed), balance="none", batch_size=16)
    with pytest.raises(GptftError, match="fewer than data.batch_size=16"):
        small_batch.train_dataloader()


def test_bad_tables(tmp_path, tokenizer):
    path = write(tmp_path / "cols.csv", "message,label\nhi,a\n")
    msg = error_of(tokenizer, path)
    assert str(path) in msg and "no column 'text'" in msg and "data.text_column" in msg
    path = write(tmp_path / "fields.csv", "text,label\nhi,a\nhi,there,b\n")
    msg = error_of(tokenizer, path)
    assert str(path) in msg and "line 3" in msg and "3 fields" in msg
    path = write(tmp_path / "blank.csv", "text,label\nhi,a\n,b\n")
    msg = error_of(tokenizer, path)
    assert "line 3" in msg and "empty text" in msg
    path = write(tmp_path / "quote.csv", 'text,label\nhi,a\n"unclosed,b\n')
    msg = error_of(tokenizer, path)
    assert str(path) in msg and "line 3" in msg and "quoting" in msg
    path = write(tmp_path / "data.txt", "ham\thi\n")
    assert "data.sep" in error_of(tokenizer, path, text_column="msg")


def test_train_on_dropped_keeps_val_and_test_and_adds_the_rest_to_train(sms, tokenizer, shared_data):
    dm = SpamDataModule(tokenizer, train_on_dropped=True)
    dm.setup()
    assert ids(dm.val_set) == ids(sms.val_set) and ids(dm.test_set) == ids(sms.test_set)  # the same balanced splits
    held_out = {sms.texts[i] for i in ids(sms.val_set) + ids(sms.test_set)}
    added = set(ids(dm.train_set)) - set(ids(sms.train_set))
    assert set(ids(sms.train_set)) <= set(ids(dm.train_set)) and len(ids(dm.train_set)) == len(set(ids(dm.train_set)))
    # no held-out text joins train: the overlaps are only those the balanced split had already
    assert (dm.report["test_in_train"], dm.report["val_in_train"]) == (sms.report["test_in_train"], sms.report["val_in_train"])
    assert not {dm.texts[i] for i in added} & held_out
    # every row of the file is in a split but for those whose text is held out
    left = set(range(5574)) - set(ids(dm.train_set) + ids(dm.val_set) + ids(dm.test_set))
    assert left and all(dm.texts[i] in held_out for i in left)
    assert len(added) == dm.report["dropped_rows_added_to_train"] == 5574 - 1494 - len(left)
    assert {sms.label_names[ex["label"]] for ex in dm.train_set if ex["example_id"] in added} == {"ham"}
    ham, spam = (sum(ex["label"] == c for ex in dm.train_set) for c in (0, 1))
    assert dm.class_weights() == pytest.approx((len(dm.train_set) / (2 * ham), len(dm.train_set) / (2 * spam)))
    assert SpamDataModule(tokenizer).class_weights() is None


def test_bad_arguments(tokenizer):
    for kwargs, text in [({"balance": "over"}, "data.balance"), ({"balance": "none", "train_on_dropped": True},
                                                                 "needs data.balance=undersample"), ({"pad_to": "longest"}, "data.pad_to"),
                         ({"split": (0.5, 0.5)}, "data.split"), ({"split": (0.7, 0.3, 0.0)}, "data.split"),
                         ({"max_length": 8, "pad_to": 16}, "exceeds max_length")]:
        with pytest.raises(GptftError, match=text):
            SpamDataModule(tokenizer, **kwargs)


# ---- downloads, against a local stand-in server


@pytest.fixture
def server(tmp_path, monkeypatch):
    """Serves tmp_path/www on 127.0.0.1 and points GPTFT_DATA_DIR at an empty folder."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    monkeypatch.setenv("GPTFT_DATA_DIR", str(tmp_path / "data"))
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_extracts_and_verifies(server, tmp_path):
    root, base = server
    content = b"ham\thello\nspam\twin\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("readme.txt", "about")
        zf.writestr("SMSSpamCollection", content)
    (root / "sms.zip").write_bytes(buf.getvalue())
    digest = hashlib.sha256(content).hexdigest()

    path = ensure_file("sms/SMSSpamCollection", f"{base}/sms.zip", digest, extract="SMSSpamCollection")
    assert path == tmp_path / "data" / "sms" / "SMSSpamCollection" and path.read_bytes() == content
    assert [p.name for p in path.parent.iterdir()] == ["SMSSpamCollection"]  # no partial files left
    (root / "sms.zip").unlink()  # an existing, verified file needs no network
    assert ensure_file("sms/SMSSpamCollection", f"{base}/sms.zip", digest, extract="SMSSpamCollection") == path

    path.write_bytes(b"changed")
    with pytest.raises(RuntimeError) as info:
        ensure_file("sms/SMSSpamCollection", f"{base}/sms.zip", digest)
    msg = str(info.value)
    assert str(path) in msg and digest in msg and hashlib.sha256(b"changed").hexdigest() in msg


def test_download_rejects_wrong_digest_and_member(server, tmp_path):
    root, base = server
    (root / "data.json").write_bytes(b"[]")
    with pytest.raises(RuntimeError) as info:
        ensure_file("data.json", f"{base}/data.json", "0" * 64)
    assert "0" * 64 in str(info.value) and hashlib.sha256(b"[]").hexdigest() in str(info.value)
    assert not (tmp_path / "data" / "data.json").exists()
    assert ensure_file("data.json", f"{base}/data.json", hashlib.sha256(b"[]").hexdigest()).read_bytes() == b"[]"
    with pytest.raises(RuntimeError, match="not a zip|did not return a zip"):
        ensure_file("x/y", f"{base}/data.json", None, extract="y")


def test_download_unreachable_says_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTFT_DATA_DIR", str(tmp_path / "data"))
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/instruction-data.json"
    with pytest.raises(RuntimeError) as info:
        ensure_file("instruction-data.json", url, "0" * 64)
    msg = str(info.value)
    assert str(tmp_path / "data" / "instruction-data.json") in msg and url in msg and "data.path=FILE" in msg
    assert info.value.__cause__ is None and info.value.__suppress_context__  # one clear error, no chained traceback
    assert isinstance(info.value, GptftError)  # shown as one message, no traceback
