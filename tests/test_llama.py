"""SmolLM2 (Llama architecture): gptft against `transformers` as the reference implementation.

The shared GGUF (conftest's `shared_gguf`) is the only pretrained causal LM reachable offline; these
tests skip only where the mirror is absent. Loading it is slow (GGUF metadata parsing
in both libraries), so each model is loaded once per module.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from gptft.models.generation import generate
from gptft.models.llama import Llama, LlamaConfig
from gptft.models.llama_weights import load_llama

SAMPLE = [
    "Hello, world! It's 2024-06-01; the price is $3,141.59 (approx.), 1e-9 or 0x1F.",
    "   leading spaces, trailing   \t\ttabs\n\n\nnew  lines  \r\n end  ",
    "Emoji: 😀👍🏽🇫🇷 and a ZWJ family 👨‍👩‍👧",
    "中文测试：你好，世界！ 日本語のテキスト。 한국어 문장",
    "العربية: مرحبا بالعالم — Русский: Привет, мир! Ελληνικά, हिन्दी, עברית",
    "def f(x):\n    return x**2  # comment\n\tif x >= 10_000: pass",
    "mixed—dashes… “quotes” ‘single’ «guillemets» naïve café résumé",
    "don't I'll we've they're she'd YOU'RE 1234567890",
    "",
]


@pytest.fixture(scope="module")
def smollm(shared_gguf):
    model, tok = load_llama(checkpoint=str(shared_gguf), hub_id=None, pretrained=True, size_config=None)
    return model.eval(), tok


@pytest.fixture(scope="module")
def hf_tok(shared_gguf):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(shared_gguf.parent, gguf_file=shared_gguf.name)


def test_gguf_config_from_metadata(smollm):
    model, tok = smollm
    cfg = model.config
    assert (cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.n_kv_head, cfg.intermediate_size) == (30, 576, 9, 3, 1536)
    assert (cfg.vocab_size, cfg.context_length, cfg.rope_theta) == (49152, 8192, 1e5)
    assert cfg.tie_embeddings and model.head.weight is model.embedding.weight
    assert abs(cfg.rms_norm_eps - 1e-5) < 1e-9
    assert (tok.eot_id, tok.pad_id, tok.bos_id, tok.vocab_size) == (2, 2, 1, 49152)  # <|im_end|>
    assert tok.decode([tok.eot_id]) == "<|im_end|>"


def test_logits_match_transformers_gguf(smollm, shared_gguf):
    from transformers import AutoModelForCausalLM

    model, tok = smollm
    ref = AutoModelForCausalLM.from_pretrained(shared_gguf.parent, gguf_file=shared_gguf.name,
                                               dtype=torch.float32).eval()
    ids = torch.tensor([tok.encode("The Eiffel Tower is in Paris, the capital of France. It was built in")])
    with torch.no_grad():
        ours, theirs = model(ids), ref(ids).logits
    assert ours.shape == theirs.shape == (1, ids.shape[1], 49152)
    assert (ours - theirs).abs().max().item() <= 1e-3


def test_tokenizer_matches_transformers_gguf(smollm, hf_tok):
    _, tok = smollm
    for text in SAMPLE:
        assert tok.encode(text) == hf_tok(text)["input_ids"], text
        assert tok.decode(tok.encode(text)) == text
    assert tok.encode_batch(SAMPLE) == [tok.encode(t) for t in SAMPLE]
    # special-token text: ids through encode_with_special, plain text through encode
    chat = "<|im_start|>user\nhi <|endoftext|><|im_end|>\n<|im_start|>assistant\n"
    assert tok.encode_with_special(chat) == hf_tok(chat)["input_ids"]
    plain = tok.encode(chat)
    assert not set(plain) & set(tok.special_tokens.values()) and tok.decode(plain) == chat


def test_numbers_are_isolated_as_llama_cpp_does(smollm):
    # GGUF's pre-tokenizer "smollm" (llama.cpp; HF tokenizer.json: Digits + ByteLevel) splits off
    # every number character first. ASCII digits have no merges, so it shows only on numerals
    # such as "²": transformers' GGUF loader (5.x) omits that split and gives ["ĠÂ", "²"] here.
    _, tok = smollm
    space, sup2 = tok.encode(" "), tok.encode("²")
    assert len(space) == len(sup2) == 1
    assert tok.encode(" ²") == space + sup2 and tok.encode("x²") == tok.encode("x") + sup2


def test_chatml_prompt_matches_chat_template(smollm, hf_tok):
    from gptft.data.prompts import get_prompt_style

    _, tok = smollm
    style = get_prompt_style("chatml")
    entry = {"instruction": "Rewrite the sentence.", "input": "The cat <|im_end|> sat."}
    ids = style.encode_prompt(tok, entry)
    assert tok.decode(ids) == style.prompt(entry)
    assert ids.count(tok.special_id("<|im_end|>")) == 1  # the user's marker text stays text
    msg = [{"role": "user", "content": "What is 2 + 2?"}]
    templ = hf_tok.apply_chat_template(msg, add_generation_prompt=True, tokenize=False)
    ours = style.prompt({"instruction": "What is 2 + 2?"})
    assert templ.endswith(ours)  # the template only adds a default system turn before it
    assert style.encode_prompt(tok, {"instruction": "What is 2 + 2?"}) == hf_tok(ours)["input_ids"]


def test_greedy_chat_answer_paris_cached_equals_uncached(smollm):
    from gptft.data.prompts import get_prompt_style

    model, tok = smollm
    ids = get_prompt_style("chatml").encode_prompt(tok, {"instruction": "What is the capital of France?"})
    cached = generate(model, ids, 12, eos_id=tok.eot_id)
    assert generate(model, ids, 12, eos_id=tok.eot_id, use_cache=False) == cached
    answer = tok.decode(cached)
    assert "Paris" in answer and len(cached) < 12, answer  # stops at <|im_end|>


def test_untied_head_and_classifier_head(smollm):
    from gptft.tasks.finetune import replace_head

    model, _ = smollm
    ids = torch.tensor([[504, 3458, 314, 2114]])
    with torch.no_grad():
        before = model(ids)
    old_head = model.head
    try:  # the instruct task clones the head so the embedding can stay frozen
        model.head = torch.nn.Linear(576, 49152, bias=False)
        model.head.weight.data.copy_(old_head.weight)
        with torch.no_grad():
            assert torch.equal(model(ids), before)
        model.head = torch.nn.Linear(576, 2)  # the classifier's head
        assert model(ids).shape == (1, 4, 2) and "head" not in dict(model.named_children())
        replace_head(model, torch.nn.Linear(576, 3))  # how the tasks swap it
        assert model(ids).shape == (1, 4, 3)
    finally:
        model.head = old_head


def _hf_tiny(tie: bool):
    from transformers import LlamaConfig as HFLlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = HFLlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                        rope_theta=50000.0, rms_norm_eps=1e-6, tie_word_embeddings=tie)
    return LlamaForCausalLM(cfg).eval()


@pytest.mark.parametrize("tie", [True, False])
def test_safetensors_folder_round_trip(tmp_path, smollm, tie):
    _, tok = smollm
    hf = _hf_tiny(tie)
    hf.save_pretrained(tmp_path)
    tok.save(tmp_path)  # the GGUF-built tokenizer, exported as tokenizer.json
    model, tok2 = load_llama(checkpoint=str(tmp_path), hub_id=None, pretrained=True,
                             size_config={"dropout": 0.1})
    model.eval()
    cfg = model.config
    assert (cfg.n_layer, cfg.n_kv_head, cfg.rope_theta, cfg.tie_embeddings, cfg.dropout) == (2, 2, 5e4, tie, 0.1)
    assert [tok2.encode(t) for t in SAMPLE] == [tok.encode(t) for t in SAMPLE]
    assert tok2.eot_id == tok.eot_id and tok2.special_tokens == tok.special_tokens
    ids = torch.randint(0, 49152, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (model(ids) - hf(ids).logits).abs().max().item() <= 1e-4
    prompt = ids[0, :5].tolist()
    assert generate(model, prompt, 8) == generate(model, prompt, 8, use_cache=False)


def test_random_init_needs_a_tokenizer_source(smollm, tmp_path):
    with pytest.raises(ValueError, match="tokenizer"):
        load_llama(checkpoint=None, hub_id=None, pretrained=False, size_config={"n_layer": 1})
    _, tok = smollm
    tok.save(tmp_path)  # a folder with only a tokenizer is enough for random weights
    shape = dict(n_layer=2, n_embd=64, n_head=4, n_kv_head=2, intermediate_size=96)
    model, tok2 = load_llama(checkpoint=str(tmp_path), hub_id=None, pretrained=False, size_config=shape)
    assert isinstance(model, Llama) and model.config == LlamaConfig(**shape)
    assert tok2.encode(SAMPLE[0]) == tok.encode(SAMPLE[0])


def test_hf_config_both_rope_spellings():
    from gptft.models.llama_weights import llama_config_from_hf

    base = dict(model_type="llama", vocab_size=49152, max_position_embeddings=8192, hidden_size=576,
                num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                intermediate_size=1536, rms_norm_eps=1e-5, tie_word_embeddings=True)
    v4 = llama_config_from_hf({**base, "rope_theta": 100000.0, "rope_scaling": None})
    v5 = llama_config_from_hf({**base, "rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"}})
    assert v4 == v5 == LlamaConfig(rms_norm_eps=1e-5)  # the defaults are SmolLM2-135M
    with pytest.raises(ValueError, match="rope_type='llama3'"):
        llama_config_from_hf({**base, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}})


def _dead_hub(monkeypatch, cache: Path) -> None:
    """Offline mode, an empty cache and an unroutable endpoint; huggingface_hub read the
    environment at import time, so its constants are patched too."""
    import huggingface_hub.constants as c

    dead = "http://127.0.0.1:9"
    env = dict(HF_HUB_OFFLINE="1", HF_HOME=str(cache), HF_HUB_CACHE=str(cache), HF_ENDPOINT=dead)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for k, v in dict(HF_HUB_OFFLINE=True, HF_HOME=str(cache), HF_HUB_CACHE=str(cache), ENDPOINT=dead,
                     HUGGINGFACE_CO_URL_TEMPLATE=dead + "/{repo_id}/resolve/{revision}/{filename}").items():
        monkeypatch.setattr(c, k, v)


def test_offline_hub_error_names_the_options(tmp_path, monkeypatch):
    _dead_hub(monkeypatch, tmp_path)
    start = time.perf_counter()
    for pretrained in (True, False):
        with pytest.raises(RuntimeError) as err:
            load_llama(checkpoint=None, hub_id="HuggingFaceTB/SmolLM2-135M", pretrained=pretrained,
                       size_config=None)
        msg = str(err.value)
        assert "HuggingFaceTB/SmolLM2-135M" in msg and "connect" in msg
        assert "model.checkpoint=PATH" in msg and ".gguf" in msg and "model.pretrained=false" in msg
    assert time.perf_counter() - start < 5  # offline mode: no retries


def test_offline_hub_cache_loads(tmp_path, monkeypatch, smollm):
    _, tok = smollm
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--someone--tiny-llama"
    hf = _hf_tiny(True)
    hf.save_pretrained(repo / "snapshots" / commit)
    tok.save(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    _dead_hub(monkeypatch, tmp_path)
    model, _ = load_llama(checkpoint=None, hub_id="someone/tiny-llama", pretrained=True, size_config=None)
    ids = torch.tensor([tok.encode("offline hub cache")])
    with torch.no_grad():
        assert (model.eval()(ids) - hf(ids).logits).abs().max().item() <= 1e-4
