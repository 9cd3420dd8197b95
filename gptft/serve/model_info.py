"""What the server says about its checkpoint (GET /info, the page's heading): plain values from the
checkpoint's metadata and, when the run folder has one, its metrics.json."""
from __future__ import annotations

import json
from pathlib import Path


def training_metrics(ckpt: Path) -> dict | None:
    """The per-split scores of the run that wrote `ckpt` (<run>/metrics.json), if that file is there."""
    for folder in (ckpt.parent.parent, ckpt.parent):
        path = folder / "metrics.json"
        if path.is_file():
            try:
                return json.loads(path.read_text(encoding="utf-8")).get("splits")
            except (OSError, ValueError):
                return None
    return None


def describe(ckpt: Path, meta: dict, context_length: int) -> dict:
    """The JSON of GET /info."""
    kind = "classifier" if meta.get("label_names") else "instruct"
    info = {"task": meta["task"], "kind": kind, "checkpoint": str(ckpt.resolve()),
            "model": (meta.get("model") or {}).get("name") or meta["arch"], "arch": meta["arch"],
            "context_length": context_length, "training_metrics": training_metrics(ckpt)}
    if kind == "classifier":
        info["labels"] = list(meta["label_names"])
        info["endpoints"] = ["POST /predict"]
    else:
        info["prompt_style"] = meta["prompt_style"]
        info["endpoints"] = ["POST /v1/chat/completions"]
    return info
