"""`python -m gptft.export`: what transformers alone (a fresh interpreter that cannot import gptft) makes of the
exported folders and GGUF files, against gptft's own outputs. Checkpoints are trained here in a few batches:
gpt2-tiny (spam, alpaca instructions) and a two-layer random SmolLM2 with the shared GGUF's real tokenizer
(chatml instructions, spam with task.head_bias=false, which is what makes a Llama classifier exportable). One
child process answers for every export (tests/export_reference.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gptft.data.collate import ClassificationCollate
from gptft.data.prompts import get_prompt_style
from gptft.errors import CommandExit
from gptft.export.command import export_task, main
from gptft.export.folder import load_folder
from gptft.models.generation import generate
from gptft.tasks.classifier import ClassifierTask
from gptft.tasks.factory import datamodule_from_meta, load_checkpoint
from gptft.train import train
from helpers import compose_cfg

FAST = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
        "task.final_splits=[test]", "task.sample_prompts=0", "precision=32", "finetune.cache_prefix=false"]
REFERENCE = Path(__file__).with_name("export_reference.py")
PROMPTS = [{"instruction": "Name a colour."}, {"instruction": "Rewrite the sentence.", "input": "The sky is blue."},
           {"instruction": "What is 2 + 2?"}]
NEW_TOKENS = 8
LLAMA_TEXTS = 64  # the Llama classifier on the first 64 test messages (GPT-2's on all 300): each costs CPU twice


class RankTask(ClassifierTask):
    """A gptft task export does not know: a subclass may score differently, so only exact classes export."""


RankTask.__module__ = "gptft.tasks.rank_for_export_test"  # where the checkpoint allow-list looks


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, shared_data, shared_gguf, tokenizer) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    llama = ["model=smollm2-135m-instruct", "model.pretrained=false", "model.shape.n_layer=2",
             f"model.checkpoint={shared_gguf}"]
    runs = {"gpt2_spam": ["task=spam", "model=gpt2-tiny"], "gpt2_instruct": ["task=instruct", "model=gpt2-tiny"],
            "gpt2_spam_nobias": ["task=spam", "model=gpt2-tiny", "task.head_bias=false"],
            "llama_instruct": ["task=instruct", "data.prompt_style=chatml", *llama],
            "llama_spam": ["task=spam", "task.head_bias=false", *llama]}
    for name, overrides in runs.items():
        train(compose_cfg(root / name, *overrides, *FAST))
    return {name: root / name / "checkpoints" / "best.ckpt" for name in runs}


def split_texts(meta: dict, tok, context: int) -> list[str]:
    """The 300 SMS texts of the checkpoint's own test split."""
    dm = datamodule_from_meta(meta, tok, context)
    dm.setup("test")
    return [dm.texts[ex["example_id"]] for ex in dm.test_set]


@torch.no_grad()
def gptft_class_logits(task, tok, texts: list[str]) -> list[list[float]]:
    collate, out = ClassificationCollate(tok.pad_id, None), []
    for start in range(0, len(texts), 16):
        batch = [{"input_ids": tok.encode(t), "label": 0, "example_id": i} for i, t in enumerate(texts[start:start + 16])]
        out += task(collate(batch)).tolist()
    return out


def lm_expectations(task, tok, meta) -> dict:
    style = get_prompt_style(meta["prompt_style"])
    prompts = [style.encode_prompt(tok, p) for p in PROMPTS]
    with torch.no_grad():
        logits = task.backbone(torch.tensor([prompts[0]]))[0]
    return {"prompts": prompts, "logits": logits,
            "generate": [generate(task.backbone, p, NEW_TOKENS, eos_id=tok.eot_id) for p in prompts]}


def lm_job(folder: Path, exp: dict, gguf_file: str | None = None, tokenizer: bool = True) -> dict:
    chat = [[{"role": "user", "content": p["instruction"], **({"input": p["input"]} if "input" in p else {})}]
            for p in PROMPTS]
    return {"kind": "lm", "folder": str(folder), "gguf_file": gguf_file, "logits": {"p0": exp["prompts"][0]},
            "generate": exp["prompts"], "max_new_tokens": NEW_TOKENS, "chat": chat if tokenizer else [],
            "tokenizer": tokenizer}


