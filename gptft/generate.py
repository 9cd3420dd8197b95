"""`python -m gptft.generate ckpt=PATH prompt="..." [input="..."]`: an instruct model's response.

Without `ckpt` it continues `prompt` with a base model (`model=gpt2`, `checkpoint=PATH` for local weights).
"""
from __future__ import annotations

import time

import torch
from hydra import compose, initialize_config_dir

from .cli_args import parse
from .data.prompts import get_prompt_style
from .models.build import build_backbone
from .models.generation import generate
from .tasks.factory import load_checkpoint

USAGE = """usage: python -m gptft.generate [ckpt=PATH] prompt="..." [input="..."] [max_new_tokens=256]
         [temperature=0] [top_k=null] [top_p=null] [seed=123] [no_cache=false]
  ckpt        an instruct checkpoint (best.ckpt from python -m gptft.train task=instruct): the prompt is
              wrapped in the prompt style it was trained with
  without ckpt: a base model continues the raw prompt: model=gpt2 (a conf/model name),
              checkpoint=PATH for local weights, pretrained=false for random weights"""

DEFAULTS = {"ckpt": None, "prompt": None, "input": "", "max_new_tokens": 256, "temperature": 0.0, "top_k": None,
            "top_p": None, "seed": 123, "no_cache": False, "model": "gpt2", "checkpoint": None, "pretrained": True}


def base_model(name: str, checkpoint: str | None, pretrained: bool):
    from pathlib import Path

    conf = str(Path(__file__).resolve().parents[1] / "conf")
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        cfg = compose("train", overrides=[f"model={name}", "run_dir=."])
    cfg.model.checkpoint = checkpoint
    cfg.model.pretrained = pretrained
    return build_backbone(cfg.model)


def main(argv: list[str] | None = None) -> None:
    args = parse(DEFAULTS, USAGE, argv)
    if not args.prompt:
        raise SystemExit(f"give prompt=\"...\"\n\n{USAGE}")
    torch.manual_seed(int(args.seed))
    if args.ckpt:
        try:
            task, tokenizer, meta = load_checkpoint(args.ckpt, expect_task="instruct")
        except (FileNotFoundError, ValueError) as err:
            raise SystemExit(str(err)) from None
        model = task.backbone
        style = get_prompt_style(meta["prompt_style"])
        ids = style.encode_prompt(tokenizer, {"instruction": args.prompt, "input": args.input or ""})
    else:
        try:
            model, tokenizer = base_model(args.model, args.checkpoint, bool(args.pretrained))
        except (RuntimeError, ValueError, FileNotFoundError) as err:
            raise SystemExit(str(err)) from None
        text = args.prompt if not args.input else f"{args.prompt}\n{args.input}"
        ids = tokenizer.encode(text)
    start = time.perf_counter()
    out = generate(model.eval(), ids, int(args.max_new_tokens), temperature=float(args.temperature),
                   top_k=args.top_k, top_p=args.top_p, eos_id=tokenizer.eot_id, use_cache=not args.no_cache)
    seconds = time.perf_counter() - start
    print(tokenizer.decode(out).strip())
    print(f"[{len(out)} tokens in {seconds:.2f} s]", flush=True)


if __name__ == "__main__":
    main()
