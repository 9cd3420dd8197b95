"""Every shell command in the README's ```bash blocks has a rule here, and the rule is applied:

- compose: Hydra composes `python -m gptft.train`'s overrides (every key and group name exists, struct mode);
- run: the command runs as written, with the substitutes listed in SUBSTITUTES (the README says which: a
  tiny model and an 80-message subset of the SMS file where the real command would train for minutes or
  download), and its output is checked against the output the README shows;
- skip: not run, for the reason given.

A README command without a rule, or a rule for a command the README no longer has, fails the test.
"""
from __future__ import annotations

import itertools
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import subset_csv
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
SETUP = ". .ci/setup && "
TRIAL = "python -m gptft.train task=spam model=gpt2-tiny trainer.max_epochs=1"
CLASSIFY = ('python -m gptft.classify ckpt=outputs/spam/<run>/checkpoints/best.ckpt text="WINNER!! You have been '
            'selected to receive a £900 prize reward! To claim call 09061701461"')
CHAT = ("python -m gptft.generate model=smollm2-135m-instruct model.checkpoint=$GPTFT_SHARED_DIR/models/"
        "SmolLM2-135M-Instruct.Q4_1.gguf prompt_style=chatml prompt=\"Name three primary colors.\" max_new_tokens=40")

COMPOSE, RUN, SKIP = "compose", "run", "skip"
RULES = {
    SETUP + "python -m gptft.train task=spam": (COMPOSE, "downloads GPT-2 and trains 124M parameters for minutes"),
    SETUP + "python -m pytest": (SKIP, "the whole suite: CI runs it (bash .ci/run)"),
    SETUP + "python -m gptft.train task=spam model=smollm2-135m-instruct model.checkpoint=$GPTFT_SHARED_DIR/models/"
            "SmolLM2-135M-Instruct.Q4_1.gguf": (COMPOSE, "a full SmolLM2 training; the lead's recorded runs"),
    "python -m gptft.train task=spam": (COMPOSE, "GPT-2 124M for minutes"),
    "python -m gptft.train task=instruct": (COMPOSE, "GPT-2 124M for minutes"),
    TRIAL: (RUN, "on the 80-message subset"),
    "python -m gptft.train experiment=book-ch06": (COMPOSE, "GPT-2 124M for minutes"),
    "python -m gptft.train -m task=spam seed=1,2,3 finetune.trainable_blocks=1,2": (COMPOSE, "six trainings"),
    "python -m gptft.train task=spam scheduler=cosine scheduler.warmup_steps=20 callbacks.early_stopping.patience=2 "
    "logger=csv": (COMPOSE, "GPT-2 124M for minutes"),
    "python -m gptft.train task=spam 'logger=[tensorboard,csv]'": (COMPOSE, "GPT-2 124M for minutes"),
    "python -m gptft.train task=spam model=gpt2-tiny device=cpu-ddp":
        (COMPOSE, "tests/test_ddp.py runs it (with bucketing) on a 60-message subset"),
    "python -m gptft.train task=spam device=gpu-ddp": (COMPOSE, "needs GPUs"),
    "python -m gptft.train task=spam model=gpt2-xl finetune.mode=full device=gpu-fsdp": (COMPOSE, "needs GPUs"),
    "torchrun --nproc_per_node=4 -m gptft.train task=spam device=gpu-ddp trainer.devices=4":
        (SKIP, "needs 4 GPUs; tests/test_ddp.py starts a 2-process CPU run with torchrun (python -m torch.distributed.run)"),
    "jupyter execute --inplace notebooks/01_spam_classifier.ipynb":
        (SKIP, "minutes on SmolLM2; the committed notebooks were run so, and tests/test_notebooks.py checks them"),
    "GPTFT_NB_MODEL=model=gpt2-tiny GPTFT_NB_EPOCHS=1 GPTFT_NB_ROWS=40 jupyter execute notebooks/01_spam_classifier.ipynb":
        (SKIP, "tests/test_notebooks.py runs every notebook with these parameters (and GPTFT_NB_OUT in a temporary folder)"),
    "python -m gptft.train -m launcher=joblib task=spam seed=1,2":
        (COMPOSE, "GPT-2 124M for minutes; tests/test_sweeps.py runs a joblib sweep on gpt2-tiny"),
    "python -m gptft.train -m launcher=submitit_local task=spam seed=1,2,3": (COMPOSE, "three GPT-2 124M trainings"),
    "python -m gptft.train -m launcher=submitit_slurm task=spam seed=1,2 hydra.launcher.partition=gpu":
        (SKIP, "needs a SLURM cluster (the launcher config is composed by `--cfg hydra` in tests/test_sweeps.py)"),
    "python -m gptft.train -m sweep=optuna task=spam hydra.sweeper.n_trials=20":
        (SKIP, "20 GPT-2 124M trainings; tests/test_sweeps.py runs a 2-trial search on gpt2-tiny"),
    "python -m gptft.train -m sweep=optuna launcher=joblib task=spam hydra.sweeper.n_jobs=2":
        (SKIP, "GPT-2 124M trainings; tests/test_sweeps.py runs the search and the joblib launcher on gpt2-tiny"),
    "python -m gptft.train task=spam data.path=export.csv data.header=false data.text_column=2 data.label_column=0":
        (COMPOSE, "the README's two-row example file is parsed in test_byod_example_file; two rows cannot train"),
    "python -m gptft.train task=spam data.path=comments.csv experiment=small-data threshold.precision=0.99":
        (COMPOSE, "up to 30 epochs of GPT-2 124M; tests/test_classifier_report.py trains with a threshold"),
    CLASSIFY: (RUN, "on the trial's checkpoint"),
    "python -m gptft.classify ckpt=.../best.ckpt file=messages.txt": (RUN, "on the trial's checkpoint"),
    'python -m gptft.generate ckpt=outputs/instruct/<run>/checkpoints/best.ckpt prompt="Name three primary colors."':
        (SKIP, "needs an instruction checkpoint; tests/test_train_instruct.py generates from a tiny one"),
    'python -m gptft.generate model=gpt2 prompt="Once upon a time"': (RUN, "gpt2-tiny, random weights: no hub"),
    "python -m gptft.evaluate ckpt=outputs/instruct/<run>/checkpoints/best.ckpt":
        (SKIP, "needs an instruction checkpoint; tests/test_evaluate.py evaluates tiny ones"),
    "python -m gptft.evaluate ckpt=... judge.enabled=true judge.model=llama3":
        (SKIP, "needs an Ollama server; tests/test_evaluate.py uses a local stand-in"),
    CHAT: (RUN, "with max_new_tokens=12"),
    "python -m gptft.evaluate model=smollm2-135m-instruct model.checkpoint=$GPTFT_SHARED_DIR/models/"
    "SmolLM2-135M-Instruct.Q4_1.gguf prompt_style=chatml": (SKIP, "SmolLM2 over the 110 test entries takes minutes; "
                                                            "tests/test_evaluate.py runs it on gpt2-tiny"),
    "python -m gptft.train task=spam finetune.mode=lora": (COMPOSE, "GPT-2 124M for minutes"),
    "python -m gptft.train task=spam finetune.mode=lora lora.r=16 lora.alpha=32 lora.blocks=6 'lora.targets=[attention]'":
        (COMPOSE, "GPT-2 124M for minutes; tests/test_lora.py trains tiny LoRA runs"),
    "python -m gptft.train task=instruct finetune.mode=lora lora.train_head=false": (COMPOSE, "GPT-2 124M for minutes"),
    **{f"python -m gptft.export ckpt=outputs/{task}/<run>/checkpoints/best.ckpt {args}":
       (SKIP, "needs a trained checkpoint; tests/test_export.py exports tiny ones and loads them with transformers")
       for task, args in (("spam", "out=exports/spam"), ("instruct", "out=exports/instruct"),
                          ("instruct", "out=exports/gguf format=gguf dtype=q8_0"))},
    'ollama create my-model -f exports/gguf/Modelfile && ollama run my-model "Name three primary colors."':
        (SKIP, "Ollama is not installed on our build machines"),
    "pip install -e '.[serve]'": (SKIP, "the set-up's test extra already installs litserve"),
    "python -m gptft.serve ckpt=outputs/spam/<run>/checkpoints/best.ckpt":
        (SKIP, "a server that runs until stopped; tests/test_serve.py serves tiny checkpoints"),
    "python -m gptft.serve ckpt=outputs/instruct/<run>/checkpoints/best.ckpt port=8001 api_key=s3cret":
        (SKIP, "a server that runs until stopped; tests/test_serve.py serves tiny checkpoints"),
    "python -m gptft.serve ckpt=exports/spam port=8002":
        (SKIP, "a server that runs until stopped; tests/test_serve.py serves tiny checkpoints' exported folders"),
    """curl -s 127.0.0.1:8000/predict -H 'Content-Type: application/json' -d '{"text": "You won a prize! Call now"}'""":
        (SKIP, "needs the server above; tests/test_serve.py posts the same JSON with a real client"),
    "python -m gptft.evaluate ckpt=... judge.enabled=true judge.api=openai judge.url=http://127.0.0.1:8000/v1 "
    "judge.model=gptft": (SKIP, "needs the server above; tests/test_serve.py runs the judge against gptft.serve"),
}
SUBSTITUTES = {  # what a RUN command gets in place of, or in addition to, what the README writes
    TRIAL: ["data.path={subset}", "hydra.run.dir={run}"],
    CLASSIFY: ["ckpt={ckpt}"],
    "python -m gptft.classify ckpt=.../best.ckpt file=messages.txt": ["ckpt={ckpt}", "file={messages}"],
    'python -m gptft.generate model=gpt2 prompt="Once upon a time"': ["model=gpt2-tiny", "model.pretrained=false",
                                                                     "max_new_tokens=5"],
    CHAT: ["max_new_tokens=12"],
}


