"""finetune.mode=lora: adapters start at the base model, merge exactly, train alone with the head, leave the
frozen-prefix cache invisible, survive a checkpoint round trip, and bad settings are one line."""
import json
import subprocess
import sys

import lightning as L
import pytest
import torch

from gptft.classify import classify
from gptft.errors import ConfigError
from gptft.models.gpt2 import GPT, gpt2_config
from gptft.models.llama import Llama, llama_config
from gptft.models.lora import has_adapters, merge_lora
from gptft.tasks.factory import datamodule_from_meta, load_checkpoint
from gptft.tasks.finetune import configure_trainable, replace_head
from gptft.fit import fit_and_test
from helpers import LossRecorder, compose_cfg

LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "targets": ["attention", "mlp"], "blocks": "all", "train_head": True}
QUICK = ["model=gpt2-tiny", "finetune.mode=lora", "trainer.enable_progress_bar=false",
         "trainer.enable_model_summary=false"]


def tiny(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if arch == "gpt2":
        return GPT(gpt2_config("gpt2-tiny", vocab_size=500, context_length=64)).eval()
    return Llama(llama_config("smollm2-135m", n_layer=3, n_embd=64, n_head=4, n_kv_head=2, intermediate_size=96,
                              vocab_size=500)).eval()


def with_lora(arch: str, **settings):
    model = tiny(arch)
    boundary = configure_trainable(model, "lora", lora={**LORA, **settings})
    return model.eval(), boundary


IDS = torch.randint(0, 500, (3, 17), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_zero_initialised_b_starts_exactly_at_the_base_model(arch):
    base = tiny(arch)(IDS)
    model, _ = with_lora(arch)
    assert has_adapters(model)
    assert not any(p.detach().any() for n, p in model.named_parameters() if "lora_B" in n)
    assert torch.equal(model(IDS), base)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_merged_equals_unmerged(arch):
    model, _ = with_lora(arch)
    with torch.no_grad():  # a trained adapter: B no longer zero
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    unmerged = model(IDS)
    assert (unmerged - tiny(arch)(IDS)).abs().max() > 1e-3  # the adapters do change the output
    assert merge_lora(model) == len(model.blocks) * (4 if arch == "gpt2" else 7)  # every adapted linear layer
    assert not has_adapters(model)
    assert set(model.state_dict()) == set(tiny(arch).state_dict())  # the base model's names: exportable as is
    assert torch.allclose(model(IDS), unmerged, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch, targets, blocks, adapted", [
    ("gpt2", ["attention"], "all", {"attn.c_attn", "attn.c_proj"}),
    ("gpt2", ["mlp.c_proj"], 1, {"mlp.c_proj"}),
    ("llama", ["attention"], 2, {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"}),
    ("llama", ["mlp", "self_attn.v_proj"], "all", {"mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
                                                   "self_attn.v_proj"}),
])
def test_targets_and_blocks_choose_the_adapted_layers(arch, targets, blocks, adapted):
    model, boundary = with_lora(arch, targets=targets, blocks=blocks)
    n = len(model.blocks)
    assert boundary == (0 if blocks == "all" else n - blocks)
    for i, block in enumerate(model.blocks):
        found = {name.split(".lora_A")[0] for name, _ in block.named_parameters() if ".lora_A." in name}
        assert found == (adapted if i >= boundary else set())


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_only_adapters_and_head_are_trainable(arch):
    for train_head in (True, False):
        model = tiny(arch)
        replace_head(model, torch.nn.Linear(model.config.n_embd, 2))  # as the classifier does
        configure_trainable(model, "lora", lora={**LORA, "blocks": 2, "train_head": train_head})
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        head = {"lm_head.weight", "lm_head.bias"}
        assert trainable - head and all(".lora_" in n for n in trainable - head)
        assert head & trainable == (head if train_head else set())


@pytest.mark.parametrize("setting, message", [
    ({"targets": ["attn.c_atn"]}, "lora.targets: 'attn.c_atn' names no linear layer of a gpt2 block; use attention"),
    ({"targets": []}, "lora.targets=[] must be a non-empty list"),
    ({"r": 0}, "lora.r=0 must be a positive integer"),
    ({"alpha": -1}, "lora.alpha=-1 must be a number > 0"),
    ({"dropout": 1.0}, "lora.dropout=1.0 must be a number in [0, 1)"),
    ({"blocks": 5}, "lora.blocks=5 is out of range: the model has 4 blocks; use all or 1..4"),
    ({"blocks": 0}, "lora.blocks=0 is out of range"),
])
def test_bad_lora_settings_are_refused(setting, message):
    with pytest.raises(ConfigError) as err:
        with_lora("gpt2", **setting)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_bad_lora_setting_is_one_error_line_from_the_command(tmp_path, shared_data):
    out = subprocess.run([sys.executable, "-m", "gptft.train", "task=spam", *QUICK, "lora.blocks=9",
                          f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1:] == [
        "error: lora.blocks=9 is out of range: the model has 4 blocks; use all or 1..4 (the top N blocks)"]
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


class Snapshot(L.Callback):
    """The task's weights when training starts, and the task itself (adapters unmerged, best.ckpt loaded)
    after the final test."""

    def on_train_start(self, trainer, pl_module):
        self.start = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}

    def on_test_end(self, trainer, pl_module):
        self.task = pl_module


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, shared_data):
    run = tmp_path_factory.mktemp("lora_run")
    snap = Snapshot()
    cfg = compose_cfg(run, "task=spam", *QUICK, "trainer.max_epochs=1", "trainer.limit_train_batches=8",
                      "trainer.limit_val_batches=2", "trainer.limit_test_batches=2", "task.final_splits=[test]",
                      "precision=32", "optimizer.lr=1e-3", "lora.blocks=2")
    fit_and_test(cfg, run, callbacks=(snap,))
    return run, snap


def test_training_changes_only_adapters_and_head(lora_run):
    run, snap = lora_run
    final = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    changed = {k for k, v in final.items() if not torch.equal(v, snap.start[k])}
    assert changed == {k for k in final if ".lora_B." in k or ".lora_A." in k or k.startswith("backbone.lm_head.")}
    assert all(".h.2." in k or ".h.3." in k for k in changed if ".lora_" in k)  # lora.blocks=2: the top two


def test_checkpoint_round_trip_merges_and_predicts_the_same(lora_run):
    run, snap = lora_run
    ckpt = run / "checkpoints" / "best.ckpt"
    meta = torch.load(ckpt, map_location="cpu", weights_only=True)["gptft"]
    assert meta["finetune_cfg"]["mode"] == "lora" and meta["finetune_cfg"]["lora"]["blocks"] == 2
    task, tok, meta = load_checkpoint(ckpt, expect_task="spam")
    assert not has_adapters(task) and has_adapters(snap.task)  # merged for prediction; training's still adapted
    dm = datamodule_from_meta(meta, tok, task.backbone.context_length, ckpt)
    dm.setup("test")
    unmerged = snap.task.eval()
    with torch.no_grad():
        for batch, _ in zip(dm.eval_dataloader("test"), range(4)):
            assert torch.allclose(task(batch), unmerged(batch), atol=1e-5, rtol=0)
    probs = classify(task, tok, ["Free entry in 2 a wkly comp", "see you at 5"])
    assert all(abs(sum(r["probs"].values()) - 1) < 1e-5 for r in probs)


def test_prefix_cache_below_the_lowest_adapted_block_is_invisible(tmp_path, shared_data):
    def losses(cache: bool):
        rec = LossRecorder()
        cfg = compose_cfg(tmp_path / str(cache), "task=spam", *QUICK, "trainer.max_epochs=1",
                          "trainer.limit_train_batches=8", "trainer.limit_val_batches=2", "precision=32",
                          "lora.blocks=1", "lora.dropout=0.1", "task.final_splits=[val]", "trainer.limit_test_batches=2",
                          f"finetune.cache_prefix={str(cache).lower()}")
        return rec.losses, fit_and_test(cfg, tmp_path / str(cache), callbacks=(rec,))

    (cached, m_cached), (plain, m_plain) = losses(True), losses(False)
    assert m_cached["prefix_cache"]["boundary_block"] == 3 and m_cached["prefix_cache"]["examples"] > 0
    assert m_plain["prefix_cache"] is None and len(cached) == len(plain) == 8
    assert torch.allclose(torch.tensor(cached), torch.tensor(plain), atol=1e-5, rtol=0)


def test_llama_instruct_with_a_frozen_tied_head(tmp_path, shared_gguf, shared_data):
    cfg = compose_cfg(tmp_path, "task=instruct", "model=smollm2-135m-instruct", "model.pretrained=false",
                      "model.shape.n_layer=2", f"model.checkpoint={shared_gguf}", "finetune.mode=lora",
                      "lora.train_head=false", "lora.targets=[self_attn.q_proj,mlp]", "trainer.max_epochs=1",
                      "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
                      "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
                      "task.final_splits=[test]", "task.sample_prompts=0", "precision=32")
    fit_and_test(cfg, tmp_path)
    state = torch.load(tmp_path / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    # the head stays the embedding (tied, frozen): no 49,152 x 576 matrix is trained, so the small checkpoint
    # holds neither (the frozen backbone is re-read from the GGUF it refers to)
    assert not [k for k in state if k.startswith(("backbone.lm_head.", "backbone.model.embed_tokens."))]
    assert any("self_attn.q_proj.lora_A" in k for k in state) and not any("k_proj.lora" in k for k in state)
    task, _, _ = load_checkpoint(tmp_path / "checkpoints" / "best.ckpt", expect_task="instruct")
    assert not has_adapters(task) and task.backbone.lm_head.weight is task.backbone.embedding.weight
    assert json.loads((tmp_path / "metrics.json").read_text())["splits"]["test"]["tokens"] > 0


def saved_bytes_and_grads(arch: str, checkpointing: bool) -> tuple[int, dict]:
    """Bytes autograd keeps for the backward pass of one bf16 training step of an all-block LoRA, and the grads."""
    model, _ = with_lora(arch)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(2))
    model.activation_checkpointing = checkpointing
    saved = []
    keep = lambda t: saved.append(t.numel() * t.element_size()) or t
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t), torch.autocast("cpu", torch.bfloat16):
        loss = model(IDS).float().logsumexp(-1).mean()
    loss.backward()
    return sum(saved), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_activation_checkpointing_keeps_less_and_gives_the_same_gradients(arch):
    kept_all, grads = saved_bytes_and_grads(arch, False)
    kept_ckpt, grads_ckpt = saved_bytes_and_grads(arch, True)
    assert kept_ckpt < kept_all / 2  # only each block's input (the rest is recomputed in the backward pass)
    assert grads.keys() == grads_ckpt.keys() and len(grads) > 2 * len(tiny(arch).blocks)
    for name, grad in grads.items():
        assert torch.equal(grad, grads_ckpt[name]), name
