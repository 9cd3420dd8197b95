"""Reading back a folder `python -m gptft.export format=hf` wrote, as a gptft task (what `gptft.serve` serves).

config.json names the transformers class (hf_model.CLASSES) and the shape, read by gptft's own GPT-2 / Llama
config readers; model.safetensors is mapped back to gptft's names (GPT-2's Conv1D weights transposed, the
score layer as a bias-free classifier head); tokenizer.json becomes gptft's HFTokenizer; an instruction
model's chat template must be one gptft writes for a prompt style, which is then the style; the model card
(README.md) adds the task name, base model and the run's scores. transformers is not needed.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..data.handoff import TaskData
from ..data.prompts import STYLES
from ..errors import CheckpointError, GptftError, MissingCheckpoint
from ..models.checkpoint_files import read_safetensors
from ..models.hf_tokenizer import HFTokenizer
from ..tasks.classifier import ClassifierTask
from ..tasks.instruct import InstructTask
from .card import read_card
from .chat import jinja_template
from .hf_model import CLASSES

KINDS = {ClassifierTask: "classifier", InstructTask: "lm"}
# a task rebuilt for predictions only: every weight comes from the folder, nothing trains or is cached
PREDICT_ONLY = {"mode": "full", "trainable_blocks": 1, "cache_prefix": False, "cache_dtype": "auto",
                "cache_max_gb": 0.0, "lora": None}
HINT = "give a folder written by python -m gptft.export format=hf, or a gptft .ckpt file"


def is_export_folder(path: str | Path) -> bool:
    return Path(path).expanduser().is_dir()


def _config(folder: Path, key: str) -> dict:
    file = folder / "config.json"
    if not file.is_file():
        raise MissingCheckpoint(f"{key}={folder} is a folder without config.json; {HINT} (a run folder's "
                                f"checkpoint is {key}={folder / 'checkpoints' / 'best.ckpt'})")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CheckpointError(f"{file} is not readable JSON ({err}); export the model again") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{file} holds a {type(config).__name__}, not a JSON object; export the model again")
    return config


def _arch_kind(config: dict, folder: Path) -> tuple[str, str, str]:
    """(gptft architecture, task kind, transformers class) that config.json names."""
    names = config.get("architectures")
    known = {cls: key for key, cls in CLASSES.items()}
    if not isinstance(names, list) or len(names) != 1 or names[0] not in known:
        raise CheckpointError(f"{folder}/config.json names architectures {names!r}; gptft reads exactly one of "
                              f"{', '.join(sorted(known))}")
    arch, kind = known[names[0]]
    return arch, kind, names[0]


def _labels(config: dict, folder: Path) -> list[str]:
    id2label = config.get("id2label")
    if not isinstance(id2label, dict) or sorted(id2label, key=str) != sorted(map(str, range(len(id2label)))):
        raise CheckpointError(f"{folder}/config.json has no id2label numbered 0..N-1 ({id2label!r}); a classifier "
                              f"folder names its labels there")
    return [str(id2label[str(i)]) for i in range(len(id2label))]


def _prompt(config: dict, folder: Path) -> dict:
    """A prompted classifier's prompt (config.json's gptft_prompt, written by gptft's export) as classify reads it."""
    prompt = config.get("gptft_prompt")
    if prompt is None:
        return {}
    if not (isinstance(prompt, dict) and prompt.get("style") in STYLES and isinstance(prompt.get("instruction"), str)):
        raise CheckpointError(f"{folder}/config.json: gptft_prompt {prompt!r} is not a prompt style "
                              f"({', '.join(STYLES)}) and an instruction; export the checkpoint again")
    return {"prompt_style": prompt["style"], "instruction": prompt["instruction"]}


def _tokenizer(folder: Path) -> HFTokenizer:
    try:
        return HFTokenizer.from_folder(folder)
    except GptftError:
        raise
    except Exception as err:  # tokenizers' own errors (a damaged tokenizer.json), or an eos token it lacks
        raise CheckpointError(f"{folder}: tokenizer.json / tokenizer_config.json cannot be read "
                              f"({str(err).splitlines()[0] if str(err) else type(err).__name__}); export the model "
                              f"again") from None


def _style(tokenizer: HFTokenizer, folder: Path) -> str:
    """The prompt style whose chat template this folder carries."""
    found = [name for name in STYLES if jinja_template(name) == tokenizer.chat_template]
    if not found:
        what = "no chat template" if not tokenizer.chat_template else "a chat template that is none of gptft's"
        raise CheckpointError(f"{folder}/tokenizer_config.json has {what} (prompt styles {', '.join(STYLES)}); "
                              f"gptft serves instruction folders written by python -m gptft.export")
    return found[0]


def _backbone(arch: str, config: dict, tensors: dict, kind: str, folder: Path):
    """(backbone built on the meta device, its state under gptft's names: head as `lm_head.weight`)."""
    try:
        return _backbone_of(arch, config, tensors, kind, folder)
    except KeyError as err:  # the config readers index the keys every exported config.json has
        raise CheckpointError(f"{folder}/config.json lacks {err}; export the model again") from None
    except CheckpointError as err:  # the GPT-2 converter lists its problems one per line
        raise CheckpointError("; ".join(line.strip() for line in str(err).splitlines())) from None


