"""Every command, its output piped (not a terminal), prints plain progress lines, and no noise a user
cannot act on: train (two epochs), evaluate, classify and generate, as separate processes."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import subset_csv

ROOT = Path(__file__).resolve().parents[1]
NOISE = ("LeafSpec", "litlogger", "not supported by the model summary", "does not have many workers",
         "Loading `train_dataloader`", "Warning", "warn(")


def piped(module: str, *args: str, cwd: Path) -> str:
    """stdout + stderr of `python -m module args` with both piped, progress lines every update."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GPTFT_PROGRESS_EVERY_S": "0"}
    out = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout + out.stderr
    assert not [n for n in NOISE if n in text], text[-4000:]
    return text


def progress(text: str, what: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(f"[progress] {what}")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("progress")
    data = subset_csv(shared_data, root / "subset.csv")
    text = piped("gptft.train", "task=spam", "model=gpt2-tiny", "trainer.max_epochs=2", f"data.path={data}",
                 "precision=32", f"hydra.run.dir={root / 'run'}", cwd=root)
    return root, text


def test_train_prints_progress_lines(trained):
    _, text = trained
    assert progress(text, "filling the frozen-prefix cache: ")
    for epoch in (1, 2):
        batches = [line for line in progress(text, f"epoch {epoch}/2: ") if " in " not in line]
        assert re.fullmatch(r"\[progress\] epoch \d/2: \d+/7 batches \(\d+%\), [\d.]+ batches/s, ETA .+; "
                            r"train/loss_step [\d.]+.*", batches[0]), batches
        ended = progress(text, f"epoch {epoch}/2: 7 batches in ")
        assert len(ended) == 1 and "val/acc" in ended[0], ended
    # before the first real validation, the sanity check's scores are not shown as the epoch's
    assert not [line for line in progress(text, "epoch 1/2: ") if "val/acc" in line and " in " not in line]
    assert progress(text, "validation: ") and progress(text, "test 3/3: ")
    assert re.search(r"disk: +[\d.]+ MiB written", text)


def test_evaluate_classify_generate_print_progress_lines(trained, tmp_path, tokenizer):
    root, _ = trained
    ckpt = root / "run" / "checkpoints" / "best.ckpt"
    text = piped("gptft.evaluate", f"ckpt={ckpt}", f"out={tmp_path / 'eval'}", cwd=tmp_path)
    assert progress(text, "test: ") and (tmp_path / "eval" / "scores.json").is_file()

    messages = tmp_path / "messages.txt"
    messages.write_text("\n".join(f"message number {i}, call now" for i in range(12)) + "\n")
    text = piped("gptft.classify", f"ckpt={ckpt}", f"file={messages}", "batch_size=4", cwd=tmp_path)
    assert len(progress(text, "classifying: ")) >= 3

    text = piped("gptft.generate", "model=gpt2-tiny", "model.pretrained=false", "prompt=Once upon a time",
                 "max_new_tokens=6", cwd=tmp_path)
    assert len(progress(text, "generating: ")) >= 3 and "[6 tokens in" in text
