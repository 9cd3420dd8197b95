"""Fitted on the validation split after training: a temperature for the logits and a decision threshold."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 100) -> float:
    """The T > 0 minimising the NLL of softmax(logits / T) (Guo et al. 2017): one scalar, fitted with LBFGS on
    log T (so T stays positive). It rescales confidence only; argmax predictions stay the same. Runs with
    gradients even when called from a test or validation hook (inference mode there). Logits that classify every
    row correctly have no finite optimum (the NLL falls as T -> 0, to probabilities of exactly 0 and 1): 1.0."""
    if separates(logits, labels):
        return 1.0
    with torch.inference_mode(False), torch.enable_grad():
        logits, labels = logits.detach().double().clone(), labels.detach().long().clone()
        log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

        def nll():
            opt.zero_grad()
            loss = F.cross_entropy(logits / log_t.exp(), labels)
            loss.backward()
            return loss

        opt.step(nll)
        return float(log_t.detach().exp())


def separates(logits: torch.Tensor, labels: torch.Tensor) -> bool:
    """Whether every row's highest logit is its label's, by a margin (ties are not separated)."""
    top2 = logits.detach().double().topk(2, dim=-1).values
    return bool(((logits.detach().argmax(-1) == labels) & (top2[:, 0] > top2[:, 1])).all())


def choose_threshold(scores: torch.Tensor, positive: torch.Tensor, target: float) -> tuple[float, float, bool]:
    """(threshold, its precision, met): the smallest threshold t among the scores such that predicting positive
    for score >= t has precision >= target. Unattainable (every cut falls short): the smallest threshold with
    the highest precision there is, and met=False."""
    if len(scores) == 0:
        raise ValueError("no scores to choose a threshold from")
    order = torch.argsort(scores.detach().double(), descending=True)
    s, y = scores.detach().double()[order], positive.detach()[order].double()
    precision = y.cumsum(0) / torch.arange(1, len(s) + 1, dtype=torch.float64)
    cut = torch.ones(len(s), dtype=torch.bool)  # a cut at t keeps every score equal to t: only a group's last counts
    cut[:-1] = s[:-1] != s[1:]
    met = cut & (precision >= target)
    if met.any():
        i = int(torch.nonzero(met).max())
    else:
        best = precision[cut].max()
        i = int(torch.nonzero(cut & (precision == best)).max())
    return float(s[i]), float(precision[i]), bool(met.any())
