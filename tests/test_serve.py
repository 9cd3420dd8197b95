"""`python -m gptft.serve` with real clients: urllib for /predict (against `gptft.classify`), the `openai`
client for the chat (against `gptft.generate`, streamed and not), the bad-request matrix, a bounded load
run with batching off and on, a headless Chromium on the web page, and the evaluate judge pointed at
the server, and the same answers from the folders `gptft.export` makes of those checkpoints. gpt2-tiny
checkpoints are trained here; servers listen on 127.0.0.1, free ports, and are always stopped; every wait
is bounded."""
from __future__ import annotations

import json
import os
import shutil
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from gptft.classify import classify, main as classify_main
from gptft.cli_args import command
from gptft.evaluate import main as evaluate
from gptft.export.command import export_task
from gptft.generate import main as generate_main
from gptft.serve.load import main as load_main
from gptft.serve.process import running_server
from gptft.serve.server import main as serve_main
from gptft.serve.text_stream import TextStream
from gptft.tasks.factory import load_checkpoint
from browser import Browser, find_browser
from helpers import torch_threads, train_ckpt

openai = pytest.importorskip("openai")

QUICK = ["model=gpt2-tiny", "trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.limit_val_batches=2",
         "trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
         "task.final_splits=[test]"]
KEY = "serve-test-key"
CHAT_TOKENS = 24  # the chat server's default max_tokens (the page sends none)
ARTIFACTS = Path(__file__).resolve().parents[1] / "outputs" / "serve"
LONG = "please call me back " * 400  # about 1,600 tokens: more than gpt2-tiny's context of 1,024


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def spam_ckpt(tmp_path_factory, shared_data, tokenizer):
    return train_ckpt(tmp_path_factory.mktemp("spam_run"), "task=spam", *QUICK)


@pytest.fixture(scope="module")
def instruct_ckpt(tmp_path_factory, shared_data, tokenizer):
    return train_ckpt(tmp_path_factory.mktemp("instruct_run"), "task=instruct", "task.sample_prompts=0", *QUICK)


@pytest.fixture(scope="module")
def spam_url(spam_ckpt, tmp_path_factory):
    with running_server(spam_ckpt, f"api_key={KEY}", log=tmp_path_factory.mktemp("logs") / "spam.log") as url:
        yield url


@pytest.fixture(scope="module")
def chat_url(instruct_ckpt, tmp_path_factory):
    with running_server(instruct_ckpt, f"api_key={KEY}", f"max_tokens={CHAT_TOKENS}",
                        log=tmp_path_factory.mktemp("logs") / "chat.log") as url:
        yield url


@pytest.fixture(scope="module")
def exported(spam_ckpt, instruct_ckpt, tmp_path_factory) -> dict[str, Path]:
    """Both checkpoints as `python -m gptft.export format=hf` writes them."""
    out = tmp_path_factory.mktemp("exports")
    for name, ckpt in (("spam", spam_ckpt), ("instruct", instruct_ckpt)):
        task, tok, meta = load_checkpoint(ckpt)
        export_task(task, tok, meta, str(ckpt), out / name)
    return {"spam": out / "spam", "instruct": out / "instruct"}


