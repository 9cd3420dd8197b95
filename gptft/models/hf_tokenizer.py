"""Byte-level BPE tokenizers of Hugging Face models (SmolLM2), built from a checkpoint.

Sources: a GGUF file's metadata (`tokenizer.ggml.*`) or a `tokenizer.json` folder. Both become a
`tokenizers.Tokenizer` behind gptft's Tokenizer protocol (name, eot_id, pad_id, vocab_size,
encode, decode).

Special tokens (`<|im_start|>`, `<|im_end|>`, `<|endoftext|>` ...):
  encode(text)               plain text: special-token text in user data stays text, as with
                             GPT-2's `encode_ordinary`
  encode_with_special(text)  the special-token strings in `text` become their ids; prompt
                             styles use it for their markup, and `special_id(token)` for one id
  eot_id                     the checkpoint's end-of-sequence token: what ends an assistant turn
                             (`<|im_end|>` for SmolLM2-Instruct, `<|endoftext|>` for the base model)
  pad_id                     = eot_id, as for GPT-2: pads sit after the text and are never scored
No BOS is added anywhere: SmolLM2 does not use one (`tokenizer.ggml.add_bos_token` is false).
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

from ..errors import CheckpointError, MissingCheckpoint

# llama.cpp's names (tokenizer.ggml.pre) of byte-level vocabularies whose merges were learned on
# text split GPT-2's way after isolating every number character (HF: a `Digits` pre-tokenizer).
_DIGIT_SPLIT_PRE = {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva"}
_GPT2_PRE = {"gpt2", "default", "gpt-2"}
_CONTROL, _USER_DEFINED = 3, 4  # llama.cpp token types


def _byte_alphabet() -> dict[int, str]:
    """GPT-2's printable spelling of the 256 byte values (bytes that print as themselves keep it)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    spelling, extra = {}, 0
    for b in range(256):
        if b in keep:
            spelling[b] = chr(b)
        else:
            spelling[b] = chr(256 + extra)
            extra += 1
    return spelling


