"""The benchmark command: its FLOP estimate, its table, and a tiny end-to-end run (a spam pair on gpt2-tiny)."""
import csv

import pytest
import torch.nn as nn

from gptft import bench
from gptft.flops import StepFlops
from gptft.models.gpt2 import GPT, gpt2_config
from gptft.tasks.finetune import configure_trainable, replace_head


def test_help_exits_cleanly(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--help"])
    assert exit_info.value.code == 0
    assert "--quick" in capsys.readouterr().out


def test_step_flops_by_hand():
    model = GPT(gpt2_config("gpt2-tiny"))  # 4 blocks, d=64, 12*d^2 weights per block
    replace_head(model, nn.Linear(64, 50257, bias=False))  # untied, as the tasks do: the embedding stays frozen
    boundary = configure_trainable(model, "last_blocks", 1)
    counter = StepFlops(model, boundary)
    d, rows, width = 64, 2, 10
    block = 2 * 12 * d * d * rows * width + 4 * width * d * rows * width
    head = 2 * d * 50257 * 5
    # prefix computed for every row: forward only; the top block and head: forward + 2x backward
    assert counter.step(rows, width, rows, width, 5) == pytest.approx(3 * block + 3 * (block + head))
    # all rows cached: no prefix
    assert counter.step(rows, width, 0, 0, 5) == pytest.approx(3 * (block + head))
    # a trainable embedding (full fine-tuning) needs the backward through the prefix too
    full = StepFlops(model, configure_trainable(model, "full"))
    assert full.step(rows, width, rows, width, 5) == pytest.approx(3 * 4 * block + 3 * head)


def test_table_names_targets_met_and_missed():
    res = {
        "matmul-peak": {"peak_fp32": 1e11, "peak_bf16": 4e11, "peak_rss_mib": 300.0},
        "spam-book": {"wall_s": 100.0, "train_s": 80.0, "val_s": 5.0, "eval_s": 15.0, "examples_per_s": 1.0,
                      "tokens_per_s": 30.0, "test_acc": 0.5, "test_loss": 0.7, "peak_rss_mib": 1500.0,
                      "flops_per_s": 5e10, "dtype": "fp32", "pad_to": 132, "recipe": "r"},
        "spam-fast": {"wall_s": 8.0, "train_s": 5.0, "val_s": 1.0, "eval_s": 1.0, "examples_per_s": 16.0,
                      "tokens_per_s": 480.0, "test_acc": 0.5, "test_loss": 0.7, "peak_rss_mib": 1700.0,
                      "flops_per_s": 1e11, "dtype": "bf16", "peak_flops": 5e11, "recipe": "r"},
        "decode-nocache": {"decode_s": 100.0, "tokens_per_s": 2.56, "tokens": 256, "prompt_tokens": 50,
                           "peak_rss_mib": 900.0, "ids": [1, 2, 3]},
        "decode-cache": {"decode_s": 10.0, "tokens_per_s": 25.6, "tokens": 256, "prompt_tokens": 50,
                         "peak_rss_mib": 900.0, "ids": [1, 2, 4]},
    }
    rows, notes = bench.tabulate(res, {"model": "gpt2", "quick": None, "epochs": None})
    by = {r["row"]: r for r in rows}
    assert by["spam-book"]["pct_peak"] == pytest.approx(50.0)  # the global fp32 peak
    assert by["spam-fast"]["pct_peak"] == pytest.approx(20.0)  # its own measured bf16 peak
    text = "\n".join(notes)
    assert "12.5x -> met" in text and "10.0x -> met" in text
    assert "instruction training >= 4x the book-equivalent tokens/s: not measured" in text
    assert "1.66 GiB -> met" in text and "agree on the first 2 of 3 tokens" in text
    assert "same recipe: r" in text


def test_quick_tiny_spam_pair(tmp_path, shared_dir, shared_data, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(shared_dir / "tiktoken_cache"))
    out = tmp_path / "bench"
    rc = bench.main(["--quick", "--model", "gpt2-tiny", "--out", str(out), "--rows", "spam-book,spam-fast"])
    assert rc == 0, (out / "logs" / "spam-book.log").read_text()[-2000:]
    with open(out / "bench.csv") as f:
        rows = {r["row"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"spam-book", "spam-fast"}
    assert float(rows["spam-book"]["wall_s"]) > 0 and rows["spam-fast"]["speedup"].endswith("examples/s)")
    md = (out / "bench.md").read_text()
    assert "peak RSS of the default spam run < 3 GiB (model gpt2-tiny)" in md
    assert (out / "runs" / "spam-fast" / "checkpoints" / "best.ckpt").is_file()
