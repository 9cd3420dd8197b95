"""Offline with nothing cached: the run stops at once, naming the ways out (no hub retries)."""
import time

import pytest

from gptft.models.hub import HubUnavailable
from gptft.models.llama_weights import load_llama
from gptft.models.gpt2_weights import load_gpt2


@pytest.fixture
def no_network_no_cache(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # offline mode would short-cut the probe
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))


@pytest.mark.parametrize("load", [
    lambda: load_gpt2("gpt2", pretrained=True, hub_id="openai-community/gpt2"),
    lambda: load_llama(checkpoint=None, hub_id="HuggingFaceTB/SmolLM2-135M", pretrained=True, size_config={}),
])
def test_unreachable_hub_fails_at_once_with_the_options(no_network_no_cache, load):
    start = time.perf_counter()
    with pytest.raises(HubUnavailable) as err:
        load()
    assert time.perf_counter() - start < 5
    msg = str(err.value)
    assert "connect to the internet once" in msg and "model.checkpoint=PATH" in msg and "model.pretrained=false" in msg
