"""The benchmark's rows: what each one runs, and the sizes of --quick."""
from __future__ import annotations

from pathlib import Path

CONF = Path(__file__).resolve().parents[2] / "conf"
DECODE_TOKENS = 256
EMULATED_BF16_SIZE = 512  # the matmul peak's bf16 mm on a CPU without native bf16 (seconds instead of minutes)
# --quick trains 1 epoch on a fixed subset of the data rather than on `limit_*_batches`:
# a subset keeps whole epochs and full evaluations, so the prefix cache sees each example
# the way it does in a real run (limited batches would mostly evaluate unseen examples).
QUICK_SPAM_PER_CLASS = 80  # -> 160 balanced messages: 112 / 16 / 32
QUICK_INSTRUCT_ENTRIES = 120  # -> 102 / 12 / 6 (the book's ordered 85/10/5 split)
DECODE_ENTRY = {"instruction": "Rewrite the sentence in the passive voice.",
                "input": "The chef cooks the meal every day."}
QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]

ROWS = {  # name: (kind, what it is, overrides beyond the model and QUIET)
    "matmul-peak": ("peak", "torch.mm of two square matrices (--peak-size), best of 5", []),
    "spam-book": ("train", "spam, book path (experiment=book-ch06): fp32, pad to the longest "
                  "train message, position -1 pooling, no cache, 5 val batches every 50 steps",
                  ["experiment=book-ch06"]),
    "spam-fast": ("train", "spam, default: bf16 autocast, per-batch padding, last-token pooling, "
                  "frozen-prefix cache", ["task=spam"]),
    "spam-compile": ("train", "spam, default with finetune.compile=true: the trained block under torch.compile "
                     "(inductor, dynamic shapes), compiled at its first calls", ["task=spam", "finetune.compile=true"]),
    "spam-trainer": ("peer", "spam, the default recipe through transformers' Trainer (gptft/bench/peer.py): the same "
                     "model, trainable set, epochs, batch, AdamW, bf16 autocast, per-batch padding and data; the "
                     "splits scored with Trainer.predict", ["task=spam"]),
    "instruct-book": ("train", "instruct, the book's ch07 recipe (experiment=book-ch07) on this model: fp32, "
                      "every layer trains, no cache, LM head on every position", ["experiment=book-ch07"]),
    "instruct-same": ("train", "instruct, the book's fp32 path with the default's trainable set (last block + "
                      "final norm + untied head): no cache, LM head on every position",
                      ["task=instruct", "precision=32", "finetune.cache_prefix=false", "task.targets_only=false"]),
    "instruct-fast": ("train", "instruct, default: bf16 autocast, frozen-prefix cache, LM head on "
                      "target positions only", ["task=instruct"]),
    "spam-ddp": ("train", "spam, the default recipe under DDP on this CPU (device=cpu-ddp: 2 processes over gloo, "
                 "Lightning gives each cores/2 threads): information only, the processes share the cores, and "
                 "each step's batch is per process, so 2 processes take half the optimizer steps",
                 ["task=spam", "device=cpu-ddp"]),
    "decode-nocache": ("decode", f"greedy decoding of {DECODE_TOKENS} tokens, fp32, no KV cache (the book)", []),
    "decode-cache": ("decode", f"greedy decoding of {DECODE_TOKENS} tokens, fp32, KV cache", []),
}


def compose(run_dir: Path, overrides: list[str]):
    """The training config of a row, composed from conf/ as `python -m gptft.train` would."""
    from hydra import compose as hydra_compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose("train", overrides=[f"run_dir={run_dir}", *overrides])
