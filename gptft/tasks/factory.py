"""Build a task module from a run config, or rebuild one from a saved checkpoint."""
from __future__ import annotations

from dataclasses import asdict, is_dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from ..errors import GptftError
from .classifier import ClassifierTask
from .instruct import InstructTask


def _plain(node):
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node or {})


def _backbone_meta(backbone, tokenizer) -> dict:
    cfg = backbone.config
    return {
        "arch": backbone.arch,
        "backbone_config": asdict(cfg) if is_dataclass(cfg) else dict(cfg),
        "tokenizer": tokenizer.spec(),
    }


def make_task(cfg: DictConfig, backbone, tokenizer, dm):
    data_cfg = _plain(cfg.data)
    if data_cfg.get("path"):  # evaluate may run from another folder
        data_cfg["path"] = str(Path(data_cfg["path"]).expanduser().resolve())
    meta = {**_backbone_meta(backbone, tokenizer), "model": _plain(cfg.model), "finetune_cfg": _plain(cfg.finetune),
            "data_cfg": data_cfg}
    common = dict(meta=meta, finetune=_plain(cfg.finetune), optimizer=_plain(cfg.optimizer))
    if cfg.task.name == "spam":
        meta["pad_width"] = dm.pad_width  # classify must pad as training did (matters for pooling=last)
        return ClassifierTask(backbone, label_names=dm.label_names, pooling=cfg.pooling,
                              positive_index=dm.positive_index, **common)
    if cfg.task.name == "instruct":
        samples = [(dm.format_prompt(e), dm.encode_prompt(e)) for e in dm.val_entries[: int(cfg.task.sample_prompts)]]
        meta["prompt_style"] = dm.prompt_style.name
        return InstructTask(
            backbone, targets_only=bool(cfg.task.targets_only), sample_prompts=samples,
            eot_id=tokenizer.eot_id, decode=tokenizer.decode, **common,
        )
    raise GptftError(f"unknown task.name={cfg.task.name!r}")


def load_checkpoint(path: str | Path, expect_task: str | None = None):
    """(task module in eval mode, tokenizer, meta) from a gptft checkpoint, with no download."""
    from ..models.build import backbone_from_meta
    from ..models.tokenizer import tokenizer_from_spec

    path = Path(path)
    if not path.is_file():
        raise GptftError(f"checkpoint {path} does not exist; pass ckpt=PATH to a best.ckpt or last.ckpt")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise GptftError(f"{path} is not a readable PyTorch checkpoint ({err.__class__.__name__}: {err})") from err
    meta = ckpt.get("gptft") if isinstance(ckpt, dict) else None
    if not meta:
        raise GptftError(f"{path} is not a gptft checkpoint (no 'gptft' metadata); train one with python -m gptft.train")
    if expect_task and meta["task"] != expect_task:
        raise GptftError(
            f"{path} is a {meta['task']!r} checkpoint, but this command needs a {expect_task!r} one "
            f"(train it with python -m gptft.train task={expect_task})"
        )
    tokenizer = tokenizer_from_spec(meta["tokenizer"])
    backbone = backbone_from_meta(meta)
    common = dict(meta=meta, finetune={**meta["finetune_cfg"], "cache_prefix": False}, optimizer={})
    if meta["task"] == "spam":
        task = ClassifierTask(backbone, label_names=meta["label_names"], pooling=meta["pooling"],
                              positive_index=meta.get("positive_index"), **common)
    else:
        task = InstructTask(backbone, eot_id=tokenizer.eot_id, decode=tokenizer.decode, **common)
    task.load_state_dict(ckpt["state_dict"])
    task.meta = meta
    return task.eval(), tokenizer, meta
