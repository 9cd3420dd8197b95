"""Build a backbone and its tokenizer from the `model` config group, or rebuild one a checkpoint describes.

ARCHS maps `model.arch` to its two builders; a new architecture is one entry here, not a branch.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields

import torch.nn as nn

from ..errors import CheckpointError, ConfigError
from .tokenizer import Tokenizer


def _gpt2_from_config(model_cfg: Mapping) -> tuple[nn.Module, Tokenizer]:
    from .tokenizer import gpt2_tokenizer
    from .gpt2_weights import load_gpt2

    tokenizer = gpt2_tokenizer()  # first: a missing tokenizer should fail before a download
    model = load_gpt2(model_cfg["size"], pretrained=bool(model_cfg["pretrained"]), checkpoint=model_cfg["checkpoint"],
                      hub_id=model_cfg["hub_id"], dropout=float(model_cfg["dropout"]))
    return model, tokenizer


def _llama_from_config(model_cfg: Mapping) -> tuple[nn.Module, Tokenizer]:
    from .llama_weights import load_llama

    return load_llama(checkpoint=model_cfg["checkpoint"], hub_id=model_cfg["hub_id"],
                      pretrained=bool(model_cfg["pretrained"]),
                      size_config={**model_cfg["shape"], "dropout": float(model_cfg["dropout"])})


def _gpt2_classes():
    from .gpt2 import GPT, GPTConfig

    return GPT, GPTConfig


def _llama_classes():
    from .llama import Llama, LlamaConfig

    return Llama, LlamaConfig


@dataclass(frozen=True)
class Arch:
    from_config: Callable[[Mapping], tuple[nn.Module, Tokenizer]]  # weights as the model config says
    classes: Callable[[], tuple[type, type]]  # (module class, its config dataclass), imported on use


ARCHS = {"gpt2": Arch(_gpt2_from_config, _gpt2_classes), "llama": Arch(_llama_from_config, _llama_classes)}


def build_backbone(model_cfg: Mapping) -> tuple[nn.Module, Tokenizer]:
    arch = model_cfg["arch"]
    if arch not in ARCHS:
        raise ConfigError(f"model.arch={arch!r} is not one of {', '.join(ARCHS)}")
    return ARCHS[arch].from_config(model_cfg)


def config_from_meta(meta: Mapping) -> tuple[type, object]:
    """(module class, its config) for the architecture and shape a checkpoint recorded; refuses unknown ones."""
    arch, shape = meta["arch"], meta["backbone_config"]
    if arch not in ARCHS:
        raise CheckpointError(f"the checkpoint names an unknown backbone architecture {arch!r}; "
                              f"gptft knows {', '.join(ARCHS)}")
    module, config = ARCHS[arch].classes()
    unknown = set(shape) - {f.name for f in fields(config)}
    if unknown:
        raise CheckpointError(f"the checkpoint's {arch} shape has keys {sorted(unknown)} that {config.__name__} "
                              f"does not take")
    return module, config(**shape)


def backbone_from_meta(meta: Mapping) -> nn.Module:
    """A randomly initialised backbone with the shape a checkpoint recorded (its weights come next)."""
    module, config = config_from_meta(meta)
    return module(config)
