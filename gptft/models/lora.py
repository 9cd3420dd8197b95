"""LoRA adapters on a gptft backbone: PEFT's `inject_adapter_in_model` on gptft's own modules, and their merge.

`lora` settings (plain values, also stored in every checkpoint): r, alpha, dropout, targets, blocks, train_head.
A target is a group every backbone names (`attention`, `mlp`: all linear projections of the block's attention
or MLP) or a path inside a block (`attn.c_attn`, `self_attn.q_proj`, `mlp.down_proj`): every nn.Linear at or
below it is adapted. peft is imported only here, and only when adapters are made (it imports transformers).
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn as nn

from ..errors import ConfigError

ADAPTER_NAME = "default"


def lora_boundary(settings: Mapping, n_blocks: int) -> int:
    """Index of the lowest adapted block: `lora.blocks` is `all` or the number of blocks from the top."""
    blocks = settings["blocks"]
    if blocks == "all":
        return 0
    if isinstance(blocks, bool) or not isinstance(blocks, int) or not 1 <= blocks <= n_blocks:
        raise ConfigError(f"lora.blocks={blocks} is out of range: the model has {n_blocks} blocks; "
                          f"use all or 1..{n_blocks} (the top N blocks)")
    return n_blocks - blocks


def _check_numbers(settings: Mapping) -> None:
    r, alpha, dropout = settings["r"], settings["alpha"], settings["dropout"]
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ConfigError(f"lora.r={r} must be a positive integer (the adapters' rank, e.g. 8)")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ConfigError(f"lora.alpha={alpha} must be a number > 0 (the update is scaled by alpha / r)")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ConfigError(f"lora.dropout={dropout} must be a number in [0, 1)")


def linear_paths(block: nn.Module) -> list[str]:
    """Names of the nn.Linear modules inside one block (the same in every block)."""
    return [name for name, m in block.named_modules() if isinstance(m, nn.Linear)]


def resolve_targets(backbone: nn.Module, targets) -> list[str]:
    """The block-relative paths of the linear layers that `targets` names, in the block's own order."""
    if isinstance(targets, str) or not targets:
        raise ConfigError(f"lora.targets={targets} must be a non-empty list, e.g. [attention, mlp]")
    groups = dict(backbone.lora_groups)
    paths = linear_paths(backbone.blocks[0])
    chosen = set()
    for target in targets:
        prefix = groups.get(target, target)
        hits = [p for p in paths if p == prefix or p.startswith(f"{prefix}.")]
        if not hits:
            raise ConfigError(f"lora.targets: {target!r} names no linear layer of a {backbone.arch} block; "
                              f"use {', '.join(groups)} or any of {', '.join(paths)}")
        chosen.update(hits)
    return [p for p in paths if p in chosen]


def inject_lora(backbone: nn.Module, settings: Mapping) -> int:
    """Add zero-initialised adapters (B = 0: the model starts exactly at the base model) to the targeted
    layers of the adapted blocks, freeze all else but the head when `train_head`; return the lowest adapted block."""
    _check_numbers(settings)
    boundary = lora_boundary(settings, len(backbone.blocks))
    paths = resolve_targets(backbone, settings["targets"])
    prefix = next(name for name, m in backbone.named_modules() if m is backbone.blocks)
    names = [f"{prefix}.{i}.{p}" for i in range(boundary, len(backbone.blocks)) for p in paths]

    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as err:
        raise ConfigError(f"finetune.mode=lora needs the peft package ({err}); install it: "
                          f"pip install peft (or the extra: pip install -e '.[lora]')") from None

    config = LoraConfig(r=settings["r"], lora_alpha=settings["alpha"], lora_dropout=float(settings["dropout"]),
                        target_modules=names, bias="none")
    backbone.requires_grad_(False)
    inject_adapter_in_model(config, backbone, adapter_name=ADAPTER_NAME)  # marks only the adapters trainable
    backbone.head.requires_grad_(bool(settings["train_head"]))
    return boundary


def has_adapters(module: nn.Module) -> bool:
    return any(f".lora_A.{ADAPTER_NAME}." in name for name, _ in module.named_parameters())


@torch.no_grad()
def merge_lora(module: nn.Module) -> int:
    """Fold every adapter into its base weight (W + B A alpha / r) and put the plain base layer back in its
    place, so predictions run at the base model's speed and the state dict has the base model's names.
    Returns the number of layers merged."""
    if not has_adapters(module):
        return 0
    from peft.tuners.tuners_utils import BaseTunerLayer

    adapted = [(name, m) for name, m in module.named_modules() if isinstance(m, BaseTunerLayer)]
    for name, layer in adapted:
        layer.merge(adapter_names=[ADAPTER_NAME])
        parent_name, _, child = name.rpartition(".")
        setattr(module.get_submodule(parent_name) if parent_name else module, child, layer.get_base_layer())
    return len(adapted)