def _backbone_of(arch: str, config: dict, tensors: dict, kind: str, folder: Path):
    head = tensors.pop("score.weight" if kind == "classifier" else "lm_head.weight", None)
    if kind == "classifier" and head is None:
        raise CheckpointError(f"{folder}/model.safetensors lacks score.weight, the classifier's head")
    if arch == "gpt2":
        from ..models.gpt2 import GPT
        from ..models.gpt2_weights import convert_hf_gpt2_state_dict, gpt2_config_from_hf

        cfg = gpt2_config_from_hf(config)
        state = convert_hf_gpt2_state_dict(tensors, cfg, source=f"{folder}/model.safetensors")
        state.pop("lm_head.weight")  # the converter ties it to the embedding; the folder says which head it is
        module = GPT
    else:
        from ..models.llama import Llama
        from ..models.llama_weights import llama_config_from_hf

        cfg, state, module = llama_config_from_hf(config), dict(tensors), Llama
    tied = kind == "lm" and bool(config.get("tie_word_embeddings", arch == "gpt2"))
    if hasattr(cfg, "tie_embeddings"):
        cfg.tie_embeddings = tied
    if head is not None:
        state["lm_head.weight"] = head
    elif not tied:
        raise CheckpointError(f"{folder}/model.safetensors lacks lm_head.weight and config.json does not tie it "
                              f"to the embedding")
    with torch.device("meta"):  # random init of weights about to be overwritten is wasted time
        return module(cfg), {k: t.float().contiguous() for k, t in state.items()}


def _load_into(task, state: dict, tied: bool, folder: Path) -> None:
    """The folder's tensors into the task's backbone, every name and shape checked."""
    backbone = task.backbone
    expected = {k: tuple(v.shape) for k, v in backbone.state_dict().items()}
    if tied:
        expected.pop("lm_head.weight")
    wrong = sorted(f"{k}: {tuple(state[k].shape)} != {s}" for k, s in expected.items()
                   if k in state and tuple(state[k].shape) != s)
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected or wrong:
        raise CheckpointError(f"{folder}/model.safetensors does not fit its config.json: missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}, wrong shapes {wrong[:3]}; export the model again")
    backbone.load_state_dict(state, strict=False, assign=True)
    if tied:  # assign=True replaced the shared Parameter
        backbone.head.weight = backbone.embedding.weight
    left = [n for n, t in [*backbone.named_parameters(), *backbone.named_buffers()] if t.is_meta]
    if left:
        raise CheckpointError(f"{folder}: not loaded from model.safetensors: {left[:3]}")


def load_folder(path: str | Path, expect_task: type | None = None, key: str = "ckpt"):
    """(task in eval mode, tokenizer, meta) from an exported folder; meta holds what `load_checkpoint`'s does
    that serving reads (task, arch, labels or prompt style, tokenizer spec) plus `exported` (the folder, its
    transformers class and dtype, and the model card's facts)."""
    folder = Path(path).expanduser()
    config = _config(folder, key)
    arch, kind, hf_class = _arch_kind(config, folder)
    cls = next(c for c, k in KINDS.items() if k == kind)
    if expect_task is not None and not issubclass(cls, expect_task):
        raise CheckpointError(f"{key}={folder} holds a {hf_class}, but this needs a "
                              f"{'classifier' if KINDS.get(expect_task) == 'classifier' else 'causal LM'}")
    if not (folder / "model.safetensors").is_file():
        raise MissingCheckpoint(f"{folder} has no model.safetensors; {HINT}")
    tensors = read_safetensors(folder / "model.safetensors", key)
    tokenizer = _tokenizer(folder)
    backbone, state = _backbone(arch, config, tensors, kind, folder)
    if tokenizer.vocab_size > backbone.config.vocab_size:
        raise CheckpointError(f"{folder}: tokenizer.json has {tokenizer.vocab_size} tokens, the model "
                              f"{backbone.config.vocab_size}")
    card = read_card(folder / "README.md")
    labels = _labels(config, folder) if kind == "classifier" else None
    style = _style(tokenizer, folder) if kind == "lm" else None
    meta = {"task": card.get("task") or kind, "arch": arch, "tokenizer": tokenizer.spec(),
            "label_names": labels, "positive_index": None, "pad_width": None, "prompt_style": style,
            "model": {"name": card.get("base_model") or hf_class}, "data_args": _prompt(config, folder),
            "exported": {"folder": str(folder.resolve()), "architecture": hf_class, "dtype": config.get("dtype"),
                         "model_card": card or None}}
    args = {"pooling": "last_token", "head_bias": False} if kind == "classifier" else {
        "targets_only": True, "sample_tokens": 0}
    task = cls(backbone, data=TaskData.from_stored(meta), tokenizer=tokenizer, name=meta["task"],
               finetune=PREDICT_ONLY, meta=meta, **args)
    _load_into(task, state, tied=kind == "lm" and "lm_head.weight" not in state, folder=folder)
    task.requires_grad_(False)
    return task.eval(), tokenizer, meta
