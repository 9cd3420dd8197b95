"""Decoding choices: greedy, temperature, top-k and top-p keep exactly the tokens they should."""
import torch

from gptft.models.generation import pick_next

LOGITS = torch.log(torch.tensor([[0.5, 0.25, 0.15, 0.1]]))


def _draws(**kw):
    g = torch.Generator().manual_seed(0)
    return {int(pick_next(LOGITS, generator=g, **kw)) for _ in range(300)}


def test_greedy_at_temperature_zero():
    assert _draws(temperature=0.0) == {0}


def test_top_k_keeps_the_k_most_likely():
    assert _draws(temperature=1.0, top_k=2) == {0, 1}


def test_top_p_keeps_the_smallest_set_reaching_p():
    assert _draws(temperature=1.0, top_p=0.7) == {0, 1}   # 0.5 < 0.7 <= 0.75
    assert _draws(temperature=1.0, top_p=0.5) == {0}
    assert _draws(temperature=1.0) == {0, 1, 2, 3}
