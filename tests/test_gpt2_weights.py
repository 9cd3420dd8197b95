"""Loading GPT-2 weights in the real Hugging Face formats, checked against `transformers`."""
from __future__ import annotations

import json
import shutil
import time

import pytest
import torch
from safetensors.torch import load_file, save_file

from gptft.models.gpt2 import GPT, gpt2_config
from gptft.models.tokenizer import gpt2_tokenizer
from gptft.models.gpt2_weights import convert_hf_gpt2_state_dict, gpt2_config_from_hf, load_gpt2

transformers = pytest.importorskip("transformers")

TEXTS = [
    "Ok lar... Joking wif u oni...",
    "WINNER!! As a valued network customer you have been selected to receive a £900 prize reward! "
    "To claim call 09061701461. Claim code KL341. Valid 12 hours only.",
    "I'm gonna be home soon and i don't want to talk about this stuff anymore tonight, k?",
    "Free entry in 2 a wkly comp to win FA Cup final tkts 21st May 2005.",
]


def hf_gpt2(n_layer=4, n_head=4, n_embd=64, n_positions=1024, std=0.1, seed=0):
    """A random GPT2LMHeadModel; every tensor (biases, norms too) random so a wrong mapping shows."""
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd, n_positions=n_positions)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".ln_" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
            else:
                p.normal_(0.0, std)
    return model


def max_logit_diff(ours: GPT, hf, texts=TEXTS) -> float:
    tok = gpt2_tokenizer()
    ours.eval()
    worst = 0.0
    with torch.no_grad():
        for text in texts:  # one at a time: different lengths, no padding involved
            idx = torch.tensor([tok.encode(text)])
            a, b = ours(idx), hf(idx).logits
            assert a.shape == b.shape and b.abs().max() > 0.1  # logits not trivially tiny
            worst = max(worst, (a - b).abs().max().item())
    return worst


def assert_tied(model: GPT) -> None:
    assert model.lm_head.weight is model.transformer.wte.weight
    assert sum(p is model.transformer.wte.weight for p in model.parameters()) == 1


def test_safetensors_folder_matches_transformers(tmp_path):
    hf = hf_gpt2(n_layer=2, n_head=4, n_embd=64, n_positions=128)
    hf.save_pretrained(tmp_path)
    # config.json defines the architecture; a differing size name only warns.
    with pytest.warns(UserWarning, match="n_layer=2"):
        model = load_gpt2("gpt2-tiny", pretrained=True, checkpoint=str(tmp_path))
    assert (model.config.n_layer, model.config.context_length) == (2, 128)
    assert_tied(model)
    assert max_logit_diff(model, hf) <= 1e-4


@pytest.mark.slow
def test_full_size_gpt2_matches_transformers(tmp_path):
    start = time.perf_counter()
    hf = hf_gpt2(n_layer=12, n_head=12, n_embd=768, n_positions=1024, std=0.02)
    hf.save_pretrained(tmp_path)
    model = load_gpt2("gpt2", pretrained=True, checkpoint=str(tmp_path / "model.safetensors"))
    assert model.config == gpt2_config("gpt2")
    assert_tied(model)
    assert max_logit_diff(model, hf, TEXTS[:1]) <= 1e-4
    assert time.perf_counter() - start < 60