@pytest.fixture(scope="module")
def exported(ckpts, tmp_path_factory):
    """Every export, gptft's expectations for each, and the reference child's answers."""
    out = tmp_path_factory.mktemp("exports")
    jobs, expect = {}, {}
    for name in ("gpt2_instruct", "llama_instruct"):
        task, tok, meta = load_checkpoint(ckpts[name])
        expect[name] = exp = lm_expectations(task, tok, meta)
        export_task(task, tok, meta, ckpts[name], out / name, "hf")
        jobs[name] = lm_job(out / name, exp)
        for dtype in ("f32", "q8_0") if name == "llama_instruct" else ("f32",):  # f16: the CLI test
            key = f"{name}_gguf_{dtype}"
            export_task(task, tok, meta, ckpts[name], out / key, "gguf", dtype)
            jobs[key], expect[key] = lm_job(out / key, exp, "model.gguf", tokenizer=dtype == "f32"), exp
    for name in ("gpt2_spam", "gpt2_spam_nobias", "llama_spam"):
        task, tok, meta = load_checkpoint(ckpts[name])
        assert (task.backbone.head.bias is None) == name.endswith(("nobias", "llama_spam"))  # task.head_bias=false
        texts = split_texts(meta, tok, task.backbone.context_length)
        texts = texts if name.startswith("gpt2") else texts[:LLAMA_TEXTS]
        logits = gptft_class_logits(task, tok, texts)
        expect[name] = {"texts": texts, "ids": [tok.encode(t) for t in texts], "logits": logits,
                        "labels": [meta["label_names"][max(range(len(z)), key=z.__getitem__)] for z in logits]}
        export_task(task, tok, meta, ckpts[name], out / name, "hf")
        jobs[name] = {"kind": "classifier", "folder": str(out / name), "texts": texts}
    (out / "jobs.json").write_text(json.dumps(jobs))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # -I: no PYTHONPATH, no script folder's neighbours, no user site; the child also blocks `import gptft`
    done = subprocess.run([sys.executable, "-I", str(REFERENCE), str(out / "jobs.json"), str(out / "results.json")],
                          cwd=out, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    for name, logits in torch.load(out / "results.json.pt", weights_only=True).items():
        results[name]["logits"] = logits
    return out, expect, results


def _close(a, b, tol: float) -> float:
    diff = (torch.as_tensor(a) - torch.as_tensor(b)).abs().max().item()
    assert diff <= tol, diff
    return diff


@pytest.mark.parametrize("name", ["gpt2_spam", "gpt2_spam_nobias", "llama_spam"])
def test_classifier_matches_on_the_real_test_split(exported, name):
    _, expect, results = exported
    exp, got = expect[name], results[name]
    assert got["class"] == ("GPT2" if name.startswith("gpt2") else "Llama") + "ForSequenceClassification"
    assert len(exp["texts"]) == (300 if name.startswith("gpt2") else LLAMA_TEXTS)
    assert got["ids"] == exp["ids"]  # the exported tokenizer.json encodes as gptft does
    _close(got["text_logits"], exp["logits"], 1e-4)  # padded batches of 16: last non-pad token = gptft's pooling
    assert got["labels"] == exp["labels"]
    assert got["config"]["id2label"] == {"0": "ham", "1": "spam"}


@pytest.mark.parametrize("name", ["gpt2_instruct", "llama_instruct"])
def test_causal_lm_logits_generation_and_chat_template(exported, name):
    out, expect, results = exported
    exp, got = expect[name], results[name]
    assert got["class"] == {"gpt2_instruct": "GPT2LMHeadModel", "llama_instruct": "LlamaForCausalLM"}[name]
    _close(got["logits"]["p0"], exp["logits"], 1e-4)
    eos = json.loads((out / name / "generation_config.json").read_text())["eos_token_id"]
    assert [g[:-1] if g and g[-1] == eos else g for g in got["generate"]] == exp["generate"]
    assert got["chat"] == exp["prompts"]  # the chat template reproduces the training prompt style
    assert not got["config"]["tie_word_embeddings"]  # the instruct head was trained untied


@pytest.mark.parametrize("name", ["gpt2_spam", "llama_spam", "gpt2_instruct", "llama_instruct"])
def test_gptft_reads_its_exported_folders_back(exported, name):
    """What `python -m gptft.serve ckpt=FOLDER` serves: gptft's own loaders on the folder, no transformers."""
    out, expect, _ = exported
    task, tok, meta = load_folder(out / name)
    exp = expect[name]
    assert meta["exported"]["architecture"] == {"gpt2": "GPT2", "llama": "Llama"}[name.split("_")[0]] + (
        "ForSequenceClassification" if name.endswith("spam") else ("LMHeadModel" if name == "gpt2_instruct"
                                                                  else "ForCausalLM"))
    if name.endswith("spam"):
        assert meta["label_names"] == ["ham", "spam"] and meta["task"] == "spam"
        assert [tok.encode(t) for t in exp["texts"]] == exp["ids"]
        _close(gptft_class_logits(task, tok, exp["texts"]), exp["logits"], 1e-4)
        return
    style = get_prompt_style(meta["prompt_style"])
    assert meta["prompt_style"] == ("alpaca" if name == "gpt2_instruct" else "chatml")
    assert [style.encode_prompt(tok, p) for p in PROMPTS] == exp["prompts"]
    with torch.no_grad():
        _close(task.backbone(torch.tensor([exp["prompts"][0]]))[0], exp["logits"], 1e-4)
    assert [generate(task.backbone, p, NEW_TOKENS, eos_id=tok.eot_id) for p in exp["prompts"]] == exp["generate"]


@pytest.mark.parametrize("name", ["gpt2_instruct", "llama_instruct"])
def test_gguf_f32_matches(exported, name):
    out, expect, results = exported
    exp, got = expect[f"{name}_gguf_f32"], results[f"{name}_gguf_f32"]
    _close(got["logits"]["p0"], exp["logits"], 1e-3)
    eos = results[name]["config"]["eos_token_id"]
    assert [g[:-1] if g and g[-1] == eos else g for g in got["generate"]] == exp["generate"]
    assert got["chat"] == exp["prompts"]  # tokenizer and chat template from the GGUF metadata
    modelfile = (out / f"{name}_gguf_f32" / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./model.gguf\nTEMPLATE") and "{{ .Prompt }}" in modelfile


def test_gguf_q8_0_loads_close(exported):
    out, expect, results = exported
    exp, got = expect["llama_instruct_gguf_q8_0"], results["llama_instruct_gguf_q8_0"]
    _close(got["logits"]["p0"], exp["logits"], 0.05 * exp["logits"].abs().max().item())  # 8-bit weights
    f32 = (out / "llama_instruct_gguf_f32" / "model.gguf").stat().st_size
    assert (out / "llama_instruct_gguf_q8_0" / "model.gguf").stat().st_size < 0.35 * f32


def test_model_card(exported, ckpts):
    out, _, _ = exported
    card = (out / "gpt2_spam" / "README.md").read_text()
    metrics = json.loads((ckpts["gpt2_spam"].parents[1] / "metrics.json").read_text())
    assert "SpamDataModule" in card and "pooling" in card and f"{metrics['splits']['test']['acc']:.4f}" in card


def _refused(argv: list[str], capsys) -> str:
    with pytest.raises(CommandExit) as err:
        main(argv)
    assert err.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("error: ")
    return lines[-1]


def _nothing_written(out: Path) -> None:
    assert not out.exists() or not any(out.iterdir())
    assert not list(out.parent.glob(f".{out.name}.*"))


def test_refusals_write_nothing(ckpts, tmp_path, capsys):
    spam = ckpts["gpt2_spam"]
    other = torch.load(spam, weights_only=True)  # the same weights under a task export does not know
    other["gptft"] = {**other["gptft"], "task": "rank", "task_class": "RankTask"}
    torch.save(other, tmp_path / "rank.ckpt")
    line = _refused([f"ckpt={tmp_path / 'rank.ckpt'}", f"out={tmp_path / 'a'}"], capsys)
    assert "'rank' checkpoint (RankTask)" in line
    _nothing_written(tmp_path / "a")

    data = spam.read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    assert "truncated" in _refused([f"ckpt={tmp_path / 'cut.ckpt'}", f"out={tmp_path / 'b'}"], capsys)
    _nothing_written(tmp_path / "b")

    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "keep.txt").write_text("mine")
    assert "not an empty folder" in _refused([f"ckpt={spam}", f"out={tmp_path / 'c'}"], capsys)
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["keep.txt"]

    assert "format=hf" in _refused([f"ckpt={spam}", f"out={tmp_path / 'd'}", "format=gguf"], capsys)
    _nothing_written(tmp_path / "d")
    line = _refused([f"ckpt={biased_llama_classifier(ckpts['llama_spam'], tmp_path)}", f"out={tmp_path / 'e'}"],
                    capsys)
    assert "has a bias" in line and "task.head_bias=false" in line
    _nothing_written(tmp_path / "e")


def biased_llama_classifier(ckpt: Path, tmp_path: Path) -> Path:
    """The Llama classifier as task.head_bias=true (the default) trains it: its head with a non-zero bias."""
    data = torch.load(ckpt, weights_only=True)
    weight = next(k for k in data["state_dict"] if k.endswith("lm_head.weight"))
    data["state_dict"][weight[: -len("weight")] + "bias"] = torch.full(data["state_dict"][weight].shape[:1], 0.1)
    data["gptft"] = {**data["gptft"], "task_args": {**data["gptft"]["task_args"], "head_bias": True}}
    torch.save(data, tmp_path / "biased.ckpt")
    assert load_checkpoint(tmp_path / "biased.ckpt")[0].backbone.head.bias is not None
    return tmp_path / "biased.ckpt"


def test_pooling_last_is_refused(ckpts, tmp_path):
    task, tok, meta = load_checkpoint(ckpts["gpt2_spam"])
    task.pooling = "last"
    with pytest.raises(Exception, match="pooling=last: it reads position -1"):
        export_task(task, tok, meta, ckpts["gpt2_spam"], tmp_path / "x", "hf")
    _nothing_written(tmp_path / "x")


def test_command_line_export(ckpts, tmp_path):
    """The command as users run it, into an existing empty folder."""
    (tmp_path / "out").mkdir()
    done = subprocess.run([sys.executable, "-m", "gptft.export", f"ckpt={ckpts['gpt2_instruct']}",
                           f"out={tmp_path / 'out'}", "format=gguf", "dtype=f16"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["Modelfile", "README.md", "model.gguf"]
    assert done.stdout.startswith(f"wrote {tmp_path / 'out'}/: model.gguf (f16)")
    from gguf import GGUFReader

    reader = GGUFReader(str(tmp_path / "out" / "model.gguf"))
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_qkv.weight"] == "F16" and types["blk.0.attn_norm.weight"] == "F32"
    assert "Below is an instruction" in reader.fields["tokenizer.chat_template"].contents()
