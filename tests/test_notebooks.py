"""The notebooks: each runs top to bottom (nbclient, a real kernel) on tiny parameters, and the committed copies
carry the outputs of a real run, in order and without errors. The committed files are never rewritten here."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# gpt2-tiny (random weights, no download), 1 epoch, 40 rows (spam: training messages; instruct: entries; the sweep:
# messages of its subset), 2 answers of 4 tokens; notebook 03 reads a recorded bench.json instead of running the
# benchmark (its rows are processes of their own: a minute more)
TINY = {"GPTFT_NB_MODEL": "model=gpt2-tiny", "GPTFT_NB_EPOCHS": "1", "GPTFT_NB_ROWS": "40", "GPTFT_NB_EVAL": "2",
        "GPTFT_NB_TOKENS": "4", "GPTFT_NB_BENCH": str(ROOT / "tests" / "data" / "bench-quick-gpt2-tiny.json")}


def test_there_are_three_notebooks():
    assert [p.name for p in NOTEBOOKS] == ["01_spam_classifier.ipynb", "02_instruction_tuning.ipynb",
                                          "03_sweeps_and_speed.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, shared_data, shared_dir, tmp_path, monkeypatch):
    for key, value in {**TINY, "GPTFT_NB_OUT": str(tmp_path / "out")}.items():
        monkeypatch.setenv(key, value)  # the kernel inherits this process's environment
    if (shared_dir / "tiktoken_cache").is_dir():
        monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(shared_dir / "tiktoken_cache"))
    nb = nbformat.read(path, as_version=4)
    # raises CellExecutionError (the cell and its traceback) on any error
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    nbformat.write(nb, tmp_path / path.name)  # the executed copy, for reading after a failure
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "parameters: model=gpt2-tiny" in printed


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_has_real_outputs(path):
    """Executed top to bottom in one kernel (counts 1..n), no errors, with the shared SmolLM2 (the printed
    parameters line), and every code cell produced something or was meant to stay quiet."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.cells[0].cell_type == "markdown" and "Time" in nb.cells[0].source  # what it teaches, how long
    cells = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1)), "not executed top to bottom"
    errors = [o for c in cells for o in c.outputs if o.output_type == "error"]
    assert not errors, errors[0]
    params = "".join(o.get("text", "") for o in cells[0].outputs)
    assert "parameters: model=smollm2-135m-instruct model.checkpoint=" in params
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in params
    assert "notebook ran in" in "".join(o.get("text", "") for o in cells[-1].outputs)
