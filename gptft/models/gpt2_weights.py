"""Find, download, verify and convert pretrained GPT-2 checkpoints in Hugging Face formats.

Rule for the architecture: a `config.json` beside the weights file (the Hugging Face folder
layout) always defines it; the `size` name is then only checked, with a warning on mismatch.
A bare weights file with no `config.json` beside it takes its shape from `gpt2_config(size)`.
"""
from __future__ import annotations

import json
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch

from ..errors import CheckpointError, ConfigError, MissingCheckpoint
from .checkpoint_files import read_safetensors, read_torch_file
from .hub import fetch
from .gpt2 import GPT, SIZES, GPTConfig, gpt2_config

HUB_IDS = {
    "gpt2": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl",
}

# Conv1D stores [in, out]; nn.Linear wants [out, in].
_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Non-parameter buffers (causal mask, masking constant) that older checkpoints carry.
# Matched whole: a plain suffix test would also swallow `attn.c_attn.bias`.
_IGNORED = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)")
_SHAPE_FIELDS = ("vocab_size", "context_length", "n_layer", "n_head", "n_embd")


def gpt2_config_from_hf(config: Mapping) -> GPTConfig:
    """A Hugging Face GPT-2 `config.json` dict -> GPTConfig; rejects variants GPT cannot run."""
    model_type = config.get("model_type", "gpt2")
    if model_type != "gpt2":
        raise CheckpointError(f"config.json has model_type={model_type!r}, expected 'gpt2'")
    n_embd = config["n_embd"]
    # Settings that would change the computation silently if ignored.
    unsupported = {
        "activation_function": config.get("activation_function", "gelu_new")
        not in ("gelu_new", "gelu_pytorch_tanh"),
        "n_inner": config.get("n_inner") not in (None, 4 * n_embd),
        "scale_attn_weights": not config.get("scale_attn_weights", True),
        "scale_attn_by_inverse_layer_idx": config.get("scale_attn_by_inverse_layer_idx", False),
        "add_cross_attention": config.get("add_cross_attention", False),
    }
    bad = [f"{k}={config.get(k)!r}" for k, is_bad in unsupported.items() if is_bad]
    if bad:
        raise CheckpointError(f"config.json asks for a GPT-2 variant gptft lacks: {', '.join(bad)}")
    return GPTConfig(
        vocab_size=config["vocab_size"],
        context_length=config["n_positions"],
        n_layer=config["n_layer"],
        n_head=config["n_head"],
        n_embd=n_embd,
        layer_norm_eps=config.get("layer_norm_epsilon", 1e-5),
    )


def _expected_hf_shapes(cfg: GPTConfig) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes as stored by Hugging Face (no prefix, Conv1D layout)."""
    c, v, t = cfg.n_embd, cfg.vocab_size, cfg.context_length
    shapes = {"wte.weight": (v, c), "wpe.weight": (t, c)}
    per_block = {
        "ln_1.weight": (c,), "ln_1.bias": (c,),
        "attn.c_attn.weight": (c, 3 * c), "attn.c_attn.bias": (3 * c,),
        "attn.c_proj.weight": (c, c), "attn.c_proj.bias": (c,),
        "ln_2.weight": (c,), "ln_2.bias": (c,),
        "mlp.c_fc.weight": (c, 4 * c), "mlp.c_fc.bias": (4 * c,),
        "mlp.c_proj.weight": (4 * c, c), "mlp.c_proj.bias": (c,),
    }  # fmt: skip
    for i in range(cfg.n_layer):
        shapes.update({f"h.{i}.{k}": s for k, s in per_block.items()})
    shapes.update({"ln_f.weight": (c,), "ln_f.bias": (c,)})
    if not cfg.bias:
        shapes = {k: s for k, s in shapes.items() if not k.endswith(".bias")}
    return shapes


def convert_hf_gpt2_state_dict(
    sd: Mapping[str, torch.Tensor], cfg: GPTConfig, *, source: str | None = None
) -> dict[str, torch.Tensor]:
    """Hugging Face GPT-2 tensors -> our GPT's state_dict, every key and shape checked."""
    where = f" in {source}" if source else ""
    head = None
    found: dict[str, torch.Tensor] = {}
    original: dict[str, str] = {}  # so errors name keys as the file spells them
    for key, tensor in sd.items():
        name = key.removeprefix("transformer.")
        if name == "lm_head.weight":
            head = tensor
        elif not _IGNORED.fullmatch(name):
            found[name], original[name] = tensor, key
    prefix = "transformer." if any(k.startswith("transformer.") for k in sd) else ""
    expected = _expected_hf_shapes(cfg)
    arch = ", ".join(f"{f}={getattr(cfg, f)}" for f in _SHAPE_FIELDS)
    problems = [f"missing key {prefix + k!r} (expected shape {list(s)})"
                for k, s in expected.items() if k not in found]
    problems += [f"unexpected key {original[k]!r} (shape {list(found[k].shape)})"
                 for k in found if k not in expected]
    problems += [
        f"key {original[k]!r}: expected shape {list(s)}, found {list(found[k].shape)}"
        for k, s in expected.items()
        if k in found and tuple(found[k].shape) != s
    ]
    if problems:
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise CheckpointError(
            f"GPT-2 checkpoint{where} does not match the architecture ({arch}):\n  "
            + "\n  ".join(problems[:10])
            + more
        )
    wte = found["wte.weight"]
    if head is not None and (head.shape != wte.shape or not torch.equal(head, wte)):
        raise CheckpointError(f"lm_head.weight{where} differs from wte.weight; gptft's GPT-2 ties them")
    out = {"transformer." + k: (t.t() if k.endswith(_CONV1D) else t) for k, t in found.items()}
    out["lm_head.weight"] = out["transformer.wte.weight"]
    return out


