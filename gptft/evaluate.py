"""`python -m gptft.evaluate ckpt=PATH`: score a checkpoint on its test split.

Instruct: greedy responses to every test entry -> responses.json (for reading by eye), exact match,
ROUGE-L F1, test loss/perplexity and, optionally, an LLM judge's 0-100 score (gptft.judge) -> scores.json.
Spam: accuracy, F1 and the confusion matrix -> scores.json.
"""
from __future__ import annotations

import json
import math
import time
from datetime import datetime
from pathlib import Path

import torch
from tqdm import tqdm

from .cli_args import command, parse
from .data.prompts import get_prompt_style
from .errors import GptftError
from .judge import run_judge
from .models.generation import generate
from .tasks.factory import datamodule_from_meta, load_checkpoint
from .tasks.instruct import target_loss
from .text_metrics import exact_match, rouge_l

USAGE = """usage: python -m gptft.evaluate ckpt=PATH [out=DIR] [max_new_tokens=256] [limit=null] [device=auto]
         [judge.enabled=false] [judge.url=http://localhost:11434] [judge.model=llama3] [judge.timeout=120]
  ckpt            a gptft checkpoint (instruct or spam), e.g. outputs/instruct/<time>/checkpoints/best.ckpt
  out             output folder; default <run folder>/eval. Existing results there are never
                  overwritten: the new ones go to a timestamped subfolder instead
  max_new_tokens  generation budget per response (instruct)
  limit           generate for the first N test entries only (instruct; test loss always uses all)
  device          auto (cuda when available) | cpu | cuda
  judge.*         an Ollama-compatible server scoring each response 0-100 (instruct; off by default)"""

DEFAULTS = {
    "ckpt": None, "out": None, "max_new_tokens": 256, "limit": None, "device": "auto",
    "judge": {"enabled": False, "url": "http://localhost:11434", "model": "llama3", "timeout": 120.0},
}
TYPES = {"limit": int}
RESULT_FILES = ("responses.json", "scores.json")


# ---- where results go ------------------------------------------------------------------------
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


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# ---- instruct ----------------------------------------------------------------------------------
def data_module(meta: dict, tokenizer, context_length: int):
    """The data module the checkpoint was trained with (same file, split and prompt style), rebuilt from
    gptft's allow-list and plain values: nothing in a checkpoint is instantiated as code."""
    return datamodule_from_meta(meta, tokenizer, context_length)


@torch.no_grad()
def test_loss(task, dm, device) -> tuple[float, int]:
    """Mean next-token loss over every target token of the test split, and that token count."""
    total, n = 0.0, 0
    for batch in dm.eval_dataloader("test"):
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        h = task.hidden_states(batch)
        s, k = target_loss(task.backbone, h, batch["targets"])
        total, n = total + float(s), n + k
    return total / max(1, n), n


def evaluate_instruct(task, tokenizer, meta, dm, args, device, out: Path) -> dict:
    style = get_prompt_style(meta.get("prompt_style") or dm.prompt_style)
    entries = dm.test_entries if args.limit is None else dm.test_entries[: args.limit]
    model = task.backbone
    records, prompts, too_long = [], [], 0
    for entry in tqdm(entries, desc="generating", unit="resp"):
        ids = style.encode_prompt(tokenizer, entry)
        if len(ids) >= model.context_length:  # no room to answer; score it as an empty response
            too_long, out_ids = too_long + 1, []
        else:
            out_ids = generate(model, ids, args.max_new_tokens, eos_id=tokenizer.eot_id, use_cache=True)
        records.append({"instruction": entry["instruction"], "input": entry.get("input", ""),
                        "output": entry["output"], "model_response": tokenizer.decode(out_ids).strip()})
        prompts.append(style.prompt({"input": "", **entry}))
    write_json(out / "responses.json", records)  # early, so a failing judge never loses the generations

    n = len(records)
    loss, tokens = test_loss(task, dm, device)
    scores = {
        "task": "instruct", "checkpoint": str(Path(args.ckpt).resolve()), "n": n,
        "exact_match": sum(exact_match(r["output"], r["model_response"]) for r in records) / max(1, n),
        "rouge_l": sum(rouge_l(r["output"], r["model_response"]) for r in records) / max(1, n),
        "test_loss": loss, "test_ppl": math.exp(min(loss, 50.0)), "test_tokens": tokens,
        "max_new_tokens": args.max_new_tokens, "prompt_style": style.name, "prompts_too_long": too_long,
        "judge": {"enabled": False},
    }
    if args.judge.enabled:
        scores["judge"] = run_judge(records, prompts, args.judge)
        if "error" in scores["judge"]:
            print(scores["judge"]["error"], flush=True)
        write_json(out / "responses.json", records)
    return scores


