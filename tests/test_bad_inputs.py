"""The bad-input matrix: every bad input ends in exit status 2 and one line `error: ...` that names the input,
with no traceback and no earlier output touched. Real commands in subprocesses (two at a time) on real
inputs: the SMS file, a gpt2-tiny checkpoint trained here, truncated copies of real weight files."""
from __future__ import annotations

import csv
import hashlib
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from gptft.classify import main as classify_main
from gptft.data.tables import read_rows, resolve_labels
from gptft.errors import GptftError, friendly_errors
from gptft.evaluate import main as evaluate_main
from gptft.generate import main as generate_main
from gptft.run_dir import claim, start_run
from gptft.train import train
from helpers import compose_cfg

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model=gpt2-tiny", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
GGUF = "models/SmolLM2-135M-Instruct.Q4_1.gguf"
MAINS = {"classify": classify_main, "generate": generate_main, "evaluate": evaluate_main}


def snapshot(folder: Path) -> dict:
    """Every file under `folder` with its size, mtime and digest: what 'untouched' means."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, shared_data, shared_dir, tokenizer):
    """A finished run (its folder must stay untouched) and the bad files made from real ones."""
    root = tmp_path_factory.mktemp("bad_inputs")
    run = root / "earlier_run"
    train(compose_cfg(run, "task=spam", *TINY))  # this process now holds the run's claim: a live run
    best = run / "checkpoints" / "best.ckpt"
    f = {"run": run, "best": best, "dir": root / "a_folder", "missing": root / "missing.ckpt"}
    f["dir"].mkdir()
    (f["dir"] / "inside.txt").write_text("x")
    f["trunc_ckpt"] = root / "truncated.ckpt"
    f["trunc_ckpt"].write_bytes(best.read_bytes()[: best.stat().st_size // 2])
    f["random_ckpt"] = root / "random.ckpt"
    f["random_ckpt"].write_bytes(os.urandom(4096))
    f["evil_ckpt"] = root / "evil.ckpt"  # a pickle naming code to run: torch suggests weights_only=False
    torch.save({"gptft": {"task": "spam"}, "state_dict": {}, "hook": os.system}, f["evil_ckpt"])
    f["foreign_ckpt"] = root / "foreign.ckpt"
    torch.save({"weights": torch.zeros(3)}, f["foreign_ckpt"])
    gguf = (shared_dir / GGUF).read_bytes()[: 1 << 20]  # a real GGUF cut after 1 MB
    f["trunc_gguf"] = root / "truncated.gguf"
    f["trunc_gguf"].write_bytes(gguf)
    f["random_gguf"] = root / "random.gguf"
    f["random_gguf"].write_bytes(os.urandom(1 << 16))
    from safetensors.torch import save_file

    sd = torch.load(best, weights_only=True)["state_dict"]
    real = root / "real.safetensors"
    save_file({k: v.clone().contiguous() for k, v in sd.items()}, str(real))
    f["trunc_st"] = root / "truncated.safetensors"
    f["trunc_st"].write_bytes(real.read_bytes()[: real.stat().st_size // 2])
    f["random_st"] = root / "random.safetensors"
    f["random_st"].write_bytes(os.urandom(1 << 16))
    f["many_labels"] = root / "many_labels.csv"  # the label column is free text: 3,000 distinct values
    with open(f["many_labels"], "w", newline="") as out:
        w = csv.writer(out)
        w.writerow(["text", "label"])
        w.writerows([f"message number {i}", f"label {i}"] for i in range(3000))
    f["no_label_column"] = root / "no_label.csv"
    f["no_label_column"].write_text("text,tag\nhello,ham\n")
    f["empty"] = root / "empty.csv"
    f["empty"].write_text("")
    f["latin1"] = root / "latin1.tsv"
    f["latin1"].write_bytes("text\tlabel\ncaf\xe9\tham\n".encode("latin-1"))
    f["locked"] = root / "held_by_a_live_run"
    claim(f["locked"])  # held by this (live) test process
    (f["locked"] / "result.txt").write_text("a live run's file")
    return f


T, C, G, E = "train", "classify", "generate", "evaluate"
SUB, IN = "subprocess", "in-process"  # in-process: the same check through the same entry function, no imports
LATE = ("data.path={many", "data.path={no_", "data.path={empty", "data.path={latin", "model.checkpoint={trunc",
        "model.checkpoint={random")  # found bad only when read, after the run folder exists
# (command, arguments, text the one-line message must contain, how); {name} is a file from `inputs`
CASES = [
    (T, ["seed=abc"], "seed=abc", SUB),
    (T, ["seed=-5"], "seed=-5", IN),
    (T, ["optimizer.lr=-1"], "optimizer.lr=-1", SUB),
    (T, ["optimizer.lr=nan"], "optimizer.lr=nan", IN),
    (T, ["optimizer.lr=abc"], "optimizer.lr=abc", SUB),
    (T, ["optimizer.weight_decay=-0.1"], "optimizer.weight_decay=-0.1", IN),
    (T, ["data.batch_size=abc"], "data.batch_size=abc", SUB),
    (T, ["data.batch_size=0"], "data.batch_size=0", IN),
    (T, ["data.num_workers=-1"], "data.num_workers=-1", IN),
    (T, ["data.max_length=0"], "data.max_length=0", SUB),
    (T, ["trainer.max_epochs=-1"], "trainer.max_epochs=-1 trains forever", SUB),
    (T, ["trainer.max_epochs=0"], "trainer.max_epochs=0 trains nothing", SUB),
    (T, ["trainer.max_epochs=abc"], "trainer.max_epochs=abc", IN),
    (T, ["trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches=0", IN),
    (T, ["task.test_ckpt=middle"], "task.test_ckpt=middle", IN),
    (T, ["device=gpu"], "device=gpu", SUB),
    (T, ["device=cpu", "precision=16"], "precision=16", IN),
    (T, ["precision=fp8"], "precision='fp8'", IN),
    (T, ["data.path={dir}"], "is a directory", SUB),
    (T, ["data.path={missing}"], "does not exist", IN),
    (T, ["data.path={many_labels}"], "looks like free text", SUB),
    (T, ["data.path={no_label_column}"], "no column 'label'", SUB),
    (T, ["data.path={empty}"], "is empty", IN),
    (T, ["data.path={latin1}", "data.encoding=utf-8"], "not valid utf-8", IN),
    (T, ["ckpt_path={missing}"], "ckpt_path=", SUB),
    (T, ["ckpt_path={dir}"], "is a directory", SUB),
    (T, ["ckpt_path={trunc_ckpt}"], "truncated", SUB),
    (T, ["ckpt_path={random_ckpt}"], "ckpt_path=", IN),
    (T, ["ckpt_path={evil_ckpt}"], "never loads", SUB),
    (T, ["ckpt_path={foreign_ckpt}"], "not a gptft training checkpoint", SUB),
    (T, ["ckpt_path={best}"], "resume from the last.ckpt beside it", SUB),
    (T, ["checkpoint.full=maybe"], "checkpoint.full=maybe must be true or false", IN),
    (T, ["threshold.precision=1.5"], "threshold.precision=1.5", SUB),
    (T, ["data.stratify=maybe"], "data.stratify=maybe must be auto, true or false", IN),
    (T, ["data.train_rows=0"], "data.train_rows=0", IN),
    (T, ["data.eval_batch_tokens=0"], "data.eval_batch_tokens=0", SUB),
    (T, ["finetune.compile=maybe"], "finetune.compile=maybe must be true or false", SUB),
    (T, ["finetune.activation_checkpointing=maybe"], "finetune.activation_checkpointing=maybe must be true or false", SUB),
    (T, ["model=gpt2", "model.checkpoint={missing}"], "model.checkpoint=", IN),
    (T, ["model=gpt2", "model.checkpoint={trunc_st}"], "not a readable safetensors file", SUB),
    (T, ["model=gpt2", "model.checkpoint={random_st}"], "not a readable safetensors file", IN),
    (T, ["model=smollm2-135m-instruct", "model.checkpoint={trunc_gguf}"], "not a readable GGUF file", SUB),
    (T, ["model=smollm2-135m-instruct", "model.checkpoint={random_gguf}"], "not a readable GGUF file", SUB),
    (T, ["hydra.run.dir={locked}"], "in use by a live run", SUB),
    (C, ["ckpt={dir}", "text=hi"], "is a directory", SUB),
    (C, ["ckpt={missing}", "text=hi"], "does not exist", IN),
    (C, ["ckpt={trunc_ckpt}", "text=hi"], "truncated", SUB),
    (C, ["ckpt={evil_ckpt}", "text=hi"], "never loads", SUB),
    (C, ["ckpt={best}", "file={dir}"], "is a directory", IN),
    (C, ["ckpt={best}", "text=hi", "batch_size=abc"], "batch_size must be an integer", IN),
    (G, ["model=gpt2-tiny", "model.pretrained=false", "prompt=hi", "max_new_tokens=100000"], "max_new_tokens=100000", SUB),
    (G, ["ckpt={dir}", "prompt=hi"], "is a directory", IN),
    (G, ["ckpt={best}", "prompt=hi"], "'spam' checkpoint", SUB),
    (G, ["prompt=hi", "top_p=2"], "top_p", IN),
    (G, ["model=gpt2", "model.checkpoint={trunc_st}", "prompt=hi"], "not a readable safetensors file", IN),
    (E, ["ckpt={missing}"], "does not exist", IN),
    (E, ["ckpt={trunc_ckpt}"], "truncated", SUB),
    (E, ["ckpt={best}", "device=tpu"], "device must be auto, cpu or cuda", IN),
]
SUBS = [i for i, case in enumerate(CASES) if case[3] == SUB]
INS = [i for i, case in enumerate(CASES) if case[3] == IN]
IDS = [f"{c}:{' '.join(a)}" for c, a, _, _ in CASES]


def argv_of(case, files: dict) -> list[str]:
    command, args, _, _ = case
    argv = [a.format(**{k: str(v) for k, v in files.items()}) for a in args]
    if command == T and not any(a.startswith("model=") for a in argv):
        argv = ["model=gpt2-tiny", *argv]
    return argv


def run_case(case, files: dict, cwd: Path) -> subprocess.CompletedProcess:
    argv = argv_of(case, files)
    if case[0] == T:
        argv = ["-cd", str(ROOT / "conf"), *argv]  # cwd is a fresh folder: a default run folder would show
    env = {k: v for k, v in os.environ.items() if k not in ("GPTFT_DEBUG", "HYDRA_FULL_ERROR")}
    env["PYTHONPATH"] = str(ROOT)
    cwd.mkdir()
    return subprocess.run([sys.executable, "-m", f"gptft.{case[0]}", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def in_process(case, files: dict, cwd: Path, capfd) -> tuple[int, str]:
    """(exit status, stderr) of the entry function itself: main(argv), or for train the checks train() runs
    first (start_run) on the config Hydra composes from the same overrides."""
    argv = argv_of(case, files)
    capfd.readouterr()
    with pytest.raises(SystemExit) as info:
        if case[0] == T:
            cfg = compose_cfg(cwd / "run", *argv)
            friendly_errors(start_run)(cfg)
            if not any(a.startswith(LATE) for a in case[1]):
                raise AssertionError(f"no error from the checks for {argv}")
            cfg.trainer.enable_progress_bar = False
            friendly_errors(train)(cfg)  # a data or weights file: found bad when it is read
        else:
            MAINS[case[0]](argv)
    return info.value.code, capfd.readouterr().err


@pytest.fixture(scope="module")
def results(inputs, tmp_path_factory):
    """The subprocess cases, two at a time; the earlier run's files recorded before and after."""
    before, locked_before = snapshot(inputs["run"]), snapshot(inputs["locked"])
    work = tmp_path_factory.mktemp("cases")
    sub = [i for i, case in enumerate(CASES) if case[3] == SUB]
    with ThreadPoolExecutor(max_workers=2) as pool:
        outs = pool.map(lambda i: run_case(CASES[i], inputs, work / str(i)), sub)
        done = {i: (out.returncode, out.stderr, work / str(i)) for i, out in zip(sub, outs)}
    assert snapshot(inputs["run"]) == before and snapshot(inputs["locked"]) == locked_before
    return done


