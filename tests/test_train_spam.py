"""End-to-end spam training on gpt2-tiny with the real SMS file and tokenizer."""
import json
import subprocess
import sys

import pytest
import torch

from gptft.classify import classify, main as classify_main
from gptft.tasks.factory import load_checkpoint
from gptft.fit import fit_and_test
from gptft.train import train
from helpers import LossRecorder, compose_cfg

QUICK = ["model=gpt2-tiny", "trainer.max_epochs=1", "trainer.limit_train_batches=20", "trainer.enable_progress_bar=false",
         "trainer.enable_model_summary=false"]


@pytest.fixture(scope="module")
def spam_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("spam_run")
    cfg = compose_cfg(run_dir, "task=spam", *QUICK)
    value = train(cfg)
    return run_dir, value


def test_run_leaves_checkpoints_tensorboard_and_metrics(spam_run):
    run_dir, value = spam_run
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    m = json.loads((run_dir / "metrics.json").read_text())
    assert {s: d["n"] for s, d in m["splits"].items()} == {"train": 1045, "val": 149, "test": 300}
    assert m["label_names"] == ["ham", "spam"]
    assert value == m["flat"]["val/acc"]  # train() returns optimized_metric
    for d in m["splits"].values():
        assert 0.0 <= d["acc"] <= 1.0 and sum(map(sum, d["confusion"])) == d["n"]


def test_classify_command_on_the_checkpoint(spam_run, tmp_path, capsys):
    ckpt = spam_run[0] / "checkpoints" / "best.ckpt"
    classify_main([f"ckpt={ckpt}", "text=WINNER!! Claim your free prize now, call 09061701461"])
    line = capsys.readouterr().out.strip()
    label, probs, text = line.split("\t")
    assert label in ("ham", "spam") and text.startswith("WINNER")
    assert abs(sum(float(p.split("=")[1]) for p in probs.split()) - 1) < 1e-3
    texts = tmp_path / "texts.txt"
    texts.write_text("Ok lar... Joking wif u oni...\n\nFree entry in 2 a wkly comp to win FA Cup final tkts\n")
    classify_main([f"ckpt={ckpt}", f"file={texts}"])
    assert len(capsys.readouterr().out.strip().splitlines()) == 2


def test_classify_rejects_bad_arguments(spam_run, tmp_path):
    with pytest.raises(SystemExit, match="exactly one of text= or file="):
        classify_main([f"ckpt={spam_run[0] / 'checkpoints' / 'best.ckpt'}"])
    with pytest.raises(SystemExit, match="does not exist"):
        classify_main([f"ckpt={tmp_path / 'nope.ckpt'}", "text=hi"])
    with pytest.raises(SystemExit, match="unknown argument"):
        classify_main(["ckpt=x", "txt=hi"])


def test_probabilities_do_not_depend_on_batch_neighbours(spam_run):
    task, tok, _ = load_checkpoint(spam_run[0] / "checkpoints" / "best.ckpt", expect_task="spam")
    short = "Are you coming home for dinner?"
    long = "URGENT! " * 40 + "You have won a guaranteed cash prize, call now to claim it before it expires."
    alone = classify(task, tok, [short])[0]["probs"]
    batched = classify(task, tok, [long, short, long])[1]["probs"]
    for k in alone:
        assert abs(alone[k] - batched[k]) <= 1e-5
    # the book's position -1 pooling reads a pad token, so there the neighbour matters
    task.pooling = "last"
    alone_last = classify(task, tok, [short])[0]["probs"]
    batched_last = classify(task, tok, [long, short])[1]["probs"]
    assert max(abs(alone_last[k] - batched_last[k]) for k in alone_last) > 1e-4


def _losses(tmp_path, cache: bool, *extra):
    rec = LossRecorder()
    if not any(e.startswith("precision=") for e in extra):
        extra = ("precision=32", *extra)
    cfg = compose_cfg(tmp_path / f"cache_{cache}", "model=gpt2-tiny", "trainer.max_epochs=2",
                      "trainer.limit_train_batches=12", "trainer.enable_progress_bar=false",
                      "trainer.enable_model_summary=false", f"finetune.cache_prefix={str(cache).lower()}",
                      "task.final_splits=[val]", *extra)
    metrics = fit_and_test(cfg, tmp_path / f"cache_{cache}", callbacks=(rec,))
    return rec.losses, metrics


