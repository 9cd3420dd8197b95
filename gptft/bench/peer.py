"""The peer row: the default spam recipe through transformers' Trainer, as a practitioner would write it
instead of using gptft. Same model and weights (gptft's backbone under transformers' classes, with the same
random head shape), trainable set (the last `finetune.trainable_blocks` blocks, the final norm and the score
head), epochs, batch size, AdamW (fused, lr and weight decay), constant schedule, bf16 autocast, per-batch
padding and data (gptft's splits, token for token); no validation during training and no checkpoints.
Then the three splits are scored with `Trainer.predict`. Needs transformers (a test dependency)."""
from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..export.hf_model import hf_config, hf_state_dict
from ..fit import build_datamodule
from ..memory import peak_rss_mib
from ..models.build import build_backbone
from ..runtime import resolve_precision
from ..tasks.finetune import replace_head
from .rows import compose


def padded(pad_id: int):
    """Per-batch right padding, as transformers' DataCollatorWithPadding does (it needs an HF tokenizer)."""
    def collate(rows: list[dict]) -> dict:
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r["input_ids"])] = torch.tensor(r["input_ids"])
            mask[i, : len(r["input_ids"])] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([r["labels"] for r in rows])}
    return collate


def hf_classifier(cfg, backbone, tokenizer, label_names: list[str]):
    """gptft's backbone with a new bias-free head, as transformers' sequence classifier, trainable as gptft's."""
    try:
        from transformers import AutoConfig, AutoModelForSequenceClassification
    except ImportError as err:
        raise ConfigError(f"the spam-trainer row needs transformers ({err}); pip install -e '.[test]'") from None
    replace_head(backbone, nn.Linear(backbone.config.n_embd, len(label_names), bias=False))
    conf = hf_config(backbone, "classifier", tokenizer, label_names)
    model = AutoModelForSequenceClassification.from_config(AutoConfig.for_model(**conf))
    model.load_state_dict(hf_state_dict(backbone, "classifier", "last_token"))
    body = model.transformer if backbone.arch == "gpt2" else model.model
    blocks, norm = (body.h, body.ln_f) if backbone.arch == "gpt2" else (body.layers, body.norm)
    model.requires_grad_(False)
    for module in (*blocks[-int(cfg.finetune.trainable_blocks):], norm, model.score):
        module.requires_grad_(True)
    return model


def run_trainer_row(overrides: list[str], out: Path) -> dict:
    from transformers import Trainer, TrainingArguments

    run_dir = out / "runs" / "spam-trainer"
    cfg = compose(run_dir, overrides)
    torch.manual_seed(cfg.seed)
    backbone, tokenizer = build_backbone(cfg.model)
    dm = build_datamodule(cfg.data, tokenizer, backbone.context_length)
    dm.setup()
    model = hf_classifier(cfg, backbone, tokenizer, dm.label_names)
    del backbone
    limit = dm.max_length
    sets = {s: [{"input_ids": ex["input_ids"][:limit], "labels": ex["label"]} for ex in getattr(dm, f"{s}_set")]
            for s in ("train", "val", "test")}
    bf16 = "bf16" in resolve_precision(str(cfg.trainer.precision), str(cfg.trainer.accelerator))
    args = TrainingArguments(
        output_dir=str(run_dir), per_device_train_batch_size=cfg.data.batch_size,
        per_device_eval_batch_size=cfg.data.batch_size, num_train_epochs=int(cfg.trainer.max_epochs),
        learning_rate=float(cfg.optimizer.lr), weight_decay=float(cfg.optimizer.weight_decay),
        lr_scheduler_type="constant", optim="adamw_torch_fused", bf16=bf16, use_cpu=True, seed=int(cfg.seed),
        dataloader_drop_last=True, save_strategy="no", eval_strategy="no", logging_strategy="no", report_to=[],
        disable_tqdm=True, remove_unused_columns=False)
    trainer = Trainer(model=model, args=args, train_dataset=sets["train"], data_collator=padded(tokenizer.pad_id))
    start = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - start
    trainer.args.dataloader_drop_last = False  # score every example
    accs = {}
    for split, rows in sets.items():
        pred = trainer.predict(rows)
        accs[split] = float((pred.predictions.argmax(-1) == pred.label_ids).mean())
    eval_s = time.perf_counter() - start - train_s
    steps = len(sets["train"]) // cfg.data.batch_size * int(cfg.trainer.max_epochs)
    examples = steps * cfg.data.batch_size
    return {"wall_s": train_s + eval_s, "train_s": train_s, "val_s": 0.0, "eval_s": eval_s, "ckpt_s": 0.0,
            "examples_per_s": examples / train_s, "tokens_per_s": None, "test_acc": accs["test"], "test_loss": None,
            "accs": accs, "dtype": "bf16" if bf16 else "fp32", "peak_rss_mib": peak_rss_mib(),
            "recipe": f"{cfg.trainer.max_epochs} epoch(s), batch {cfg.data.batch_size}, AdamW lr {cfg.optimizer.lr} "
                      f"wd {cfg.optimizer.weight_decay}, last_blocks ({cfg.finetune.trainable_blocks} block), "
                      f"data {cfg.data.path or 'default'}"}
