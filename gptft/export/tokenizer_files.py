"""The tokenizer of a checkpoint as Hugging Face files (tokenizer.json, tokenizer_config.json) and as GGUF
vocabulary metadata. GPT-2's is rebuilt from tiktoken (its merges recovered from the token ranks); a
Hugging Face tokenizer (SmolLM2) is written from the JSON the checkpoint keeps."""
from __future__ import annotations

import functools
import json
from pathlib import Path

from ..errors import CheckpointError
from ..models.hf_tokenizer import _byte_alphabet

NORMAL, CONTROL, USER_DEFINED = 1, 3, 4  # llama.cpp token types


def _merge_parts(ranks: dict[bytes, int], token: bytes) -> tuple[bytes, bytes]:
    """The two tokens whose merge made `token`: byte-pair encode it using only lower ranks."""
    rank = ranks[token]
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 2:
        pairs = [(ranks.get(a + b, rank), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
        best, i = min(pairs)
        if best >= rank:
            break
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    if len(parts) != 2:
        raise CheckpointError(f"the tiktoken vocabulary has a token {token!r} that no merge produces")
    return parts[0], parts[1]


@functools.lru_cache(maxsize=2)  # a few seconds per build; one export uses it twice for GGUF
def tiktoken_backend(encoding: str):
    """A `tokenizers.Tokenizer` equal to a tiktoken encoding (GPT-2's), built through tiktoken's public API."""
    import tiktoken
    from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import BPE

    enc = tiktoken.get_encoding(encoding)
    specials = {enc.encode_single_token(t): t for t in enc.special_tokens_set}
    ranks = {enc.decode_single_token_bytes(i): i for i in range(enc.n_vocab) if i not in specials}
    spell = _byte_alphabet()
    text = {b: "".join(spell[x] for x in b) for b in ranks}
    merges = [tuple(text[p] for p in _merge_parts(ranks, b)) for b in sorted(ranks, key=ranks.get) if len(b) > 1]
    tok = Tokenizer(BPE({text[b]: i for b, i in ranks.items()}, merges, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for _, t in sorted(specials.items())])
    return tok


def backend(spec: dict):
    """The checkpoint's tokenizer as a `tokenizers.Tokenizer` for export: special-token text in a prompt
    (e.g. a chat template's `<|im_start|>`) becomes the special token, as transformers expects."""
    from tokenizers import Tokenizer

    if spec["kind"] == "tiktoken":
        return tiktoken_backend(spec["encoding"])
    tok = Tokenizer.from_str(spec["json"])
    tok.encode_special_tokens = False
    return tok


def eos_token(tokenizer) -> str:
    return tokenizer.decode([tokenizer.eot_id])


def write_hf(folder: Path, tok, tokenizer, chat_template: str | None) -> None:
    """tokenizer.json, tokenizer_config.json and special_tokens_map.json."""
    tok.save(str(folder / "tokenizer.json"))
    eos = eos_token(tokenizer)
    bos_id = getattr(tokenizer, "bos_id", None)
    bos = eos if bos_id is None else tokenizer.decode([bos_id])
    specials = {"bos_token": bos, "eos_token": eos, "pad_token": tokenizer.decode([tokenizer.pad_id]),
                "unk_token": eos}
    conf = {"tokenizer_class": "PreTrainedTokenizerFast", **specials, "add_bos_token": False,
            "add_prefix_space": False, "clean_up_tokenization_spaces": False,
            "model_max_length": None, "padding_side": "right"}
    if chat_template:
        conf["chat_template"] = chat_template
    (folder / "tokenizer_config.json").write_text(json.dumps(conf, indent=2, ensure_ascii=False) + "\n")
    (folder / "special_tokens_map.json").write_text(json.dumps(specials, indent=2, ensure_ascii=False) + "\n")


def gguf_vocab(tok) -> dict:
    """tokenizer.ggml.* values: tokens by id, their types, merges and llama.cpp's pre-tokenizer name."""
    data = json.loads(tok.to_str())
    model = data["model"]
    if model.get("type") != "BPE" or not model.get("vocab"):
        raise CheckpointError(f"GGUF export needs a byte-level BPE tokenizer, this one is {model.get('type')!r}")
    vocab = dict(model["vocab"])
    kinds = {}
    for added in data.get("added_tokens", []):
        vocab[added["content"]] = added["id"]
        kinds[added["id"]] = CONTROL if added["special"] else USER_DEFINED
    tokens = [None] * (max(vocab.values()) + 1)
    for t, i in vocab.items():
        tokens[i] = t
    if None in tokens:
        raise CheckpointError("the tokenizer's ids have gaps; GGUF needs one token per id")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return {"tokens": tokens, "types": [kinds.get(i, NORMAL) for i in range(len(tokens))], "merges": merges,
            "pre": _pre_name(data.get("pre_tokenizer") or {})}


def _pre_name(pre: dict) -> str:
    """llama.cpp's name for the pre-tokenizer: GPT-2's regex, or that regex after isolating digits."""
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [(s.get("type"), s.get("individual_digits")) for s in steps]
    if kinds == [("ByteLevel", None)] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == [("Digits", True), ("ByteLevel", None)] and steps[1].get("use_regex", True):
        return "smollm"
    raise CheckpointError(f"GGUF export knows GPT-2's and SmolLM2's pre-tokenizers, not {json.dumps(pre)[:200]}")
