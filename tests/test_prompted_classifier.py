"""A classifier that reads each text inside a prompt (data.prompt_style + data.instruction): the ids training
sees, cutting long texts inside the prompt, the settings' errors, and classify / the model card reading the
checkpoint's prompt, on the real SMS file with SmolLM2's and GPT-2's real tokenizers."""
from __future__ import annotations

import pytest
import torch

import gptft
from gptft.data.prompts import encode_texts
from gptft.data.spam import SpamDataModule
from gptft.errors import GptftError
from gptft.classify import classify
from gptft.export.command import export_task
from gptft.export.folder import load_folder
from gptft.models.hf_tokenizer import HFTokenizer
from gptft.models.llama_weights import read_gguf
from gptft.tasks.class_metrics import probabilities
from helpers import subset_csv

ASK = "Is this SMS message spam?"


@pytest.fixture(scope="module")
def smol_tok(shared_gguf):
    meta, _ = read_gguf(shared_gguf, tensors=False)
    return HFTokenizer.from_gguf_metadata(meta, name="smollm2")


def test_chatml_rows_are_the_user_turn_ending_where_the_answer_begins(shared_data, smol_tok):
    dm = SpamDataModule(smol_tok, prompt_style="chatml", instruction=ASK)
    dm.setup()
    start, end = smol_tok.special_id("<|im_start|>"), smol_tok.special_id("<|im_end|>")
    tail = [end, *smol_tok.encode("\n"), start, *smol_tok.encode("assistant\n")]
    for ex in dm.train_set[:50] + dm.test_set[:50]:
        text = dm.texts[ex["example_id"]]
        assert ex["input_ids"] == [start, *smol_tok.encode(f"user\n{ASK}\n\n{text}"), *tail]
    plain = SpamDataModule(smol_tok)
    plain.setup()
    # the same split, messages and labels: only the rows' ids differ
    assert [(e["example_id"], e["label"]) for e in plain.test_set] == [(e["example_id"], e["label"]) for e in dm.test_set]
    assert plain.test_set[0]["input_ids"] == smol_tok.encode(dm.texts[dm.test_set[0]["example_id"]])


def test_long_texts_are_cut_inside_the_prompt(shared_data, smol_tok):
    dm = SpamDataModule(smol_tok, prompt_style="chatml", instruction=ASK, max_length=40)
    dm.setup()
    rows = dm.train_set + dm.val_set + dm.test_set
    full = {e["example_id"]: ids for e, (ids, _) in zip(
        rows, encode_texts(smol_tok, [dm.texts[e["example_id"]] for e in rows], "chatml", ASK))}
    cut = [e for e in rows if len(full[e["example_id"]]) > 40]
    assert dm.report["truncated"] == len(cut) > 100
    for e in rows:
        ids = e["input_ids"]
        assert len(ids) <= 40 and ids[-5:] == full[e["example_id"]][-5:]  # the closing markup is kept
        if e in cut:  # the text's first tokens stay, its end goes
            assert len(ids) >= 36 and ids[:12] == full[e["example_id"]][:12]
        else:
            assert ids == full[e["example_id"]]
    with pytest.raises(GptftError, match="shorten the instruction"):
        encode_texts(smol_tok, ["hi"], "chatml", ASK * 10, limit=30)


def test_prompt_settings_go_together(shared_data, tokenizer):
    for style, instruction in (("chatml", None), (None, ASK), ("chatml", "  "), ("llama3", ASK)):
        with pytest.raises(GptftError, match="data.prompt_style"):
            SpamDataModule(tokenizer, prompt_style=style, instruction=instruction)
    with pytest.raises(GptftError, match="data.pad_to=longest_train cuts rows at their end"):
        SpamDataModule(tokenizer, prompt_style="chatml", instruction=ASK, pad_to="longest_train")


def test_classify_reads_texts_in_the_checkpoints_prompt(shared_data, tmp_path, tokenizer):
    csv = subset_csv(shared_data, tmp_path / "subset.csv", per_class=20)
    run = gptft.finetune("task=spam", "model=gpt2-tiny", "trainer.max_epochs=1", "precision=32",
                         f"data.path={csv}", "data.prompt_style=alpaca", f"data.instruction='{ASK}'",
                         "calibration.temperature=false",
                         f"hydra.run.dir={tmp_path / 'run'}")  # T = 1: the probabilities are the logits' softmax
    model = run.load()
    dm = SpamDataModule(tokenizer, path=str(csv), prompt_style="alpaca", instruction=ASK)
    dm.setup()
    rows = dm.test_set[:4]
    temperature = 1.0
    with torch.no_grad():
        want = probabilities(model.task(dm.collate_fn(rows)), temperature)
        raw = SpamDataModule(tokenizer, path=str(csv))
        raw.setup()
        unprompted = probabilities(model.task(raw.collate_fn(raw.test_set[:4])), temperature)
    got = model.classify([dm.texts[e["example_id"]] for e in rows])
    got = torch.tensor([[r["probs"][n] for n in model.label_names] for r in got])
    torch.testing.assert_close(got, want.float(), rtol=0, atol=1e-6)
    assert not torch.allclose(got, unprompted.float(), atol=1e-4)  # the prompt changes what the model sees
    # an exported folder keeps the prompt: gptft's serve (load_folder) reads texts in it, the card shows it
    export_task(model.task, model.tokenizer, model.meta, str(run.best_ckpt), tmp_path / "hf")
    task, tok, _ = load_folder(tmp_path / "hf")
    exported = classify(task, tok, [dm.texts[e["example_id"]] for e in rows])
    exported = torch.tensor([[r["probs"][n] for n in model.label_names] for r in exported])
    torch.testing.assert_close(exported, want.float(), rtol=0, atol=1e-5)
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "- Input: each text is classified inside this prompt (alpaca" in card
    assert f"### Instruction:\\n{ASK}\\n\\n### Input:\\n{{text}}\\n\\n### Response:\\n`" in card
