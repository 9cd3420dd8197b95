"""Load Llama-architecture checkpoints (SmolLM2) with their tokenizers.

Sources: a `.gguf` file (dequantized with the `gguf` package), a Hugging Face folder
(config.json + model.safetensors + tokenizer.json), or a Hub id downloaded into the HF cache.
The checkpoint's own numbers define the architecture; a `size_config` (the config's
`model.shape`) that disagrees only draws a warning. `size_config["dropout"]` always applies.

Random init (`pretrained=False`) still needs the model's tokenizer: it comes from
`checkpoint` (only its tokenizer is read) or the Hub id's tokenizer files; with neither it is
an error rather than a silent fallback to some other vocabulary.
"""
from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError, ConfigError, MissingCheckpoint
from ..progress import iterate
from .checkpoint_files import FIX, read_safetensors
from .hf_tokenizer import HFTokenizer
from .hub import fetch
from .llama import Llama, LlamaConfig

log = logging.getLogger(__name__)

_GGUF_BLOCK = {  # blk.N.<gguf name> -> model.layers.N.<ours>
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_GGUF_TOP = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


# -- GGUF ------------------------------------------------------------------------------------
def read_gguf(path: str | Path, tensors: bool = True) -> tuple[dict, dict[str, np.ndarray]]:
    """(metadata as Python values, {gguf tensor name: fp32 array}); tensors={} if not `tensors`."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    try:
        reader = GGUFReader(str(path))
        meta = {k: f.contents() for k, f in reader.fields.items()}
    except Exception as err:  # the reader fails in many ways (bad magic, short file, odd offsets)
        raise CheckpointError(f"model.checkpoint={path} is not a readable GGUF file ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}); "
                              + FIX.format(key="model.checkpoint")) from None
    out: dict[str, np.ndarray] = {}
    for t in iterate(reader.tensors if tensors else (), f"loading weights of {Path(path).name}", unit="tensors"):
        try:
            arr = dequantize(t.data, t.tensor_type)
        except NotImplementedError as err:
            raise CheckpointError(
                f"{path}: tensor {t.name} is stored as {t.tensor_type.name}, which this version of "
                f"the gguf package cannot dequantize ({err}); use a file with another quantization "
                f"(e.g. Q8_0, Q4_K, F16) or a safetensors folder"
            ) from None
        if arr.dtype != np.float32 or not arr.flags.writeable:  # F32 comes back as a file view
            arr = arr.astype(np.float32)
        # GGUF lists dimensions fastest-first; torch wants them the other way round
        out[t.name] = arr.reshape(tuple(int(d) for d in reversed(t.shape)))
    return meta, out


def llama_config_from_gguf(meta: Mapping, tied: bool) -> LlamaConfig:
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise CheckpointError(f"GGUF architecture {arch!r} is not supported; gptft reads 'llama' files")

    def get(key, default=None):
        v = meta.get(f"llama.{key}", default)
        if v is None:
            raise CheckpointError(f"GGUF metadata lacks llama.{key}")
        return v

    n_embd, n_head = int(get("embedding_length")), int(get("attention.head_count"))
    rope_dim = meta.get("llama.rope.dimension_count", n_embd // n_head)
    scaling = meta.get("llama.rope.scaling.type", "none")
    if rope_dim != n_embd // n_head or scaling not in ("none", None):
        raise CheckpointError(f"GGUF asks for partial or scaled RoPE (dimension_count={rope_dim}, "
                         f"scaling={scaling!r}); gptft's Llama rotates whole heads without scaling")
    vocab = meta.get("llama.vocab_size") or len(meta["tokenizer.ggml.tokens"])
    return LlamaConfig(
        vocab_size=int(vocab),
        context_length=int(get("context_length")),
        n_layer=int(get("block_count")),
        n_head=n_head,
        n_kv_head=int(get("attention.head_count_kv", n_head)),
        n_embd=n_embd,
        intermediate_size=int(get("feed_forward_length")),
        rope_theta=float(get("rope.freq_base", 10000.0)),
        rms_norm_eps=float(get("attention.layer_norm_rms_epsilon")),
        tie_embeddings=tied,
    )


def _unpermute_rope(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's converter, which reorders each head's Q/K rows from HF's rotate-half
    layout (first half, second half) to interleaved pairs for its own RoPE kernel."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def convert_gguf_tensors(arrays: Mapping[str, np.ndarray], cfg: LlamaConfig) -> dict[str, torch.Tensor]:
    """GGUF tensor names and layouts -> our (HF) names; unknown names are an error."""
    out = {}
    for name, arr in arrays.items():
        stem, _, suffix = name.rpartition(".")
        parts = stem.split(".")
        if parts[0] == "blk" and len(parts) == 3 and parts[2] in _GGUF_BLOCK:
            ours = f"model.layers.{int(parts[1])}.{_GGUF_BLOCK[parts[2]]}.{suffix}"
            if parts[2] == "attn_q":
                arr = _unpermute_rope(arr, cfg.n_head)
            elif parts[2] == "attn_k":
                arr = _unpermute_rope(arr, cfg.n_kv_head)
        elif stem in _GGUF_TOP:
            ours = f"{_GGUF_TOP[stem]}.{suffix}"
        else:
            raise CheckpointError(f"GGUF tensor {name!r} has no place in gptft's Llama")
        out[ours] = torch.from_numpy(np.ascontiguousarray(arr))
    return out


# -- Hugging Face folders ----------------------------------------------------------------------
def llama_config_from_hf(conf: Mapping) -> LlamaConfig:
    if conf.get("model_type") != "llama":
        raise CheckpointError(f"config.json has model_type={conf.get('model_type')!r}, expected 'llama'")
    n_embd, n_head = conf["hidden_size"], conf["num_attention_heads"]
    rope = conf.get("rope_parameters") or {}  # transformers 5 nests theta here
    rope_type = rope.get("rope_type") or (conf.get("rope_scaling") or {}).get("rope_type", "default")
    bad = [
        f"{k}={conf.get(k)!r}" for k, ok in [
            ("hidden_act", conf.get("hidden_act", "silu") == "silu"),
            ("attention_bias", not conf.get("attention_bias", False)),
            ("mlp_bias", not conf.get("mlp_bias", False)),
            ("head_dim", conf.get("head_dim") in (None, n_embd // n_head)),
        ] if not ok
    ] + ([f"rope_type={rope_type!r}"] if rope_type != "default" else [])
    if bad:
        raise CheckpointError(f"config.json asks for a Llama variant gptft lacks: {', '.join(bad)}")
    return LlamaConfig(
        vocab_size=conf["vocab_size"],
        context_length=conf["max_position_embeddings"],
        n_layer=conf["num_hidden_layers"],
        n_head=n_head,
        n_kv_head=conf.get("num_key_value_heads") or n_head,
        n_embd=n_embd,
        intermediate_size=conf["intermediate_size"],
        rope_theta=float(rope.get("rope_theta", conf.get("rope_theta", 10000.0))),
        rms_norm_eps=float(conf.get("rms_norm_eps", 1e-6)),
        tie_embeddings=bool(conf.get("tie_word_embeddings", False)),  # LlamaConfig's default
    )


def _read_safetensors(folder: Path) -> dict[str, torch.Tensor]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():  # sharded: weight_map names the shard of each tensor
        out: dict[str, torch.Tensor] = {}
        for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
            out.update(read_safetensors(folder / shard, "model.checkpoint"))
        return out
    if not (folder / "model.safetensors").is_file():
        raise MissingCheckpoint(f"{folder} has no model.safetensors (or .index.json)")
    return read_safetensors(folder / "model.safetensors", "model.checkpoint")


# -- Hub ----------------------------------------------------------------------------------------
LLAMA_LOCAL = ("a local .gguf file or a safetensors folder (config.json, model.safetensors, tokenizer.json); "
               "model.pretrained=false still needs a tokenizer from model.checkpoint or a cached Hub id")


def hub_folder(hub_id: str, weights: bool = True) -> Path:
    """The snapshot folder holding the Hub id's config, tokenizer and (if `weights`) weights."""
    def get(name: str, optional: bool = False) -> Path | None:
        return fetch(hub_id, name, local_hint=LLAMA_LOCAL, optional=optional)

    folder = get("config.json").parent
    get("tokenizer.json")
    get("tokenizer_config.json", optional=True)
    if weights and get("model.safetensors", optional=True) is None:
        index = json.loads(get("model.safetensors.index.json").read_text())
        for shard in sorted(set(index["weight_map"].values())):
            get(shard)
    return folder


# -- entry point --------------------------------------------------------------------------------
def _is_gguf(path: Path) -> bool:
    return path.is_file() and path.suffix == ".gguf"


def _checkpoint_path(checkpoint: str) -> Path:
    path = Path(checkpoint).expanduser()
    if not path.exists():
        raise MissingCheckpoint(f"model.checkpoint={checkpoint} does not exist")
    if not (_is_gguf(path) or path.is_dir()):
        raise ConfigError(f"model.checkpoint={checkpoint}: expected a .gguf file or a Hugging Face "
                         f"folder (config.json, model.safetensors, tokenizer.json)")
    return path


def _tokenizer_from(path: Path) -> HFTokenizer:
    if _is_gguf(path):
        meta, _ = read_gguf(path, tensors=False)
        return HFTokenizer.from_gguf_metadata(meta, name=f"hf-bpe:{path.stem}")
    return HFTokenizer.from_folder(path)


def _build(cfg: LlamaConfig, sd: dict[str, torch.Tensor], source: str) -> Llama:
    with torch.device("meta"):  # random init of weights about to be overwritten is wasted time
        model = Llama(cfg)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if cfg.tie_embeddings:
        head = sd.pop("lm_head.weight", None)
        if head is not None and not torch.equal(head, sd["model.embed_tokens.weight"]):
            raise CheckpointError(f"{source}: lm_head differs from the embedding but the config ties them")
        expected.pop("lm_head.weight")
    missing, unexpected = sorted(set(expected) - set(sd)), sorted(set(sd) - set(expected))
    wrong = [f"{k}: {tuple(sd[k].shape)} != {expected[k]}" for k in set(expected) & set(sd)
             if tuple(sd[k].shape) != expected[k]]
    if missing or unexpected or wrong:
        raise CheckpointError(f"{source} does not fit Llama({cfg}): missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}, wrong shapes {sorted(wrong)[:5]}")
    model.load_state_dict({k: t.float().contiguous() for k, t in sd.items()}, strict=False, assign=True)
    if cfg.tie_embeddings:  # assign=True replaced the shared Parameter; tie again
        model.lm_head.weight = model.model.embed_tokens.weight
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"not loaded from {source}: {left}")
    return model