def test_matrix_has_enough_cases():
    assert len(CASES) >= 40 and sum(case[3] == SUB for case in CASES) > len(CASES) / 2


@pytest.mark.parametrize("i", SUBS, ids=[IDS[i] for i in SUBS])
def test_subprocess_case(results, i):
    code, err, cwd = results[i]
    check(i, code, err, cwd)


@pytest.mark.parametrize("i", INS, ids=[IDS[i] for i in INS])
def test_in_process_case(inputs, i, tmp_path, capfd):
    before = snapshot(inputs["run"])
    code, err = in_process(CASES[i], inputs, tmp_path, capfd)
    assert snapshot(inputs["run"]) == before
    check(i, code, err, tmp_path)


def check(i: int, code, err: str, cwd: Path) -> None:
    """Exit status 2, one line naming the input, no traceback, no results written."""
    lines = err.strip().splitlines()
    assert code == 2, err[-3000:]
    assert "Traceback" not in err and "weights_only=False" not in err.replace("`", "")
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-3000:]
    assert CASES[i][2] in lines[0], lines[0]
    left = [p for p in cwd.rglob("*") if p.is_file()]
    if any(a.startswith(LATE) for a in CASES[i][1]):  # found when read: the new run's folder holds no results
        assert not [p for p in left if p.suffix in (".ckpt", ".json")], left
    else:  # found by the checks: nothing written at all
        assert not left, left


