"""`python -m gptft.classify ckpt=PATH text="..." | file=TEXTS.txt`: label and class probabilities."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from .cli_args import command, parse
from .data.collate import ClassificationCollate
from .data.prompts import encode_texts
from .errors import ConfigError
from .progress import iterate
from .tasks.class_metrics import decide, probabilities
from .tasks.factory import load_checkpoint

USAGE = """usage: python -m gptft.classify ckpt=PATH (text="a message" | file=TEXTS.txt) [batch_size=16]
  ckpt  a spam/classification checkpoint (best.ckpt from python -m gptft.train task=spam)
  text  one message; file: one message per line"""


def widths(task) -> tuple[int | None, int]:
    """(pad width, token limit). A checkpoint trained at a fixed width (data.pad_to) is read at that
    width: with pooling=last the pooled position depends on it. Otherwise the context is the limit."""
    pad_width = (getattr(task, "meta", None) or {}).get("pad_width")
    return pad_width, pad_width or task.backbone.context_length


def rule(task) -> tuple[float, float | None]:
    """(temperature, threshold on the positive class's probability or None for argmax) stored in the checkpoint
    after training; a checkpoint without them: (1.0, None)."""
    calibration = task.calibration or {"temperature": 1.0, "threshold": None}
    return calibration["temperature"], calibration["threshold"]


def describe_rule(task) -> str:
    temperature, threshold = rule(task)
    positive = task.label_names[task.positive_index] if threshold is not None else ""
    decision = "argmax" if threshold is None else f"{positive} if its probability >= {threshold:.4f}"
    return f"probabilities at temperature {temperature:.3f}; label: {decision}"


@torch.no_grad()
def classify(task, tokenizer, texts: list[str], batch_size: int = 16) -> list[dict]:
    """One dict per text: label, {label name: probability} and whether the text was cut to fit. The
    probabilities are temperature-scaled and the label follows the threshold when the checkpoint stores a
    calibration (see `rule`)."""
    pad_width, limit = widths(task)
    collate = ClassificationCollate(tokenizer.pad_id, pad_width)
    names = task.label_names
    temperature, threshold = rule(task)
    data = (getattr(task, "meta", None) or {}).get("data_args") or {}  # how training read its texts
    out = []
    for start in iterate(range(0, len(texts), batch_size), "classifying", unit="batches"):
        chunk = texts[start : start + batch_size]
        encoded = encode_texts(tokenizer, chunk, data.get("prompt_style"), data.get("instruction"), limit)
        examples = [{"input_ids": x or [tokenizer.eot_id], "label": 0, "example_id": i}
                    for i, (x, _) in enumerate(encoded)]
        probs = probabilities(task(collate(examples)), temperature)
        for text, (_, cut), p, pred in zip(chunk, encoded, probs, decide(probs, task.positive_index, threshold)):
            out.append({"text": text, "label": names[int(pred)],
                        "probs": {n: float(v) for n, v in zip(names, p)}, "truncated": cut})
    return out


@command
def main(argv: list[str] | None = None) -> None:
    args = parse({"ckpt": None, "text": None, "file": None, "batch_size": 16}, USAGE, argv)
    if not args.ckpt or (args.text is None) == (args.file is None):
        raise ConfigError(f"give ckpt= and exactly one of text= or file=\n\n{USAGE}")
    if args.batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {args.batch_size}")
    if args.file is not None:
        path = Path(args.file)
        if path.is_dir():
            raise ConfigError(f"file={path} is a directory; give a text file with one message per line")
        if not path.is_file():
            raise ConfigError(f"file={path} does not exist")
        try:
            texts = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError as err:
            raise ConfigError(f"file={path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
        if not texts:
            raise ConfigError(f"file={path} holds no non-empty lines")
    else:
        texts = [args.text]
    task, tokenizer, _ = load_checkpoint(args.ckpt, expect_task="spam")
    print(f"note: {describe_rule(task)} (fitted on the validation split)" if task.calibration else
          f"note: {describe_rule(task)} (no calibration stored in this checkpoint)", file=sys.stderr, flush=True)
    results = classify(task, tokenizer, texts, args.batch_size)
    cut = sum(r["truncated"] for r in results)
    if cut:  # the model never saw the rest of these texts: say so instead of failing silently
        print(f"note: {cut} of {len(results)} texts truncated to {widths(task)[1]} tokens", file=sys.stderr, flush=True)
    for r in results:
        probs = "  ".join(f"{n}={p:.4f}" for n, p in r["probs"].items())
        print(f"{r['label']}\t{probs}\t{r['text']}")


if __name__ == "__main__":
    main()
