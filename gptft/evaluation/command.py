"""`python -m gptft.evaluate ckpt=PATH`: score a checkpoint on its test split.

Every task: its own test metrics (the task's test step, as after training). Instruction models also
answer every test entry greedily: responses.json (for reading by eye), exact match, ROUGE-L F1 and,
optionally, an LLM judge's 0-100 score. All scores go to scores.json.
"""
from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import torch

from ..atomic import write_json
from ..cli_args import command, parse
from ..errors import CheckpointError, ConfigError, GptftError
from ..tasks.factory import datamodule_from_meta, load_checkpoint
from ..tasks.instruct import InstructTask
from .judge import run_judge
from .report import summary
from .responses import generate_responses
from .scoring import test_metrics
from .text_metrics import text_scores

USAGE = """usage: python -m gptft.evaluate ckpt=PATH [out=DIR] [max_new_tokens=256] [limit=null] [device=auto]
         [judge.enabled=false] [judge.api=ollama] [judge.url=http://localhost:11434] [judge.model=llama3]
         [judge.api_key=null] [judge.timeout=120]
  ckpt            a gptft checkpoint (instruct or spam), e.g. outputs/instruct/<time>/checkpoints/best.ckpt
  out             output folder; default <run folder>/eval. Existing results there are never
                  overwritten: the new ones go to a timestamped subfolder instead
  max_new_tokens  generation budget per response (instruct)
  limit           generate for the first N test entries only (instruct; the test metrics always use all)
  device          auto (cuda when available) | cpu | cuda
  judge.*         an LLM server scoring each response 0-100 (instruct; off by default): judge.api=ollama
                  (Ollama's /api/chat) or openai (any OpenAI-compatible server, e.g. python -m gptft.serve;
                  judge.url its root, judge.api_key its key if it needs one)"""

DEFAULTS = {
    "ckpt": None, "out": None, "max_new_tokens": 256, "limit": None, "device": "auto",
    "judge": {"enabled": False, "api": "ollama", "url": "http://localhost:11434", "model": "llama3",
              "api_key": None, "timeout": 120.0},
}
TYPES = {"limit": int, "judge.api_key": str}
RESULT_FILES = ("responses.json", "scores.json")


def default_out_dir(ckpt: Path) -> Path:
    """<run>/eval for <run>/checkpoints/X.ckpt; next to the file for a checkpoint kept elsewhere."""
    ckpt = ckpt.resolve()
    run = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    return run / "eval"


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
    dm = datamodule_from_meta(meta, tokenizer, context_length, path=ckpt)
    dm.setup()
    return dm


def check_args(args) -> None:
    if not args.ckpt:
        raise ConfigError(f"give ckpt=PATH\n\n{USAGE}")
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
    entries = dm.test_entries if args.limit is None else dm.test_entries[: args.limit]
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


@command
def main(argv: list[str] | None = None) -> dict:
    args = parse(DEFAULTS, USAGE, argv, TYPES)
    check_args(args)
    device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    task, tokenizer, meta = load_checkpoint(args.ckpt)
    try:  # the same data file, split and prompt style as in training; say which stage failed
        dm = data_module(meta, tokenizer, task.backbone.context_length, args.ckpt)
    except (KeyError, OSError, GptftError) as err:  # e.g. the data file is gone
        raise CheckpointError(f"cannot rebuild the test split of {args.ckpt}: {err}") from err

    out = fresh_out_dir(Path(args.out) if args.out else default_out_dir(Path(args.ckpt)))
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    scores = {"task": meta["task"], "checkpoint": str(Path(args.ckpt).resolve()),
              "test": test_metrics(task, dm.eval_dataloader("test"), device)}
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
