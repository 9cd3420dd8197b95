"""The model a server serves, and what the server says about it (GET /info, the page's heading).

`ckpt=` is a gptft checkpoint or a folder written by `python -m gptft.export format=hf` (read by
gptft.export.folder, without transformers). /info shows plain values from the checkpoint's metadata and,
when the run folder has one, its metrics.json; for an exported folder, what its config.json and model card say."""
from __future__ import annotations

import json
from pathlib import Path


def load_served(path: str | Path, expect_task: type | None = None):
    """(task in eval mode, tokenizer, meta) of a checkpoint file or an exported folder."""
    from ..export.folder import is_export_folder, load_folder
    from ..tasks.factory import load_checkpoint

    if is_export_folder(path):
        return load_folder(path, expect_task)
    return load_checkpoint(path, expect_task=expect_task)


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
    exported = meta.get("exported")
    card = (exported or {}).get("model_card") or {}
    info = {"task": meta["task"], "kind": kind, "source": "exported folder" if exported else "checkpoint",
            "checkpoint": str(ckpt.resolve()), "model": (meta.get("model") or {}).get("name") or meta["arch"],
            "arch": meta["arch"], "context_length": context_length,
            "training_metrics": card.get("metrics") if exported else training_metrics(ckpt)}
    if exported:
        info["exported"] = exported
    if kind == "classifier":
        info["labels"] = list(meta["label_names"])
        info["endpoints"] = ["POST /predict"]
    else:
        info["prompt_style"] = meta["prompt_style"]
        info["endpoints"] = ["POST /v1/chat/completions"]
    return info
