"""`python -m gptft.bench [--quick] [--out DIR] [--model gpt2]`: book-equivalent vs default paths.

Measures, back to back in one invocation, each row in its own child process (so that peak
RSS is per row): spam training + final evaluation (book path vs default), instruction
training tokens/s (book-equivalent vs default), decoding with and without the KV cache, and
the training step's achieved FLOP/s against this machine's measured matmul peak. Prints one
table and writes it as bench.csv / bench.md / bench.json under the output folder.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import random
import shlex
import subprocess
import sys
import time
import warnings
from pathlib import Path

from .memory import peak_rss_mib, reset_peak_rss

CONF = Path(__file__).resolve().parents[1] / "conf"
DECODE_TOKENS = 256
# --quick trains 1 epoch on a fixed subset of the data rather than on `limit_*_batches`:
# a subset keeps whole epochs and full evaluations, so the prefix cache sees each example
# the way it does in a real run (limited batches would mostly evaluate unseen examples).
QUICK_SPAM_PER_CLASS = 80  # -> 160 balanced messages: 112 / 16 / 32
QUICK_INSTRUCT_ENTRIES = 120  # -> 102 / 12 / 6 (the book's ordered 85/10/5 split)
DECODE_ENTRY = {"instruction": "Rewrite the sentence in the passive voice.",
                "input": "The chef cooks the meal every day."}
QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]

ROWS = {  # name: (kind, what it is, overrides beyond the model and QUIET)
    "matmul-peak": ("peak", "torch.mm 2048x2048x2048, best of 5", []),
    "spam-book": ("train", "spam, book path (experiment=book-ch06): fp32, pad to the longest "
                  "train message, position -1 pooling, no cache, 5 val batches every 50 steps",
                  ["experiment=book-ch06"]),
    "spam-fast": ("train", "spam, default: bf16 autocast, per-batch padding, last-token pooling, "
                  "frozen-prefix cache", ["task=spam"]),
    "instruct-book": ("train", "instruct, the book's ch07 recipe (experiment=book-ch07) on this model: fp32, "
                      "every layer trains, no cache, LM head on every position", ["experiment=book-ch07"]),
    "instruct-same": ("train", "instruct, the book's fp32 path with the default's trainable set (last block + "
                      "final norm + untied head): no cache, LM head on every position",
                      ["task=instruct", "precision=32", "finetune.cache_prefix=false", "task.targets_only=false"]),
    "instruct-fast": ("train", "instruct, default: bf16 autocast, frozen-prefix cache, LM head on "
                      "target positions only", ["task=instruct"]),
    "decode-nocache": ("decode", f"greedy decoding of {DECODE_TOKENS} tokens, fp32, no KV cache (the book)", []),
    "decode-cache": ("decode", f"greedy decoding of {DECODE_TOKENS} tokens, fp32, KV cache", []),
}


# ---------------------------------------------------------------------------------------------
# child side: one row
# ---------------------------------------------------------------------------------------------
def _compose(run_dir: Path, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=[f"run_dir={run_dir}", *overrides])


def _meter():
    import lightning as L

    from .flops import StepFlops

    class Meter(L.Callback):
        """Times the training steps (without in-fit validation) and the final evaluation, and counts
        what the steps processed and their estimated FLOPs."""

        def __init__(self):
            self.train_s = self.val_s = self.flops = 0.0
            self.steps = self.examples = self.tokens = self.padded = 0
            self.marks: dict[str, float] = {}
            self.counter = None

        # stage is a TrainerFn, a str enum whose f-string form differs across Python versions
        def setup(self, trainer, task, stage):
            self.marks.setdefault(f"{getattr(stage, 'value', stage)}_start", time.perf_counter())

        def teardown(self, trainer, task, stage):
            self.marks[f"{getattr(stage, 'value', stage)}_end"] = time.perf_counter()

        def on_validation_start(self, trainer, task):
            self._v0 = time.perf_counter()

        def on_validation_end(self, trainer, task):
            self.val_s += time.perf_counter() - self._v0

        def on_train_batch_start(self, trainer, task, batch, batch_idx):
            if self.counter is None:
                self.counter = StepFlops(task.backbone, task.boundary)
            rows, width = batch["input_ids"].shape
            lengths = batch["lengths"]
            prefix_rows, prefix_width = rows, width
            if getattr(task, "_cache_wanted", False):  # only rows missing from the cache run the prefix
                cache = task.prefix_cache
                miss = [i for i, k in enumerate(batch["example_id"].tolist()) if cache is None or k not in cache.rows]
                prefix_rows, prefix_width = len(miss), int(lengths[miss].max()) if miss else 0
            if "targets" in batch:
                head = int((batch["targets"] != -100).sum()) if task.targets_only else rows * width
            else:
                head = rows
            self._pending = self.counter.step(rows, width, prefix_rows, prefix_width, head)
            self._batch = (rows, int(lengths.sum()), rows * width)
            self._t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, task, outputs, batch, batch_idx):
            self.train_s += time.perf_counter() - self._t0
            self.steps += 1
            self.examples += self._batch[0]
            self.tokens += self._batch[1]
            self.padded += self._batch[2]
            self.flops += self._pending

    return Meter()


def run_train_row(name: str, overrides: list[str], out: Path) -> dict:
    from .flops import matmul_peak
    from .runtime import resolve_precision
    from .train import fit_and_test

    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*smaller than the logging interval.*")
    run_dir = out / "runs" / name
    cfg = _compose(run_dir, overrides)
    meter = _meter()
    # the matmul peak in the row's dtype, measured around its own run: on a shared machine a peak
    # taken minutes earlier can be far off
    dtype = "bf16" if "bf16" in resolve_precision(str(cfg.trainer.precision), str(cfg.trainer.accelerator)) else "fp32"
    peak = matmul_peak(dtype)
    m = fit_and_test(cfg, run_dir, callbacks=(meter,))
    peak = max(peak, matmul_peak(dtype))
    marks = meter.marks
    test = m["splits"].get("test", {})
    return {
        "wall_s": marks["test_end"] - marks["fit_start"],  # training + in-fit validation + final evaluation
        "total_s": m["wall_time_s"],  # also building the model and the data
        "train_s": meter.train_s,
        "val_s": meter.val_s,  # validation during fit, sanity check included
        "eval_s": marks["test_end"] - marks["test_start"],
        "ckpt_s": m["checkpoint_write_s"],
        "steps": meter.steps,
        "epochs": int(cfg.trainer.max_epochs),
        "examples": meter.examples,
        "tokens": meter.tokens,
        "padded_tokens": meter.padded,
        "examples_per_s": meter.examples / meter.train_s,
        "tokens_per_s": meter.tokens / meter.train_s,
        "flops": meter.flops,
        "flops_per_s": meter.flops / meter.train_s,
        "dtype": dtype,
        "peak_flops": peak,
        "precision": m["precision"],
        "test_acc": test.get("acc"),
        "test_loss": test.get("loss"),
        "splits_n": {s: d.get("n", d.get("tokens")) for s, d in m["splits"].items()},
        "pad_to": m["data"].get("pad_to"),
        "prefix_cache": m["prefix_cache"],
        "recipe": f"{cfg.trainer.max_epochs} epoch(s), batch {cfg.data.batch_size}, AdamW lr {cfg.optimizer.lr} "
                  f"wd {cfg.optimizer.weight_decay}, {cfg.finetune.mode} ({cfg.finetune.trainable_blocks} block), "
                  f"data {cfg.data.path or 'default'}",
        "peak_rss_mib": peak_rss_mib(),
    }


def run_decode_row(use_cache: bool, model_overrides: list[str], out: Path) -> dict:
    import torch

    from .data.prompts import get_prompt_style
    from .models.build import build_backbone
    from .models.generation import generate

    cfg = _compose(out / "runs" / "decode", model_overrides)
    torch.manual_seed(cfg.seed)
    model, tokenizer = build_backbone(cfg.model)
    model.eval()
    prompt = tokenizer.encode(get_prompt_style("alpaca").prompt(DECODE_ENTRY))
    generate(model, prompt, 4, eos_id=None, use_cache=use_cache)  # warm-up
    t = time.perf_counter()
    ids = generate(model, prompt, DECODE_TOKENS, eos_id=None, use_cache=use_cache)  # eos_id=None: all 256
    secs = time.perf_counter() - t
    return {"decode_s": secs, "tokens": len(ids), "prompt_tokens": len(prompt), "tokens_per_s": len(ids) / secs,
            "ids": ids, "peak_rss_mib": peak_rss_mib()}


def run_peak_row() -> dict:
    from .flops import matmul_peak

    return {"peak_fp32": matmul_peak("fp32"), "peak_bf16": matmul_peak("bf16"), "peak_rss_mib": peak_rss_mib()}


def child(name: str, out: Path) -> None:
    reset_peak_rss()
    plan = json.loads((out / "plan.json").read_text())
    kind = ROWS[name][0]
    if kind == "peak":
        result = run_peak_row()
    elif kind == "decode":
        result = run_decode_row(name == "decode-cache", plan["model_overrides"], out)
    else:
        result = run_train_row(name, plan["overrides"][name], out)
    (out / "rows" / f"{name}.json").write_text(json.dumps(result, indent=2))


# ---------------------------------------------------------------------------------------------
# parent side: plan, run the children, tabulate
# ---------------------------------------------------------------------------------------------
def quick_data(out: Path, seed: int, model_overrides: list[str]) -> dict:
    """Subset files for --quick, and the book's pad width on the full spam data (in the model's tokens)."""
    from .data.download import INSTRUCTIONS, SMS_SPAM, ensure_file
    from .data.spam import SpamDataModule
    from .models.build import build_backbone

    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    sms = ensure_file(**SMS_SPAM)
    lines = [ln for ln in sms.read_text(encoding="utf-8").split("\n") if ln.strip()]
    rng = random.Random(seed)
    keep = []
    for label in ("ham", "spam"):
        idx = [i for i, ln in enumerate(lines) if ln.split("\t", 1)[0] == label]
        keep += rng.sample(idx, QUICK_SPAM_PER_CLASS)
    spam_file = data / "sms_quick.txt"  # not .csv/.tsv: read as label<TAB>text like the SMS file
    spam_file.write_text("\n".join(lines[i] for i in sorted(keep)) + "\n", encoding="utf-8")

    entries = json.loads(ensure_file(**INSTRUCTIONS).read_text(encoding="utf-8"))
    instruct_file = data / "instruct_quick.json"
    instruct_file.write_text(json.dumps(entries[:QUICK_INSTRUCT_ENTRIES]), encoding="utf-8")

    # the book pads to the longest message of the full training split; keep that width on the subset
    _, tokenizer = build_backbone(_compose(out, model_overrides).model)
    full = SpamDataModule(tokenizer, seed=seed)
    full.setup()
    return {"spam": str(spam_file), "instruct": str(instruct_file), "book_pad_to": full.report["longest_train"]}


def make_plan(args, out: Path) -> dict:
    model = [f"model={args.model}", "model.pretrained=false"]  # random weights: timing only
    epochs = args.epochs or (1 if args.quick else None)
    common = model + QUIET + ([f"trainer.max_epochs={epochs}"] if epochs else [])
    plan = {"model": args.model, "model_overrides": model, "overrides": {}, "quick": None, "epochs": epochs}
    if args.quick:
        q = quick_data(out, seed=123, model_overrides=model)
        plan["quick"] = q
    for name, (kind, _, extra) in ROWS.items():
        if kind != "train":
            continue
        ov = [*extra, *common]
        if args.quick:
            ov.append(f"data.path={q[name.split('-')[0]]}")
            if name == "spam-book":
                ov.append(f"data.pad_to={q['book_pad_to']}")
        plan["overrides"][name] = ov
    return plan


def run_child(name: str, out: Path) -> dict:
    log = out / "logs" / f"{name}.log"
    cmd = [sys.executable, "-m", "gptft.bench", "--row", name, "--out", str(out)]
    start = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
    secs = time.perf_counter() - start
    result_file = out / "rows" / f"{name}.json"
    if rc != 0 or not result_file.is_file():
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        return {"error": f"exit {rc}; see {log}: " + " | ".join(tail), "process_s": secs}
    return {**json.loads(result_file.read_text()), "process_s": secs}


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


def _minus(a, b):
    return a - b if a is not None and b is not None else None


def _ratio(a, b):
    return a / b if a and b else None


def tabulate(res: dict, plan: dict) -> tuple[list[dict], list[str]]:
    """Table rows (one per measurement run) and the notes: the issue's targets, then definitions."""
    peak = res.get("matmul-peak", {})
    rows, notes = [], []
    for dtype in ("fp32", "bf16"):
        if f"peak_{dtype}" in peak:
            rows.append({"row": f"matmul-peak-{dtype}", "setup": f"torch.mm 2048x2048x2048 in {dtype}, best of 5",
                         "gflops": peak[f"peak_{dtype}"] / 1e9, "peak_rss_mib": peak["peak_rss_mib"], "dtype": dtype})
    for name, (kind, setup, _) in ROWS.items():
        r = res.get(name)
        if r is None or (kind == "peak" and "error" not in r):
            continue
        row = {"row": name, "setup": setup, "error": r.get("error", "")}
        if kind == "train" and "wall_s" in r:
            p = r.get("peak_flops") or peak.get(f"peak_{r['dtype']}")
            quality = (f"test acc {r['test_acc']:.4f}" if r["test_acc"] is not None
                       else f"test loss {r['test_loss']:.3f}" if r["test_loss"] is not None else "")
            row.update(wall_s=r["wall_s"], train_s=r["train_s"], val_s=r["val_s"], eval_s=r["eval_s"], ckpt_s=r.get("ckpt_s"),
                       examples_per_s=r["examples_per_s"],
                       tokens_per_s=r["tokens_per_s"], quality=quality, peak_rss_mib=r["peak_rss_mib"],
                       gflops=r["flops_per_s"] / 1e9, pct_peak=100 * r["flops_per_s"] / p if p else None,
                       dtype=r["dtype"])
        elif kind == "decode" and "tokens_per_s" in r:
            row.update(wall_s=r["decode_s"], tokens_per_s=r["tokens_per_s"], peak_rss_mib=r["peak_rss_mib"],
                       quality=f"{r['tokens']} tokens after a {r['prompt_tokens']}-token prompt", dtype="fp32")
        rows.append(row)

    by = {r["row"]: r for r in rows}
    get = lambda name, key: by.get(name, {}).get(key)  # noqa: E731
    spam = _ratio(get("spam-book", "wall_s"), get("spam-fast", "wall_s"))
    spam_io = _ratio(_minus(get("spam-book", "wall_s"), get("spam-book", "ckpt_s")),
                     _minus(get("spam-fast", "wall_s"), get("spam-fast", "ckpt_s")))
    spam_ex = _ratio(get("spam-fast", "examples_per_s"), get("spam-book", "examples_per_s"))
    inst = _ratio(get("instruct-fast", "tokens_per_s"), get("instruct-book", "tokens_per_s"))
    inst_same = _ratio(get("instruct-fast", "tokens_per_s"), get("instruct-same", "tokens_per_s"))
    dec = _ratio(get("decode-cache", "tokens_per_s"), get("decode-nocache", "tokens_per_s"))
    if spam:
        by["spam-fast"]["speedup"] = f"{spam:.1f}x wall ({spam_ex:.1f}x examples/s)"
    if inst or inst_same:
        by["instruct-fast"]["speedup"] = " ".join(
            f"{r:.1f}x tokens/s vs {name}" for r, name in ((inst, "book"), (inst_same, "same")) if r)
    if dec:
        by["decode-cache"]["speedup"] = f"{dec:.1f}x tokens/s"

    def check(label, value, ok, shown):
        notes.append(f"- {label}: " + ("not measured" if value is None else f"{shown} -> {'met' if ok else 'NOT met'}"))

    notes.append("Targets (issue 4):")
    check("spam default >= 10x the book-equivalent path (wall: training + final evaluation)", spam,
          spam is not None and spam >= 10, f"{spam or 0:.1f}x")
    check("instruction training >= 4x the book-equivalent tokens/s", inst, inst is not None and inst >= 4,
          f"{inst or 0:.1f}x")
    check(f"KV-cache decoding >= 5x uncached at {DECODE_TOKENS} new tokens", dec, dec is not None and dec >= 5,
          f"{dec or 0:.1f}x")
    rss = get("spam-fast", "peak_rss_mib")
    check(f"peak RSS of the default spam run < 3 GiB (model {plan['model']})", rss,
          rss is not None and rss < 3 * 1024, f"{(rss or 0) / 1024:.2f} GiB")
    a, b = res.get("decode-nocache", {}).get("ids"), res.get("decode-cache", {}).get("ids")
    if a and b:
        same = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        notes.append(f"- decoding with and without the cache agree on the first {same} of {len(a)} tokens")
    if spam_io:
        notes.append(f"- spam without the checkpoint writes on either side (the book saves none): {spam_io:.1f}x")
    if inst_same:
        notes.append(f"- instruction training with the default's trainable set in the book's fp32 way: {inst_same:.1f}x")
    for book, fast in (("spam-book", "spam-fast"), ("instruct-same", "instruct-fast")):
        ra, rb = res.get(book, {}).get("recipe"), res.get(fast, {}).get("recipe")
        if ra and rb:
            notes.append(f"- {book} / {fast}: " + (f"same recipe: {ra}" if ra == rb else f"RECIPES DIFFER: {ra} vs {rb}"))
    sb = res.get("spam-book", {})
    notes += [
        "",
        "- wall s: training (with in-fit validation and checkpoints) + final evaluation of train/val/test "
        "(spam) or test (instruct); decode rows: the decoding alone. train s: the training steps alone; "
        "examples/s and tokens/s (real tokens, without padding) divide by it. val s: validation during "
        "training (sanity check included). eval s: the final evaluation (of the checkpoint the recipe scores: "
        "best, or last for book-ch06). ckpt s: writing checkpoints (the whole model, frozen body included; "
        "best.ckpt on each improvement, last.ckpt in full when the newest state is not the best), part of wall s.",
        "- All rows use random weights (model.pretrained=false): timings only, accuracies are not meaningful. "
        "Each row runs in its own process; peak RSS is that process's.",
        "- instruct-book is the book's ch07 recipe (every layer trains) on the benchmark's model, as "
        "experiment=book-ch07 runs it; the default trains the last block, final norm and head instead, so "
        "this pair compares the two recipes. instruct-same keeps the default's trainable set in the book's "
        "fp32 way (no cache, head on every position) and so isolates what gptft's speed-ups alone give.",
        "- GFLOP/s: analytic matmul FLOPs of the training steps (gptft/flops.py: forward 2 x weights x tokens + "
        "attention, backward 2x forward for the trainable blocks and head, none for the frozen prefix, whose "
        "rows count only when computed) / train s; % peak: of the matmul peak in the row's dtype, measured in "
        "the row's own process before and after training (the better of the two); the matmul-peak rows were "
        "measured first, before all others.",
    ]
    if sb.get("pad_to"):
        notes.append(f"- The spam book path pads every message to {sb['pad_to']} tokens.")
    epochs = plan.get("epochs") or "the recipe's (spam 5, instruct 2)"
    if plan.get("quick"):
        notes.append(f"- --quick: {epochs} epoch(s) on subsets: {2 * QUICK_SPAM_PER_CLASS} SMS messages (balanced, "
                     f"split 70/10/20; the book path keeps the full data's pad width) and the first "
                     f"{QUICK_INSTRUCT_ENTRIES} instruction entries. The prefix "
                     "cache is filled in the first epoch, so it pays off more with the recipe's epochs.")
    else:
        notes.append(f"- Full data, epochs: {epochs}.")
    return rows, notes


