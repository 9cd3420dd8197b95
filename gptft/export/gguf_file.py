"""A causal LM as a GGUF file (llama.cpp's format) written with the `gguf` package.

Tensor names come from gguf's own map of transformers names (the one llama.cpp's converter and
transformers' GGUF loader use). Llama's Q/K rows are reordered for llama.cpp's RoPE kernel, as its
converter does; 1-D tensors stay f32; q8_0 quantizes matrices whose rows are a multiple of 32 (others f16).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

DTYPES = ("f32", "f16", "q8_0")


def permute_rope(w: np.ndarray, n_head: int) -> np.ndarray:
    """transformers' rotate-half row order -> llama.cpp's interleaved pairs, per head."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _arch(backbone):
    import gguf

    return {"gpt2": gguf.MODEL_ARCH.GPT2, "llama": gguf.MODEL_ARCH.LLAMA}[backbone.arch]


def _hparams(w, backbone) -> None:
    cfg = backbone.config
    w.add_context_length(cfg.context_length)
    w.add_embedding_length(cfg.n_embd)
    w.add_block_count(cfg.n_layer)
    w.add_head_count(cfg.n_head)
    w.add_vocab_size(cfg.vocab_size)
    if backbone.arch == "gpt2":
        w.add_feed_forward_length(4 * cfg.n_embd)
        w.add_layer_norm_eps(cfg.layer_norm_eps)
    else:
        w.add_feed_forward_length(cfg.intermediate_size)
        w.add_head_count_kv(cfg.n_kv_head)
        w.add_rope_dimension_count(cfg.n_embd // cfg.n_head)
        w.add_rope_freq_base(cfg.rope_theta)
        w.add_layer_norm_rms_eps(cfg.rms_norm_eps)


def _vocab(w, vocab: dict, tokenizer, chat_template: str | None) -> None:
    w.add_tokenizer_model("gpt2")  # llama.cpp's name for byte-level BPE
    w.add_tokenizer_pre(vocab["pre"])
    w.add_token_list(vocab["tokens"])
    w.add_token_types(vocab["types"])
    w.add_token_merges(vocab["merges"])
    bos = getattr(tokenizer, "bos_id", None)
    w.add_bos_token_id(tokenizer.eot_id if bos is None else bos)
    w.add_eos_token_id(tokenizer.eot_id)
    w.add_pad_token_id(tokenizer.pad_id)
    w.add_add_bos_token(False)  # gptft never adds one
    if chat_template:
        w.add_chat_template(chat_template)


def _encode(arr: np.ndarray, dtype: str):
    """(data, raw dtype or None) for one tensor."""
    import gguf

    if arr.ndim == 1 or dtype == "f32":
        return arr.astype(np.float32), None
    if dtype == "q8_0" and arr.shape[-1] % 32 == 0:
        return gguf.quants.quantize(arr, gguf.GGMLQuantizationType.Q8_0), gguf.GGMLQuantizationType.Q8_0
    return arr.astype(np.float16), None


def write_gguf(path: Path, backbone, tensors: dict, vocab: dict, tokenizer, chat_template: str | None,
               dtype: str, name: str) -> None:
    """`tensors`: transformers names -> tensors in nn.Linear layout (hf_model.hf_state_dict(conv1d=False))."""
    import gguf

    arch = _arch(backbone)
    names = gguf.get_tensor_name_map(arch, backbone.config.n_layer)
    w = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[arch])
    w.add_name(name)
    w.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                     "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[dtype])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _hparams(w, backbone)
    _vocab(w, vocab, tokenizer, chat_template)
    cfg = backbone.config
    for key, t in tensors.items():
        arr = t.numpy()
        if key.endswith("self_attn.q_proj.weight"):
            arr = permute_rope(arr, cfg.n_head)
        elif key.endswith("self_attn.k_proj.weight"):
            arr = permute_rope(arr, cfg.n_kv_head)
        gname = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if gname is None:
            raise KeyError(f"gguf has no name for {key}")
        data, raw = _encode(np.ascontiguousarray(arr), "f32" if gname == "position_embd.weight" else dtype)
        w.add_tensor(gname, data, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file(progress=False)
    w.close()


def modelfile(gguf_name: str, ollama_template: str | None, stop: str) -> str:
    """An Ollama Modelfile beside the GGUF file (greedy decoding, as gptft's default)."""
    lines = [f"FROM ./{gguf_name}"]
    if ollama_template:
        lines.append(f'TEMPLATE """{ollama_template}"""')
    lines += [f'PARAMETER stop "{stop}"', "PARAMETER temperature 0"]
    return "\n".join(lines) + "\n"
