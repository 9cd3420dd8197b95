"""`python -m gptft.evaluate ckpt=PATH`: score a checkpoint on its test split (or `split=val`, to choose a recipe by
these scores); `model=...` instead of `ckpt` scores the untouched base model (the zero-shot baseline) the same way.

Every task: its own test metrics (the task's test step, as after training). Instruction models also
answer every test entry greedily: responses.json (for reading by eye), exact match, ROUGE-L F1 and,
optionally, an LLM judge's 0-100 score. All scores go to scores.json.
"""
from __future__ import annotations

import sys
import time
from datetime import datetime
from pathlib import Path

import torch

from ..atomic import write_json
from ..cli_args import command, parse
from ..compose import split_model_args
from ..errors import CheckpointError, ConfigError, GptftError
from ..tasks.factory import datamodule_from_meta
from ..tasks.instruct import InstructTask
from .judge import run_judge
from .report import summary
from .responses import generate_responses
from .scoring import test_metrics
from .text_metrics import text_scores

USAGE = """usage: python -m gptft.evaluate (ckpt=PATH | model=NAME [model.<key>=...] [prompt_style=null])
         [split=test] [out=DIR] [max_new_tokens=256] [limit=null] [device=auto] [judge.enabled=false]
         [judge.api=ollama]
         [judge.url=http://localhost:11434] [judge.model=llama3] [judge.api_key=null] [judge.timeout=120]
  ckpt            a gptft checkpoint (instruct or spam), e.g. outputs/instruct/<time>/checkpoints/best.ckpt
  model           instead of ckpt: a base model, untouched (no fine-tuning), chosen with the keys of
                  python -m gptft.train (model=NAME, model.checkpoint=PATH, ...), on the instruction test split:
                  the zero-shot baseline to read fine-tuned results against
  prompt_style    a base model's prompt format: alpaca (null) | phi3 | chatml (a checkpoint keeps its own)
  split           test | val: the validation split, to choose between recipes without reading the test split
  out             output folder; default <run folder>/eval (a base model: outputs/instruct/zero-shot/<model
                  name>), with -val appended for split=val. Existing results there are never
                  overwritten: the new ones go to a timestamped subfolder instead
  max_new_tokens  generation budget per response (instruct)
  limit           generate for the first N test entries only (instruct; the test metrics always use all)
  device          auto (cuda when available) | cpu | cuda
  judge.*         an LLM server scoring each response 0-100 (instruct; off by default): judge.api=ollama
                  (Ollama's /api/chat) or openai (any OpenAI-compatible server, e.g. python -m gptft.serve;
                  judge.url its root, judge.api_key its key if it needs one)"""

DEFAULTS = {
    "ckpt": None, "split": "test", "out": None, "max_new_tokens": 256, "limit": None, "device": "auto", "prompt_style": None,
    "judge": {"enabled": False, "api": "ollama", "url": "http://localhost:11434", "model": "llama3",
              "api_key": None, "timeout": 120.0},
}
TYPES = {"limit": int, "judge.api_key": str}
RESULT_FILES = ("responses.json", "scores.json")
SPLITS = ("test", "val")


def default_out_dir(ckpt: Path) -> Path:
    """<run>/eval for <run>/checkpoints/X.ckpt; next to the file for a checkpoint kept elsewhere."""
    ckpt = ckpt.resolve()
    run = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    return run / "eval"


def suffix(split: str) -> str:
    """What a default output folder's name gets for `split`: nothing for test, -val for val."""
    return "" if split == "test" else f"-{split}"


def fresh_out_dir(out: Path) -> Path:
    """`out`, or a new timestamped subfolder of it when it already holds results (never overwrite)."""
    if not any((out / name).exists() for name in RESULT_FILES):
        return out
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    candidate, k = out / stamp, 1
    while candidate.exists():
        candidate, k = out / f"{stamp}_{k}", k + 1
    return candidate


