"""The printed summary of an evaluation (scores.json holds the same figures)."""
from __future__ import annotations

from pathlib import Path


def _value(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _confusion(matrix: list[list[int]], names: list[str]) -> list[str]:
    width = max(8, *(len(x) + 2 for x in names))
    lines = ["    confusion (rows: true, columns: predicted)",
             "    " + " " * width + "".join(f"{x:>{width}}" for x in names)]
    lines += [f"    {name:<{width}}" + "".join(f"{v:>{width}}" for v in row) for name, row in zip(names, matrix)]
    return lines


def _judge(judge: dict) -> tuple[str, str]:
    if not judge.get("enabled", True):
        return "judge", "off (judge.enabled=true to score with an LLM)"
    if "error" in judge:
        return "judge", "failed (see the message above)"
    mean = "n/a" if judge["mean"] is None else f"{judge['mean']:.2f}"
    return f"judge ({judge['model']})", f"{mean} / 100 ({judge['n_unparsed']} unparsed)"


def summary(scores: dict, out: Path) -> str:
    split = scores.get("split", "test")  # older scores.json: the test split
    test = scores[split]
    base = scores.get("base_model")
    what = (f"checkpoint {scores['checkpoint']}" if base is None else
            f"base model {base['name']} ({base['checkpoint'] or base['hub_id'] or 'random weights'}), no fine-tuning")
    lines = [f"gptft evaluate: {scores['task']} {what}", f"  {split} split, the task's own metrics"]
    rows = [(f"{k} ({scores['f1_of']})" if k == "f1" and "f1_of" in scores else k, _value(v))
            for k, v in test.items() if not isinstance(v, list)]
    lines += [f"    {name:<18}{value}" for name, value in rows]
    if "confusion" in test:
        names = scores.get("label_names") or [str(i) for i in range(len(test["confusion"]))]
        lines += _confusion(test["confusion"], names)
    gen = scores.get("generation")
    if gen is not None:
        lines.append(f"  {gen['n']} greedy responses (up to {gen['max_new_tokens']} new tokens)")
        rows = [("exact match", _value(gen["exact_match"])), ("ROUGE-L F1", _value(gen["rouge_l"])), _judge(scores["judge"])]
        lines += [f"    {name:<18}{value}" for name, value in rows]
        lines.append(f"  responses: {out / 'responses.json'}")
    lines.append(f"  scores:    {out / 'scores.json'}")
    return "\n".join(lines)