class HFTokenizer:
    """A `tokenizers.Tokenizer` with gptft's interface; see the module docstring for specials."""

    def __init__(self, backend, *, name: str, eos_token: str, bos_token: str | None = None,
                 chat_template: str | None = None):
        backend.encode_special_tokens = True  # `encode` reads special-token text as plain text
        self._tok = backend
        self.name = name
        self.special_tokens: dict[str, int] = {
            t.content: i for i, t in backend.get_added_tokens_decoder().items() if t.special
        }
        self.eot_id = self._id_of(eos_token)
        self.pad_id = self.eot_id
        self.bos_id = None if bos_token is None else self._id_of(bos_token)
        self.eos_token, self.bos_token = eos_token, bos_token
        self.chat_template = chat_template
        self.vocab_size = backend.get_vocab_size(with_added_tokens=True)
        names = sorted(self.special_tokens, key=len, reverse=True)  # longest first
        self._special_re = re.compile("|".join(map(re.escape, names))) if names else None

    def _id_of(self, token: str) -> int:
        i = self._tok.token_to_id(token)
        if i is None:
            raise ValueError(f"tokenizer {self.name!r} has no token {token!r}")
        return i

    def special_id(self, token: str) -> int:
        if token not in self.special_tokens:
            raise KeyError(f"{token!r} is not a special token of {self.name!r}; "
                           f"it has {sorted(self.special_tokens)}")
        return self.special_tokens[token]

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def encode_with_special(self, text: str) -> list[int]:
        """Like `encode`, but each special-token string in `text` becomes that token's id."""
        if self._special_re is None:
            return self.encode(text)
        ids, pos = [], 0
        for m in self._special_re.finditer(text):
            ids += self.encode(text[pos : m.start()]) if m.start() > pos else []
            ids.append(self.special_tokens[m.group()])
            pos = m.end()
        return ids + (self.encode(text[pos:]) if pos < len(text) else [])

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False)

    def spec(self) -> dict:
        """What a checkpoint stores to rebuild this tokenizer with no download (a few MB of JSON)."""
        return {"kind": "hf", "name": self.name, "json": self._tok.to_str(), "eos_token": self.eos_token,
                "bos_token": self.bos_token, "chat_template": self.chat_template}

    def save(self, folder: str | Path) -> Path:
        """Write `tokenizer.json` + `tokenizer_config.json` (the HF layout `from_folder` reads)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self._tok.save(str(folder / "tokenizer.json"))
        conf = {"eos_token": self.eos_token, "bos_token": self.bos_token, "pad_token": self.eos_token,
                "chat_template": self.chat_template}
        (folder / "tokenizer_config.json").write_text(json.dumps(conf, indent=1))
        return folder

    # -- constructors ------------------------------------------------------------------------
    @classmethod
    def from_gguf_metadata(cls, meta: Mapping, name: str = "gguf") -> HFTokenizer:
        """From GGUF key/values (`tokenizer.ggml.*`), already read into Python values."""
        from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers
        from tokenizers.models import BPE

        kind = meta.get("tokenizer.ggml.model")
        if kind != "gpt2":
            raise CheckpointError(f"GGUF tokenizer model {kind!r} is not supported; gptft reads byte-level "
                             f"BPE ('gpt2') vocabularies. Use a folder with tokenizer.json instead.")
        pre = meta.get("tokenizer.ggml.pre", "default")
        if pre in _DIGIT_SPLIT_PRE:
            pre_tok = pre_tokenizers.Sequence([
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ])
        elif pre in _GPT2_PRE:
            pre_tok = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        else:
            raise CheckpointError(f"GGUF pre-tokenizer {pre!r} is not supported (known: "
                             f"{sorted(_DIGIT_SPLIT_PRE | _GPT2_PRE)}); use a folder with tokenizer.json")
        tokens = list(meta["tokenizer.ggml.tokens"])
        types = list(meta.get("tokenizer.ggml.token_type") or [1] * len(tokens))
        spelling = _byte_alphabet()
        alphabet = set(spelling.values())
        # a token in raw UTF-8 rather than the byte spelling is re-spelled, so BPE can reach it
        spelled = [t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8"))
                   for t in tokens]
        merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
        tok = Tokenizer(BPE({t: i for i, t in enumerate(spelled)}, merges, fuse_unk=False))
        tok.pre_tokenizer = pre_tok
        tok.decoder = decoders.ByteLevel()
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                for t, k in zip(tokens, types) if k == _CONTROL])
        tok.add_tokens([AddedToken(t, special=False, normalized=False)
                        for t, k in zip(tokens, types) if k == _USER_DEFINED])

        def token_at(key):
            i = meta.get(f"tokenizer.ggml.{key}")
            return None if i is None else tokens[int(i)]

        eos = token_at("eos_token_id") or "<|endoftext|>"
        return cls(tok, name=name, eos_token=eos, bos_token=token_at("bos_token_id"),
                   chat_template=meta.get("tokenizer.chat_template"))

    @classmethod
    def from_folder(cls, folder: str | Path) -> HFTokenizer:
        """From a Hugging Face model folder: tokenizer.json, plus the eos token named in
        tokenizer_config.json (or config.json's eos_token_id)."""
        from tokenizers import Tokenizer

        folder = Path(folder)
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise MissingCheckpoint(f"{folder} has no tokenizer.json; gptft needs it for the tokenizer")
        tok = Tokenizer.from_file(str(path))
        conf = _read_json(folder / "tokenizer_config.json")

        def token(key):
            t = conf.get(key)
            return t.get("content") if isinstance(t, dict) else t

        eos, bos = token("eos_token"), token("bos_token")
        if eos is None:
            eos_id = _read_json(folder / "config.json").get("eos_token_id")
            eos_id = eos_id[0] if isinstance(eos_id, list) else eos_id
            eos = tok.id_to_token(eos_id) if eos_id is not None else "<|endoftext|>"
        return cls(tok, name=f"hf-bpe:{folder.name}", eos_token=eos, bos_token=bos,
                   chat_template=conf.get("chat_template"))


def tokenizer_from_spec(spec: Mapping) -> HFTokenizer:
    from tokenizers import Tokenizer

    return HFTokenizer(Tokenizer.from_str(spec["json"]), name=spec["name"], eos_token=spec["eos_token"],
                       bos_token=spec.get("bos_token"), chat_template=spec.get("chat_template"))


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
