"""README.md of an export: base model, data, recipe and the run's metrics.json scores; and reading those
facts back (`gptft.serve` of an exported folder shows them in /info)."""
from __future__ import annotations

import json
import re
from pathlib import Path

TITLE = " model exported from gptft"
SCORES = "## Scores of the run (metrics.json)"


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
        f"# {meta['task']}{TITLE}", "",
        f"{what.capitalize()}, fine-tuned with gptft from `{base}` ({meta['arch']}, {trained}).", "",
        f"- Source checkpoint: `{ckpt}`",
        f"- Data: {meta['data_class']}, " + (f"`{data['path']}`" if data.get("path") else "its default data file")
        + (f", split {data.get('split')}" if data.get("split") is not None else ""),
        f"- Recipe: {recipe}", f"- Files: {files}", *_input_line(data), "",
        SCORES, "", *_scores(run_metrics(ckpt)), "",
        "## Use", "", usage, "",
    ]
    return "\n".join(lines)


def _input_line(data: dict) -> list[str]:
    """A prompted classifier (data.prompt_style) reads each text inside its prompt: say exactly how."""
    if data.get("instruction") is None:  # instruction data modules have a prompt style but no instruction
        return []
    from ..data.prompts import get_prompt_style
    shown = get_prompt_style(data["prompt_style"]).prompt({"instruction": str(data["instruction"]), "input": "{text}"})
    return [f"- Input: each text is classified inside this prompt ({data['prompt_style']}, special markers as "
            f"their token ids), read at its last token: `{json.dumps(shown)[1:-1]}`"]


def _cell(text: str):
    try:
        return int(text) if text.lstrip("-").isdigit() else float(text)
    except ValueError:
        return text or None


def _read_scores(lines: list[str]) -> dict | None:
    """The scores table under SCORES back as {split: {metric: value}} (values as printed: 4 decimals)."""
    rows = [line for line in lines if line.startswith("|")]
    if len(rows) < 3:
        return None
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    keys = cells[0][1:]
    return {row[0]: {k: _cell(v) for k, v in zip(keys, row[1:]) if v} for row in cells[2:]}


def read_card(path: Path) -> dict:
    """What a gptft model card says: task, base_model, source_checkpoint, description and metrics (None when
    it had none); {} when `path` is missing or not a card gptft wrote."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return {}
    if not lines or not lines[0].startswith("# ") or not lines[0].endswith(TITLE):
        return {}
    out = {"task": lines[0][2: -len(TITLE)]}
    for line in lines[1:]:
        base = re.search(r"fine-tuned with gptft from `([^`]*)`", line)
        if base and "base_model" not in out:
            out["description"], out["base_model"] = line, base.group(1)
        if line.startswith("- Source checkpoint: `"):
            out["source_checkpoint"] = line.split("`")[1]
    if SCORES in lines:
        start = lines.index(SCORES) + 1
        end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
        out["metrics"] = _read_scores(lines[start:end])
    return out
