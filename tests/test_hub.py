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


def test_generate_offline_names_its_own_keys(no_network_no_cache, tokenizer, capsys):
    """generate takes train's model.* keys, so the way out the error names is one it accepts."""
    from gptft.generate import main as generate_main

    with pytest.raises(SystemExit) as exit_:
        generate_main(["model=gpt2", "prompt=Once upon a time"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "model.checkpoint=PATH" in err and "model.pretrained=false" in err and "train from" not in err
