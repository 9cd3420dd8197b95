"""The Python API behind `gptft.finetune`, `gptft.load` and `gptft.base` (gptft/__init__.py), and the code the
commands share with it: the same config, run folder, checkpoints and scores as the command line."""
from __future__ import annotations

import contextlib
import copy
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, read_write

from .atomic import write_text
from .compose import compose_train
from .errors import CheckpointError, ConfigError, GptftError
from .quiet import quiet

LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's job log format, as in the CLI's train.log


@dataclass(frozen=True)
class Run:
    """A finished training run: `metrics` is its metrics.json, `dir` its folder (the command's layout)."""

    dir: Path
    metrics: dict = field(repr=False)
    best_ckpt: Path | None
    last_ckpt: Path | None

    def load(self) -> "Model":
        """The best checkpoint, ready to classify, generate or evaluate."""
        return load(self.best_ckpt)


def _job_config(cfg: DictConfig, folder: Path) -> tuple[DictConfig, DictConfig]:
    """(`cfg` without its hydra node, as .hydra/config.yaml keeps it; the same with run_dir resolved, as the
    command resolves it through Hydra's runtime) for a run in `folder`."""
    with read_write(cfg.hydra.runtime):  # a declared key of Hydra's own schema
        cfg.hydra.runtime.output_dir = str(folder)
    # a copy of every node but hydra (interpolations unresolved), still in struct mode
    job = OmegaConf.create(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), flags={"struct": True})
    before = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(cfg)
    try:
        run_dir = job.run_dir
    finally:
        HydraConfig.instance().cfg = before
    resolved = copy.deepcopy(job)
    resolved.run_dir = run_dir
    return job, resolved


@contextlib.contextmanager
def _job_log(folder: Path):
    """gptft's log lines to stdout and to <run>/train.log during a run, as Hydra's job logging does for the command."""
    logger = logging.getLogger("gptft")
    handlers = [logging.StreamHandler(sys.stdout), logging.FileHandler(folder / "train.log")]
    saved = logger.level, logger.propagate
    for h in handlers:
        h.setFormatter(logging.Formatter(LOG_FORMAT))
        logger.addHandler(h)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # a notebook's own root handlers would print every line twice
    try:
        yield
    finally:
        for h in handlers:
            logger.removeHandler(h)
            h.close()
        logger.level, logger.propagate = saved


def finetune(*overrides: str, callbacks: tuple = ()) -> Run:
    from .checks import validate
    from .run_dir import claim, release
    from .fit import run

    quiet()
    cfg = compose_train([*overrides, "hydra.mode=RUN"], hydra_node=True)  # the mode Hydra's command line adds
    folder = Path(str(cfg.hydra.run.dir)).resolve()
    job, resolved = _job_config(cfg, folder)
    validate(resolved)  # before anything is written, as the command's run guard
    claim(folder, "hydra.run.dir")
    try:
        hydra_dir = folder / cfg.hydra.output_subdir
        write_text(hydra_dir / "config.yaml", OmegaConf.to_yaml(job))
        write_text(hydra_dir / "hydra.yaml", OmegaConf.to_yaml(OmegaConf.masked_copy(cfg, "hydra")))
        write_text(hydra_dir / "overrides.yaml", OmegaConf.to_yaml(cfg.hydra.overrides.task))
        with _job_log(folder):
            metrics, run_dir = run(resolved, tuple(callbacks))
    finally:  # a notebook lives on: the finished run's folder is free again
        release(folder)
        release(Path(resolved.run_dir))
    path = lambda p: Path(p) if p else None  # noqa: E731
    return Run(run_dir, metrics, path(metrics["best_ckpt"]), path(metrics["last_ckpt"]))


def load(ckpt: str | Path, expect_task=None) -> "Model":
    from .tasks.factory import load_checkpoint

    quiet()
    task, tokenizer, meta = load_checkpoint(ckpt, expect_task=expect_task)
    return Model(task.backbone, tokenizer, task=task, meta=meta, ckpt=Path(ckpt))


def base(*overrides: str) -> "Model":
    from .checks import validate
    from .models.build import build_backbone

    quiet()
    cfg = compose_train(["task=instruct", *overrides, "run_dir=."])
    validate(cfg)
    torch.manual_seed(cfg.seed)  # random weights (model.pretrained=false) are the ones train starts from
    backbone, tokenizer = build_backbone(cfg.model)
    return Model(backbone.eval(), tokenizer, cfg=cfg)