def http(url: str, body=None, key: str | None = KEY, method: str | None = None, raw: bytes | None = None,
         content_type: str = "application/json"):
    """(status, parsed JSON body or text) of one request."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    headers = {"Content-Type": content_type}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=data, headers=headers, method=method or ("POST" if data else "GET"))
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            status, text = resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        status, text = err.code, err.read().decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def generated_text(capsys, ckpt, prompt: str, tokens: int) -> tuple[str, int]:
    """(text, token count) that `python -m gptft.generate` prints for `prompt`."""
    capsys.readouterr()
    generate_main([f"ckpt={ckpt}", f"prompt={prompt}", f"max_new_tokens={tokens}"])
    *text, tail = capsys.readouterr().out.rstrip("\n").split("\n")
    return "\n".join(text), int(tail.strip("[").split()[0])


# ---- /predict against gptft.classify ---------------------------------------------------------------------
def sms_texts(shared_data, n: int = 6) -> list[str]:
    lines = (shared_data / "sms_spam_collection" / "SMSSpamCollection").read_text(encoding="utf-8").splitlines()
    return [line.split("\t", 1)[1] for line in lines[:n]]


def test_predict_equals_classify(spam_url, spam_ckpt, shared_data, tmp_path, capsys):
    texts = [*sms_texts(shared_data), LONG]
    task, tok, _ = load_checkpoint(spam_ckpt)
    want = classify(task, tok, texts)
    status, batch = http(spam_url + "/predict", {"texts": texts})
    assert status == 200 and len(batch["results"]) == len(texts)
    singles = [http(spam_url + "/predict", {"text": t}) for t in texts[:3]]
    assert all(s == 200 for s, _ in singles)
    for got, ref in zip(batch["results"] + [b for _, b in singles], want + want[:3]):
        assert got["label"] == ref["label"] and got["truncated"] == ref["truncated"]
        assert got["probs"] == pytest.approx(ref["probs"], abs=1e-5)
    assert batch["results"][-1]["truncated"] and "truncated to the model's 1024 tokens" in batch["results"][-1]["note"]
    # and the command line's own printout
    file = tmp_path / "texts.txt"
    file.write_text("\n".join(texts[:-1]) + "\n", encoding="utf-8")
    capsys.readouterr()
    classify_main([f"ckpt={spam_ckpt}", f"file={file}"])
    for line, got in zip(capsys.readouterr().out.splitlines(), batch["results"]):
        label, probs, _ = line.split("\t", 2)
        assert label == got["label"]
        assert probs == "  ".join(f"{n}={p:.4f}" for n, p in got["probs"].items())


def test_health_info_page_and_key(spam_url, spam_ckpt):
    assert http(spam_url + "/health", key=None) == (200, "ok")
    status, info = http(spam_url + "/info")
    assert status == 200 and info["task"] == "spam" and info["labels"] == ["ham", "spam"]
    assert info["checkpoint"] == str(spam_ckpt.resolve()) and info["model"] == "gpt2-tiny"
    assert set(info["training_metrics"]["test"]) >= {"acc", "f1"} and info["batching"]["max_batch_size"] == 16
    for path in ("/info", "/", "/predict"):
        status, body = http(spam_url + path, key=None, method="GET")
        assert status == 401 and "API key" in body["error"]["message"]
    status, page = http(spam_url + f"/?api_key={KEY}", key=None)
    assert status == 200 and "<script>" in page
    assert "http://" not in page and "https://" not in page  # works offline: nothing fetched from elsewhere


# ---- the bad-request matrix ---------------------------------------------------------------------------------
PREDICT_CASES = {  # name: (body or raw bytes, key, method, status, words the message must contain)
    "malformed JSON": (b'{"text": ', KEY, "POST", 400, "malformed JSON"),
    "body not an object": ([1, 2], KEY, "POST", 400, "dictionary"),
    "missing text": ({}, KEY, "POST", 400, 'exactly one of "text"'),
    "empty text": ({"text": ""}, KEY, "POST", 400, "text is empty"),
    "blank text": ({"text": "  \n"}, KEY, "POST", 400, "text is empty"),
    "text not a string": ({"text": 5}, KEY, "POST", 400, "text: Input should be a valid string"),
    "texts not a list": ({"texts": "hi"}, KEY, "POST", 400, "texts: Input should be a valid list"),
    "texts empty": ({"texts": []}, KEY, "POST", 400, "texts is an empty list"),
    "texts item not a string": ({"texts": ["ok", 3]}, KEY, "POST", 400, "texts.1"),
    "text and texts": ({"text": "a", "texts": ["b"]}, KEY, "POST", 400, "exactly one of"),
    "unknown field": ({"text": "a", "lang": "en"}, KEY, "POST", 400, "lang: unknown field"),
    "too many texts": ({"texts": ["a"] * 257}, KEY, "POST", 400, "at most 256"),
    "text too long": ({"text": "a" * 100_001}, KEY, "POST", 400, "at most 100000"),
    "no API key": ({"text": "a"}, None, "POST", 401, "API key"),
    "wrong API key": ({"text": "a"}, "nope", "POST", 401, "API key"),
    "wrong method": (None, KEY, "GET", 405, "Method Not Allowed"),
    "payload too large": (b'{"text": "' + b"a" * (5 * 1024 * 1024) + b'"}', KEY, "POST", 413, "too large"),
}


@pytest.mark.parametrize("case", PREDICT_CASES)
def test_bad_predict_requests(spam_url, case):
    body, key, method, want, words = PREDICT_CASES[case]
    raw = body if isinstance(body, bytes) else None
    status, answer = http(spam_url + "/predict", None if raw else body, key=key, method=method, raw=raw)
    assert status == want and words.lower() in answer["error"]["message"].lower(), answer
    status, good = http(spam_url + "/predict", {"text": "still there?"})
    assert status == 200 and good["label"] in ("ham", "spam")


def test_body_not_sent_as_json(spam_url):
    status, answer = http(spam_url + "/predict", {"text": "hi"}, content_type="application/x-www-form-urlencoded")
    assert status == 400 and "Content-Type: application/json" in answer["error"]["message"]


USER = [{"role": "user", "content": "Name a colour."}]
CHAT_CASES = {  # name: (request body, words the message must contain)
    "no messages": ({"messages": []}, "messages is empty"),
    "messages not a list": ({"messages": "hi"}, "messages: Input should be a valid list"),
    "two turns": ({"messages": USER + [{"role": "assistant", "content": "Red."}]}, "exactly one message"),
    "system turn": ({"messages": [{"role": "system", "content": "Be brief."}] + USER}, "exactly one message"),
    "empty content": ({"messages": [{"role": "user", "content": " "}]}, "content is empty"),
    "image content": ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]},
                      "text only"),
    "prompt over the context": ({"messages": [{"role": "user", "content": LONG}]}, "context holds 1024"),
    "over the context, streamed": ({"messages": [{"role": "user", "content": LONG}], "stream": True},
                                   "context holds 1024"),
    "max_tokens 0": ({"messages": USER, "max_tokens": 0}, "max_tokens"),
    "max_tokens beyond the context": ({"messages": USER, "max_tokens": 5000}, "whole context of 1024"),
    "negative temperature": ({"messages": USER, "temperature": -1}, "temperature"),
    "top_p 0": ({"messages": USER, "top_p": 0}, "top_p"),
    "n=2": ({"messages": USER, "n": 2}, "n=2"),
    "unknown field": ({"messages": USER, "colour": "red"}, "colour: unknown field"),
    "tools": ({"messages": USER, "tools": [{"type": "function", "function": {"name": "f", "description": "d",
                                                                            "parameters": {}}}]}, "tools"),
}


@pytest.mark.parametrize("case", CHAT_CASES)
def test_bad_chat_requests(chat_url, case):
    body, words = CHAT_CASES[case]
    status, answer = http(chat_url + "/v1/chat/completions", body)
    assert status == 400 and words.lower() in answer["error"]["message"].lower(), answer
    status, good = http(chat_url + "/v1/chat/completions", {"messages": USER, "max_tokens": 2, "temperature": 0})
    assert status == 200 and good["choices"][0]["message"]["role"] == "assistant"


def test_chat_bad_key_with_the_openai_client(chat_url):
    client = openai.OpenAI(base_url=chat_url + "/v1", api_key="wrong", max_retries=0, timeout=60)
    with pytest.raises(openai.AuthenticationError, match="API key"):
        client.chat.completions.create(model="gptft", messages=USER)


# ---- the chat against gptft.generate, with the openai client --------------------------------------------------
@pytest.mark.parametrize("prompt", ["Name three primary colors.", "Rewrite the sentence: the cat sat on the mat."])
def test_chat_equals_generate(chat_url, instruct_ckpt, capsys, prompt):
    want, n_tokens = generated_text(capsys, instruct_ckpt, prompt, 16)
    client = openai.OpenAI(base_url=chat_url + "/v1", api_key=KEY, max_retries=0, timeout=120)
    messages = [{"role": "user", "content": prompt}]
    reply = client.chat.completions.create(model="gptft", messages=messages, temperature=0, max_tokens=16)
    assert reply.choices[0].message.content == want
    assert reply.usage.completion_tokens == n_tokens
    assert reply.choices[0].finish_reason == ("length" if n_tokens == 16 else "stop")
    pieces, last = [], None
    for chunk in client.chat.completions.create(model="gptft", messages=messages, temperature=0, max_tokens=16,
                                                stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        last = chunk
    assert "".join(pieces) == want and len(pieces) > 1  # streamed piece by piece
    assert last.usage.completion_tokens == n_tokens and last.choices[0].finish_reason == reply.choices[0].finish_reason


def test_sampling_with_a_seed_repeats(chat_url):
    client = openai.OpenAI(base_url=chat_url + "/v1", api_key=KEY, max_retries=0, timeout=120)
    answers = {client.chat.completions.create(model="gptft", messages=USER, temperature=1.0, top_p=0.9, seed=7,
                                              max_tokens=8).choices[0].message.content for _ in range(2)}
    assert len(answers) == 1


def test_text_stream_keeps_characters_whole(tokenizer):
    text = "  Café, naïve 日本語 🙂 done \n "
    ids = tokenizer.encode(text)
    stream = TextStream(tokenizer)
    pieces = [stream.push(i) for i in ids] + [stream.finish()]
    assert "".join(pieces) == tokenizer.decode(ids).strip()
    assert all("\ufffd" not in p for p in pieces)


# ---- load -----------------------------------------------------------------------------------------------------
def test_load_run_has_no_errors(spam_ckpt, capsys):
    rows = load_main([f"ckpt={spam_ckpt}", "requests=200", "concurrency=16", "batch_sizes=1,16"])
    assert [r["max_batch_size"] for r in rows] == [1, 16]
    for r in rows:
        assert r["errors"] == 0, r["first_error"]
        assert 0 < r["p50_ms"] <= r["p95_ms"] and r["req_per_s"] > 0 and r["requests"] == 200
    assert "| max_batch_size | requests | concurrency | errors | p50 ms | p95 ms | requests/s |" in capsys.readouterr().out


# ---- the web page in a real browser ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    binary = find_browser()
    if binary is None:
        why = "no chromium installed (apt-get install chromium)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(why + ": CI must run the browser test")
        pytest.skip(why)
    b = Browser(binary)
    yield b
    b.close()


STATUS = "document.getElementById('status')?.textContent"


def submit(browser, url: str, text: str, limit_s: float) -> None:
    browser.open(url + f"/?api_key={KEY}")
    browser.wait_for(f"location.origin === {json.dumps(url)} && {STATUS} === 'ready'", 60)
    assert browser.js("location.search") == ""  # the key left the address bar
    browser.js(f"document.getElementById('text').value = {json.dumps(text)}; document.getElementById('send').click()")
    assert browser.wait_for(f"['done', 'error'].includes({STATUS}) && {STATUS}", limit_s) == "done", \
        browser.js("document.getElementById('error').textContent")


def test_classifier_page(browser, spam_url, spam_ckpt):
    text = "WINNER!! You have won a 1000 cash prize. Call 09061701461 now"
    submit(browser, spam_url, text, 60)
    task, tok, _ = load_checkpoint(spam_ckpt)
    (want,) = classify(task, tok, [text])
    assert browser.js("document.getElementById('label').textContent") == want["label"]
    bars = browser.js("[...document.querySelectorAll('#probs .bar')].map(r => [r.dataset.label, "
                      "r.querySelector('b').textContent])")
    assert bars == [[n, f"{100 * p:.2f}%"] for n, p in want["probs"].items()]
    browser.screenshot(ARTIFACTS / "classifier.png")


def test_chat_page_streams_the_answer(browser, chat_url, instruct_ckpt, capsys):
    prompt = "Name three primary colors."
    submit(browser, chat_url, prompt, 120)
    want, _ = generated_text(capsys, instruct_ckpt, prompt, CHAT_TOKENS)
    assert browser.js("document.getElementById('answer').textContent") == want
    browser.screenshot(ARTIFACTS / "chat.png")


# ---- the evaluate judge on any OpenAI-compatible server: this one ------------------------------------------------
def test_judge_on_gptft_serve(instruct_ckpt, chat_url, tmp_path):
    scores = evaluate([f"ckpt={instruct_ckpt}", "max_new_tokens=4", "limit=2", f"out={tmp_path / 'ok'}",
                       "judge.enabled=true", "judge.api=openai", f"judge.url={chat_url}/v1", "judge.model=gptft",
                       f"judge.api_key={KEY}"])
    judge = scores["judge"]
    assert "error" not in judge and judge["api"] == "openai" and len(judge["scores"]) == 2
    assert judge["n_scored"] + judge["n_unparsed"] == 2  # a random tiny model rarely answers with a number
    bad = evaluate([f"ckpt={instruct_ckpt}", "max_new_tokens=2", "limit=1", f"out={tmp_path / 'bad'}",
                    "judge.enabled=true", "judge.api=openai", f"judge.url={chat_url}", "judge.api_key=wrong"])
    assert "HTTP 401" in bad["judge"]["error"] and "/v1/chat/completions" in bad["judge"]["error"]


# ---- exported folders: the same answers as their checkpoints --------------------------------------------------------
def test_exported_classifier_folder_predicts_as_its_checkpoint(spam_url, spam_ckpt, exported, shared_data,
                                                               tmp_path):
    texts = [*sms_texts(shared_data, 12), LONG]
    _, want = http(spam_url + "/predict", {"texts": texts})
    with running_server(exported["spam"], f"api_key={KEY}", log=tmp_path / "spam-folder.log") as url:
        status, got = http(url + "/predict", {"texts": texts})
        single = http(url + "/predict", {"text": texts[0]})
        _, info = http(url + "/info")
    assert status == 200 and single[0] == 200 and single[1]["label"] == want["results"][0]["label"]
    for a, b in zip(got["results"], want["results"]):  # the head's bias now sits in the final LayerNorm
        assert a["label"] == b["label"] and a["truncated"] == b["truncated"]
        assert a["probs"] == pytest.approx(b["probs"], abs=1e-5)
    metrics = json.loads((spam_ckpt.parents[1] / "metrics.json").read_text())["splits"]["test"]
    assert info["source"] == "exported folder" and info["checkpoint"] == str(exported["spam"].resolve())
    assert info["task"] == "spam" and info["labels"] == ["ham", "spam"] and info["model"] == "gpt2-tiny"
    assert info["exported"]["architecture"] == "GPT2ForSequenceClassification"
    assert info["exported"]["model_card"]["source_checkpoint"] == str(spam_ckpt.resolve())
    assert info["training_metrics"]["test"]["acc"] == round(metrics["acc"], 4)  # as the card prints it


def test_exported_causal_lm_folder_chats_as_its_checkpoint(chat_url, exported, tmp_path):
    ask = lambda url, prompt, stream: openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=120) \
        .chat.completions.create(model="gptft", messages=[{"role": "user", "content": prompt}], temperature=0,
                                 max_tokens=16, stream=stream)
    prompts = ["Name three primary colors.", "Rewrite the sentence: the cat sat on the mat."]
    want = [ask(chat_url, p, False).choices[0].message.content for p in prompts]
    with running_server(exported["instruct"], f"api_key={KEY}", log=tmp_path / "chat-folder.log") as url:
        got = [ask(url, p, False).choices[0].message.content for p in prompts]
        streamed = "".join(c.choices[0].delta.content or "" for c in ask(url, prompts[0], True) if c.choices)
        _, info = http(url + "/info")
    assert got == want and streamed == want[0]
    assert info["source"] == "exported folder" and info["prompt_style"] == "alpaca" and info["task"] == "instruct"
    assert info["exported"]["architecture"] == "GPT2LMHeadModel"


def _refused_folder(folder: Path, capsys) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit):
        command(serve_main)([f"ckpt={folder}", f"port={_free()}"])
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err  # one line, no traceback
    return err


def test_bad_exported_folders_are_refused_in_one_line(exported, tmp_path, capsys):
    def copy(name: str) -> Path:
        return Path(shutil.copytree(exported["spam"], tmp_path / name))

    no_config = copy("no_config")
    (no_config / "config.json").unlink()
    assert "without config.json" in _refused_folder(no_config, capsys)
    unknown = copy("unknown")
    config = json.loads((unknown / "config.json").read_text())
    (unknown / "config.json").write_text(json.dumps({**config, "architectures": ["BertForMaskedLM"]}))
    assert "names architectures ['BertForMaskedLM']" in _refused_folder(unknown, capsys)
    (unknown / "config.json").write_text(json.dumps({**config, "n_layer": config["n_layer"] + 1}))
    assert "missing key 'transformer.h.4.ln_1.weight'" in _refused_folder(unknown, capsys)  # weights and config disagree
    cut = copy("cut")
    data = (cut / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert "not a readable safetensors file" in _refused_folder(cut, capsys)
    template = Path(shutil.copytree(exported["instruct"], tmp_path / "template"))
    conf = json.loads((template / "tokenizer_config.json").read_text())
    (template / "tokenizer_config.json").write_text(json.dumps({**conf, "chat_template": "{{ messages }}"}))
    assert "none of gptft's" in _refused_folder(template, capsys)


# ---- the command's own checks ---------------------------------------------------------------------------------------
def test_serve_argument_errors():
    run = command(serve_main)
    with pytest.raises(SystemExit, match="give ckpt"):
        run([])
    with pytest.raises(SystemExit, match="host must be one of"):
        run(["ckpt=x", "host=example.com"])
    with pytest.raises(SystemExit, match="port must be in 1024..65535"):
        run(["ckpt=x", "port=80"])
    with pytest.raises(SystemExit, match="max_batch_size"):
        run(["ckpt=x", "max_batch_size=0"])
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(SystemExit, match="cannot listen on 127.0.0.1"):
            run(["ckpt=x", f"port={busy.getsockname()[1]}"])
    with pytest.raises(SystemExit, match="does not exist"):
        run(["ckpt=/nonexistent/best.ckpt", f"port={_free()}"])
    with pytest.raises(SystemExit, match="judge.api must be ollama or openai"):
        evaluate(["ckpt=x", "judge.api=gemini"])


def _free() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
