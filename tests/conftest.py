"""Shared fixtures. The offline data mirror: GPTFT_SHARED_DIR (set by .ci/setup), else ../shared."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("GPTFT_SHARED_DIR") or Path(__file__).resolve().parents[2] / "shared")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        why = f"{SHARED} is absent: these tests need the offline data mirror (GPTFT_SHARED_DIR or ../shared)"
        if os.environ.get("CI"):
            pytest.fail(why)  # CI must not turn green by skipping the tests on real data
        pytest.skip(why)
    return SHARED


@pytest.fixture(scope="session")
def tokenizer(shared_dir):
    """GPT-2's tokenizer via tiktoken, read from the mirror's cache unless TIKTOKEN_CACHE_DIR is set."""
    from gptft.models.tokenizer import gpt2_tokenizer

    with pytest.MonkeyPatch.context() as mp:
        cache = shared_dir / "tiktoken_cache"
        if "TIKTOKEN_CACHE_DIR" not in os.environ and cache.is_dir():
            mp.setenv("TIKTOKEN_CACHE_DIR", str(cache))
        return gpt2_tokenizer()  # tiktoken keeps the loaded encoding; the env var is needed only here


@pytest.fixture(scope="session")
def shared_data(shared_dir):
    """Points GPTFT_DATA_DIR at the mirror's data/ (the real SMS and instruction files) for the session."""
    data = shared_dir / "data"
    if not data.is_dir():
        pytest.skip(f"{data} is absent: these tests need the real data files")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPTFT_DATA_DIR", str(data))
        yield data
