"""Decoding for any backbone with the shared interface (`forward(idx, kv_caches, pos_offset)`)."""
from __future__ import annotations

import torch

from ..errors import GptftError
from ..progress import iterate


def pick_next(
    logits: torch.Tensor,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Next token ids (B,) from last-position logits (B, V): greedy at temperature 0."""
    if temperature <= 0.0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[..., -1, None]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0.0 < top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # drop a token when the tokens ranked above it already reach top_p
        drop = probs.cumsum(dim=-1) - probs >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def generate(model, prompt_ids: list[int], max_new_tokens: int, **options) -> list[int]:
    """New token ids after `prompt_ids`, stopping at `eos_id` (not returned) or the budget; decoding also
    stops when the context window is full. `options`: those of `generate_stream` (temperature, top_k,
    top_p, eos_id, use_cache, generator, progress)."""
    return list(generate_stream(model, prompt_ids, max_new_tokens, **options))


def generate_stream(
    model,
    prompt_ids: list[int],
    max_new_tokens: int,
    *,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
    progress: str | None = None,
):
    """`generate`, one new token id at a time (the server streams them as they come). `progress`: show
    progress under that name."""
    if not prompt_ids:
        raise GptftError("generation needs a non-empty prompt")
    device = next(model.parameters()).device
    limit = model.context_length
    if len(prompt_ids) >= limit:
        raise GptftError(
            f"prompt has {len(prompt_ids)} tokens but the context holds {limit}; shorten it"
        )
    modes = {m: m.training for m in model.modules()}  # restored one by one: tasks keep frozen parts in eval
    model.eval()
    ids = torch.tensor([prompt_ids], dtype=torch.long, device=device)
    caches = model.new_kv_caches() if use_cache else None
    step_input, offset = ids, 0
    try:
        steps = range(max_new_tokens)
        for _ in iterate(steps, progress, unit="tokens") if progress else steps:
            if offset + step_input.shape[1] > limit:
                break
            with torch.no_grad():
                logits = model(step_input, kv_caches=caches, pos_offset=offset)[:, -1]
            nxt = pick_next(logits, temperature, top_k, top_p, generator)
            token = int(nxt.item())
            if eos_id is not None and token == eos_id:
                break
            yield token
            if use_cache:
                offset += step_input.shape[1]
                step_input = nxt.view(1, 1)
            else:
                ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
                step_input = ids
    finally:
        for m, training in modes.items():
            m.training = training  # not m.train(): that recurses into children
