"""Instruction tuning on gpt2-tiny with the real instruction file and tokenizer."""
import json
import math

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gptft.classify import main as classify_main
from gptft.generate import main as generate_main
from gptft.models.generation import generate
from gptft.models.gpt2 import GPT, gpt2_config
from gptft.data.handoff import TaskData
from gptft.tasks.head_loss import fused_head_loss
from gptft.tasks.instruct import InstructTask, target_loss
from gptft.fit import fit_and_test
from gptft.train import train
from helpers import LossRecorder, compose_cfg

QUICK = ["task=instruct", "model=gpt2-tiny", "trainer.max_epochs=1", "trainer.limit_train_batches=6",
         "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "task.sample_prompts=2",
         "trainer.log_every_n_steps=2"]


@pytest.fixture(scope="module")
def instruct_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("instruct_run")
    value = train(compose_cfg(run_dir, *QUICK))
    return run_dir, value


def test_run_leaves_curves_samples_checkpoints(instruct_run):
    run_dir, value = instruct_run
    m = json.loads((run_dir / "metrics.json").read_text())
    assert value == m["flat"]["val/loss"] and math.isfinite(value)
    assert math.isclose(m["splits"]["test"]["ppl"], math.exp(m["splits"]["test"]["loss"]), rel_tol=1e-6)
    assert (run_dir / "checkpoints" / "best.ckpt").is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"tensors": 0}).Reload()
    tags = events.Tags()
    assert {"train/loss_step", "val/loss", "val/ppl"} <= set(tags["scalars"])
    assert any("val/samples" in t for t in tags["tensors"])


def test_generate_command_and_wrong_checkpoint_kinds(instruct_run, capsys, tmp_path):
    ckpt = instruct_run[0] / "checkpoints" / "best.ckpt"
    generate_main([f"ckpt={ckpt}", "prompt=Name three colors.", "max_new_tokens=5"])
    out = capsys.readouterr().out
    assert "tokens in" in out
    with pytest.raises(SystemExit, match="'instruct' checkpoint, but this command needs a 'spam'"):
        classify_main([f"ckpt={ckpt}", "text=hello"])
    not_ckpt = tmp_path / "x.ckpt"
    torch.save({"state_dict": {}}, not_ckpt)
    with pytest.raises(SystemExit, match="not a gptft checkpoint"):
        generate_main([f"ckpt={not_ckpt}", "prompt=hi"])


def test_prefix_cache_is_invisible_instruct(tmp_path):
    runs = {}
    for cache in (True, False):
        rec = LossRecorder()
        cfg = compose_cfg(tmp_path / str(cache), "task=instruct", "model=gpt2-tiny", "precision=32",
                          "trainer.max_epochs=2", "trainer.limit_train_batches=5", "trainer.limit_val_batches=3",
                          "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
                          "task.sample_prompts=0", f"finetune.cache_prefix={str(cache).lower()}")
        runs[cache] = (rec.losses, fit_and_test(cfg, tmp_path / str(cache), callbacks=(rec,)))
    (cached, m_cached), (plain, m_plain) = runs[True], runs[False]
    assert len(cached) == len(plain) == 10
    assert m_cached["prefix_cache"]["examples"] > 0 and m_plain["prefix_cache"] is None
    assert torch.allclose(torch.tensor(cached), torch.tensor(plain), atol=1e-5, rtol=0)


def _tiny_task(**finetune):
    torch.manual_seed(0)
    backbone = GPT(gpt2_config("gpt2-tiny"))
    finetune = {"mode": "last_blocks", "trainable_blocks": 1, "cache_prefix": False, "cache_dtype": "auto", **finetune}
    return InstructTask(backbone, data=TaskData(prompt_style="alpaca"), tokenizer=None, name="instruct",
                        finetune=finetune, meta={}, targets_only=True, sample_tokens=8)


