"""Silence library messages a gptft user cannot act on, each matched by its exact text (anything new still shows).

- Lightning's own call of a torch API it deprecated (`LeafSpec`): for Lightning's maintainers.
- Lightning's advertisement for its cloud logger, and its note that it counts the train batches.
- "Precision bf16-mixed is not supported by the model summary": only the summary's size estimate is affected.
- DataLoader worker advice: gptft's data is tokenized in memory, workers would only add start-up time.
- The batch-count-smaller-than-logging-interval note of tiny trial runs.
- "module(s) in eval mode at the start of training": the frozen prefix runs in eval mode by design.
"""
from __future__ import annotations

import logging
import re
import warnings

WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"Precision bf16-mixed is not supported by the model summary",
    r".*does not have many workers",
    r".*smaller than the logging interval",
    r".*module\(s\) in eval mode at the start of training",
)
INFO_LINES = (
    re.compile(r"💡 Tip: For seamless cloud logging and experiment tracking, try installing \[litlogger\]"),
    re.compile(r"Loading `train_dataloader` to estimate number of stepping batches\.$"),
)


# rank_zero_info logs through whichever of these Lightning's imports set last
RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                     "lightning_utilities.core.rank_zero")


class _DropLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(p.match(message) for p in INFO_LINES)


_FILTER = _DropLines()


def quiet() -> None:
    """Install the filters (idempotent); every entry point calls it first."""
    for pattern in WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
