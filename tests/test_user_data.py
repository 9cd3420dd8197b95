"""Data as people have it: a Windows-1252/Latin-1 CSV, a headerless CSV; a failed start leaves no run folder."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from gptft.data.spam import SpamDataModule
from gptft.errors import GptftError
from gptft.models.llama import LlamaConfig
from gptft.models.llama_weights import _warn_mismatch

ROOT = Path(__file__).resolve().parents[1]


def sms_rows(shared_data, n_per_class: int = 40) -> list[tuple[str, str]]:
    """The first n ham and n spam messages of the real SMS file (those Latin-1 can write)."""
    rows, seen = [], {"ham": 0, "spam": 0}
    for line in (shared_data / "sms_spam_collection" / "SMSSpamCollection").read_text(encoding="utf-8").splitlines():
        label, _, text = line.partition("\t")
        if seen[label] < n_per_class and all(ord(c) < 0x80 or 0xA0 <= ord(c) < 0x100 for c in text):
            seen[label] += 1
            rows.append((label, text))
    return rows


def write_csv(path: Path, rows, header: list[str] | None, encoding: str) -> Path:
    with path.open("w", encoding=encoding, newline="") as f:
        w = csv.writer(f)
        if header:
            w.writerow(header)
        w.writerows(rows)
    return path


def test_latin1_csv_is_read_and_the_affected_lines_are_counted(tmp_path, tokenizer, shared_data, caplog):
    rows = sms_rows(shared_data)
    accented = {3: "Café at 6? Ça va, à bientôt", 10: "Preis: 900 £ für Sie! Rückruf 0906"}
    rows = [(label, accented.get(i, text)) for i, (label, text) in enumerate(rows)]
    path = write_csv(tmp_path / "latin1.csv", [(text, label) for label, text in rows], ["text", "label"], "latin-1")
    with pytest.raises(UnicodeDecodeError):
        path.read_text(encoding="utf-8")  # really not UTF-8

    non_ascii = [i + 2 for i, (_, text) in enumerate(rows) if not text.isascii()]  # file lines (after the header)
    assert len(non_ascii) >= 2

    with caplog.at_level("WARNING"):
        dm = SpamDataModule(tokenizer, path=str(path), balance="none")
        dm.setup()
    assert f"not UTF-8: read as cp1252 ({len(non_ascii)} of 81 lines" in caplog.text
    assert dm.report["encoding"] == "cp1252" and dm.report["not_utf8_lines"] == len(non_ascii)
    assert "Café at 6? Ça va, à bientôt" in dm.texts and "Preis: 900 £ für Sie! Rückruf 0906" in dm.texts
    assert len(dm.texts) == 80 and dm.label_names == ["ham", "spam"]

    explicit = SpamDataModule(tokenizer, path=str(path), balance="none", encoding="latin-1")
    explicit.setup()
    assert explicit.texts == dm.texts and explicit.report["encoding"] == "iso8859-1"
    with pytest.raises(GptftError, match=rf"latin1.csv, line {non_ascii[0]}: not valid utf-8 .*set data.encoding"):
        SpamDataModule(tokenizer, path=str(path), encoding="utf-8").setup()
    with pytest.raises(GptftError, match="data.encoding='klingon' is not an encoding"):
        SpamDataModule(tokenizer, path=str(path), encoding="klingon").setup()


def test_utf8_with_bom_is_plain_utf8(tmp_path, tokenizer, shared_data):
    rows = sms_rows(shared_data, 20)
    path = write_csv(tmp_path / "bom.csv", [(t, lab) for lab, t in rows], ["text", "label"], "utf-8-sig")
    dm = SpamDataModule(tokenizer, path=str(path), balance="none")
    dm.setup()
    assert dm.report["encoding"] == "utf-8" and dm.report["not_utf8_lines"] == 0 and len(dm.texts) == 40


def test_headerless_csv_by_position(tmp_path, tokenizer, shared_data):
    rows = sms_rows(shared_data)
    path = write_csv(tmp_path / "export.csv", [(lab, "2024-01-03", text) for lab, text in rows], None, "utf-8")
    dm = SpamDataModule(tokenizer, path=str(path), balance="none", header=False, text_column=2, label_column=0)
    dm.setup()
    assert dm.texts == [text for _, text in rows] and dm.label_names == ["ham", "spam"]
    assert dm.lines[0] == 1  # no header: the first row is line 1

    # the defaults by position: label 0, text 1
    two = write_csv(tmp_path / "two.csv", rows, None, "utf-8")
    dm = SpamDataModule(tokenizer, path=str(two), balance="none", header=False)
    dm.setup()
    assert dm.texts == [text for _, text in rows]
    # with a header expected, the first message is taken for column names: the error says what to set
    with pytest.raises(GptftError, match="data.header=false if the file has no header row"):
        SpamDataModule(tokenizer, path=str(two)).setup()
    with pytest.raises(GptftError, match=r"line 1: 2 fields, but data.text_column=5 .* positions counted from 0"):
        SpamDataModule(tokenizer, path=str(two), header=False, text_column=5).setup()
    with pytest.raises(GptftError, match="with data.header=false columns are positions"):
        SpamDataModule(tokenizer, path=str(two), header=False, text_column="text").setup()


def test_a_run_failing_before_training_removes_its_folder(tmp_path, shared_data):
    """A headerless file without data.header=false fails when the data is read, after the folder was made."""
    data = write_csv(tmp_path / "export.csv", sms_rows(shared_data), None, "utf-8")
    run = tmp_path / "outputs" / "run"
    out = subprocess.run([sys.executable, "-m", "gptft.train", "model=gpt2-tiny", f"data.path={data}",
                          f"hydra.run.dir={run}"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 2, out.stderr[-2000:]
    assert "error: " in out.stderr and "data.header=false if the file has no header row" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1  # still the one `error:` line
    assert not run.exists() and (tmp_path / "outputs").is_dir()


def test_a_folder_holding_more_than_the_start_is_kept(tmp_path):
    from gptft.run_dir import claim, discarded_on_failure

    kept, gone = claim(tmp_path / "kept"), claim(tmp_path / "gone")
    (kept / "checkpoints").mkdir()
    (kept / "checkpoints" / "last.ckpt").write_bytes(b"x")
    for folder in (kept, gone):
        (folder / ".hydra").mkdir()
        (folder / ".hydra" / "config.yaml").write_text("seed: 1\n")
        (folder / "train.log").write_text("started\n")
        with pytest.raises(RuntimeError), discarded_on_failure(folder):
            raise RuntimeError("boom")
    assert (kept / "checkpoints" / "last.ckpt").is_file() and not gone.exists()


def test_gguf_eps_rounding_is_no_mismatch():
    """The GGUF stores rms_norm_eps=1e-5 as float32 (9.999999747378752e-06): the same value, no warning."""
    cfg = LlamaConfig(rms_norm_eps=9.999999747378752e-06)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_mismatch(cfg, {"rms_norm_eps": 1e-5, "n_layer": cfg.n_layer}, "model.gguf")
    with pytest.warns(UserWarning, match=r"rms_norm_eps=9.99.*\(config says 1e-06\)"):
        _warn_mismatch(cfg, {"rms_norm_eps": 1e-6}, "model.gguf")