def test_head_on_targets_only_equals_full_head():
    task = _tiny_task()
    ids = torch.randint(0, 50257, (3, 12))
    targets = ids.roll(-1, 1)
    targets[0, 5:] = -100
    targets[2, :] = -100
    h = task.hidden_states({"input_ids": ids, "lengths": torch.tensor([12, 12, 12])})
    sparse = target_loss(task.backbone, h, targets, targets_only=True)
    dense = target_loss(task.backbone, h, targets, targets_only=False)
    assert sparse[1] == dense[1] == 5 + 12
    assert torch.allclose(sparse[0], dense[0], atol=1e-4)


def test_all_masked_batch_gives_finite_zero_loss():
    task = _tiny_task()
    batch = {"input_ids": torch.randint(0, 50257, (2, 7)), "targets": torch.full((2, 7), -100),
             "lengths": torch.tensor([7, 4]), "example_id": torch.tensor([0, 1])}
    total, n = task._loss(batch)
    loss = total / max(1, n)
    assert n == 0 and torch.isfinite(loss) and float(loss.detach()) == 0.0
    loss.backward()  # no NaN gradients either
    assert all(torch.isfinite(p.grad).all() for p in task.parameters() if p.grad is not None)


def test_head_trains_while_embedding_stays_frozen():
    task = _tiny_task()
    bb = task.backbone
    assert bb.head.weight is not bb.embedding.weight and torch.equal(bb.head.weight, bb.embedding.weight)
    assert bb.head.weight.requires_grad and not bb.embedding.weight.requires_grad
    trainable = {n for n, p in task.named_parameters() if p.requires_grad}
    assert all(n.startswith(("backbone.transformer.h.3.", "backbone.transformer.ln_f.", "backbone.lm_head."))
               for n in trainable)
    full = _tiny_task(mode="full")
    assert full.backbone.head.weight is full.backbone.embedding.weight  # full training keeps GPT-2's tie


def test_kv_cache_decoding_matches_recomputation(tokenizer):
    torch.manual_seed(1)
    model = GPT(gpt2_config("gpt2-tiny")).eval()
    ids = tokenizer.encode("Below is an instruction that describes a task.")
    cached = generate(model, ids, 40, use_cache=True)
    plain = generate(model, ids, 40, use_cache=False)
    assert cached == plain and len(cached) == 40


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("precision", ["fp32", "bf16-autocast"])
def test_fused_head_loss_equals_plain_cross_entropy(bias, precision):
    # The fused head + loss against head(h).float() and F.cross_entropy: the loss and every gradient.
    torch.manual_seed(0)
    head = torch.nn.Linear(64, 50257, bias=bias)
    h = torch.randn(70, 64, requires_grad=True)  # 70 rows: two full chunks of 32 and a partial one
    targets = torch.randint(0, 50257, (70,))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision != "fp32")
    grads = []
    for fused in (True, False):
        head.zero_grad(set_to_none=True)
        h.grad = None
        with autocast:
            if fused:
                total = fused_head_loss(head, h, targets)
            else:
                total = torch.nn.functional.cross_entropy(head(h).float(), targets, reduction="sum")
        (total / 7).backward()  # a scale other than 1 reaches the backward pass
        grads.append([total.detach(), h.grad, head.weight.grad] + ([head.bias.grad] if bias else []))
    tol = {"fp32": 1e-5, "bf16-autocast": 1e-2}[precision]
    for a, b in zip(*grads):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.allclose(a, b, rtol=tol, atol=tol * float(b.abs().max())), float((a - b).abs().max())
    wrong = fused_head_loss(head, h, targets.roll(1))
    assert not torch.allclose(wrong, grads[0][0], rtol=1e-3)


def test_fused_head_loss_without_gradients_keeps_nothing():
    head = torch.nn.Linear(16, 50257, bias=False).requires_grad_(False)
    h, targets = torch.randn(5, 16), torch.randint(0, 50257, (5,))
    total = fused_head_loss(head, h, targets)
    assert total.grad_fn is None
    plain = torch.nn.functional.cross_entropy(head(h), targets, reduction="sum")
    assert torch.allclose(total, plain, rtol=1e-5)