def test_bin_and_bare_safetensors(tmp_path):
    hf = hf_gpt2()  # gpt2-tiny's shape, so a bare file without config.json fits the size
    sd = {k.removeprefix("transformer."): v for k, v in hf.state_dict().items()}
    for i in range(4):  # the buffers old OpenAI/HF checkpoints carry
        sd[f"h.{i}.attn.bias"] = torch.ones(1, 1, 1024, 1024).tril()
        sd[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    folder = tmp_path / "bin"
    folder.mkdir()
    torch.save(sd, folder / "pytorch_model.bin")
    hf.config.to_json_file(folder / "config.json")
    for ckpt in (folder, folder / "pytorch_model.bin"):
        model = load_gpt2("gpt2-tiny", pretrained=True, checkpoint=str(ckpt))
        assert_tied(model)
        assert max_logit_diff(model, hf, TEXTS[:2]) <= 1e-4

    hf.save_pretrained(tmp_path / "st")
    bare = tmp_path / "bare" / "weights.safetensors"
    bare.parent.mkdir()
    shutil.copy(tmp_path / "st" / "model.safetensors", bare)
    model = load_gpt2("gpt2-tiny", pretrained=True, checkpoint=str(bare))
    assert max_logit_diff(model, hf, TEXTS[:2]) <= 1e-4


def test_sharded_folder(tmp_path):
    hf = hf_gpt2(n_layer=2)
    hf.save_pretrained(tmp_path, max_shard_size="2MB")  # wte alone is 12.9 MB
    assert (tmp_path / "model.safetensors.index.json").is_file()
    with pytest.warns(UserWarning):
        model = load_gpt2("gpt2-tiny", pretrained=True, checkpoint=str(tmp_path))
    assert max_logit_diff(model, hf, TEXTS[:1]) <= 1e-4


def _isolate_hub(monkeypatch, cache, offline: bool):
    """Point huggingface_hub at `cache` and a dead endpoint; it reads these at import time too."""
    import huggingface_hub.constants as c

    dead = "http://127.0.0.1:9"
    for var, value in dict(HF_HOME=cache, HF_HUB_CACHE=cache, HF_ENDPOINT=dead).items():
        monkeypatch.setenv(var, str(value))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
    monkeypatch.setattr(c, "HF_HOME", str(cache))
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", offline)
    monkeypatch.setattr(c, "ENDPOINT", dead)
    monkeypatch.setattr(c, "HUGGINGFACE_CO_URL_TEMPLATE", dead + "/{repo_id}/resolve/{revision}/{filename}")


def test_offline_without_cache_names_the_options(tmp_path, monkeypatch):
    cache = tmp_path / "hf"
    cache.mkdir()
    _isolate_hub(monkeypatch, cache, offline=True)
    start = time.perf_counter()
    with pytest.raises(RuntimeError) as err:
        load_gpt2("gpt2", pretrained=True)
    from huggingface_hub.utils import LocalEntryNotFoundError

    assert isinstance(err.value.__cause__, LocalEntryNotFoundError)  # the hub's own offline path
    msg = str(err.value)
    assert "openai-community/gpt2" in msg and "connect" in msg
    assert "model.checkpoint=PATH" in msg and "model.pretrained=false" in msg
    assert time.perf_counter() - start < 5  # no network retries in offline mode


def test_offline_with_hub_cache_loads(tmp_path, monkeypatch):
    # The documented hub cache layout: refs/main -> commit, snapshots/<commit>/<files>.
    hf = hf_gpt2(n_layer=2, n_positions=64)
    repo = tmp_path / "hf" / "models--someone--tiny-gpt2"
    commit = "0123456789abcdef0123456789abcdef01234567"
    hf.save_pretrained(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    _isolate_hub(monkeypatch, tmp_path / "hf", offline=True)
    with pytest.warns(UserWarning):
        model = load_gpt2("gpt2-tiny", pretrained=True, hub_id="someone/tiny-gpt2")
    assert max_logit_diff(model, hf, TEXTS[:1]) <= 1e-4


@pytest.fixture
def tiny_file(tmp_path):
    hf = hf_gpt2()
    hf.save_pretrained(tmp_path / "st")
    return tmp_path / "st" / "model.safetensors"


def _rewrite(path, edit):
    sd = load_file(str(path))
    edit(sd)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))


def test_wrong_shape_names_key_shapes_and_path(tiny_file):
    _rewrite(tiny_file, lambda sd: sd.update({"transformer.h.1.mlp.c_fc.weight": torch.zeros(256, 64)}))
    with pytest.raises(ValueError) as err:
        load_gpt2("gpt2-tiny", pretrained=True, checkpoint=str(tiny_file))
    msg = str(err.value)
    assert "'transformer.h.1.mlp.c_fc.weight'" in msg and "[64, 256]" in msg and "[256, 64]" in msg
    assert str(tiny_file) in msg


def test_missing_and_unexpected_keys(tiny_file):
    def edit(sd):
        del sd["transformer.ln_f.bias"]
        sd["transformer.h.0.attn.extra"] = torch.zeros(3)

    _rewrite(tiny_file, edit)
    with pytest.raises(ValueError, match="missing key 'transformer.ln_f.bias'") as err:
        load_gpt2("gpt2-tiny", pretrained=True, checkpoint=str(tiny_file))
    assert "unexpected key 'transformer.h.0.attn.extra'" in str(err.value)


def test_untied_head_is_rejected():
    cfg = gpt2_config("gpt2-tiny")
    sd = {k: v for k, v in hf_gpt2().state_dict().items()}
    sd["lm_head.weight"] = torch.randn_like(sd["lm_head.weight"])
    with pytest.raises(ValueError, match="ties"):
        convert_hf_gpt2_state_dict(sd, cfg)


def test_config_and_argument_errors(tmp_path):
    assert gpt2_config_from_hf(json.loads(transformers.GPT2Config().to_json_string())) == gpt2_config("gpt2")
    with pytest.raises(ValueError, match="activation_function"):
        gpt2_config_from_hf({**transformers.GPT2Config().to_dict(), "activation_function": "relu"})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_gpt2("gpt2", pretrained=True, checkpoint=str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="no published weights"):
        load_gpt2("gpt2-tiny", pretrained=True)
    with pytest.raises(ValueError, match="pretrained=false"):
        load_gpt2("gpt2-tiny", pretrained=False, checkpoint=str(tmp_path))
    model = load_gpt2("gpt2-tiny", pretrained=False, dropout=0.1)
    assert model.config.dropout == 0.1 and model.config.n_layer == 4
    assert_tied(model)
