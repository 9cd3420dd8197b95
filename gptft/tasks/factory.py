"""Build a task module from a run config, or rebuild one (and its data module) from a saved checkpoint.

Training instantiates `task.module` (a `_partial_` of a gptft task class). The checkpoint then keeps
only data: the task and data module by class name (rebuilt from allow-lists of gptft's own classes,
gptft.registry), their plain constructor values, the backbone's architecture name and shape, the
tokenizer spec, and a reference to the frozen backbone's source (gptft/models/reference.py), which a
small checkpoint (the default) is loaded from. Nothing read from a checkpoint is ever instantiated as a
`_target_` or imported.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import asdict, is_dataclass
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from ..data.base import TextDataModule
from ..data.handoff import TaskData
from ..errors import CheckpointError, ConfigError
from ..models import reference
from ..registry import gptft_subclasses
from .base import FinetuneTask

PLAIN = (str, int, float, bool, type(None))
HYDRA_KEYS = ("_target_", "_partial_", "_args_", "_convert_", "_recursive_")
# what every checkpoint's gptft metadata must hold
REQUIRED = ("task", "task_class", "task_args", "data_class", "data_args", "arch", "backbone_config", "tokenizer",
            "finetune_cfg", *TaskData.STORED)


def task_classes() -> dict[str, type]:
    return gptft_subclasses("gptft.tasks", FinetuneTask)


def data_classes() -> dict[str, type]:
    return gptft_subclasses("gptft.data", TextDataModule)


def _plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)


def _backbone_meta(backbone, tokenizer) -> dict:
    cfg = backbone.config
    return {
        "arch": backbone.arch,
        "backbone_config": asdict(cfg) if is_dataclass(cfg) else dict(cfg),
        "tokenizer": tokenizer.spec(),
    }


def check_plain(value, where: str, error=CheckpointError) -> None:
    """Refuse anything but plain data (str, numbers, bools, None, lists, string-keyed dicts), and any
    Hydra instantiation key: what a checkpoint holds is read as values, never as code to build."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise error(f"{where} has a non-string key {key!r}")
            if key in HYDRA_KEYS:
                raise error(f"{where}.{key} is not allowed: checkpoint metadata is plain data, never an object to "
                            f"instantiate")
            check_plain(item, f"{where}.{key}", error)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_plain(item, f"{where}[{i}]", error)
    elif not isinstance(value, PLAIN):
        raise error(f"{where} holds a {type(value).__name__}; checkpoint metadata may hold only plain values")


def _checked_args(cls: type, args: dict, where: str, skip: tuple[str, ...]) -> dict:
    """`args` if every key is a keyword `cls` takes (other than `skip`, which gptft passes itself)."""
    params = inspect.signature(cls).parameters
    known = {n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)} - set(skip)
    unknown = sorted(set(args) - known)
    if unknown:
        raise CheckpointError(f"{where} has keys {unknown} that {cls.__name__} does not take; "
                              f"it was not written by this version of gptft")
    return args


# ---- training --------------------------------------------------------------------------------
def make_task(cfg: DictConfig, backbone, tokenizer, dm) -> FinetuneTask:
    """The `task.module` partial, given the backbone, the data module's hand-off and the recipe."""
    module = hydra.utils.instantiate(cfg.task.module, _convert_="all")
    if not isinstance(module, functools.partial) or not isinstance(module.func, type):
        raise ConfigError("task.module must name a task class with _partial_: true (the backbone and data "
                          "are passed in code)")
    cls, args = module.func, dict(module.keywords)
    if task_classes().get(cls.__name__) is not cls:
        raise ConfigError(f"task.module._target_ {cls.__module__}.{cls.__name__} is not a gptft task class (a "
                          f"FinetuneTask subclass in gptft/tasks); only those can be rebuilt from a checkpoint")
    if data_classes().get(type(dm).__name__) is not type(dm):
        raise ConfigError(f"data._target_ {type(dm).__name__} is not a gptft data module (in gptft/data)")
    check_plain(args, "task.module", ConfigError)
    data_args = {k: v for k, v in _plain(cfg.data).items() if k not in HYDRA_KEYS}
    if data_args["path"]:  # evaluate may run from another folder
        data_args["path"] = str(Path(data_args["path"]).expanduser().resolve())
    handoff = dm.task_data(int(cfg.task.sample_prompts))
    meta = {"task": cfg.task.name, "task_class": cls.__name__, "task_args": args,
            "data_class": type(dm).__name__, "data_args": data_args, **handoff.stored(),
            **_backbone_meta(backbone, tokenizer), "model": _plain(cfg.model), "finetune_cfg": _plain(cfg.finetune),
            "backbone_ref": reference.describe(backbone, cfg.seed, None if cfg.model.checkpoint else cfg.model.hub_id)}
    return module(backbone, data=handoff, tokenizer=tokenizer, name=cfg.task.name, finetune=_plain(cfg.finetune),
                  meta=meta, optimizer=hydra.utils.instantiate(cfg.optimizer),
                  scheduler=hydra.utils.instantiate(cfg.scheduler), test_splits=tuple(cfg.task.final_splits),
                  checkpoint_full=bool(cfg.checkpoint.full))


