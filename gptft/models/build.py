"""Build a backbone and its tokenizer from the `model` config group."""
from __future__ import annotations

from collections.abc import Mapping

import torch.nn as nn

from .tokenizer import Tokenizer


def build_backbone(model_cfg: Mapping) -> tuple[nn.Module, Tokenizer]:
    arch = model_cfg.get("arch", "gpt2")
    if arch == "gpt2":
        from .tokenizer import gpt2_tokenizer
        from .gpt2_weights import load_gpt2

        tokenizer = gpt2_tokenizer()  # first: a missing tokenizer should fail before a download
        model = load_gpt2(
            model_cfg["size"],
            pretrained=bool(model_cfg.get("pretrained", True)),
            checkpoint=model_cfg.get("checkpoint"),
            hub_id=model_cfg.get("hub_id"),
            dropout=float(model_cfg.get("dropout", 0.0)),
        )
        return model, tokenizer
    if arch == "llama":
        from .llama_weights import load_llama

        return load_llama(
            checkpoint=model_cfg.get("checkpoint"),
            hub_id=model_cfg.get("hub_id"),
            pretrained=bool(model_cfg.get("pretrained", True)),
            size_config={**(model_cfg.get("shape") or {}), "dropout": float(model_cfg.get("dropout", 0.0))},
        )
    raise ValueError(f"unknown model.arch {arch!r}; expected 'gpt2' or 'llama'")


def backbone_from_meta(meta: Mapping) -> nn.Module:
    """A randomly initialised backbone with the shape a checkpoint recorded (its weights come next)."""
    arch, shape = meta["arch"], dict(meta["backbone_config"])
    if arch == "gpt2":
        from .gpt2 import GPT, GPTConfig

        return GPT(GPTConfig(**shape))
    if arch == "llama":
        from .llama import Llama, LlamaConfig

        return Llama(LlamaConfig(**shape))
    raise ValueError(f"checkpoint names an unknown backbone architecture {arch!r}")