def fenced(text: str = README) -> list[tuple[str, str]]:
    """(language, body) of every fenced block, in order."""
    blocks, inside, lang, body = [], False, "", []
    for line in text.splitlines():
        if line.startswith("```"):
            if inside:
                blocks.append((lang, "".join(f"{b}\n" for b in body)))
            inside, lang, body = not inside, line[3:].strip(), []
        elif inside:
            body.append(line)
    return blocks


def readme_commands(text: str = README) -> list[str]:
    """Each command line of the ```bash blocks (continuations joined, comments dropped, spaces collapsed)."""
    out = []
    for lang, block in fenced(text):
        for line in block.replace("\\\n", " ").splitlines() if lang == "bash" else ():
            command = " ".join(line.split("  #")[0].split())
            if command:
                out.append(command)
    return out


def shown_blocks(text: str = README) -> list[str]:
    """The README's output blocks (``` without a language)."""
    return [block for lang, block in fenced(text) if lang == ""]


def args_of(command: str) -> tuple[str, list[str]]:
    """(module, arguments) of `python -m gptft.X ...`, with $GPTFT_SHARED_DIR expanded."""
    words = shlex.split(command.removeprefix(SETUP))
    assert words[:2] == ["python", "-m"], command
    return words[2], [os.path.expandvars(w) for w in words[3:]]


