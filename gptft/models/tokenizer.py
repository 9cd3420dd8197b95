"""Tokenizers behind one small interface: encode, decode, eot_id, pad_id, vocab_size."""
from __future__ import annotations

import os
from typing import Protocol

from ..errors import CheckpointError, GptftError


class Tokenizer(Protocol):
    name: str
    eot_id: int
    pad_id: int
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def spec(self) -> dict: ...


class TiktokenTokenizer:
    """GPT-2's byte-level BPE through tiktoken. Special-token text in data is kept as plain text."""

    def __init__(self, encoding: str = "gpt2"):
        import tiktoken

        try:
            self._enc = tiktoken.get_encoding(encoding)
        except Exception as err:  # tiktoken fetches its BPE files on first use
            cache = os.environ.get("TIKTOKEN_CACHE_DIR", "<unset>")
            raise GptftError(
                f"could not load the tiktoken encoding {encoding!r} ({err.__class__.__name__}: {err}). "
                f"tiktoken downloads it once and caches it; offline, set TIKTOKEN_CACHE_DIR to a "
                f"folder holding its cache files (now {cache})."
            ) from err
        self.name = encoding
        self.eot_id = self._enc.eot_token
        self.pad_id = self.eot_id
        self.vocab_size = self._enc.n_vocab

    def encode(self, text: str) -> list[int]:
        return self._enc.encode_ordinary(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self._enc.encode_ordinary_batch(texts)

    def decode(self, ids: list[int]) -> str:
        return self._enc.decode(list(ids))

    def spec(self) -> dict:
        """What a checkpoint stores to rebuild this tokenizer."""
        return {"kind": "tiktoken", "encoding": self.name}


def gpt2_tokenizer() -> TiktokenTokenizer:
    return TiktokenTokenizer("gpt2")


def tokenizer_from_spec(spec: dict) -> Tokenizer:
    """Rebuild the tokenizer a checkpoint was trained with."""
    if spec.get("kind") == "tiktoken":
        return TiktokenTokenizer(spec["encoding"])
    if spec.get("kind") == "hf":
        from .hf_tokenizer import tokenizer_from_spec as hf_from_spec

        return hf_from_spec(spec)
    raise CheckpointError(f"unknown tokenizer spec {spec.get('kind')!r} in checkpoint")
