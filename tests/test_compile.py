"""finetune.compile=true: torch.compile of the trained blocks trains and scores as the eager run does."""
from __future__ import annotations

import pytest

import gptft
from helpers import subset_csv, torch_threads

QUICK = ["task=spam", "model=gpt2-tiny", "trainer.max_epochs=1", "trainer.limit_train_batches=3", "precision=32",
         "finetune.trainable_blocks=2", "trainer.enable_model_summary=false", "trainer.enable_progress_bar=false"]


def test_compiled_blocks_train_like_eager_ones(shared_data, tmp_path):
    data = subset_csv(shared_data, tmp_path / "sms.csv", per_class=20)
    with torch_threads(1):
        runs = {c: gptft.finetune(*QUICK, f"data.path={data}", f"finetune.compile={c}",
                                  f"hydra.run.dir={tmp_path / str(c)}") for c in (False, True)}
    eager, compiled = (runs[c].metrics["splits"] for c in (False, True))
    for split, scores in eager.items():
        assert compiled[split]["confusion"] == scores["confusion"], split
        assert compiled[split]["loss"] == pytest.approx(scores["loss"], abs=1e-5), split
    model = runs[True].load()  # the compiled run's checkpoint keeps the eager names
    text = "WINNER!! Claim your free prize now"
    assert model.classify(text)[0]["probs"]["spam"] == pytest.approx(
        runs[False].load().classify(text)[0]["probs"]["spam"], abs=1e-5)
