"""The benchmark's report: one table row per measurement, the figures it states (speedups, memory),
and the notes that define the columns. Pure functions of the rows' results, so tests can feed them a
recorded or constructed run."""
from __future__ import annotations

import csv
import datetime as dt
import io
import os
import platform
from pathlib import Path

from .rows import DECODE_TOKENS, QUICK_INSTRUCT_ENTRIES, QUICK_SPAM_PER_CLASS, ROWS

COLUMNS = ["row", "wall_s", "train_s", "val_s", "eval_s", "ckpt_s", "examples_per_s", "tokens_per_s", "quality",
           "peak_rss_mib", "gflops", "pct_peak", "dtype", "speedup", "setup", "error"]
HEADS = {"row": "row", "wall_s": "wall s", "train_s": "train s", "val_s": "val s", "eval_s": "eval s",
         "ckpt_s": "ckpt s", "examples_per_s": "examples/s", "tokens_per_s": "tokens/s", "quality": "result",
         "peak_rss_mib": "peak RSS MiB", "gflops": "GFLOP/s", "pct_peak": "% peak", "dtype": "dtype",
         "speedup": "speedup", "setup": "setup", "error": "error"}


def _minus(a, b):
    return a - b if a is not None and b is not None else None


def _ratio(a, b):
    return a / b if a and b else None


def figures(res: dict) -> dict:
    """The run's headline figures (None where a row is missing or failed), from the rows' results."""
    get = lambda name, key: res.get(name, {}).get(key)  # noqa: E731
    wall = lambda name: get(name, "wall_s")  # noqa: E731
    rss = get("spam-fast", "peak_rss_mib")
    a, b = get("decode-nocache", "ids"), get("decode-cache", "ids")
    agree = None
    if a and b:
        agree = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return {
        "spam_wall_speedup": _ratio(wall("spam-book"), wall("spam-fast")),
        "spam_examples_speedup": _ratio(get("spam-fast", "examples_per_s"), get("spam-book", "examples_per_s")),
        "spam_wall_speedup_without_ckpt": _ratio(_minus(wall("spam-book"), get("spam-book", "ckpt_s")),
                                                 _minus(wall("spam-fast"), get("spam-fast", "ckpt_s"))),
        "instruct_tokens_speedup": _ratio(get("instruct-fast", "tokens_per_s"), get("instruct-book", "tokens_per_s")),
        "instruct_tokens_speedup_same": _ratio(get("instruct-fast", "tokens_per_s"),
                                               get("instruct-same", "tokens_per_s")),
        "decode_tokens_speedup": _ratio(get("decode-cache", "tokens_per_s"), get("decode-nocache", "tokens_per_s")),
        "decode_tokens_agree": agree,
        "decode_tokens": len(a) if a else None,
        "spam_fast_peak_rss_gib": rss / 1024 if rss is not None else None,
        "ddp_examples_ratio": _ratio(get("spam-ddp", "examples_per_s"), get("spam-fast", "examples_per_s")),
        "ddp_wall_ratio": _ratio(wall("spam-fast"), wall("spam-ddp")),
        "ddp_processes": get("spam-ddp", "processes"),
        "trainer_wall_ratio": _ratio(wall("spam-trainer"), wall("spam-fast")),
        "compile_wall_ratio": _ratio(wall("spam-fast"), wall("spam-compile")),
        "compile_train_ratio": _ratio(get("spam-fast", "train_s"), get("spam-compile", "train_s")),
        "compile_first_step_s": get("spam-compile", "first_step_s"),
        "compile_median_step_s": get("spam-compile", "median_step_s"),
    }


def table_rows(res: dict, peak_size: int) -> list[dict]:
    """One row per measurement run (the matmul peak gives one per dtype), in ROWS order."""
    peak = res.get("matmul-peak", {})
    rows = []
    for dtype in ("fp32", "bf16"):
        if f"peak_{dtype}" in peak:
            n = peak.get(f"{dtype}_size", peak_size)
            emulated = " (emulated: this CPU has no native bf16, so a smaller mm)" if n < peak_size else ""
            rows.append({"row": f"matmul-peak-{dtype}", "setup": f"torch.mm {n}x{n}x{n} in {dtype}, best of 5{emulated}",
                         "gflops": peak[f"peak_{dtype}"] / 1e9, "peak_rss_mib": peak["peak_rss_mib"], "dtype": dtype})
    for name, (kind, setup, _) in ROWS.items():
        r = res.get(name)
        if r is None or (kind == "peak" and "error" not in r):
            continue
        row = {"row": name, "setup": setup, "error": r.get("error", "")}
        if kind in ("train", "peer") and "wall_s" in r:
            p = r.get("peak_flops") or peak.get(f"peak_{r['dtype']}")
            flops = r.get("flops_per_s")  # not counted for the peer row
            quality = (f"test acc {r['test_acc']:.4f}" if r["test_acc"] is not None
                       else f"test loss {r['test_loss']:.3f}" if r["test_loss"] is not None else "")
            row.update(wall_s=r["wall_s"], train_s=r["train_s"], val_s=r["val_s"], eval_s=r["eval_s"],
                       ckpt_s=r.get("ckpt_s"), examples_per_s=r["examples_per_s"], tokens_per_s=r["tokens_per_s"],
                       quality=quality, peak_rss_mib=r["peak_rss_mib"], gflops=flops / 1e9 if flops else None,
                       pct_peak=100 * flops / p if p and flops else None, dtype=r["dtype"])
        elif kind == "decode" and "tokens_per_s" in r:
            row.update(wall_s=r["decode_s"], tokens_per_s=r["tokens_per_s"], peak_rss_mib=r["peak_rss_mib"],
                       quality=f"{r['tokens']} tokens after a {r['prompt_tokens']}-token prompt", dtype="fp32")
        rows.append(row)
    return rows


