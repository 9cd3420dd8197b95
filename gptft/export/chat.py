"""Chat templates that reproduce the prompt style an instruction model was trained with.

A Jinja template (tokenizer_config.json, GGUF `tokenizer.chat_template`) and an Ollama TEMPLATE. A user
message becomes the style's prompt up to the response header (an optional `input` key of the message fills
the Alpaca/Phi-3 input section as in training); `add_generation_prompt` adds the header; an assistant message
is its text plus the end-of-text token, which ended every training response.
"""
from __future__ import annotations

import json

from ..data.prompts import get_prompt_style

# (text before the instruction, text between instruction and input, text after them up to the response)
_PARTS = {
    "alpaca": ("Below is an instruction that describes a task. Write a response that appropriately completes "
               "the request.\n\n### Instruction:\n", "\n\n### Input:\n", "\n\n### Response:\n"),
    "phi3": ("<|user|>\n", "\n", "\n<|assistant|>\n"),
    "chatml": ("<|im_start|>user\n", "\n\n", "<|im_end|>\n<|im_start|>assistant\n"),
}


def parts(style: str) -> tuple[str, str, str]:
    """The style's three pieces, checked against gptft's own prompt so the two cannot drift apart."""
    before, sep, after = _PARTS[style]
    prompt = get_prompt_style(style).prompt
    assert prompt({"instruction": "I", "input": "X"}) == f"{before}I{sep}X{after}", style
    assert prompt({"instruction": "I", "input": ""}) == f"{before}I{after}", style
    return before, sep, after


def _lit(text: str) -> str:
    # literal text goes through expressions: transformers renders with trim_blocks, which eats a newline after %}
    return "{{ " + json.dumps(text) + " }}"


def jinja_template(style: str) -> str:
    before, sep, after = parts(style)
    return ("{% for message in messages %}{% if message['role'] == 'user' %}"
            + _lit(before) + "{{ message['content'] }}"
            + "{% if message['input'] is defined and message['input'] %}" + _lit(sep) + "{{ message['input'] }}"
            + "{% endif %}{% elif message['role'] == 'assistant' %}" + _lit(after)
            + "{{ message['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
            + "{% if add_generation_prompt %}" + _lit(after) + "{% endif %}")


def ollama_template(style: str) -> str:
    """Go template for an Ollama Modelfile: one user turn (the instruction, with any input appended)."""
    before, _, after = parts(style)
    return before + "{{ .Prompt }}" + after + "{{ .Response }}"
