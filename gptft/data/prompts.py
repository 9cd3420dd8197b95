"""Prompt styles: how an instruction entry becomes the text before and after the response.

Add a style by subclassing `PromptStyle` and registering it in `STYLES`.
"""
from __future__ import annotations

from gptft.errors import GptftError


class PromptStyle:
    name = "base"

    def prompt(self, entry: dict) -> str:
        """Text the model is given: everything before the response."""
        raise NotImplementedError

    def response(self, output: str) -> str:
        """Text the model learns to produce, as appended after `prompt`."""
        return output

    def encode_prompt(self, tokenizer, entry: dict) -> list[int]:
        """Token ids of the prompt, exactly as training examples begin (generation and evaluation use this)."""
        return tokenizer.encode(self.prompt({"input": "", **entry}))


class Alpaca(PromptStyle):
    """The format of the book's chapter 7 (Alpaca's, with the input section only when present)."""

    name = "alpaca"

    def prompt(self, entry: dict) -> str:
        text = (
            "Below is an instruction that describes a task. "
            "Write a response that appropriately completes the request."
            f"\n\n### Instruction:\n{entry['instruction']}"
        )
        if entry.get("input"):
            text += f"\n\n### Input:\n{entry['input']}"
        return text + "\n\n### Response:\n"


class Phi3(PromptStyle):
    """Phi-3's chat markers written as plain text (GPT-2's tokenizer has no such special tokens)."""

    name = "phi3"

    def prompt(self, entry: dict) -> str:
        text = f"<|user|>\n{entry['instruction']}"
        if entry.get("input"):
            text += f"\n{entry['input']}"
        return text + "\n<|assistant|>\n"


class ChatML(PromptStyle):
    """SmolLM2-Instruct's chat format (ChatML), one user turn, no system turn. The collate's
    end-of-text (`<|im_end|>` for that model) closes the assistant turn.

    Use `encode_prompt` for ids: with a tokenizer that has the markers as special tokens
    (`encode_with_special`, e.g. SmolLM2's) they become their ids and the user's text stays
    plain text; GPT-2's tokenizer reads the whole prompt as plain text.
    """

    name = "chatml"
    START, END = "<|im_start|>", "<|im_end|>"

    def _user(self, entry: dict) -> str:
        return entry["instruction"] + (f"\n\n{entry['input']}" if entry.get("input") else "")

    def prompt(self, entry: dict) -> str:
        return f"{self.START}user\n{self._user(entry)}{self.END}\n{self.START}assistant\n"

    def encode_prompt(self, tokenizer, entry: dict) -> list[int]:
        specials = getattr(tokenizer, "special_tokens", {})
        if self.START not in specials or self.END not in specials:
            return tokenizer.encode(self.prompt(entry))
        start, end = specials[self.START], specials[self.END]
        return ([start, *tokenizer.encode(f"user\n{self._user(entry)}"), end, *tokenizer.encode("\n"),
                 start, *tokenizer.encode("assistant\n")])


STYLES: dict[str, type[PromptStyle]] = {"alpaca": Alpaca, "phi3": Phi3, "chatml": ChatML}


def get_prompt_style(name: str | PromptStyle) -> PromptStyle:
    if isinstance(name, PromptStyle):
        return name
    try:
        return STYLES[name]()
    except KeyError:
        raise GptftError(f"unknown prompt style {name!r}; valid names: {', '.join(sorted(STYLES))}") from None


def encode_texts(tokenizer, texts: list[str], style: str | None = None, instruction: str | None = None,
                 limit: int | None = None) -> list[tuple[list[int], bool]]:
    """(token ids, whether cut) of each text as a classifier reads it: the text itself, or with `style` the
    user turn of that prompt style (`instruction`, then the text), ending where the answer would begin, so the
    pooled last token is the model's state before it answers. Training, evaluate, classify and serve all read
    texts through here. A text over `limit` tokens keeps its first ones; a prompted one is shortened inside the
    text, so the prompt's closing markup stays."""
    if style is None:
        encode_batch = getattr(tokenizer, "encode_batch", None)
        encoded = encode_batch(texts) if encode_batch else [tokenizer.encode(t) for t in texts]
        return [(ids[:limit], True) if limit is not None and len(ids) > limit else (ids, False) for ids in encoded]
    prompt, instruction = get_prompt_style(style), str(instruction)  # a YAML number is read as text
    out = []
    for text in texts:
        ids = prompt.encode_prompt(tokenizer, {"instruction": instruction, "input": text})
        own, keep = None, None
        while limit is not None and len(ids) > limit:
            own = tokenizer.encode(text) if own is None else own
            keep = max((len(own) if keep is None else keep) - (len(ids) - limit), 0)
            ids = prompt.encode_prompt(tokenizer, {"instruction": instruction, "input": tokenizer.decode(own[:keep])})
            if keep == 0 and len(ids) > limit:
                raise GptftError(f"data.instruction in prompt style {style} takes {len(ids)} tokens, more than the "
                                 f"limit of {limit}: shorten the instruction")
        out.append((ids, own is not None))
    return out
