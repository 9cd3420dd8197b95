"""`python -m gptft.generate ckpt=PATH prompt="..." [input="..."]`: an instruct model's response.

Without `ckpt` a base model (`model=` and `model.*` exactly as in `python -m gptft.train`) continues the raw
prompt, or answers it in a chat format given by `prompt_style=`.
"""
from __future__ import annotations

import sys
import time

import torch

from .cli_args import command, parse
from .compose import model_names, split_model_args  # noqa: F401 (model_names: the valid model= names)
from .errors import ConfigError
from .models.generation import generate

USAGE = """usage: python -m gptft.generate [ckpt=PATH] prompt="..." [input="..."] [max_new_tokens=256]
         [temperature=0] [top_k=null] [top_p=null] [seed=123] [no_cache=false] [prompt_style=null]
         [model=gpt2] [model.checkpoint=PATH] [model.pretrained=true] [model.<key>=...]
  ckpt          an instruct checkpoint (best.ckpt from python -m gptft.train task=instruct): the prompt is
                wrapped in the prompt style it was trained with
  without ckpt: a base model, chosen with the same keys as python -m gptft.train: model=NAME (conf/model),
                model.checkpoint=PATH for local weights, model.pretrained=false for random weights
  prompt_style  alpaca | phi3 | chatml: wrap the prompt in that format (null: the checkpoint's style;
                without ckpt the raw prompt is continued)"""

DEFAULTS = {"ckpt": None, "prompt": None, "input": "", "max_new_tokens": 256, "temperature": 0.0, "top_k": None,
            "top_p": None, "seed": 123, "no_cache": False, "prompt_style": None}
TYPES = {"top_k": int, "top_p": float}


def check(args) -> None:
    if not args.prompt:
        raise ConfigError(f"give prompt=\"...\"\n\n{USAGE}")
    if args.max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be a positive integer, got {args.max_new_tokens}")
    if args.temperature < 0:
        raise ConfigError(f"temperature must be >= 0 (0: greedy), got {args.temperature}")
    if args.top_k is not None and args.top_k < 1:
        raise ConfigError(f"top_k must be null or a positive integer, got {args.top_k}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise ConfigError(f"top_p must be null or in (0, 1], got {args.top_p}")


def check_budget(max_new_tokens: int, prompt_tokens: int, context: int) -> None:
    """Refuse a budget beyond the whole context; say so when this prompt leaves less room than asked."""
    room = context - prompt_tokens
    if room <= 0:
        return  # generate() refuses the prompt itself
    if max_new_tokens > context:
        raise ConfigError(f"max_new_tokens={max_new_tokens} is more than the model's whole context of {context} "
                          f"tokens; generation stops when the context is full: use max_new_tokens<={room} "
                          f"for this {prompt_tokens}-token prompt")
    if max_new_tokens > room > 0:
        print(f"note: the {prompt_tokens}-token prompt leaves room for {room} of max_new_tokens={max_new_tokens} "
              f"(context {context}); generation stops there", file=sys.stderr, flush=True)


def respond(backbone, tokenizer, style, args) -> list[int]:
    """New token ids answering args.prompt (and args.input), wrapped in `style` (None: the raw text is continued),
    sampled as `args` say from a generator seeded with args.seed."""
    check(args)
    if style is not None:
        ids = style.encode_prompt(tokenizer, {"instruction": args.prompt, "input": args.input})
    else:
        ids = tokenizer.encode(args.prompt if not args.input else f"{args.prompt}\n{args.input}")
    check_budget(args.max_new_tokens, len(ids), backbone.context_length)
    device = next(backbone.parameters()).device
    # a prompt longer than the context: generate's own GptftError, shown by @command as a one-line error
    return generate(backbone.eval(), ids, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                    top_p=args.top_p, eos_id=tokenizer.eot_id, use_cache=not args.no_cache,
                    generator=torch.Generator(device).manual_seed(args.seed), progress="generating")


@command
def main(argv: list[str] | None = None) -> None:
    from .api import base, load

    model_args, argv = split_model_args(sys.argv[1:] if argv is None else argv)
    args = parse(DEFAULTS, USAGE, argv, TYPES)
    check(args)
    if args.ckpt and model_args:
        raise ConfigError(f"{' '.join(model_args)}: a checkpoint (ckpt=) brings its own model; give one or the other")
    # a base model's random weights (model.pretrained=false) come from seed=, as they always did here
    model = load(args.ckpt, expect_task="instruct") if args.ckpt else base(f"seed={args.seed}", *model_args)
    start = time.perf_counter()
    out = respond(model.backbone, model.tokenizer, model.prompt_style(args.prompt_style), args)
    seconds = time.perf_counter() - start
    print(model.tokenizer.decode(out).strip())
    print(f"[{len(out)} tokens in {seconds:.2f} s]", flush=True)


if __name__ == "__main__":
    main()
