"""Classifier scores, temperature and threshold fitting against known answers; stratified and weighted data."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gptft.data.spam import SpamDataModule
from gptft.errors import GptftError
from gptft.tasks.calibration import choose_threshold, fit_temperature, separates
from gptft.tasks.class_metrics import split_scores

NAMES = ["ham", "spam"]
# p(spam) of six rows and their labels: the hand computations below use these
P_SPAM = [0.95, 0.85, 0.75, 0.65, 0.35, 0.15]
LABELS = [1, 1, 0, 1, 0, 0]


def logits_for(p_spam):
    p = torch.tensor(p_spam, dtype=torch.float64)
    return torch.stack([torch.zeros_like(p), torch.log(p / (1 - p))], 1)


def test_scores_against_hand_computed_values():
    out = split_scores(logits_for(P_SPAM), torch.tensor(LABELS), NAMES, 1, None)
    # AUROC: of the 3 x 3 (spam, ham) pairs, spam scores higher in 8 (0.65 < 0.75 is the one miss)
    assert out["auroc"] == pytest.approx(8 / 9)
    # average precision: ranked 1,1,0,1,0,0 -> precision at each spam hit 1, 1, 3/4
    assert out["pr_auc"] == pytest.approx((1 + 1 + 0.75) / 3)
    # ECE (top label, 15 bins): confidences .95 | .85 .85 | .75 | .65 .65, bin accuracies 1 | 1 | 0 | 1
    assert out["ece"] == pytest.approx((0.05 + 2 * 0.15 + 0.75 + 2 * 0.35) / 6, abs=1e-6)
    # argmax predicts spam for the first four: spam precision 3/4, recall 3/3; ham precision 2/2, recall 2/3
    assert out["precision_spam"] == pytest.approx(0.75) and out["recall_spam"] == pytest.approx(1.0)
    assert out["precision_ham"] == pytest.approx(1.0) and out["recall_ham"] == pytest.approx(2 / 3)
    assert "acc_at_threshold" not in out and "ece_calibrated" not in out


def test_scores_at_a_threshold_and_temperature():
    logits, labels = logits_for(P_SPAM), torch.tensor(LABELS)
    out = split_scores(logits, labels, NAMES, 1, {"temperature": 1.0, "threshold": 0.8})
    # spam only for .95 and .85: both right; the .65 spam becomes a miss
    assert out["precision_spam_at_threshold"] == pytest.approx(1.0)
    assert out["recall_spam_at_threshold"] == pytest.approx(2 / 3)
    assert out["acc_at_threshold"] == pytest.approx(5 / 6)
    assert out["confusion_at_threshold"] == [[3, 0], [1, 2]]
    assert out["ece_calibrated"] == pytest.approx(out["ece"])
    hotter = split_scores(logits, labels, NAMES, 1, {"temperature": 2.0, "threshold": None})
    assert hotter["loss_calibrated"] == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits / 2, labels)), rel=1e-6)
    assert hotter["auroc"] == out["auroc"] and "acc_at_threshold" not in hotter  # ranking is unchanged by T



def test_three_classes_against_hand_computed_values():
    logits = torch.tensor([[3.0, 0, 0], [0, 3, 0], [0, 0, 3], [0, 3, 0]])
    out = split_scores(logits, torch.tensor([0, 1, 2, 2]), ["a", "b", "c"], None, None)
    # predicted a, b, c, b: b is right once of twice, c found once of twice
    assert out["precision_b"] == pytest.approx(0.5) and out["recall_c"] == pytest.approx(0.5)
    # one-vs-rest AUROC, ties count 1/2: a 1; b (row 3 ties row 1) 2.5/3; c (row 3 ties rows 0, 1) 3/4
    assert out["auroc"] == pytest.approx((1 + 2.5 / 3 + 0.75) / 3)


@pytest.mark.parametrize("factor", [3.0, 0.5])
def test_temperature_recovers_a_known_scale(factor):
    g = torch.Generator().manual_seed(0)
    true = torch.randn(20000, 3, generator=g) * 2
    labels = torch.multinomial(true.softmax(-1), 1, generator=g).squeeze(1)
    # logits `factor` times too sharp (or too flat): the fitted temperature undoes it
    assert fit_temperature(true * factor, labels) == pytest.approx(factor, rel=0.04)


def test_temperature_of_a_perfectly_separated_split_stays_one():
    # every row right: the NLL falls without end as T -> 0 (the fit would run to T ~ 0.002, probabilities of
    # exactly 0 and 1); no temperature is fitted
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0], [-4.0, 1.0], [1.0, 0.9]])
    labels = torch.tensor([0, 1, 1, 0])
    assert separates(logits, labels) and fit_temperature(logits, labels) == 1.0
    # one row wrong (or tied): a finite optimum, fitted as before
    assert not separates(logits, torch.tensor([0, 1, 1, 1]))
    assert not separates(torch.tensor([[1.0, 1.0]]), torch.tensor([0]))
    assert fit_temperature(logits, torch.tensor([0, 1, 1, 1])) != 1.0


def test_temperature_runs_in_inference_mode():
    g = torch.Generator().manual_seed(1)
    true = torch.randn(2000, 2, generator=g)
    labels = torch.multinomial(true.softmax(-1), 1, generator=g).squeeze(1)
    with torch.inference_mode():  # as in Lightning's test loop, where the calibration is fitted
        logits = true * 2
        assert fit_temperature(logits, labels) == pytest.approx(2.0, rel=0.15)


def test_threshold_on_a_constructed_score_list():
    scores, spam = torch.tensor(P_SPAM), torch.tensor(LABELS) == 1
    # cuts (score >= t): .95 -> 1/1, .85 -> 2/2, .75 -> 2/3, .65 -> 3/4, .35 -> 3/5, .15 -> 3/6
    assert choose_threshold(scores, spam, 0.99) == (pytest.approx(0.85), 1.0, True)
    assert choose_threshold(scores, spam, 0.75) == (pytest.approx(0.65), 0.75, True)
    assert choose_threshold(scores, spam, 0.5) == (pytest.approx(0.15), 0.5, True)


def test_threshold_ties_and_an_unattainable_target():
    # a cut keeps every equal score: at .9 a spam and a ham together (1/2), at .5 two of three
    scores, spam = torch.tensor([0.9, 0.9, 0.5]), torch.tensor([True, False, True])
    t, precision, met = choose_threshold(scores, spam, 0.99)
    assert (t, met) == (pytest.approx(0.5), False) and precision == pytest.approx(2 / 3)
    t, precision, met = choose_threshold(torch.tensor([0.7, 0.2]), torch.tensor([False, False]), 0.9)
    assert (t, precision, met) == (pytest.approx(0.2), 0.0, False)  # no positives: nothing reaches any target


# ---- data: balance and stratified splits


def sms_csv(tmp_path, n_per_class: int, source):
    """A balanced CSV of real SMS texts (n ham, n spam), as a new user would bring one."""
    rows = {"ham": [], "spam": []}
    for line in source.read_text(encoding="utf-8").splitlines():
        label, text = line.split("\t", 1)
        if len(rows[label]) < n_per_class:
            rows[label].append(text.replace('"', '""'))
    path = tmp_path / "comments.csv"
    path.write_text("text,label\n" + "".join(f'"{t}",{label}\n' for label, ts in rows.items() for t in ts),
                    encoding="utf-8")
    return path


def counts(dm, split):
    return dm.report["split_class_counts"][split]


def test_user_csv_split_is_stratified_and_seeded(tmp_path, tokenizer, shared_data):
    path = sms_csv(tmp_path, 175, shared_data / "sms_spam_collection" / "SMSSpamCollection")
    dm = SpamDataModule(tokenizer, path=str(path))
    dm.setup()
    assert dm.report["split_sizes"] == {"train": 245, "val": 35, "test": 70}
    assert counts(dm, "test") == {"ham": 35, "spam": 35}  # a plain shuffle gave 46/24 on such a file
    assert sorted(counts(dm, "val").values()) == [17, 18] and sorted(counts(dm, "train").values()) == [122, 123]
    again = SpamDataModule(tokenizer, path=str(path))
    again.setup()
    assert [ex["example_id"] for ex in again.test_set] == [ex["example_id"] for ex in dm.test_set]
    other = SpamDataModule(tokenizer, path=str(path), seed=7)
    other.setup()
    assert {ex["example_id"] for ex in other.test_set} != {ex["example_id"] for ex in dm.test_set}
    plain = SpamDataModule(tokenizer, path=str(path), stratify=False)
    plain.setup()  # the old shuffled split, for comparison
    assert plain.report["split_sizes"] == dm.report["split_sizes"]


def test_full_sms_file_keeps_its_proportions_and_weights_the_loss(tokenizer, shared_data):
    dm = SpamDataModule(tokenizer, balance="weighted")
    dm.setup()
    assert dm.report["split_sizes"] == {"train": 3901, "val": 557, "test": 1116}
    share = 747 / 5574  # spam in the whole file
    for split, size in dm.report["split_sizes"].items():
        assert abs(counts(dm, split)["spam"] - share * size) <= 1
    ham, spam = counts(dm, "train")["ham"], counts(dm, "train")["spam"]
    w = dm.task_data().class_weights  # n / (classes * n_c): each class adds half of the total weight
    assert w == pytest.approx((3901 / (2 * ham), 3901 / (2 * spam)))
    assert w[0] * ham == pytest.approx(w[1] * spam)
    none = SpamDataModule(tokenizer, balance="none")
    none.setup()
    assert none.task_data().class_weights is None
    assert none.report["split_class_counts"] == dm.report["split_class_counts"]


def test_the_default_balanced_split_is_the_published_one(tokenizer, shared_data):
    dm = SpamDataModule(tokenizer)
    dm.setup()
    # the random split behind the README's 98.67% (stratify=auto leaves it alone): not 75/75 in val
    assert counts(dm, "val") == {"ham": 81, "spam": 68} and counts(dm, "test") == {"ham": 147, "spam": 153}
    strat = SpamDataModule(tokenizer, stratify=True)
    strat.setup()
    assert counts(strat, "test") == {"ham": 150, "spam": 150}


def test_train_rows_subsample_only_the_train_split(tokenizer, shared_data):
    full = SpamDataModule(tokenizer)
    full.setup()
    dm = SpamDataModule(tokenizer, train_rows=100)
    dm.setup()
    assert counts(dm, "train") == {"ham": 50, "spam": 50}
    assert {ex["example_id"] for ex in dm.train_set} <= {ex["example_id"] for ex in full.train_set}
    assert [ex["example_id"] for ex in dm.test_set] == [ex["example_id"] for ex in full.test_set]
    with pytest.raises(GptftError, match="data.train_rows=2000 exceeds the 1045 rows"):
        SpamDataModule(tokenizer, train_rows=2000).setup()
    for bad in ({"train_rows": 0}, {"stratify": "yes"}, {"balance": "oversample"}):
        with pytest.raises(GptftError, match="data."):
            SpamDataModule(tokenizer, **bad)
