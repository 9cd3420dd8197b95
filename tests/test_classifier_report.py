"""A classifier run end to end on a user CSV: weighted loss, calibration stored and used, plots/ and TensorBoard."""
from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gptft.classify import classify
from gptft.data.collate import ClassificationCollate
from gptft.tasks.factory import load_checkpoint
from gptft.train import train
from helpers import compose_cfg

PLOTS = ("curves", "confusion", "roc_pr", "reliability")


@pytest.fixture(scope="module")
def run(tmp_path_factory, shared_data):
    """260 real SMS rows (200 ham, 60 spam) kept whole (balance=weighted), a 0.9-precision threshold."""
    folder = tmp_path_factory.mktemp("report")
    rows, per = [], {"ham": 200, "spam": 60}
    for line in (shared_data / "sms_spam_collection" / "SMSSpamCollection").read_text(encoding="utf-8").splitlines():
        label, text = line.split("\t", 1)
        if per[label]:
            per[label] -= 1
            rows.append(f'"{text.replace(chr(34), chr(34) * 2)}",{label}\n')
    data = folder / "mine.csv"
    data.write_text("text,label\n" + "".join(rows), encoding="utf-8")
    run_dir = folder / "run"
    train(compose_cfg(run_dir, "task=spam", "model=gpt2-tiny", f"data.path={data}", "data.balance=weighted",
                      "threshold.precision=0.9", "trainer.max_epochs=2", "trainer.enable_progress_bar=false",
                      "trainer.enable_model_summary=false"))
    return run_dir, json.loads((run_dir / "metrics.json").read_text())


def test_metrics_json_has_the_new_scores_and_the_calibration(run):
    _, m = run
    assert m["data"]["split_class_counts"]["test"] == {"ham": 40, "spam": 12}  # stratified: 200:60 kept
    assert m["epochs_trained"] == 2
    for split in ("train", "val", "test"):
        d = m["splits"][split]
        for key in ("auroc", "pr_auc", "ece", "ece_calibrated", "precision_spam", "recall_ham",
                    "precision_spam_at_threshold", "acc_at_threshold"):
            assert 0.0 <= d[key] <= 1.0, (split, key)
        assert sum(map(sum, d["confusion_at_threshold"])) == d["n"]
    c = m["calibration"]
    assert c["temperature"] > 0 and 0 < c["threshold"] < 1 and c["threshold_precision_target"] == 0.9
    assert c["threshold_met"] == (c["threshold_val_precision"] >= 0.9)


def test_the_scored_checkpoint_stores_the_calibration_and_classify_uses_it(run):
    run_dir, m = run
    task, tokenizer, meta = load_checkpoint(run_dir / "checkpoints" / "best.ckpt", expect_task="spam")
    assert meta["calibration"] == m["calibration"] == task.calibration
    texts = ["WINNER!! Claim your free prize now, call 09061701461", "Ok lar... Joking wif u oni...",
             "Free entry in 2 a wkly comp to win FA Cup final tkts", "I'll be home in ten minutes"]
    out = classify(task, tokenizer, texts)
    with torch.no_grad():
        batch = ClassificationCollate(tokenizer.pad_id, None)(
            [{"input_ids": tokenizer.encode(t), "label": 0, "example_id": i} for i, t in enumerate(texts)])
        p_spam = (task(batch).float() / m["calibration"]["temperature"]).softmax(-1)[:, 1]
    for r, p in zip(out, p_spam.tolist()):
        assert r["probs"]["spam"] == pytest.approx(p, abs=1e-5)
        assert r["label"] == ("spam" if p >= m["calibration"]["threshold"] else "ham")


def test_plots_are_pngs_and_tensorboard_images(run):
    run_dir, m = run
    assert sorted(m["plots"]) == sorted(str(run_dir / "plots" / f"{n}.png") for n in PLOTS)
    for name in PLOTS:
        with Image.open(run_dir / "plots" / f"{name}.png") as img:
            assert img.format == "PNG" and 300 <= img.width <= 2000 and 250 <= img.height <= 1500
            img.verify()
    assert not list((run_dir / "plots").glob(".*"))  # no temp file left behind
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert {f"plots/{n}" for n in PLOTS} <= set(events.Tags()["images"])
    assert {"val/auroc", "val/ece", "test/pr_auc", "test/precision_spam_at_threshold"} <= set(events.Tags()["scalars"])