GPT2_LOCAL = "a local .safetensors/.bin file or a folder with model.safetensors and config.json"


def _hub_download(hub_id: str) -> Path:
    weights = fetch(hub_id, "model.safetensors", local_hint=GPT2_LOCAL, optional=True)
    if weights is None:  # older repos publish only pytorch_model.bin
        weights = fetch(hub_id, "pytorch_model.bin", local_hint=GPT2_LOCAL)
    fetch(hub_id, "config.json", local_hint=GPT2_LOCAL)  # lands in the same snapshot folder
    return weights


def _weights_in_folder(folder: Path) -> Path:
    for name in (
        "model.safetensors",
        "model.safetensors.index.json",
        "pytorch_model.bin",
        "pytorch_model.bin.index.json",
    ):
        if (folder / name).is_file():
            return folder / name
    raise MissingCheckpoint(
        f"model.checkpoint={folder} is a folder without model.safetensors or pytorch_model.bin"
    )


def resolve_gpt2_checkpoint(hub_id: str | None, checkpoint: str | None) -> Path:
    """The weights file to load: `checkpoint` (file or folder) if given, else from the Hub."""
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.exists():
            raise MissingCheckpoint(f"model.checkpoint={checkpoint} does not exist")
        if path.is_dir():
            return _weights_in_folder(path)
        if not path.name.endswith((".safetensors", ".bin", ".pt", ".index.json")):
            raise ConfigError(
                f"model.checkpoint={checkpoint}: expected a .safetensors, .bin or .pt file, or a folder"
            )
        return path
    if hub_id is None:
        raise ConfigError("no model.hub_id and no model.checkpoint: nowhere to load pretrained weights from")
    return _hub_download(hub_id)


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if path.name.endswith(".index.json"):  # sharded: weight_map names the shard of each tensor
        shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
        out: dict[str, torch.Tensor] = {}
        for shard in shards:
            out.update(_read_tensors(path.parent / shard))
        return out
    if path.suffix == ".safetensors":
        return read_safetensors(path, "model.checkpoint")
    sd = read_torch_file(path, "model.checkpoint")
    if not isinstance(sd, Mapping) or not all(isinstance(t, torch.Tensor) for t in sd.values()):
        raise CheckpointError(f"model.checkpoint={path} is not a flat Hugging Face state_dict (name -> tensor)")
    return dict(sd)


def load_gpt2(
    size: str,
    *,
    pretrained: bool,
    checkpoint: str | None = None,
    hub_id: str | None = None,
    dropout: float = 0.0,
) -> GPT:
    """A GPT-2: random init if not `pretrained`, else weights from `checkpoint` or the Hub."""
    if not pretrained:
        if checkpoint is not None:
            raise ConfigError("model.checkpoint is set but model.pretrained=false; choose one")
        return GPT(gpt2_config(size, dropout=dropout))
    if checkpoint is None and hub_id is None:
        hub_id = HUB_IDS.get(size)
        if hub_id is None:
            raise ConfigError(
                f"{size!r} has no published weights; set model.checkpoint=PATH or model.pretrained=false"
            )
    path = resolve_gpt2_checkpoint(hub_id, checkpoint)
    config_json = path.parent / "config.json"
    if config_json.is_file():
        cfg = gpt2_config_from_hf(json.loads(config_json.read_text()))
        cfg.dropout = dropout
        sized = gpt2_config(size) if size in SIZES else cfg
        diff = [f for f in _SHAPE_FIELDS if getattr(cfg, f) != getattr(sized, f)]
        if diff:
            warnings.warn(
                f"{config_json} defines the architecture and differs from {size!r} in "
                + ", ".join(f"{f}={getattr(cfg, f)} (not {getattr(sized, f)})" for f in diff),
                stacklevel=2,
            )
    else:
        cfg = gpt2_config(size, dropout=dropout)
    sd = convert_hf_gpt2_state_dict(_read_tensors(path), cfg, source=str(path))
    # Build on the meta device: random init of a model about to be overwritten is wasted time.
    with torch.device("meta"):
        model = GPT(cfg)
    dtype = model.transformer.wte.weight.dtype
    sd = {k: t.to(dtype).contiguous() for k, t in sd.items()}
    sd["lm_head.weight"] = sd["transformer.wte.weight"]
    model.load_state_dict(sd, strict=True, assign=True)
    model.lm_head.weight = model.transformer.wte.weight  # assign=True made two Parameters; re-tie
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:  # a buffer added to GPT later would stay uninitialised here
        raise RuntimeError(f"not loaded from the checkpoint: {left}")
    model.weights_source = str(path)
    return model
