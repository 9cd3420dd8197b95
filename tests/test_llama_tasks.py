"""Both tasks train, save and reload with the Llama backbone and its own tokenizer (SmolLM2 shape,
two random layers, the shared GGUF's real tokenizer), as they do with GPT-2."""
import json

import pytest
import torch

from gptft.classify import classify
from gptft.models.generation import generate
from gptft.tasks.factory import load_checkpoint
from gptft.train import train
from helpers import compose_cfg

TINY = ["model=smollm2-135m-instruct", "model.pretrained=false", "model.shape.n_layer=2", "trainer.max_epochs=1",
        "trainer.limit_train_batches=3", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "task.final_splits=[test]",
        "data.eval_batch_tokens=null"]  # scoring batches of batch_size rows: 2 test batches are 16 messages


@pytest.fixture(scope="module")
def tiny_llama(shared_gguf, shared_data) -> list[str]:
    """Overrides for a two-layer random SmolLM2 with the shared GGUF's real tokenizer."""
    return [*TINY, f"model.checkpoint={shared_gguf}"]


def test_spam_with_llama_backbone(tmp_path, tiny_llama):
    train(compose_cfg(tmp_path, "task=spam", *tiny_llama))
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["splits"]["test"]["n"] == 16 and m["prefix_cache"]["examples"] > 0
    task, tok, meta = load_checkpoint(tmp_path / "checkpoints" / "best.ckpt", expect_task="spam")
    assert meta["arch"] == "llama" and meta["tokenizer"]["kind"] == "hf" and tok.pad_id == tok.eot_id == 2
    probs = classify(task, tok, ["Free entry in 2 a wkly comp", "see you at 5"])
    assert all(abs(sum(r["probs"].values()) - 1) < 1e-4 for r in probs)


def test_instruct_with_llama_backbone_and_chatml(tmp_path, tiny_llama):
    train(compose_cfg(tmp_path, "task=instruct", "data.prompt_style=chatml", "task.sample_prompts=1", *tiny_llama))
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["splits"]["test"]["tokens"] > 0
    task, tok, meta = load_checkpoint(tmp_path / "checkpoints" / "best.ckpt", expect_task="instruct")
    assert meta["prompt_style"] == "chatml"
    from gptft.data.prompts import get_prompt_style

    ids = get_prompt_style("chatml").encode_prompt(tok, {"instruction": "Name a colour."})
    assert ids[0] == tok.special_tokens["<|im_start|>"]  # the markers are special ids, not text
    with torch.no_grad():
        assert generate(task.backbone, ids, 6) == generate(task.backbone, ids, 6, use_cache=False)