def _same(ours, configured) -> bool:
    """Equal, floats within float32 rounding: a GGUF stores rms_norm_eps=1e-5 as 9.999999747378752e-06."""
    if isinstance(ours, float) or isinstance(configured, float):
        return math.isclose(float(ours), float(configured), rel_tol=1e-6)
    return ours == configured


def _warn_mismatch(cfg: LlamaConfig, size_config: Mapping, source: str) -> None:
    diff = [f"{k}={getattr(cfg, k)} (config says {v})" for k, v in size_config.items()
            if k != "dropout" and not _same(getattr(cfg, k), v)]
    if diff:
        warnings.warn(f"{source} defines the architecture; it differs from model.shape in "
                      + ", ".join(diff), stacklevel=3)


def load_llama(
    *,
    checkpoint: str | None,
    hub_id: str | None,
    pretrained: bool,
    size_config: Mapping | None,
) -> tuple[Llama, HFTokenizer]:
    """A Llama and its tokenizer; see the module docstring for where each comes from."""
    size_config = dict(size_config or {})
    unknown = set(size_config) - {f.name for f in fields(LlamaConfig)}
    if unknown:
        raise ConfigError(f"model.shape has unknown keys {sorted(unknown)}; "
                         f"valid: {[f.name for f in fields(LlamaConfig)]}")
    dropout = float(size_config.get("dropout", 0.0))
    path = _checkpoint_path(checkpoint) if checkpoint is not None else None

    if not pretrained:
        if path is None and hub_id is None:
            raise ConfigError(
                "model.pretrained=false still needs the model's tokenizer: set model.checkpoint=PATH "
                "to a .gguf file or a folder with tokenizer.json (only its tokenizer is read), or "
                "model.hub_id to a Hub model whose tokenizer is cached or downloadable")
        tokenizer = _tokenizer_from(path if path is not None else hub_folder(hub_id, weights=False))
        if path is None:
            tokenizer.name = f"hf-bpe:{hub_id}"  # not the snapshot's commit hash
        cfg = LlamaConfig(**{**size_config, "dropout": dropout})
        if tokenizer.vocab_size > cfg.vocab_size:
            raise ConfigError(f"the tokenizer has {tokenizer.vocab_size} tokens but model.shape."
                             f"vocab_size={cfg.vocab_size}")
        return Llama(cfg), tokenizer

    if path is None:
        if hub_id is None:
            raise ConfigError("no model.hub_id and no model.checkpoint: nowhere to load weights from")
        path = hub_folder(hub_id)
    if _is_gguf(path):
        meta, arrays = read_gguf(path)
        cfg = llama_config_from_gguf(meta, tied="output.weight" not in arrays)
        sd = convert_gguf_tensors(arrays, cfg)
        tokenizer = HFTokenizer.from_gguf_metadata(meta, name=f"hf-bpe:{path.stem}")
    else:
        conf_file = path / "config.json"
        if not conf_file.is_file():
            raise MissingCheckpoint(f"{path} has no config.json; gptft needs it for the architecture")
        cfg = llama_config_from_hf(json.loads(conf_file.read_text()))
        sd = _read_safetensors(path)
        tokenizer = HFTokenizer.from_folder(path)
        if checkpoint is None:
            tokenizer.name = f"hf-bpe:{hub_id}"
    _warn_mismatch(cfg, size_config, str(path))
    cfg.dropout = dropout
    if tokenizer.vocab_size > cfg.vocab_size:
        raise CheckpointError(f"{path}: tokenizer has {tokenizer.vocab_size} tokens, the model {cfg.vocab_size}")
    model = _build(cfg, sd, str(path))
    model.weights_source = str(path)
    log.info("loaded Llama %s from %s (%.1fM parameters)", cfg, path, model.num_params() / 1e6)
    return model, tokenizer
