"""The child side of the benchmark: run one row in this process and write its measurements.

Imported only by the child process (`python -m gptft.bench --row NAME`). A training row is
`fit_and_test` with the Meter callback; a decode row times greedy decoding; the peak row times torch.mm.
"""
from __future__ import annotations

import json
import statistics
import time
import warnings
from pathlib import Path

import lightning as L
import torch

from ..atomic import write_json
from ..data.prompts import get_prompt_style
from ..memory import peak_rss_mib, reset_peak_rss
from ..models.build import build_backbone
from ..models.generation import generate
from ..runtime import cpu_bf16_is_fast, resolve_precision
from ..fit import fit_and_test
from .flops import StepFlops, matmul_peak
from .rows import DECODE_ENTRY, DECODE_TOKENS, EMULATED_BF16_SIZE, ROWS, compose


class Meter(L.Callback):
    """Times the training steps and validation, marks the start and end of fit and test, and counts
    what the steps processed and their estimated FLOPs."""

    def __init__(self):
        self.train_s = self.val_s = self.flops = 0.0
        self.steps = self.examples = self.tokens = self.padded = 0
        self.step_s: list[float] = []
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

    def on_train_end(self, trainer, task):
        if trainer.world_size > 1:  # the work of every process; the times stay rank 0's
            done = torch.tensor([self.examples, self.tokens, self.padded, self.flops], dtype=torch.float64)
            *counts, self.flops = trainer.strategy.reduce(done, reduce_op="sum").tolist()
            self.examples, self.tokens, self.padded = (int(c) for c in counts)

    def on_train_batch_start(self, trainer, task, batch, batch_idx):
        if self.counter is None:
            self.counter = StepFlops(task.backbone, task.boundary)
        rows, width = batch["input_ids"].shape
        lengths = batch["lengths"]
        prefix_rows, prefix_width = rows, width
        cache = task.prefix_cache  # made at the first step that uses it: until then every row runs the prefix
        if cache is not None:  # only rows missing from the cache run the prefix, at their longest length
            miss = [i for i, k in enumerate(batch["example_id"].tolist()) if k not in cache.rows]
            prefix_rows, prefix_width = len(miss), int(lengths[miss].max()) if miss else 0
        if "targets" in batch:
            head = int((batch["targets"] != -100).sum()) if task.targets_only else rows * width
        else:
            head = rows
        self._pending = self.counter.step(rows, width, prefix_rows, prefix_width, head, pooled="targets" not in batch)
        self._batch = (rows, int(lengths.sum()), rows * width)
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, task, outputs, batch, batch_idx):
        self.step_s.append(time.perf_counter() - self._t0)
        self.train_s += self.step_s[-1]
        self.steps += 1
        self.examples += self._batch[0]
        self.tokens += self._batch[1]
        self.padded += self._batch[2]
        self.flops += self._pending


def run_train_row(name: str, overrides: list[str], out: Path, peak_size: int) -> dict:
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*smaller than the logging interval.*")
    run_dir = out / "runs" / name
    cfg = compose(run_dir, overrides)
    meter = Meter()
    # the matmul peak in the row's dtype, measured around its own run: on a shared machine a peak
    # taken minutes earlier can be far off
    dtype = "bf16" if "bf16" in resolve_precision(str(cfg.trainer.precision), str(cfg.trainer.accelerator)) else "fp32"
    peak = matmul_peak(dtype, peak_size)
    m = fit_and_test(cfg, run_dir, callbacks=(meter,))
    if "splits" not in m:  # another rank of a multi-process row: rank 0 reports
        return None
    peak = max(peak, matmul_peak(dtype, peak_size))
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
        "first_step_s": meter.step_s[0] if meter.step_s else None,  # with finetune.compile: the compile
        "median_step_s": statistics.median(meter.step_s) if meter.step_s else None,
        "epochs": int(cfg.trainer.max_epochs),
        "processes": m.get("processes", 1),
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
        "peak_rss_mib": max(peak_rss_mib(), m["peak_rss_mib"]),  # with DDP: the largest process's
    }


def run_decode_row(use_cache: bool, model_overrides: list[str], out: Path) -> dict:
    cfg = compose(out / "runs" / "decode", model_overrides)
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


def run_peak_row(peak_size: int) -> dict:
    # emulated bf16 (a CPU without native bf16) runs ~100x slower than fp32: minutes at 2048, so a smaller mm
    bf16_size = peak_size if cpu_bf16_is_fast() else min(peak_size, EMULATED_BF16_SIZE)
    return {"peak_fp32": matmul_peak("fp32", peak_size), "peak_bf16": matmul_peak("bf16", bf16_size),
            "bf16_size": bf16_size, "peak_rss_mib": peak_rss_mib()}


def child(name: str, out: Path) -> None:
    reset_peak_rss()
    plan = json.loads((out / "plan.json").read_text())
    kind = ROWS[name][0]
    if kind == "peak":
        result = run_peak_row(plan["peak_size"])
    elif kind == "decode":
        result = run_decode_row(name == "decode-cache", plan["model_overrides"], out)
    elif kind == "peer":
        from .peer import run_trainer_row

        result = run_trainer_row(plan["overrides"][name], out)
    else:
        result = run_train_row(name, plan["overrides"][name], out, plan["peak_size"])
    if result is None:
        return
    write_json(out / "rows" / f"{name}.json", result)