COLUMNS = ["row", "wall_s", "train_s", "val_s", "eval_s", "ckpt_s", "examples_per_s", "tokens_per_s", "quality", "peak_rss_mib",
           "gflops", "pct_peak", "dtype", "speedup", "setup", "error"]
HEADS = {"row": "row", "wall_s": "wall s", "train_s": "train s", "val_s": "val s", "eval_s": "eval s", "ckpt_s": "ckpt s", "examples_per_s": "examples/s",
         "tokens_per_s": "tokens/s", "quality": "result", "peak_rss_mib": "peak RSS MiB", "gflops": "GFLOP/s",
         "pct_peak": "% peak", "dtype": "dtype", "speedup": "speedup", "setup": "setup", "error": "error"}


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.1f}" if abs(v) >= 10 or v == 0 else f"{v:.2f}"
    return str(v)


def markdown(rows: list[dict], header: list[str], notes: list[str]) -> str:
    """The table, then a legend of the rows' setups (too long for a column), then the notes."""
    cols = [c for c in COLUMNS if c != "setup" and (c != "error" or any(r.get("error") for r in rows))]
    table = ["| " + " | ".join(HEADS[c] for c in cols) + " |", "|" + "---|" * len(cols)]
    table += ["| " + " | ".join(_fmt(r.get(c)).replace("|", "/") for c in cols) + " |" for r in rows]
    legend = [f"- {r['row']}: {r['setup']}" for r in rows]
    return "\n".join([*header, "", *table, "", *legend, "", *notes]) + "\n"


