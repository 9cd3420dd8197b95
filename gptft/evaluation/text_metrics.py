"""Scores of generated texts against references: exact match, and ROUGE-L F1 from torchmetrics.

torchmetrics' ROUGE-L (no stemming, so no nltk) tokenises as the reference `rouge_score` package does:
lowercase, every run of characters outside [a-z0-9] is a separator. So punctuation and spacing do not
count, and letters outside ASCII are dropped ("café" is the word "caf"). An empty side scores 0.
Exact match has no torchmetrics counterpart for plain strings; it is one line here.
"""
from __future__ import annotations

from collections.abc import Sequence

from torchmetrics.text import ROUGEScore


def exact_match(reference: str, candidate: str) -> bool:
    """Identical after stripping surrounding whitespace (case and inner spacing matter)."""
    return reference.strip() == candidate.strip()


def text_scores(references: Sequence[str], candidates: Sequence[str]) -> dict:
    """Mean exact match and mean ROUGE-L F1 over the pairs (0.0 for no pairs)."""
    n = len(references)
    if n == 0:
        return {"exact_match": 0.0, "rouge_l": 0.0}
    rouge = ROUGEScore(rouge_keys="rougeL")
    rouge.update(list(candidates), list(references))
    return {"exact_match": sum(map(exact_match, references, candidates)) / n,
            "rouge_l": float(rouge.compute()["rougeL_fmeasure"])}
