"""Prompt styles: how an instruction entry becomes the text before and after the response.

Add a style by subclassing `PromptStyle` and registering it in `STYLES`.
"""
from __future__ import annotations


class PromptStyle:
    name = "base"

    def prompt(self, entry: dict) -> str:
        """Text the model is given: everything before the response."""
        raise NotImplementedError

    def response(self, output: str) -> str:
        """Text the model learns to produce, as appended after `prompt`."""
        return output


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


STYLES: dict[str, type[PromptStyle]] = {"alpaca": Alpaca, "phi3": Phi3}


def get_prompt_style(name: str | PromptStyle) -> PromptStyle:
    if isinstance(name, PromptStyle):
        return name
    try:
        return STYLES[name]()
    except KeyError:
        raise ValueError(f"unknown prompt style {name!r}; valid names: {', '.join(sorted(STYLES))}") from None
