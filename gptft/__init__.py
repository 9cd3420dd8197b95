"""gptft's Python API: the command line's training, checkpoints and scores, callable from Python (a notebook).

    run = gptft.finetune("task=spam", "model=gpt2-tiny", "trainer.max_epochs=1")   # python -m gptft.train ...
    run.metrics["splits"]["test"]["acc"], run.dir, run.best_ckpt
    model = gptft.load(run.best_ckpt)             # or run.load()
    model.classify(["Free entry! Call now", "See you at 6"])   # [{"label", "probs", "truncated"}, ...]
    gptft.load(instruct_ckpt).generate("Name three primary colors.")
    gptft.base("model=smollm2-135m-instruct", "model.checkpoint=...").evaluate(prompt_style="chatml", limit=5)

Bad input raises the GptftError subclass the commands print as `error: ...`. `import gptft` stays cheap: torch,
Lightning and Hydra are imported on the first call.
"""
from __future__ import annotations

import os

# torch's CPU allocator backs buffers of 2 MB and more with transparent huge pages when this is set: each step's
# fresh weight casts, gradients and logits then take 512x fewer page faults (README "Speed", third round). torch
# reads it at its first large allocation, so it is set on import; THP_MEM_ALLOC_ENABLE=0 turns it off.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from .errors import CheckpointError, ConfigError, GptftError

__all__ = ["finetune", "load", "base", "Run", "Model", "GptftError", "ConfigError", "CheckpointError"]


def finetune(*overrides: str, callbacks: tuple = ()) -> "Run":
    """Train as `python -m gptft.train <overrides>` does (the same config, run folder, metrics.json and printed
    summary); `callbacks`: extra Lightning callbacks. Returns the Run (metrics, folder, checkpoints)."""
    from .api import finetune as run

    return run(*overrides, callbacks=callbacks)


def load(ckpt) -> "Model":
    """A checkpoint written by a run (best.ckpt), to classify, generate or evaluate with."""
    from .api import load as from_file

    return from_file(ckpt)


def base(*overrides: str) -> "Model":
    """The untouched model `finetune(*overrides)` would start from (`model=...`, `model.checkpoint=...`): for
    generate, and evaluate as the zero-shot baseline of the instruction task."""
    from .api import base as untouched

    return untouched(*overrides)


def __getattr__(name: str):
    if name in ("Run", "Model"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'gptft' has no attribute {name!r}")
