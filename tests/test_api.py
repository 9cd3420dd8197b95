"""The Python API (gptft.finetune / load / base) gives what the commands give: the same metrics, run folder,
labels, probabilities and responses, on gpt2-tiny and subsets of the real data; bad input raises GptftError."""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import gptft
from gptft.classify import main as classify_main
from gptft.evaluate import main as evaluate_main
from gptft.generate import main as generate_main
from helpers import subset_csv, torch_threads

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["model=gpt2-tiny", "trainer.max_epochs=1", "precision=32", "trainer.enable_model_summary=false"]
TEXTS = ["WINNER!! You have been selected to receive a £900 prize reward! To claim call 09061701461",
         "Ok lar... Joking wif u oni...", "Are you coming home for dinner?"]


def command(module: str, *args: str, cwd: Path) -> str:
    """stdout of `python -m module args` (this checkout's gptft)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                         timeout=600, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def files(folder: Path) -> set[str]:
    """Every file under `folder`, TensorBoard's event files by their folder only (their names hold host and pid)."""
    return {str(p.relative_to(folder).parent / "events") if "tfevents" in p.name else str(p.relative_to(folder))
            for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def spam(tmp_path_factory, shared_data, tokenizer):
    """The same spam training by the command and by gptft.finetune, on the 80-message subset."""
    root = tmp_path_factory.mktemp("api_spam")
    overrides = ["task=spam", *QUICK, f"data.path={subset_csv(shared_data, root / 'subset.csv')}"]
    printed = command("gptft.train", *overrides, f"hydra.run.dir={root / 'cli'}", cwd=root)
    with contextlib.redirect_stdout(io.StringIO()) as out:
        run = gptft.finetune(*overrides, f"hydra.run.dir={root / 'api'}")
    return root, printed, run, out.getvalue()


def test_finetune_equals_the_train_command(spam):
    root, printed, run, _ = spam
    cli = json.loads((root / "cli" / "metrics.json").read_text())
    assert run.dir == root / "api" and run.metrics == json.loads((run.dir / "metrics.json").read_text())
    assert run.metrics["splits"] == cli["splits"]  # one process each, fp32: bit for bit
    assert run.best_ckpt == run.dir / "checkpoints" / "best.ckpt" and run.best_ckpt.is_file()
    assert run.last_ckpt == run.dir / "checkpoints" / "last.ckpt" and run.last_ckpt.is_file()
    assert files(run.dir) == files(root / "cli")  # .hydra/, train.log, checkpoints, TensorBoard, metrics.json
    for name in ("config.yaml", "overrides.yaml"):
        assert (run.dir / ".hydra" / name).read_text() == (root / "cli" / ".hydra" / name).read_text()
    # the same summary and log lines (those of the folder apart)
    shown = lambda text: [line.replace(str(root / "cli"), str(root / "api")) for line in text.splitlines()  # noqa: E731
                          if line.startswith(("  ", "gptft ")) and "done in" not in line and "disk:" not in line]
    assert len(shown(printed)) == 12 and shown(printed) == shown(spam[3])


def test_load_classify_equals_the_classify_command(spam, tmp_path, capsys):
    root, _, run, _ = spam
    messages = tmp_path / "messages.txt"
    messages.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    classify_main([f"ckpt={run.best_ckpt}", f"file={messages}"])
    lines = capsys.readouterr().out.splitlines()
    got = run.load().classify(TEXTS)
    assert [r["text"] for r in got] == TEXTS and gptft.load(run.best_ckpt).classify(TEXTS[0]) == got[:1]
    for line, r in zip(lines, got, strict=True):
        probs = "  ".join(f"{n}={p:.4f}" for n, p in r["probs"].items())
        assert line == f"{r['label']}\t{probs}\t{r['text']}"


def test_bad_input_raises_one_line_errors(spam, tmp_path):
    with pytest.raises(gptft.ConfigError, match=r"^trainer.max_epoch=1: Could not override 'trainer.max_epoch'") as err:
        gptft.finetune("task=spam", "trainer.max_epoch=1", f"hydra.run.dir={tmp_path / 'a'}")
    assert "\n" not in str(err.value)
    with pytest.raises(gptft.ConfigError, match="^seed=abc must be an integer"):
        gptft.finetune("seed=abc", f"hydra.run.dir={tmp_path / 'b'}")
    with pytest.raises(gptft.ConfigError, match="unknown model='gpt3'"):
        gptft.finetune("model=gpt3")
    assert not list(tmp_path.iterdir())  # nothing was written
    with pytest.raises(gptft.CheckpointError, match="does not exist"):
        gptft.load(tmp_path / "none.ckpt")
    with pytest.raises(gptft.CheckpointError, match="'spam' checkpoint, but this needs a 'instruct' one"):
        spam[2].load().generate("hi")
    with pytest.raises(gptft.ConfigError, match="a base model has no spam head"):
        gptft.base("model=gpt2-tiny").classify("hi")


def test_import_is_cheap():
    code = "import sys, gptft; print(sorted(m for m in ('torch', 'lightning', 'hydra') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.fixture
def one_thread():
    with torch_threads(1):  # tiny one-token decoding steps: more threads only add waiting
        yield


@pytest.fixture(scope="module")
def instruct_ckpt(tmp_path_factory, shared_data, tokenizer):
    """An instruction checkpoint from 60 entries of the real file (51 train / 6 test / 3 val)."""
    root = tmp_path_factory.mktemp("api_instruct")
    data = root / "instructions.json"
    data.write_text(json.dumps(json.loads((shared_data / "instruction-data.json").read_text())[:60]))
    run = gptft.finetune("task=instruct", *QUICK, f"data.path={data}", "task.sample_prompts=0",
                         f"hydra.run.dir={root / 'run'}")
    return run.best_ckpt


def generated(capsys, *args: str) -> str:
    """The generate command's answer: its output without the closing `[N tokens in S s]` line."""
    generate_main(list(args))
    return capsys.readouterr().out.rsplit("\n[", 1)[0].strip()


def test_generate_equals_the_generate_command(instruct_ckpt, capsys, one_thread):
    prompt = "Name three primary colors."
    printed = generated(capsys, f"ckpt={instruct_ckpt}", f"prompt={prompt}", "max_new_tokens=12")
    assert printed and gptft.load(instruct_ckpt).generate(prompt, max_new_tokens=12) == printed
    # a base model: the raw prompt continued, or wrapped in a prompt style; random weights from seed 123
    base = gptft.base("model=gpt2-tiny")
    for style in (None, "chatml"):
        args = [f"prompt_style={style}"] if style else []
        printed = generated(capsys, "model=gpt2-tiny", f"prompt={prompt}", "max_new_tokens=6", *args)
        assert printed and base.generate(prompt, max_new_tokens=6, prompt_style=style) == printed


def test_evaluate_a_checkpoint_and_a_base_model(instruct_ckpt, tmp_path, one_thread):
    model = gptft.load(instruct_ckpt)
    scores = model.evaluate(tmp_path / "ckpt", max_new_tokens=4)
    assert scores == json.loads((tmp_path / "ckpt" / "scores.json").read_text())
    assert scores["generation"]["n"] == 6 and scores["checkpoint"] == str(instruct_ckpt.resolve())
    with pytest.raises(gptft.ConfigError, match="evaluated in the prompt style it was trained with"):
        model.evaluate(prompt_style="chatml")
    with pytest.raises(gptft.ConfigError, match="limit must be null or a positive integer"):
        model.evaluate(limit=0)
    # the untouched base model: what the evaluate command writes for it (the zero-shot baseline)
    base = gptft.base("model=gpt2-tiny").evaluate(tmp_path / "api", max_new_tokens=4, limit=2, prompt_style="chatml")
    cli = evaluate_main(["model=gpt2-tiny", "max_new_tokens=4", "limit=2", "prompt_style=chatml", f"out={tmp_path / 'cli'}"])
    drop = lambda s: {k: v for k, v in s.items() if k != "elapsed_s"}  # noqa: E731
    assert drop(base) == drop(cli) and base["checkpoint"] is None and base["generation"]["n"] == 2
    for name in ("responses.json", "scores.json"):
        assert (tmp_path / "api" / name).is_file() and (tmp_path / "cli" / name).is_file()