# ---- spam --------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate_spam(task, tokenizer, meta, dm, args, device, out: Path) -> dict:
    names = list(meta.get("label_names") or dm.label_names)
    k = len(names)
    confusion = torch.zeros(k, k, dtype=torch.long)  # rows: true label, columns: predicted
    for batch in tqdm(dm.eval_dataloader("test"), desc="classifying", unit="batch"):
        batch = {key: v.to(device) if torch.is_tensor(v) else v for key, v in batch.items()}
        preds = task(batch).argmax(-1).cpu()
        confusion += torch.bincount(batch["labels"].cpu() * k + preds, minlength=k * k).view(k, k)
    n = int(confusion.sum())
    positive = getattr(dm, "positive_index", 1 if k == 2 else None)
    f1s = [_f1(confusion, c) for c in range(k)]
    return {
        "task": "spam", "checkpoint": str(Path(args.ckpt).resolve()), "n": n,
        "accuracy": float(confusion.diag().sum()) / max(1, n),
        # binary: F1 of the positive class (the second label, e.g. spam); more classes: macro F1
        "f1": f1s[positive] if positive is not None else sum(f1s) / k,
        "f1_of": names[positive] if positive is not None else "macro",
        "label_names": names, "confusion": confusion.tolist(),
    }


def _f1(confusion: torch.Tensor, c: int) -> float:
    tp = int(confusion[c, c])
    predicted, actual = int(confusion[:, c].sum()), int(confusion[c].sum())
    return 2 * tp / (predicted + actual) if predicted + actual else 0.0


# ---- report ------------------------------------------------------------------------------------
def summary(scores: dict, out: Path) -> str:
    lines = [f"gptft evaluate: {scores['task']} checkpoint {scores['checkpoint']} ({scores['n']} test examples)"]
    if scores["task"] == "instruct":
        rows = [("exact match", f"{scores['exact_match']:.4f}"), ("ROUGE-L F1", f"{scores['rouge_l']:.4f}"),
                ("test loss", f"{scores['test_loss']:.4f}"), ("test perplexity", f"{scores['test_ppl']:.2f}")]
        judge = scores["judge"]
        if not judge.get("enabled", True):
            rows.append(("judge", "off (judge.enabled=true to score with an LLM)"))
        elif "error" in judge:
            rows.append(("judge", "failed (see the message above)"))
        else:
            mean = "n/a" if judge["mean"] is None else f"{judge['mean']:.2f}"
            rows.append((f"judge ({judge['model']})", f"{mean} / 100 ({judge['n_unparsed']} unparsed)"))
        lines += [f"  {name:<18}{value}" for name, value in rows]
        lines.append(f"  responses: {out / 'responses.json'}")
    else:
        names = scores["label_names"]
        lines.append(f"  {'accuracy':<18}{scores['accuracy']:.4f}")
        lines.append(f"  {'F1 (' + scores['f1_of'] + ')':<18}{scores['f1']:.4f}")
        width = max(8, *(len(x) + 2 for x in names))
        lines.append("  confusion (rows: true, columns: predicted)")
        lines.append("  " + " " * width + "".join(f"{x:>{width}}" for x in names))
        for name, row in zip(names, scores["confusion"]):
            lines.append(f"  {name:<{width}}" + "".join(f"{v:>{width}}" for v in row))
    lines.append(f"  scores:    {out / 'scores.json'}")
    return "\n".join(lines)


@command
def main(argv: list[str] | None = None) -> dict:
    args = parse(DEFAULTS, USAGE, argv, TYPES)
    if not args.ckpt:
        raise GptftError(f"give ckpt=PATH\n\n{USAGE}")
    if args.limit is not None and args.limit < 1:
        raise GptftError(f"limit must be null or a positive integer, got {args.limit!r}")
    if args.max_new_tokens < 1:
        raise GptftError(f"max_new_tokens must be a positive integer, got {args.max_new_tokens!r}")
    if args.device not in ("auto", "cpu", "cuda"):
        raise GptftError(f"device must be auto, cpu or cuda, got {args.device!r}")
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    task, tokenizer, meta = load_checkpoint(args.ckpt)
    task.to(device)
    try:  # the same data file, split and prompt style as in training; say which stage failed
        dm = data_module(meta, tokenizer, task.backbone.context_length)
        dm.setup()
    except (KeyError, FileNotFoundError, ValueError, RuntimeError) as err:  # e.g. the data file is gone
        raise GptftError(f"cannot rebuild the test split of {args.ckpt}: {err.__class__.__name__}: {err}") from err

    out = fresh_out_dir(Path(args.out) if args.out else default_out_dir(Path(args.ckpt)))
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    run = evaluate_instruct if meta["task"] == "instruct" else evaluate_spam
    scores = run(task, tokenizer, meta, dm, args, device, out)
    scores["elapsed_s"] = round(time.perf_counter() - start, 1)
    write_json(out / "scores.json", scores)
    print(summary(scores, out), flush=True)
    return scores

if __name__ == "__main__":
    main()
