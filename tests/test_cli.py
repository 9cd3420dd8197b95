"""Bad arguments to classify, generate and evaluate end in one clear message (exit status 2), never a
traceback; classify's padding width and truncation note. No training: the checkpoint cases use files
that are not gptft checkpoints, and classify runs on a stand-in task."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from gptft import classify as classify_mod
from gptft.classify import classify, main as classify_main
from gptft.cli_args import parse
from gptft.evaluate import main as evaluate_main
from gptft.generate import main as generate_main, model_names

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {"classify": (classify_main, ["text=hi"]), "generate": (generate_main, ["prompt=hi"]),
            "evaluate": (evaluate_main, [])}


def fails(capsys, main, argv, match):
    """`main(argv)` exits 2 with `match` in the exception and `error: ...` on stderr."""
    with pytest.raises(SystemExit, match=match) as info:
        main(argv)
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith("error: ")


@pytest.fixture(scope="module")
def not_gptft(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpts") / "other.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    return path


# ---- the argument parser ------------------------------------------------------------------------------
DEFAULTS = {"n": 3, "rate": 0.5, "flag": False, "name": "gpt2", "text": None, "k": None,
            "group": {"url": "http://x", "timeout": 10.0}}


def test_values_take_their_defaults_type():
    args = parse(DEFAULTS, "usage", ["n=7", "rate=2", "flag=true", "name=42", "k=5", "group.timeout=3"], {"k": int})
    assert (args.n, args.rate, args.flag, args.name, args.k) == (7, 2.0, True, "42", 5)
    assert isinstance(args.rate, float) and args.group.timeout == 3.0 and args.group.url == "http://x"
    assert parse(DEFAULTS, "usage", ["k=null", "text="], {"k": int}).k is None
    assert parse(DEFAULTS, "usage", []).text is None


def test_free_text_arrives_as_typed():
    # not YAML: no dicts from "a: b", no interpolation of ${...}, no booleans from "yes"
    for text in ("Re: call me", "${HOME}", "yes", "007", "[1, 2", "a=b"):
        assert parse(DEFAULTS, "usage", [f"text={text}"]).text == text


@pytest.mark.parametrize("arg, message", [
    ("n=abc", "n must be an integer, got 'abc'"),
    ("n=1.5", "n must be an integer, got '1.5'"),
    ("rate=fast", "rate must be a number, got 'fast'"),
    ("rate=inf", "rate must be a finite number"),
    ("flag=maybe", "flag must be true or false, got 'maybe'"),
    ("k=abc", "k must be an integer, got 'abc'"),
    ("group.timeout=x", "group.timeout must be a number"),
    ("nn=1", r"unknown argument\(s\) \['nn'\]"),
    ("group.urll=x", r"unknown argument\(s\) \['group.urll'\]"),
    ("group=1", r"unknown argument\(s\) \['group'\]"),
    ("n", "arguments must be key=value"),
    ("=1", "arguments must be key=value"),
])
def test_bad_values_raise_gptft_errors(arg, message):
    from gptft.errors import GptftError

    with pytest.raises(GptftError, match=message):
        parse(DEFAULTS, "usage", [arg], {"k": int})


def test_help_prints_usage(capsys):
    with pytest.raises(SystemExit) as info:
        parse(DEFAULTS, "the usage", ["n=1", "--help"])
    assert info.value.code == 0 and "the usage" in capsys.readouterr().out


# ---- the commands ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", COMMANDS)
def test_unknown_key_and_bad_number(name, capsys):
    main, ok = COMMANDS[name]
    fails(capsys, main, ["ckpt=x", *ok, "colour=red"], r"unknown argument\(s\) \['colour'\]")
    key = "batch_size" if name == "classify" else "max_new_tokens"
    fails(capsys, main, ["ckpt=x", *ok, f"{key}=abc"], f"{key} must be an integer, got 'abc'")


@pytest.mark.parametrize("name", COMMANDS)
def test_missing_and_foreign_checkpoints(name, capsys, tmp_path, not_gptft):
    main, ok = COMMANDS[name]
    fails(capsys, main, [f"ckpt={tmp_path / 'nope.ckpt'}", *ok], "does not exist")
    fails(capsys, main, [f"ckpt={not_gptft}", *ok], "not a gptft checkpoint")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    fails(capsys, main, [f"ckpt={text}", *ok], "not a (readable )?PyTorch checkpoint")


def test_generate_argument_ranges(capsys):
    fails(capsys, generate_main, ["max_new_tokens=5"], "give prompt=")
    fails(capsys, generate_main, ["prompt=hi", "temperature=hot"], "temperature must be a number, got 'hot'")
    fails(capsys, generate_main, ["prompt=hi", "temperature=-1"], "temperature must be >= 0")
    fails(capsys, generate_main, ["prompt=hi", "top_k=0"], "top_k must be null or a positive integer")
    fails(capsys, generate_main, ["prompt=hi", "top_p=1.5"], r"top_p must be null or in \(0, 1\]")
    fails(capsys, generate_main, ["prompt=hi", "no_cache=perhaps"], "no_cache must be true or false")


def test_generate_unknown_model_lists_the_valid_names(capsys):
    assert {"gpt2", "gpt2-tiny"} <= set(model_names())
    fails(capsys, generate_main, ["prompt=hi", "model=foo"], "unknown model='foo'; valid .*gpt2-tiny")


def test_generate_prompt_longer_than_the_context(capsys, tokenizer):
    # a random gpt2-tiny: no download, built in well under a second
    fails(capsys, generate_main, ["model=gpt2-tiny", "model.pretrained=false", "prompt=" + "word " * 1100],
          r"prompt has \d{4} tokens but the context holds 1024")


def test_classify_input_checks(capsys, tmp_path):
    fails(capsys, classify_main, ["ckpt=x"], "exactly one of text= or file=")
    fails(capsys, classify_main, ["ckpt=x", "text=hi", "batch_size=0"], "batch_size must be a positive integer")
    fails(capsys, classify_main, ["ckpt=x", f"file={tmp_path / 'none.txt'}"], "does not exist")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9\n".encode("latin-1"))
    fails(capsys, classify_main, ["ckpt=x", f"file={latin1}"], "not UTF-8 text")


def test_evaluate_argument_checks(capsys):
    fails(capsys, evaluate_main, [], "give ckpt=PATH")
    fails(capsys, evaluate_main, ["ckpt=x", "device=tpu"], "device must be auto, cpu or cuda")
    fails(capsys, evaluate_main, ["ckpt=x", "judge.enabled=sure"], "judge.enabled must be true or false")


def test_command_line_shows_no_traceback(not_gptft):
    # one subprocess (imports cost seconds): the message as a user sees it
    env = {k: v for k, v in os.environ.items() if k != "GPTFT_DEBUG"}
    out = subprocess.run([sys.executable, "-m", "gptft.generate", f"ckpt={not_gptft}", "prompt=hi"],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""
    assert re.match(r"error: .*other\.ckpt is not a gptft checkpoint", out.stderr), out.stderr


# ---- classify's width: the training padding width, else the context --------------------------------------
class StandInTask:
    """What classify() uses of a ClassifierTask; records the width of each batch it sees."""

    label_names = ["ham", "spam"]
    calibration, positive_index = None, 1  # no calibration stored: raw probabilities, argmax labels

    def __init__(self, context: int, pad_width: int | None):
        self.backbone = SimpleNamespace(context_length=context)
        self.meta = {"pad_width": pad_width}
        self.widths: list[int] = []

    def __call__(self, batch):
        self.widths.append(batch["input_ids"].shape[1])
        return torch.zeros(len(batch["input_ids"]), 2)


WORDS = SimpleNamespace(encode=lambda t: [1] * len(t.split()), pad_id=0, eot_id=0)  # a token per word


def test_classify_truncates_to_the_context_and_flags_it():
    task = StandInTask(context=8, pad_width=None)
    out = classify(task, WORDS, ["a b c", "w " * 20], batch_size=4)
    assert task.widths == [8] and [r["truncated"] for r in out] == [False, True]


def test_classify_pads_to_the_training_width():
    task = StandInTask(context=64, pad_width=6)
    out = classify(task, WORDS, ["a", "w " * 10, "a b"], batch_size=2)
    assert task.widths == [6, 6] and [r["truncated"] for r in out] == [False, True, False]


def test_classify_command_reports_truncation(monkeypatch, capsys):
    task = StandInTask(context=64, pad_width=6)
    monkeypatch.setattr(classify_mod, "load_checkpoint", lambda *a, **k: (task, WORDS, task.meta))
    classify_main(["ckpt=x", "text=" + "w " * 10])
    captured = capsys.readouterr()
    assert "1 of 1 texts truncated to 6 tokens" in captured.err
    assert captured.out.startswith("ham\t")


def test_generate_misspelt_model_key_lists_the_model_keys(capsys):
    fails(capsys, generate_main, ["model=gpt2-tiny", "model.pretrianed=false", "prompt=hi"],
          r"model.pretrianed=false: .*pretrianed.*; the model keys \(as in train\): model.name, .*model.pretrained")
    fails(capsys, generate_main, ["pretrained=false", "prompt=hi"], r"unknown argument\(s\) \['pretrained'\]")
