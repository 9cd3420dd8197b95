"""`python -m gptft.classify ckpt=PATH text="..." | file=TEXTS.txt`: label and class probabilities."""
from __future__ import annotations

from pathlib import Path

import torch

from .cli_args import parse
from .data.collate import ClassificationCollate
from .tasks.factory import load_checkpoint

USAGE = """usage: python -m gptft.classify ckpt=PATH (text="a message" | file=TEXTS.txt) [batch_size=16]
  ckpt  a spam/classification checkpoint (best.ckpt from python -m gptft.train task=spam)
  text  one message; file: one message per line"""


@torch.no_grad()
def classify(task, tokenizer, texts: list[str], batch_size: int = 16) -> list[dict]:
    """One dict per text: label and {label name: probability}."""
    limit = task.backbone.context_length
    collate = ClassificationCollate(tokenizer.pad_id)
    names = task.label_names
    out = []
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        examples = [
            {"input_ids": (tokenizer.encode(t) or [tokenizer.eot_id])[:limit], "label": 0, "example_id": i}
            for i, t in enumerate(chunk)
        ]
        probs = task(collate(examples)).float().softmax(-1)
        for text, p in zip(chunk, probs):
            out.append({"text": text, "label": names[int(p.argmax())],
                        "probs": {n: float(v) for n, v in zip(names, p)}})
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse({"ckpt": None, "text": None, "file": None, "batch_size": 16}, USAGE, argv)
    if not args.ckpt or (args.text is None) == (args.file is None):
        raise SystemExit(f"give ckpt= and exactly one of text= or file=\n\n{USAGE}")
    if args.file is not None:
        path = Path(args.file)
        if not path.is_file():
            raise SystemExit(f"file={path} does not exist")
        texts = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not texts:
            raise SystemExit(f"file={path} holds no non-empty lines")
    else:
        texts = [str(args.text)]
    try:
        task, tokenizer, _ = load_checkpoint(args.ckpt, expect_task="spam")
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(str(err)) from None
    for r in classify(task, tokenizer, texts, int(args.batch_size)):
        probs = "  ".join(f"{n}={p:.4f}" for n, p in r["probs"].items())
        print(f"{r['label']}\t{probs}\t{r['text']}")


if __name__ == "__main__":
    main()