def substituted(args: list[str], subs: list[str], values: dict) -> list[str]:
    subs = [s.format(**values) for s in subs]
    keys = {s.split("=", 1)[0] for s in subs}
    return [a for a in args if a.split("=", 1)[0] not in keys] + subs


def test_every_readme_command_has_a_rule():
    commands = readme_commands()
    missing = sorted(set(commands) - set(RULES))
    stale = sorted(set(RULES) - set(commands))
    assert not missing, f"README commands without a rule in {__file__}: {missing}"
    assert not stale, f"rules for commands the README no longer has: {stale}"
    assert set(SUBSTITUTES) <= {c for c, (kind, _) in RULES.items() if kind == RUN}


def _jobs(overrides: list[str]) -> list[list[str]]:
    """A -m sweep's jobs: every combination of comma-separated values (lists in brackets stay whole)."""
    choices = [[f"{k}={v}" for v in vals.split(",")] if "," in vals and not vals.startswith("[") else [f"{k}={vals}"]
               for k, vals in (o.split("=", 1) for o in overrides)]
    return [list(job) for job in itertools.product(*choices)]


@pytest.mark.parametrize("command", [c for c, (kind, _) in RULES.items() if kind == COMPOSE])
def test_composed(command, tmp_path):
    module, args = args_of(command)
    assert module == "gptft.train"
    overrides = [a for a in args if a != "-m"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for job in _jobs(overrides):
            cfg = compose("train", overrides=[*job, f"run_dir={tmp_path}"])
            for o in job:
                key, value = o.split("=", 1)
                if "." in key and not value.startswith("["):
                    node = cfg
                    for part in key.split("."):
                        node = node[part]
                    assert str(node).lower() == value.strip("'").lower(), (key, node)
    checkpoint = [a.split("=", 1)[1] for a in args if a.startswith("model.checkpoint=")]
    if checkpoint and "GPTFT_SHARED_DIR" in os.environ:
        assert Path(checkpoint[0]).is_file(), checkpoint


def test_byod_example_file(tmp_path, caplog):
    """The README's worked example: its file, saved as cp1252, read with the README's settings."""
    from gptft.data.tables import read_rows

    block = next(b for b in shown_blocks() if b.startswith("spam,2024-01-03"))
    path = tmp_path / "export.csv"
    path.write_bytes(block.encode("cp1252"))
    report: dict = {}
    _, args = args_of(next(c for c in RULES if "export.csv" in c))
    settings = dict(a.split("=", 1) for a in args)
    with caplog.at_level("WARNING"):
        rows = read_rows(path, None, int(settings["data.text_column"]), int(settings["data.label_column"]),
                         header=settings["data.header"] != "false", report=report)
    assert [(label, text) for label, text, _ in rows] == [
        ("spam", "WINNER!! You have won a £900 prize, call 09061701461 now"), ("ham", "Café at 6? I'll bring the notes")]
    assert report == {"encoding": "cp1252", "not_utf8_lines": 2}
    assert "export.csv is not UTF-8: read as cp1252 (2 of 2 lines have such characters)" in caplog.text


def run(module: str, args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GPTFT_PROGRESS_EVERY_S": "0"}  # progress on stderr
    out = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                         timeout=timeout, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def trial(tmp_path_factory, shared_data):
    """The README's quick trial on an 80-message subset of the SMS file: (folder, its output)."""
    root = tmp_path_factory.mktemp("readme")
    values = {"subset": subset_csv(shared_data, root / "subset.csv"), "run": root / "run"}
    module, args = args_of(TRIAL)
    out = run(module, substituted(args, SUBSTITUTES[TRIAL], values), root)
    return values["run"], out


def test_trial_run(trial):
    run_dir, out = trial
    assert (run_dir / "checkpoints" / "best.ckpt").is_file() and (run_dir / "metrics.json").is_file()
    # the summary the README describes
    assert re.search(r"^  split  \s+acc\s+f1\s+loss\s+auroc\s+pr_auc\s+ece$", out.stdout, re.M), out.stdout
    assert f"run folder:  {run_dir.resolve()}" in out.stdout or f"run folder:  {run_dir}" in out.stdout
    assert re.search(r"disk: +[\d.]+ MiB written to the run folder \([\d.]+ MiB checkpoints\)", out.stdout)
    # the progress lines the README shows, in the same format
    shown = next(b for b in shown_blocks() if b.startswith("[progress]")).splitlines()
    for kind, pattern in ((PREFIX, "filling the frozen-prefix cache"), (EPOCH, r"epoch \d+/\d+")):
        line = PROGRESS.format(what=pattern, tail=kind)
        assert [s for s in shown if re.fullmatch(line, s)], (line, shown)
        assert [s for s in out.stderr.splitlines() if re.fullmatch(line, s)], (line, out.stderr[-3000:])


PROGRESS = r"\[progress\] {what}: \d+/\d+ batches \(\d+%\), [\d.]+ batches/s, ETA \d+( min \d\d)? s{tail}"
PREFIX, EPOCH = "", r"; train/loss_step [\d.]+"


CLASSIFY_LINE = r"(ham|spam)\tham=[01]\.\d{4}  spam=[01]\.\d{4}\t"


@pytest.mark.parametrize("command", [CLASSIFY, "python -m gptft.classify ckpt=.../best.ckpt file=messages.txt"])
def test_classify_as_shown(command, trial, tmp_path):
    run_dir, _ = trial
    texts = ["WINNER!! You have been selected to receive a £900 prize reward! To claim call 09061701461",
             "Ok lar... Joking wif u oni..."]
    messages = tmp_path / "messages.txt"
    messages.write_text("\n".join(texts) + "\n", encoding="utf-8")
    module, args = args_of(command)
    out = run(module, substituted(args, SUBSTITUTES[command], {"ckpt": run_dir / "checkpoints" / "best.ckpt",
                                                               "messages": messages}), tmp_path)
    lines = out.stdout.strip().splitlines()
    expected = texts[:1] if "text=" in command else texts
    assert len(lines) == len(expected)
    for line, text in zip(lines, expected):
        assert re.fullmatch(CLASSIFY_LINE + re.escape(text), line), line
    shown = [line for b in shown_blocks() for line in b.splitlines() if re.match(CLASSIFY_LINE, line)]
    assert shown and all(re.fullmatch(CLASSIFY_LINE + re.escape(texts[0]), line) for line in shown), shown


def test_generate_base_model(tmp_path, tokenizer):
    command = 'python -m gptft.generate model=gpt2 prompt="Once upon a time"'
    module, args = args_of(command)
    out = run(module, substituted(args, SUBSTITUTES[command], {}), tmp_path)
    assert re.search(r"^\[5 tokens in [\d.]+ s\]$", out.stdout, re.M), out.stdout


def test_chat_with_the_shared_smollm2(tmp_path, shared_gguf):
    """The README's offline chat command answers as the README shows (its first 12 tokens, greedy)."""
    module, args = args_of(CHAT)
    out = run(module, substituted(args, SUBSTITUTES[CHAT], {}), tmp_path)
    answer, stamp = out.stdout.strip().rsplit("\n", 1)
    assert re.fullmatch(r"\[12 tokens in [\d.]+ s\]", stamp), out.stdout
    block = next(b for b in shown_blocks() if re.search(r"^\[\d+ tokens in [\d.]+ s\]$", b, re.M))
    assert block.startswith(answer), (answer, block)
    assert "Warning" not in out.stderr and "warn" not in out.stderr.lower(), out.stderr