def parent(args) -> int:
    import torch  # noqa: F401  (machine() reads its version and threads)

    stamp = dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out = Path(args.out or Path("outputs") / "bench" / stamp).resolve()
    for sub in ("rows", "logs", "runs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    command = "python -m gptft.bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    load_before = os.getloadavg()
    plan = make_plan(args, out)
    (out / "plan.json").write_text(json.dumps(plan, indent=2))
    names = [n for n in ROWS if not args.rows or n in args.rows.split(",")]
    res = {}
    for name in names:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        res[name] = run_child(name, out)
        print(f"[bench] {name}: {res[name]['process_s']:.0f} s" + (f"  FAILED: {res[name]['error']}"
              if "error" in res[name] else ""), file=sys.stderr, flush=True)
    load_after = os.getloadavg()
    rows, notes = tabulate(res, plan)
    m = machine()
    header = [
        "# gptft benchmark",
        "",
        f"- date: {dt.datetime.now().isoformat(timespec='seconds')}",
        f"- command: `{command}` (model {args.model}, {'quick' if args.quick else 'full recipe'})",
        f"- machine: {m['platform']}; {m['cpu']}; {m['cores']} cores; Python {m['python']}, torch {m['torch']}, "
        f"{m['threads']} threads",
        f"- load average (1/5/15 min) before: {' '.join(f'{x:.2f}' for x in load_before)}; "
        f"after: {' '.join(f'{x:.2f}' for x in load_after)}",
    ]
    md = markdown(rows, header, notes)
    (out / "bench.md").write_text(md)
    with open(out / "bench.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    meta = {"command": command, "machine": m, "load_before": load_before, "load_after": load_after}
    (out / "bench.json").write_text(json.dumps({"meta": meta, "plan": plan, "results": res}, indent=2))
    print(md)
    print(f"written: {out / 'bench.md'}, {out / 'bench.csv'}, {out / 'bench.json'}")
    return 1 if any("error" in r for n, r in res.items() if n in names) else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m gptft.bench",
        description="Benchmark gptft's default (fast) paths against the book-equivalent ones on this machine.")
    ap.add_argument("--quick", action="store_true",
                    help="1 epoch on a subset of each data set (minutes instead of hours)")
    ap.add_argument("--out", help="output folder (default outputs/bench/<timestamp>)")
    ap.add_argument("--model", default="gpt2", help="model config, with random weights (default gpt2)")
    ap.add_argument("--epochs", type=int, help="override the epochs of every training row (default: the "
                    "recipe's 5 spam / 2 instruct, or 1 with --quick)")
    ap.add_argument("--rows", help=f"comma-separated subset of rows to run: {','.join(ROWS)}")
    ap.add_argument("--row", choices=list(ROWS), help=argparse.SUPPRESS)  # internal: run one row (a child)
    args = ap.parse_args(argv)
    if args.row:
        child(args.row, Path(args.out))
        return 0
    return parent(args)


if __name__ == "__main__":
    raise SystemExit(main())