# ---- inputs that must now work ----------------------------------------------------------------------
def test_a_valid_csv_with_a_1mb_field_parses(tmp_path):
    file = tmp_path / "long.csv"
    long_text = "word " * 200_000  # 1 MB in one field: over csv's default 128 KB field limit
    with open(file, "w", newline="") as out:
        w = csv.writer(out)
        w.writerow(["text", "label"])
        w.writerows([[long_text, "ham"], ["short, with a comma", "spam"]])
    rows = read_rows(file)
    assert [(label, len(text)) for label, text, _ in rows] == [("ham", len(long_text)), ("spam", 19)]


def test_a_quoted_tsv_is_read_with_its_quotes_parsed(tmp_path):
    file = tmp_path / "quoted.tsv"
    file.write_text('"text"\t"label"\n"He said ""hi""\tthere"\t"ham"\n"WIN now"\t"spam"\n')
    assert [(label, text) for label, text, _ in read_rows(file)] == [("ham", 'He said "hi"\tthere'),
                                                                      ("spam", "WIN now")]
    plain = tmp_path / "plain.tsv"  # quoting stays off for ordinary TSVs: a quote in a message is text
    plain.write_text('text\tlabel\n"quoted" start\tham\nWIN\tspam\n')
    assert [text for _, text, _ in read_rows(plain)] == ['"quoted" start', "WIN"]


def test_many_classes_are_refused_before_tokenizing(tmp_path):
    rows = [(f"class {i % 150}", f"text {i}", i + 2) for i in range(3000)]  # 150 classes, 20 rows each
    with pytest.raises(GptftError, match=r"150 distinct values in 3000 rows \(more than data.max_classes=100"):
        resolve_labels(tmp_path / "x.csv", rows, None, None, column="label")
    names, _ = resolve_labels(tmp_path / "x.csv", rows, None, None, max_classes=200, column="label")
    assert len(names) == 150  # a real 150-class problem passes once data.max_classes allows it
