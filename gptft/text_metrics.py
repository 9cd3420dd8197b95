"""Scores of a generated text against a reference: exact match and ROUGE-L F1.

Written out here rather than taken from a package so the definition is visible and has no
dependencies. ROUGE-L compares lowercased word tokens: runs of letters/digits (`\\w+`), so
punctuation and spacing do not count, as in the usual ROUGE tokenisation.
"""
from __future__ import annotations

import re

_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def exact_match(reference: str, candidate: str) -> bool:
    """Identical after stripping surrounding whitespace (case and inner spacing matter)."""
    return reference.strip() == candidate.strip()


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence, O(len(a) * len(b)) time, one row of memory."""
    if len(a) < len(b):
        a, b = b, a  # the row runs over the shorter sequence
    row = [0] * (len(b) + 1)
    for x in a:
        diag = 0  # row[j - 1] of the previous row
        for j, y in enumerate(b, start=1):
            above = row[j]
            row[j] = diag + 1 if x == y else max(above, row[j - 1])
            diag = above
    return row[-1]


def rouge_l(reference: str, candidate: str) -> float:
    """ROUGE-L F1: harmonic mean of LCS/len(candidate) and LCS/len(reference), in words.

    An empty side (no words) scores 0, as in the reference ROUGE implementation.
    """
    ref, cand = words(reference), words(candidate)
    if not ref or not cand:
        return 0.0
    lcs = lcs_length(ref, cand)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(cand), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)
