"""`python -m gptft.bench [--quick] [--out DIR] [--model gpt2]`: book-equivalent vs default paths.

Runs the rows back to back, each in its own child process (so that peak RSS is per row): spam
training + final evaluation (book path vs default), instruction training tokens/s (book-equivalent
vs default), decoding with and without the KV cache, and the training step's achieved FLOP/s against
this machine's measured matmul peak. Prints one table and writes it as bench.csv / bench.md /
bench.json under the output folder.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shlex
import subprocess
import sys
import time
from pathlib import Path

from ..atomic import write_json, write_text
from ..errors import friendly_errors
from .report import COLUMNS, csv_text, header, machine, markdown, tabulate
from .rows import QUICK_INSTRUCT_ENTRIES, QUICK_SPAM_PER_CLASS, QUIET, ROWS, compose


def quick_data(out: Path, seed: int, model_overrides: list[str]) -> dict:
    """Subset files for --quick, and the book's pad width on the full spam data (in the model's tokens)."""
    from ..data.download import INSTRUCTIONS, SMS_SPAM, ensure_file
    from ..data.spam import SpamDataModule
    from ..models.build import build_backbone

    data = out / "data"
    sms = ensure_file(**SMS_SPAM)
    lines = [ln for ln in sms.read_text(encoding="utf-8").split("\n") if ln.strip()]
    rng = random.Random(seed)
    keep = []
    for label in ("ham", "spam"):
        idx = [i for i, ln in enumerate(lines) if ln.split("\t", 1)[0] == label]
        keep += rng.sample(idx, QUICK_SPAM_PER_CLASS)
    spam_file = data / "sms_quick.txt"  # not .csv/.tsv: read as label<TAB>text like the SMS file
    write_text(spam_file, "\n".join(lines[i] for i in sorted(keep)) + "\n")

    entries = json.loads(ensure_file(**INSTRUCTIONS).read_text(encoding="utf-8"))
    instruct_file = data / "instruct_quick.json"
    write_json(instruct_file, entries[:QUICK_INSTRUCT_ENTRIES])

    # the book pads to the longest message of the full training split; keep that width on the subset
    _, tokenizer = build_backbone(compose(out, model_overrides).model)
    full = SpamDataModule(tokenizer, seed=seed)
    full.setup()
    return {"spam": str(spam_file), "instruct": str(instruct_file), "book_pad_to": full.report["longest_train"]}


def make_plan(args, out: Path) -> dict:
    # random weights (timing only) unless a checkpoint gives the real ones, so the accuracies mean something too
    model = [f"model={args.model}"] + ([f"model.checkpoint={args.checkpoint}"] if args.checkpoint
                                       else ["model.pretrained=false"])
    epochs = args.epochs or (1 if args.quick else None)
    common = model + QUIET + ([f"trainer.max_epochs={epochs}"] if epochs else [])
    plan = {"model": args.model, "checkpoint": args.checkpoint, "model_overrides": model, "overrides": {},
            "quick": None, "epochs": epochs, "peak_size": args.peak_size}
    if args.quick:
        plan["quick"] = quick_data(out, seed=123, model_overrides=model)
    for name, (kind, _, extra) in ROWS.items():
        if kind not in ("train", "peer"):
            continue
        ov = [*extra, *common]
        if args.quick:
            ov.append(f"data.path={plan['quick'][name.split('-')[0]]}")
            if name == "spam-book":
                ov.append(f"data.pad_to={plan['quick']['book_pad_to']}")
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


def out_folder(args) -> Path:
    stamp = dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out = Path(args.out or Path("outputs") / "bench" / stamp).resolve()
    for sub in ("rows", "logs", "runs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    return out


def profile(args) -> int:
    from .profile import profile_row

    out = out_folder(args)
    plan = make_plan(args, out)
    result = profile_row(args.profile, plan["overrides"][args.profile], out)
    write_json(out / "profile" / "profile.json", result)
    print(f"profile of {args.profile} (run wall time {result['wall_time_s']} s):")
    for phase, p in result["phases"].items():
        parts = ", ".join(f"{k.removeprefix('gptft: ')} {v:.1f} s" for k, v in p["parts_s"].items())
        print(f"  {phase}: {p['wall_s']:.1f} s ({parts or 'no steps'})\n    {p['table']}\n    {p['trace']}")
    return 0


def parent(args) -> int:
    out = out_folder(args)
    command = "python -m gptft.bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    load_before = os.getloadavg()
    plan = make_plan(args, out)
    write_json(out / "plan.json", plan)
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
    md = markdown(rows, header(command, args, m, load_before, load_after), notes)
    write_text(out / "bench.md", md)
    write_text(out / "bench.csv", csv_text(rows, COLUMNS))
    meta = {"command": command, "machine": m, "load_before": load_before, "load_after": load_after}
    write_json(out / "bench.json", {"meta": meta, "plan": plan, "results": res})
    print(md)
    print(f"written: {out / 'bench.md'}, {out / 'bench.csv'}, {out / 'bench.json'}")
    return 1 if any("error" in r for r in res.values()) else 0


def existing_path(text: str) -> str:
    """--checkpoint: refused in one line before any row starts (each row would fail on it alone)."""
    if not Path(text).exists():
        raise argparse.ArgumentTypeError(f"{text} does not exist: give a local .gguf file or a safetensors folder")
    return str(Path(text).resolve())


@friendly_errors
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m gptft.bench",
        description="Benchmark gptft's default (fast) paths against the book-equivalent ones on this machine.")
    ap.add_argument("--quick", action="store_true",
                    help="1 epoch on a subset of each data set (minutes instead of hours)")
    ap.add_argument("--out", help="output folder (default outputs/bench/<timestamp>)")
    ap.add_argument("--model", default="gpt2", help="model config, with random weights (default gpt2)")
    ap.add_argument("--checkpoint", type=existing_path, help="the model's pretrained weights from this local file or folder "
                    "(model.checkpoint=...; e.g. the shared SmolLM2 GGUF with --model smollm2-135m-instruct)")
    ap.add_argument("--epochs", type=int, help="override the epochs of every training row (default: the "
                    "recipe's 5 spam / 2 instruct, or 1 with --quick)")
    ap.add_argument("--peak-size", type=int, default=2048, help="n of the n x n x n torch.mm that measures the "
                    "matmul peak (default 2048; smaller is quicker and reads lower)")
    ap.add_argument("--rows", help=f"comma-separated subset of rows to run: {','.join(ROWS)}")
    profilable = [n for n, (kind, _, extra) in ROWS.items() if kind == "train" and "device=cpu-ddp" not in extra]
    ap.add_argument("--profile", metavar="ROW", choices=profilable, help="instead of the table: torch.profiler over "
                    "one training row in this process (the frozen-prefix pass, the first two epochs, the final "
                    f"scoring), written under <out>/profile/: {', '.join(profilable)}")
    ap.add_argument("--row", choices=list(ROWS), help=argparse.SUPPRESS)  # internal: run one row (a child)
    args = ap.parse_args(argv)
    if args.row:
        from .measure import child

        child(args.row, Path(args.out))
        return 0
    return profile(args) if args.profile else parent(args)
