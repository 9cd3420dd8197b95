"""`python -m gptft.export ckpt=PATH out=DIR [format=hf|gguf] [dtype=...]`: a model other tools load.

Everything is built in memory and checked first; the files are then written into a hidden temp folder
beside `out`, which is renamed to `out` at the end: a failure leaves no folder behind.
"""
from __future__ import annotations

import sys
from pathlib import Path

from safetensors.torch import save_file

from ..atomic import write_folder_atomic
from ..cli_args import command, parse
from ..errors import ConfigError, CheckpointError
from ..tasks.classifier import ClassifierTask
from ..tasks.factory import load_checkpoint
from ..tasks.instruct import InstructTask
from . import chat, tokenizer_files
from .card import model_card
from .gguf_file import DTYPES, modelfile, write_gguf
from .hf_model import hf_config, hf_state_dict

USAGE = """usage: python -m gptft.export ckpt=PATH out=DIR [format=hf] [dtype=f32]
  ckpt    a checkpoint of python -m gptft.train (task=spam or task=instruct)
  out     a new (or empty) folder for the export
  format  hf: a transformers folder (config.json, model.safetensors, tokenizer, model card);
          classifiers become *ForSequenceClassification, instruction models *ForCausalLM / GPT2LMHeadModel
          gguf: model.gguf (llama.cpp, Ollama) + Modelfile, for instruction (causal LM) checkpoints
  dtype   hf: f32 | f16 | bf16;  gguf: f32 | f16 | q8_0"""

KINDS = {ClassifierTask: "classifier", InstructTask: "lm"}  # exact classes: a subclass may compute otherwise
HF_DTYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}


def check_args(args) -> Path:
    if not args.ckpt or not args.out:
        raise ConfigError(f"give ckpt= and out=\n\n{USAGE}")
    if args.format not in ("hf", "gguf"):
        raise ConfigError(f"format must be hf or gguf, got {args.format!r}")
    allowed = tuple(HF_DTYPES) if args.format == "hf" else DTYPES
    if args.dtype not in allowed:
        raise ConfigError(f"dtype={args.dtype} is not one of {', '.join(allowed)} for format={args.format}")
    out = Path(args.out).expanduser()
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise ConfigError(f"out={args.out} exists and is not an empty folder; give a new folder (export never "
                          f"overwrites)")
    return out


def task_kind(task, meta: dict, path: str) -> str:
    kind = KINDS.get(type(task))
    if kind is None:
        raise CheckpointError(f"ckpt={path} is a {meta['task']!r} checkpoint ({meta['task_class']}); export knows "
                              f"classification (ClassifierTask, task=spam) and instruction (InstructTask, "
                              f"task=instruct) checkpoints")
    return kind


def _usage(kind: str, fmt: str, labels) -> str:
    if fmt == "gguf":
        return ("`ollama create mymodel -f Modelfile && ollama run mymodel`, or in Python: "
                "`AutoModelForCausalLM.from_pretrained(folder, gguf_file=\"model.gguf\")`.")
    if kind == "classifier":
        return ("`AutoModelForSequenceClassification.from_pretrained(folder)` with `AutoTokenizer` (batches pad "
                f"on the right; the last real token is read): labels {labels}.")
    return ("`AutoModelForCausalLM.from_pretrained(folder)`; build prompts with "
            "`tokenizer.apply_chat_template([{\"role\": \"user\", \"content\": ...}], add_generation_prompt=True)`.")


def build_hf(task, tokenizer, meta, kind: str, dtype: str):
    """(fill(folder), file list): everything computed before a byte is written."""
    import torch

    backbone = task.backbone
    tensors = hf_state_dict(backbone, kind, getattr(task, "pooling", None))
    tensors = {k: v.to(getattr(torch, HF_DTYPES[dtype])).contiguous() for k, v in tensors.items()}
    config = hf_config(backbone, kind, tokenizer, meta.get("label_names"), HF_DTYPES[dtype])
    data = meta.get("data_args") or {}
    if kind == "classifier" and data.get("instruction") is not None:  # gptft's serve reads it back (load_folder)
        config["gptft_prompt"] = {"style": data["prompt_style"], "instruction": str(data["instruction"])}
    template = chat.jinja_template(meta["prompt_style"]) if kind == "lm" else None
    tok = tokenizer_files.backend(meta["tokenizer"])
    gen = {"bos_token_id": config["bos_token_id"], "eos_token_id": tokenizer.eot_id,
           "pad_token_id": tokenizer.pad_id, "do_sample": False, "max_new_tokens": 256}

    def fill(folder: Path) -> None:
        save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
        write_json_file(folder / "config.json", config)
        if kind == "lm":
            write_json_file(folder / "generation_config.json", gen)
        tokenizer_files.write_hf(folder, tok, tokenizer, template)

    files = ("config.json, model.safetensors, tokenizer.json, tokenizer_config.json, special_tokens_map.json"
             + (", generation_config.json" if kind == "lm" else ""))
    return fill, files


def build_gguf(task, tokenizer, meta, kind: str, dtype: str, name: str):
    if kind != "lm":
        raise CheckpointError("GGUF holds causal language models and this is a classifier; export it with "
                              "format=hf (transformers' *ForSequenceClassification)")
    backbone = task.backbone
    tensors = hf_state_dict(backbone, kind, conv1d=False)
    vocab = tokenizer_files.gguf_vocab(tokenizer_files.backend(meta["tokenizer"]))
    style = meta["prompt_style"]
    stop = tokenizer_files.eos_token(tokenizer)

    def fill(folder: Path) -> None:
        write_gguf(folder / "model.gguf", backbone, tensors, vocab, tokenizer, chat.jinja_template(style), dtype, name)
        (folder / "Modelfile").write_text(modelfile("model.gguf", chat.ollama_template(style), stop), encoding="utf-8")

    return fill, f"model.gguf ({dtype}), Modelfile"


def write_json_file(path: Path, data) -> None:
    import json

    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def export_task(task, tokenizer, meta: dict, ckpt: str, out: Path, fmt: str = "hf", dtype: str = "f32") -> str:
    """Write the export of a loaded checkpoint to `out` (atomically); returns the list of files."""
    kind = task_kind(task, meta, ckpt)
    print(f"converting the {meta['task']} model ({meta['arch']}) to {fmt}", file=sys.stderr, flush=True)
    if fmt == "hf":
        fill, files = build_hf(task, tokenizer, meta, kind, dtype)
    else:
        fill, files = build_gguf(task, tokenizer, meta, kind, dtype, f"gptft-{meta['task']}-{meta['arch']}")
    card = model_card(meta, Path(ckpt).resolve(), files, _usage(kind, fmt, meta.get("label_names")))

    def fill_all(folder: Path) -> None:
        fill(folder)
        (folder / "README.md").write_text(card, encoding="utf-8")

    write_folder_atomic(out, fill_all)
    return f"{files}, README.md"


@command
def main(argv: list[str] | None = None) -> None:
    args = parse({"ckpt": None, "out": None, "format": "hf", "dtype": "f32"}, USAGE, argv)
    out = check_args(args)
    print(f"reading {args.ckpt}", file=sys.stderr, flush=True)
    task, tokenizer, meta = load_checkpoint(args.ckpt)
    files = export_task(task, tokenizer, meta, args.ckpt, out, args.format, args.dtype)
    print(f"wrote {out}/: {files}")

if __name__ == "__main__":
    main()