# dropout: the frozen prefix must run without it; bf16: the cache keeps the autocast result as it is
@pytest.mark.parametrize("extra", [[], ["finetune.trainable_blocks=2"], ["model.dropout=0.1"], ["precision=bf16"]])
def test_prefix_cache_is_invisible_spam(tmp_path, extra):
    cached, m_cached = _losses(tmp_path, True, "task=spam", *extra)
    plain, m_plain = _losses(tmp_path, False, "task=spam", *extra)
    assert len(cached) == len(plain) == 24
    assert m_cached["prefix_cache"]["examples"] > 0 and m_plain["prefix_cache"] is None
    # bf16: a row's rounding depends on the padding of the batch that computes it, and the cache is filled
    # in the unshuffled order (so a resumed run refills it bit for bit): the paths agree to bf16's precision
    tol = 5e-3 if "precision=bf16" in extra else 1e-5
    assert torch.allclose(torch.tensor(cached), torch.tensor(plain), atol=tol, rtol=0)
    assert abs(m_cached["splits"]["val"]["acc"] - m_plain["splits"]["val"]["acc"]) < 1e-6


def test_multirun_writes_a_summary_table(tmp_path):
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "gptft.train", "-m", "task=spam", "seed=1,2", *QUICK,
           "trainer.limit_train_batches=3", f"hydra.sweep.dir={sweep}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    table = (sweep / "summary.md").read_text().splitlines()
    assert len(table) == 6 and "seed=1" in table[2] and "seed=2" in table[3]
    assert table[5].startswith("best: job ") and ", val/acc " in table[5]  # by optimized_metric, max (spam)
    assert (sweep / "0" / "metrics.json").is_file() and (sweep / "1" / "checkpoints" / "best.ckpt").is_file()


def test_generate_rejects_a_spam_checkpoint(spam_run):
    from gptft.generate import main as generate_main

    with pytest.raises(SystemExit, match="'spam' checkpoint, but this command needs a 'instruct'"):
        generate_main([f"ckpt={spam_run[0] / 'checkpoints' / 'best.ckpt'}", "prompt=hi"])


def test_resume_from_last_checkpoint(spam_run, tmp_path):
    last = spam_run[0] / "checkpoints" / "last.ckpt"
    cfg = compose_cfg(tmp_path, "task=spam", *QUICK, "trainer.max_epochs=2", f"ckpt_path={last}")
    metrics = fit_and_test(cfg, tmp_path)
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["epoch"] == 1 and state["global_step"] == 40  # 20 steps restored + 20 new
    assert metrics["splits"]["test"]["n"] == 300


def test_resume_refuses_a_checkpoint_of_another_task_or_shape(spam_run, tmp_path):
    last = spam_run[0] / "checkpoints" / "last.ckpt"
    quick_instruct = [o for o in QUICK if not o.startswith("trainer.limit")] + ["task.sample_prompts=0"]
    with pytest.raises(ValueError, match="from task=spam, this run is task=instruct"):
        fit_and_test(compose_cfg(tmp_path, "task=instruct", *quick_instruct, f"ckpt_path={last}"), tmp_path / "a")
    with pytest.raises(ValueError, match="backbone differs from model=gpt2"):
        fit_and_test(compose_cfg(tmp_path, "task=spam", *QUICK, "model=gpt2", "model.pretrained=false",
                                 f"ckpt_path={last}"), tmp_path / "b")


def test_prefix_cache_stays_within_its_memory_bound(tmp_path):
    # 0.0002 GiB holds a few hundred of the 1,194 gpt2-tiny rows; the rest are recomputed, losses unchanged
    cached, m_cached = _losses(tmp_path, True, "task=spam", "finetune.cache_max_gb=0.0002")
    plain, _ = _losses(tmp_path, False, "task=spam")
    cache = m_cached["prefix_cache"]
    assert 0 < cache["examples"] < 1045 and cache["mib"] <= 0.0002 * 1024
    assert torch.allclose(torch.tensor(cached), torch.tensor(plain), atol=1e-5, rtol=0)