# ---- from a checkpoint ---------------------------------------------------------------------------
def checked_meta(path: Path, meta) -> dict:
    """The checkpoint's gptft metadata if it is plain data with every key a rebuild needs."""
    if not isinstance(meta, dict) or not meta:
        raise CheckpointError(f"{path} is not a gptft checkpoint (no 'gptft' metadata); "
                              f"train one with python -m gptft.train")
    check_plain(meta, f"{path}: gptft metadata")
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise CheckpointError(f"{path} lacks {missing} in its gptft metadata (written by an older gptft?); "
                              f"retrain it with python -m gptft.train")
    return meta


def _lookup(registry: dict[str, type], name, path: Path, kind: str) -> type:
    if name not in registry:
        raise CheckpointError(f"{path} names {kind} {name!r}, which is not one of gptft's: {', '.join(sorted(registry))}")
    return registry[name]


def load_checkpoint(path: str | Path, expect_task: str | type | None = None):
    """(task module in eval mode, tokenizer, meta) from a gptft checkpoint, with no download. A small
    checkpoint's frozen tensors are read from the source its reference names, which must be unchanged.

    expect_task: a task name (meta "task") or a task class the checkpoint's task must be."""
    from ..models.build import backbone_from_meta
    from ..models.checkpoint_files import read_torch_file
    from ..models.tokenizer import tokenizer_from_spec

    path = Path(path)
    ckpt = read_torch_file(path, "ckpt")
    meta = checked_meta(path, ckpt.get("gptft") if isinstance(ckpt, dict) else None)
    cls = _lookup(task_classes(), meta["task_class"], path, "the task class")
    wrong = (meta["task"] != expect_task) if isinstance(expect_task, str) else (
        expect_task is not None and not issubclass(cls, expect_task))
    if wrong:
        want = expect_task if isinstance(expect_task, str) else expect_task.__name__
        raise CheckpointError(
            f"{path} is a {meta['task']!r} checkpoint, but this command needs a {want!r} one "
            f"(train it with python -m gptft.train task={want})"
        )
    args = _checked_args(cls, meta["task_args"], f"{path}: task_args",
                         skip=("backbone", "data", "tokenizer", "name", "finetune", "meta", "optimizer", "scheduler",
                               "checkpoint_full"))
    tokenizer = tokenizer_from_spec(meta["tokenizer"])
    full = meta.get("frozen_included", True)  # checkpoints older than the reference hold everything
    backbone = backbone_from_meta(meta) if full else reference.rebuild(meta, path)
    task = cls(backbone, data=TaskData.from_stored(meta), tokenizer=tokenizer, name=meta["task"],
               finetune={**meta["finetune_cfg"], "cache_prefix": False}, meta=meta, **args)
    state = ckpt.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} has no state_dict; it is not a gptft checkpoint")
    damaged = f"{path} does not fit its own metadata, it is damaged or from another gptft"
    frozen = set() if full else set(task.frozen_state_dict())  # already in place: the rebuilt backbone's
    try:
        fits = task.load_state_dict(state, strict=False)
    except RuntimeError as err:  # a tensor of the wrong shape
        raise CheckpointError(f"{damaged}: {str(err).splitlines()[-1].strip()}") from None
    missing = [k for k in fits.missing_keys if k not in frozen]
    if missing or fits.unexpected_keys:
        raise CheckpointError(f"{damaged}: missing {missing[:3]}, unexpected {fits.unexpected_keys[:3]}")
    task.merge_adapters()  # LoRA: predictions run on merged weights
    return task.eval(), tokenizer, meta


def datamodule_from_meta(meta: dict, tokenizer, context_length: int, path: Path | str = "the checkpoint"):
    """The data module a checkpoint was trained with (same file, split and prompt style), from the
    allow-list of gptft data modules and the plain values it recorded."""
    path = Path(path)
    meta = checked_meta(path, meta)
    cls = _lookup(data_classes(), meta["data_class"], path, "the data module")
    args = _checked_args(cls, dict(meta["data_args"]), f"{path}: data_args", skip=("tokenizer",))
    return cls(tokenizer=tokenizer, **{**args, "max_length": args.get("max_length") or context_length})