class Model:
    """A trained checkpoint (`gptft.load`) or an untouched base model (`gptft.base`)."""

    def __init__(self, backbone, tokenizer, *, task=None, meta: dict | None = None, ckpt: Path | None = None,
                 cfg: DictConfig | None = None):
        self.backbone, self.tokenizer, self.task, self.meta, self.ckpt, self.cfg = backbone, tokenizer, task, meta, ckpt, cfg

    def __repr__(self) -> str:
        if self.ckpt is None:
            return f"gptft.Model(base model {self.cfg.model.name})"
        return f"gptft.Model({self.meta['task']} checkpoint {self.ckpt})"

    @property
    def label_names(self) -> list[str] | None:
        return None if self.meta is None else self.meta["label_names"]

    def _wrong(self, needs: str) -> GptftError:
        if self.ckpt is None:
            return ConfigError(f"a base model has no {needs} head; fine-tune one: gptft.finetune('task={needs}', ...)")
        return CheckpointError(f"{self.ckpt} is a {self.meta['task']!r} checkpoint, but this needs a {needs!r} one "
                               f"(train it with python -m gptft.train task={needs})")

    def classify(self, texts: str | list[str], batch_size: int = 16) -> list[dict]:
        """One dict per text: `label`, `probs` ({label: probability}) and whether the text was `truncated`."""
        from .classify import classify
        from .tasks.classifier import ClassifierTask

        if not isinstance(self.task, ClassifierTask):
            raise self._wrong("spam")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size}")
        return classify(self.task, self.tokenizer, [texts] if isinstance(texts, str) else list(texts), batch_size)

    def prompt_style(self, name: str | None = None):
        """The named style, else a checkpoint's own; None (a base model): the prompt is continued as raw text."""
        from .data.prompts import get_prompt_style

        name = name or (self.meta or {}).get("prompt_style")
        return get_prompt_style(name) if name else None

    def generate_ids(self, prompt: str, input: str = "", *, max_new_tokens: int = 256, temperature: float = 0.0,
                     top_k: int | None = None, top_p: float | None = None, seed: int = 123,
                     prompt_style: str | None = None, use_cache: bool = True) -> list[int]:
        from .generate import respond

        if self.meta is not None and self.meta["task"] != "instruct":
            raise self._wrong("instruct")
        args = SimpleNamespace(prompt=prompt, input=input, max_new_tokens=max_new_tokens, temperature=temperature,
                               top_k=top_k, top_p=top_p, seed=seed, no_cache=not use_cache)
        return respond(self.backbone, self.tokenizer, self.prompt_style(prompt_style), args)

    def generate(self, prompt: str, input: str = "", **options) -> str:
        """The response to `prompt` (greedy unless temperature > 0); options as `python -m gptft.generate`'s."""
        return self.tokenizer.decode(self.generate_ids(prompt, input, **options)).strip()

    def evaluate(self, out: str | Path | None = None, *, max_new_tokens: int = 256, limit: int | None = None,
                 device: str = "auto", prompt_style: str | None = None, judge: dict | None = None,
                 split: str = "test") -> dict:
        """scores.json's content, as `python -m gptft.evaluate`: the split's (test, or val) metrics and, for
        instruction models, responses.json, exact match and ROUGE-L (a base model: the zero-shot baseline)."""
        from .evaluation import command

        args = SimpleNamespace(ckpt=self.ckpt, split=split, out=out, max_new_tokens=max_new_tokens, limit=limit, device=device,
                               prompt_style=prompt_style,
                               judge=SimpleNamespace(**{**command.DEFAULTS["judge"], **(judge or {})}))
        command.check_args(args, base=self.ckpt is None)
        if self.ckpt is not None:
            if prompt_style not in (None, self.meta["prompt_style"]):
                raise ConfigError(f"prompt_style={prompt_style}: a checkpoint is evaluated in the prompt style it "
                                  f"was trained with ({self.meta['prompt_style']}); prompt_style is for base models")
            dm = command.data_module(self.meta, self.tokenizer, self.backbone.context_length, self.ckpt)
            default = command.default_out_dir(self.ckpt)
            return command.evaluate(self.task, self.tokenizer, self.meta, dm, args,
                                    Path(out) if out else default.with_name(default.name + command.suffix(split)))
        task, dm = self._base_task(prompt_style)
        where = Path(out) if out else (Path("outputs") / task.meta["task"] / "zero-shot" /
                                       (self.cfg.model.name + command.suffix(split)))
        return command.evaluate(task, self.tokenizer, task.meta, dm, args, where)

    def _base_task(self, prompt_style: str | None):
        """The untouched backbone as the task it would be fine-tuned into, with that task's data module."""
        from .tasks.factory import make_task
        from .fit import build_datamodule

        cfg = copy.deepcopy(self.cfg)
        cfg.finetune.cache_prefix = False  # nothing trains: no frozen-prefix cache to fill
        cfg.task.final_splits = ["test"]  # the one split evaluate scores, as a loaded checkpoint's task
        if prompt_style:
            if "prompt_style" not in cfg.data:
                raise ConfigError(f"prompt_style={prompt_style}: task={cfg.task.name} has no prompt style")
            cfg.data.prompt_style = prompt_style
        dm = build_datamodule(cfg.data, self.tokenizer, self.backbone.context_length)
        dm.setup()
        return make_task(cfg, self.backbone, self.tokenizer, dm).eval(), dm