def _x(v) -> str:
    return "not measured" if v is None else f"{v:.1f}x"


def figure_notes(f: dict, model: str) -> list[str]:
    rss = "not measured" if f["spam_fast_peak_rss_gib"] is None else f"{f['spam_fast_peak_rss_gib']:.2f} GiB"
    spam = [f"{_x(f['spam_examples_speedup'])} examples/s"]
    if f["spam_wall_speedup_without_ckpt"] is not None:
        spam.append(f"{_x(f['spam_wall_speedup_without_ckpt'])} without the checkpoint writes on either side: "
                    "the book saves none")
    lines = [
        "Figures:",
        f"- spam, default vs book path, wall (training + final evaluation): {_x(f['spam_wall_speedup'])}"
        + (f" ({'; '.join(spam)})" if f["spam_wall_speedup"] is not None else ""),
        f"- instruction training tokens/s, default vs the book's ch07 recipe: {_x(f['instruct_tokens_speedup'])}; "
        f"vs the default's trainable set in the book's fp32 way: {_x(f['instruct_tokens_speedup_same'])}",
        f"- spam, default vs the same recipe through transformers' Trainer, wall (training + scoring the splits): "
        f"{_x(f['trainer_wall_ratio'])}",
        f"- decoding tokens/s, KV cache vs none at {DECODE_TOKENS} new tokens: {_x(f['decode_tokens_speedup'])}",
        f"- peak RSS of the default spam run (model {model}): {rss}",
    ]
    if f["ddp_examples_ratio"] is not None:
        lines.append(f"- spam under DDP ({f['ddp_processes']} processes on this machine's cores) vs one process: "
                     f"{f['ddp_examples_ratio']:.2f}x examples/s, {f['ddp_wall_ratio']:.2f}x wall (information only: the "
                     "processes share the cores one process would use, so this measures DDP's overhead, not a speed-up)")
    if f["compile_wall_ratio"] is not None:
        lines.append(f"- spam with finetune.compile=true vs the default: {f['compile_wall_ratio']:.2f}x wall, "
                     f"{f['compile_train_ratio']:.2f}x in the training steps; its first step (compiling) took "
                     f"{f['compile_first_step_s']:.1f} s against a median step of "
                     f"{1000 * f['compile_median_step_s']:.0f} ms (above 1x pays, below costs)")
    if f["decode_tokens_agree"] is not None:
        lines.append(f"- decoding with and without the cache agree on the first {f['decode_tokens_agree']} "
                     f"of {f['decode_tokens']} tokens")
    return lines


