"""Greedy responses of an instruction model to test entries, for reading by eye and for scoring."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from ..models.generation import generate
from ..progress import iterate


def generate_responses(backbone: torch.nn.Module, tokenizer, style, entries: Sequence[dict],
                       max_new_tokens: int) -> tuple[list[dict], list[str], int]:
    """(records, prompt texts, prompts too long to answer).

    A record holds the entry's instruction, input and reference output, and the model's response.
    A prompt that fills the context leaves no room to answer: its response is empty (and scores so).
    """
    records, prompts, too_long = [], [], 0
    for entry in iterate(entries, "generating responses", unit="responses"):
        ids = style.encode_prompt(tokenizer, entry)
        if len(ids) >= backbone.context_length:
            too_long, out_ids = too_long + 1, []
        else:
            out_ids = generate(backbone, ids, max_new_tokens, eos_id=tokenizer.eot_id, use_cache=True)
        records.append({"instruction": entry["instruction"], "input": entry.get("input", ""),
                        "output": entry["output"], "model_response": tokenizer.decode(out_ids).strip()})
        prompts.append(style.prompt({"input": "", **entry}))
    return records, prompts, too_long
