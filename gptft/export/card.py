"""README.md of an export: base model, data, recipe and the run's metrics.json scores."""
from __future__ import annotations

import json
from pathlib import Path


def run_metrics(ckpt: Path) -> dict:
    """The splits of metrics.json in the checkpoint's run folder (run/checkpoints/x.ckpt), or {}."""
    file = ckpt.resolve().parent.parent / "metrics.json"
    try:
        return json.loads(file.read_text(encoding="utf-8")).get("splits") or {}
    except (OSError, ValueError):
        return {}


def _scores(splits: dict) -> list[str]:
    if not splits:
        return ["No metrics.json was found beside the checkpoint's run folder."]
    keys = sorted({k for v in splits.values() for k, x in v.items() if isinstance(x, (int, float))})
    rows = ["| split | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for split, values in splits.items():
        cells = [f"{values[k]:.4f}" if isinstance(values.get(k), float) else str(values.get(k, "")) for k in keys]
        rows.append(f"| {split} | " + " | ".join(cells) + " |")
    return rows


def model_card(meta: dict, ckpt: Path, files: str, usage: str) -> str:
    model, data = meta.get("model") or {}, meta["data_args"]
    base = model.get("hub_id") or model.get("checkpoint") or model.get("name") or meta["arch"]
    trained = "pretrained" if model.get("pretrained", True) else "random initial weights: a test model"
    ft = meta["finetune_cfg"]
    recipe = (f"finetune.mode={ft.get('mode')}, trainable_blocks={ft.get('trainable_blocks')}; task "
              f"{meta['task_class']} {json.dumps(meta['task_args'])}; data batch_size={data.get('batch_size')}, "
              f"seed={data.get('seed')}")
    what = (f"a classifier over {meta['label_names']}" if meta.get("label_names")
            else f"an instruction follower (prompt style {meta.get('prompt_style')})")
    lines = [
        f"# {meta['task']} model exported from gptft", "",
        f"{what.capitalize()}, fine-tuned with gptft from `{base}` ({meta['arch']}, {trained}).", "",
        f"- Source checkpoint: `{ckpt}`",
        f"- Data: {meta['data_class']}, " + (f"`{data['path']}`" if data.get("path") else "its default data file")
        + (f", split {data.get('split')}" if data.get("split") is not None else ""),
        f"- Recipe: {recipe}", f"- Files: {files}", "",
        "## Scores of the run (metrics.json)", "", *_scores(run_metrics(ckpt)), "",
        "## Use", "", usage, "",
    ]
    return "\n".join(lines)