def tabulate(res: dict, plan: dict) -> tuple[list[dict], list[str]]:
    """Table rows and the notes: the figures, then what the columns and rows mean."""
    rows = table_rows(res, plan["peak_size"])
    f = figures(res)
    by = {r["row"]: r for r in rows}
    if f["spam_wall_speedup"]:
        by["spam-fast"]["speedup"] = f"{f['spam_wall_speedup']:.1f}x wall ({_x(f['spam_examples_speedup'])} examples/s)"
    inst = [(f["instruct_tokens_speedup"], "book"), (f["instruct_tokens_speedup_same"], "same")]
    if any(r for r, _ in inst):
        by["instruct-fast"]["speedup"] = " ".join(f"{r:.1f}x tokens/s vs {name}" for r, name in inst if r)
    if f["ddp_examples_ratio"]:
        by["spam-ddp"]["speedup"] = f"{f['ddp_examples_ratio']:.2f}x examples/s vs spam-fast"
    if f["trainer_wall_ratio"]:
        by["spam-fast"]["speedup"] = (by["spam-fast"].get("speedup", "") + f" {f['trainer_wall_ratio']:.1f}x wall vs "
                                      "Trainer").strip()
    if f["decode_tokens_speedup"]:
        by["decode-cache"]["speedup"] = f"{f['decode_tokens_speedup']:.1f}x tokens/s"

    notes = figure_notes(f, plan["model"])
    for book, fast in (("spam-book", "spam-fast"), ("instruct-same", "instruct-fast"), ("spam-fast", "spam-ddp"),
                       ("spam-trainer", "spam-fast"), ("spam-fast", "spam-compile")):
        ra, rb = res.get(book, {}).get("recipe"), res.get(fast, {}).get("recipe")
        if ra and rb:
            notes.append(f"- {book} / {fast}: " + (f"same recipe: {ra}" if ra == rb else f"RECIPES DIFFER: {ra} vs {rb}"))
    notes += [
        "",
        "- wall s: training (with in-fit validation and checkpoints) + final evaluation of train/val/test "
        "(spam) or test (instruct); decode rows: the decoding alone. train s: the training steps alone; "
        "examples/s and tokens/s (real tokens, without padding) divide by it. val s: validation during "
        "training (sanity check included). eval s: the final evaluation (of the checkpoint the recipe scores: "
        "best, or last for book-ch06). ckpt s: the time training waited for checkpoint writes (best.ckpt on each "
        "improvement, last.ckpt after every validation; small by default: trained tensors, optimizer state in "
        "last.ckpt, and a reference to the frozen body; written in a background thread, so this is copying each "
        "checkpoint plus the wait for the last write), part of wall s.",
        ("- All rows use the pretrained weights of " + plan["checkpoint"] + ": the accuracies are real. "
         if plan.get("checkpoint") else
         "- All rows use random weights (model.pretrained=false): timings only, accuracies are not meaningful. ") +
        "Each row runs in its own process; peak RSS is that process's (spam-ddp: its largest process's).",
        "- instruct-book is the book's ch07 recipe (every layer trains) on the benchmark's model, as "
        "experiment=book-ch07 runs it; the default trains the last block, final norm and head instead, so "
        "this pair compares the two recipes. instruct-same keeps the default's trainable set in the book's "
        "fp32 way (no cache, head on every position) and so isolates what gptft's speed-ups alone give.",
        "- GFLOP/s: analytic matmul FLOPs of the training steps (gptft/bench/flops.py: forward 2 x weights x "
        "tokens + attention, backward 2x forward for the trainable blocks and head, none for the frozen prefix, "
        "whose rows count only when computed) / train s; % peak: of the matmul peak in the row's dtype, measured "
        "in the row's own process before and after training (the better of the two); the matmul-peak rows were "
        "measured first, before all others.",
    ]
    pad_to = res.get("spam-book", {}).get("pad_to")
    if pad_to:
        notes.append(f"- The spam book path pads every message to {pad_to} tokens.")
    epochs = plan.get("epochs") or "the recipe's (spam 5, instruct 2)"
    if plan.get("quick"):
        notes.append(f"- --quick: {epochs} epoch(s) on subsets: {2 * QUICK_SPAM_PER_CLASS} SMS messages (balanced, "
                     f"split 70/10/20; the book path keeps the full data's pad width) and the first "
                     f"{QUICK_INSTRUCT_ENTRIES} instruction entries. Its ratios "
                     "are smaller than a full run's (what every run pays once, building the model and the data and the "
                     "frozen-prefix pass, weighs more against 1 epoch on a subset): read their direction, not their size.")
    else:
        notes.append(f"- Full data, epochs: {epochs}.")
    return rows, notes


def machine() -> dict:
    import torch

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads()}


def header(command: str, args, m: dict, load_before, load_after) -> list[str]:
    return [
        "# gptft benchmark",
        "",
        f"- date: {dt.datetime.now().isoformat(timespec='seconds')}",
        f"- command: `{command}` (model {args.model}, {'quick' if args.quick else 'full recipe'})",
        f"- machine: {m['platform']}; {m['cpu']}; {m['cores']} cores; Python {m['python']}, torch {m['torch']}, "
        f"{m['threads']} threads",
        f"- load average (1/5/15 min) before: {' '.join(f'{x:.2f}' for x in load_before)}; "
        f"after: {' '.join(f'{x:.2f}' for x in load_after)}",
    ]


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.1f}" if abs(v) >= 10 or v == 0 else f"{v:.2f}"
    return str(v)


def markdown(rows: list[dict], header_lines: list[str], notes: list[str]) -> str:
    """The table, then a legend of the rows' setups (too long for a column), then the notes."""
    cols = [c for c in COLUMNS if c != "setup" and (c != "error" or any(r.get("error") for r in rows))]
    table = ["| " + " | ".join(HEADS[c] for c in cols) + " |", "|" + "---|" * len(cols)]
    table += ["| " + " | ".join(_fmt(r.get(c)).replace("|", "/") for c in cols) + " |" for r in rows]
    legend = [f"- {r['row']}: {r['setup']}" for r in rows]
    return "\n".join([*header_lines, "", *table, "", *legend, "", *notes]) + "\n"


def csv_text(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()