def data_module(meta: dict, tokenizer, context_length: int, ckpt: str):
    """The data module the checkpoint was trained with (same file, split and prompt style), set up: rebuilt
    from gptft's allow-list and plain values, so nothing in a checkpoint runs as code."""
    try:  # say which stage failed
        dm = datamodule_from_meta(meta, tokenizer, context_length, path=ckpt)
        dm.setup()
    except (KeyError, OSError, GptftError) as err:  # e.g. the data file is gone
        raise CheckpointError(f"cannot rebuild the test split of {ckpt}: {err}") from err
    return dm


def check_args(args, base: bool = False) -> None:
    """`base`: a base model is evaluated, not a checkpoint."""
    if not args.ckpt and not base:
        raise ConfigError(f"give ckpt=PATH, or model=NAME for a base model\n\n{USAGE}")
    if args.split not in SPLITS:
        raise ConfigError(f"split must be {' or '.join(SPLITS)}, got {args.split!r}")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"limit must be null or a positive integer, got {args.limit!r}")
    if args.max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be a positive integer, got {args.max_new_tokens!r}")
    if args.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device must be auto, cpu or cuda, got {args.device!r}")
    if args.judge.api not in ("ollama", "openai"):
        raise ConfigError(f"judge.api must be ollama or openai, got {args.judge.api!r}")


def generation_scores(task, tokenizer, dm, args, device: str, out: Path) -> tuple[dict, dict]:
    """(generation scores, judge summary); writes responses.json as soon as the responses exist."""
    entries = getattr(dm, f"{args.split}_entries")[: args.limit]
    task.to(device)
    records, prompts, too_long = generate_responses(task.backbone, tokenizer, dm.prompt_style, entries,
                                                    args.max_new_tokens)
    write_json(out / "responses.json", records)  # before the judge, so a failing judge never loses them
    scores = {"n": len(records), **text_scores([r["output"] for r in records], [r["model_response"] for r in records]),
              "max_new_tokens": args.max_new_tokens, "prompt_style": dm.prompt_style.name,
              "prompts_too_long": too_long}
    judge = {"enabled": False}
    if args.judge.enabled:
        judge = run_judge(records, prompts, args.judge)
        if "error" in judge:
            print(judge["error"], flush=True)
        write_json(out / "responses.json", records)  # now with each judge_score
    return scores, judge


def evaluate(task, tokenizer, meta: dict, dm, args, out: Path) -> dict:
    """Score `task` on `dm`'s split `args.split` (test or val) into a fresh `out`; scores.json's content. `meta`: the checkpoint's (or
    the base model's) metadata; args.ckpt None: a base model, named in scores.json by its model config."""
    device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    out = fresh_out_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    source = {"checkpoint": str(Path(args.ckpt).resolve())} if args.ckpt else {"checkpoint": None,
                                                                               "base_model": meta["model"]}
    split = args.split
    scores = {"task": meta["task"], **source, "split": split,
              split: test_metrics(task, dm.eval_dataloader(split), device, split)}
    if meta.get("label_names"):
        names, positive = meta["label_names"], meta.get("positive_index")
        # binary: F1 of the positive class (e.g. spam); more classes: macro F1 (as the task computes it)
        scores.update(label_names=names, f1_of=names[positive] if positive is not None else "macro")
    if isinstance(task, InstructTask):
        scores["generation"], scores["judge"] = generation_scores(task, tokenizer, dm, args, device, out)
    scores["elapsed_s"] = round(time.perf_counter() - start, 1)
    write_json(out / "scores.json", scores)
    print(summary(scores, out), flush=True)
    return scores


@command
def main(argv: list[str] | None = None) -> dict:
    from ..api import base, load

    model_args, argv = split_model_args(sys.argv[1:] if argv is None else argv)
    args = parse(DEFAULTS, USAGE, argv, TYPES)
    check_args(args, base=bool(model_args))
    if args.ckpt and model_args:
        raise ConfigError(f"{' '.join(model_args)}: a checkpoint (ckpt=) brings its own model; give one or the other")
    model = load(args.ckpt) if args.ckpt else base(*model_args)
    return model.evaluate(args.out, max_new_tokens=args.max_new_tokens, limit=args.limit, device=args.device,
                          prompt_style=args.prompt_style, judge=vars(args.judge), split=args.split)
