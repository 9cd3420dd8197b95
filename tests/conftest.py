"""Shared fixtures: the offline mirror (GPTFT_SHARED_DIR, set by .ci/setup, else ../shared) and what
tests take from it. Tests ask for these fixtures rather than computing a mirror path themselves."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):  # set before torch is imported: it reads this once
    # the test processes share the cores: each takes its share of threads, and its subprocesses inherit it,
    # so that two workers on two cores do not run four busy threads
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))

# the longest files first: the two test processes (xdist, --dist loadfile) take whole files in collection order,
# so the last files to start are short ones and neither process is left alone with a long file at the end
LONGEST_FIRST = ("test_train_spam.py", "test_export.py", "test_reliability.py", "test_serve.py", "test_bad_inputs.py",
                 "test_train_instruct.py", "test_checkpoints.py", "test_run_dirs.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


SHARED = Path(os.environ.get("GPTFT_SHARED_DIR") or Path(__file__).resolve().parents[2] / "shared")
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The mirror; its absence skips the test, except in CI, where it fails."""
    if not SHARED.is_dir():
        why = f"{SHARED} is absent: these tests need the offline data mirror (GPTFT_SHARED_DIR or ../shared)"
        if os.environ.get("CI"):
            pytest.fail(why)  # CI must not turn green by skipping the tests on real data
        pytest.skip(why)
    return SHARED


@pytest.fixture(scope="session")
def shared_gguf(shared_dir) -> Path:
    """The mirror's SmolLM2-135M-Instruct GGUF: the only pretrained causal LM reachable offline."""
    path = shared_dir / "models" / GGUF_NAME
    assert path.is_file(), f"the mirror {shared_dir} lacks models/{GGUF_NAME}"
    return path


@pytest.fixture(scope="session")
def tokenizer(shared_dir):
    """GPT-2's tokenizer via tiktoken. TIKTOKEN_CACHE_DIR points at the mirror's cache for the session
    unless it is set already, so child processes (the benchmark's rows) find it too."""
    from gptft.models.tokenizer import gpt2_tokenizer

    with pytest.MonkeyPatch.context() as mp:
        cache = shared_dir / "tiktoken_cache"
        if "TIKTOKEN_CACHE_DIR" not in os.environ and cache.is_dir():
            mp.setenv("TIKTOKEN_CACHE_DIR", str(cache))
        yield gpt2_tokenizer()


@pytest.fixture(scope="session")
def shared_data(shared_dir):
    """Points GPTFT_DATA_DIR at the mirror's data/ (the real SMS and instruction files) for the session."""
    data = shared_dir / "data"
    if not data.is_dir():
        pytest.skip(f"{data} is absent: these tests need the real data files")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPTFT_DATA_DIR", str(data))
        yield data
