"""`python -m gptft.evaluate`: text metrics, the instruct and spam reports (the task's own test metrics
plus generation scores), the LLM judge (against a stand-in HTTP server) and bad arguments, on gpt2-tiny
checkpoints trained on the real data."""
from __future__ import annotations

import json
import math
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from gptft.evaluate import main as evaluate
from gptft.evaluation.judge import parse_score
from gptft.evaluation.text_metrics import exact_match, text_scores
from helpers import torch_threads, train_ckpt

QUICK = ["model=gpt2-tiny", "trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.limit_val_batches=2",
         "trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


# ---- text metrics on hand-computed examples --------------------------------------------------
def rouge_l(reference: str, candidate: str) -> float:
    return text_scores([reference], [candidate])["rouge_l"]


def test_rouge_l_by_hand():
    # reference 6 words, candidate 5, LCS 5: P = 1, R = 5/6, F1 = 10/11
    assert rouge_l("The cat sat on the mat.", "the cat on the mat") == pytest.approx(10 / 11)
    assert rouge_l("Hello, World!", "hello world") == 1.0  # case and punctuation do not count
    assert rouge_l("It's 42.", "it s 42") == 1.0  # the apostrophe separates words
    assert rouge_l("a b c", "c b a") == pytest.approx(1 / 3)  # LCS 1
    assert rouge_l("a a b", "a b b") == pytest.approx(2 / 3)  # LCS "a b"
    assert rouge_l("a b c d", "a b") == pytest.approx(2 * 1 * 0.5 / 1.5)  # P 1, R 1/2
    assert rouge_l("a b c b d a b", "b d c a b a") == pytest.approx(2 * 4 / 13)  # LCS 4, e.g. b c b a
    assert rouge_l("paris", "london") == 0.0
    assert rouge_l("paris", "") == 0.0 and rouge_l("paris", "?!") == 0.0
    assert rouge_l("naïve café", "naive cafe") == 0.0  # ASCII words only, as the reference ROUGE


def test_text_scores_are_means_over_pairs():
    scores = text_scores(["The cat sat on the mat.", "Paris.", "x"], ["the cat on the mat", " Paris.\n", "y"])
    assert scores["exact_match"] == pytest.approx(1 / 3)
    assert scores["rouge_l"] == pytest.approx((10 / 11 + 1 + 0) / 3)
    assert text_scores([], []) == {"exact_match": 0.0, "rouge_l": 0.0}


def test_exact_match_strips_whitespace_only():
    assert exact_match("  Paris.\n", "Paris.")
    assert not exact_match("Paris", "paris") and not exact_match("Paris", "Paris.")


def test_parse_score():
    assert parse_score("85") == 85 and parse_score(" Score: 40 out of 100") == 40
    assert parse_score("100") == 100 and parse_score("0") == 0 and parse_score("72.6") == 73
    assert parse_score("great answer") is None and parse_score("") is None
    assert parse_score("150") is None and parse_score("-5") is None


# ---- checkpoints --------------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with torch_threads(1):
        yield


def _train(run_dir, *overrides):
    return train_ckpt(run_dir, *overrides, *QUICK)


@pytest.fixture(scope="module")
def instruct_ckpt(tmp_path_factory, shared_data, tokenizer):
    return _train(tmp_path_factory.mktemp("instruct_run"), "task=instruct", "task.sample_prompts=0")


@pytest.fixture(scope="module")
def instruct_eval(instruct_ckpt):
    """The default report: all 110 test entries, short responses, no judge."""
    scores = evaluate([f"ckpt={instruct_ckpt}", "max_new_tokens=8"])
    return scores, instruct_ckpt.parent.parent / "eval"


@pytest.fixture(scope="module")
def spam_ckpt(tmp_path_factory, shared_data, tokenizer):
    return _train(tmp_path_factory.mktemp("spam_run"), "task=spam", "task.final_splits=[test]")


def test_instruct_report(instruct_eval, instruct_ckpt, shared_data):
    scores, out = instruct_eval
    responses = json.loads((out / "responses.json").read_text())
    entries = json.loads((shared_data / "instruction-data.json").read_text())[935:1045]  # the book's test split
    assert len(responses) == 110
    for r, e in zip(responses, entries):
        assert set(r) == {"instruction", "input", "output", "model_response"}
        assert (r["instruction"], r["input"], r["output"]) == (e["instruction"], e.get("input", ""), e["output"])
    assert json.loads((out / "scores.json").read_text()) == scores
    gen, test = scores["generation"], scores["test"]
    assert gen["n"] == 110 and scores["judge"] == {"enabled": False} and gen["prompt_style"] == "alpaca"
    assert scores["checkpoint"] == str(instruct_ckpt.resolve())
    assert 0 <= gen["exact_match"] <= 1 and 0 <= gen["rouge_l"] <= 1
    assert gen["exact_match"] == sum(exact_match(r["output"], r["model_response"]) for r in responses) / 110
    assert gen["rouge_l"] == pytest.approx(sum(rouge_l(r["output"], r["model_response"]) for r in responses) / 110)
    assert test["ppl"] == pytest.approx(math.exp(test["loss"]))
    # the task's own test step, as after training (bf16 autocast there, fp32 here), over the same tokens
    trained = json.loads((instruct_ckpt.parent.parent / "metrics.json").read_text())["splits"]["test"]
    assert set(test) == set(trained) and test["tokens"] == trained["tokens"]
    assert test["loss"] == pytest.approx(trained["loss"], rel=1e-3)


def test_val_split_chooses_recipes_without_the_test_split(instruct_ckpt, shared_data, capsys):
    scores = evaluate([f"ckpt={instruct_ckpt}", "split=val", "max_new_tokens=4", "limit=5"])
    out = instruct_ckpt.parent.parent / "eval-val"  # beside eval/, never mixed with the test results
    responses = json.loads((out / "responses.json").read_text())
    entries = json.loads((shared_data / "instruction-data.json").read_text())[1045:1050]  # the book's val split
    assert [(r["instruction"], r["output"]) for r in responses] == [(e["instruction"], e["output"]) for e in entries]
    assert scores["split"] == "val" and "test" not in scores and scores["generation"]["n"] == 5
    trained = json.loads((instruct_ckpt.parent.parent / "metrics.json").read_text())["splits"]["val"]
    assert scores["val"]["tokens"] == trained["tokens"] and scores["val"]["loss"] == pytest.approx(trained["loss"], rel=1e-3)
    assert "  val split, the task's own metrics" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="split must be test or val, got 'train'"):
        evaluate([f"ckpt={instruct_ckpt}", "split=train"])


def test_existing_results_are_not_overwritten(instruct_eval, instruct_ckpt, capsys):
    _, out = instruct_eval
    before = (out / "responses.json").read_text()
    again = evaluate([f"ckpt={instruct_ckpt}", "max_new_tokens=2", "limit=3"])
    assert (out / "responses.json").read_text() == before
    (sub,) = [p for p in out.iterdir() if p.is_dir()]  # a timestamped folder for the new run
    assert len(json.loads((sub / "responses.json").read_text())) == 3 == again["generation"]["n"]
    printed = capsys.readouterr().out
    assert str(sub / "scores.json") in printed and "3 greedy responses (up to 2 new tokens)" in printed
    assert "ROUGE-L F1" in printed and "ppl" in printed and "judge.enabled=true" in printed


# ---- the LLM judge, against a stand-in Ollama -------------------------------------------------
REPLIES = ["85", "Score: 40 out of 100", "a great answer"]  # request k gets REPLIES[k % 3]


class FakeOllama(BaseHTTPRequestHandler):
    requests: list[dict] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path != "/api/chat" or body["model"] != "llama3":  # as Ollama answers a model not pulled
            return self._send(404, {"error": f"model '{body['model']}' not found"})
        self.requests.append(body)
        self._send(200, {"model": body["model"], "done": True,
                         "message": {"role": "assistant", "content": REPLIES[(len(self.requests) - 1) % 3]}})

    def _send(self, code, data):
        raw = json.dumps(data).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture
def judge_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOllama)
    FakeOllama.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_judge_scores_each_response(instruct_ckpt, judge_url, tmp_path):
    scores = evaluate([f"ckpt={instruct_ckpt}", "max_new_tokens=4", "limit=6", f"out={tmp_path}",
                       "judge.enabled=true", f"judge.url={judge_url}"])
    judge = scores["judge"]
    assert judge["scores"] == [85, 40, None, 85, 40, None]
    assert judge["mean"] == pytest.approx(62.5) and judge["n_scored"] == 4 and judge["n_unparsed"] == 2
    responses = json.loads((tmp_path / "responses.json").read_text())
    assert [r["judge_score"] for r in responses] == judge["scores"]
    for req, r in zip(FakeOllama.requests, responses):
        assert req["stream"] is False and req["options"] == {"temperature": 0, "seed": 123}
        (msg,) = req["messages"]
        assert msg["role"] == "user"
        assert r["instruction"] in msg["content"] and r["output"] in msg["content"]
        assert r["model_response"] in msg["content"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nobody listens once the socket is closed


@pytest.mark.parametrize("problem", ["unreachable", "model not pulled"])
def test_judge_failure_still_writes_the_other_scores(instruct_ckpt, judge_url, tmp_path, capsys, problem):
    url = f"http://127.0.0.1:{_closed_port()}" if problem == "unreachable" else judge_url
    model = "llama3" if problem == "unreachable" else "nope"
    scores = evaluate([f"ckpt={instruct_ckpt}", "max_new_tokens=2", "limit=2", f"out={tmp_path}",
                       "judge.enabled=true", f"judge.url={url}", f"judge.model={model}", "judge.timeout=10"])
    err = scores["judge"]["error"]
    assert url in err and f"ollama run {model}" in err
    assert ("cannot reach" in err) if problem == "unreachable" else ("HTTP 404" in err and "not found" in err)
    assert err in capsys.readouterr().out
    written = json.loads((tmp_path / "scores.json").read_text())
    assert written["judge"]["error"] == err
    assert math.isfinite(written["generation"]["rouge_l"]) and math.isfinite(written["test"]["loss"])
    assert all("judge_score" not in r for r in json.loads((tmp_path / "responses.json").read_text()))


# ---- spam -----------------------------------------------------------------------------------------
def test_spam_report(spam_ckpt, tmp_path, capsys):
    scores = evaluate([f"ckpt={spam_ckpt}", f"out={tmp_path}"])
    assert not (tmp_path / "responses.json").exists()
    assert json.loads((tmp_path / "scores.json").read_text()) == scores
    assert "generation" not in scores and "judge" not in scores
    test = scores["test"]
    cm = test["confusion"]
    assert test["n"] == 300 == sum(map(sum, cm)) and scores["label_names"] == ["ham", "spam"]
    assert test["acc"] == pytest.approx((cm[0][0] + cm[1][1]) / 300)
    tp, fp, fn = cm[1][1], cm[0][1], cm[1][0]
    assert test["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn) if tp else 0.0) and scores["f1_of"] == "spam"
    assert math.isfinite(test["loss"])
    metrics = json.loads((spam_ckpt.parent.parent / "metrics.json").read_text())
    assert [sum(row) for row in cm] == list(metrics["data"]["split_class_counts"]["test"].values())
    trained = metrics["splits"]["test"]
    # bf16 autocast in training, fp32 here: at most a near-tie or two may flip
    assert set(test) == set(trained) and abs(test["acc"] - trained["acc"]) <= 2 / 300
    out = capsys.readouterr().out
    assert "acc" in out and "f1 (spam)" in out and "confusion" in out


# ---- bad arguments ----------------------------------------------------------------------------------
def test_bad_arguments_exit_cleanly(tmp_path, instruct_ckpt):
    with pytest.raises(SystemExit, match="does not exist"):
        evaluate([f"ckpt={tmp_path / 'nope.ckpt'}"])
    not_gptft = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}}, not_gptft)
    with pytest.raises(SystemExit, match="not a gptft checkpoint"):
        evaluate([f"ckpt={not_gptft}"])
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(SystemExit, match="not a PyTorch checkpoint"):
        evaluate([f"ckpt={text}"])
    with pytest.raises(SystemExit, match="unknown argument"):
        evaluate([f"ckpt={instruct_ckpt}", "max_tokens=3"])
    with pytest.raises(SystemExit, match="judge.urll"):
        evaluate([f"ckpt={instruct_ckpt}", "judge.urll=http://x"])
    with pytest.raises(SystemExit, match="give ckpt"):
        evaluate([])
    with pytest.raises(SystemExit, match="limit must be"):
        evaluate([f"ckpt={instruct_ckpt}", "limit=0"])
    with pytest.raises(SystemExit, match="limit must be an integer, got 'ten'"):
        evaluate([f"ckpt={instruct_ckpt}", "limit=ten"])
    with pytest.raises(SystemExit, match="judge.timeout must be a number"):
        evaluate([f"ckpt={instruct_ckpt}", "judge.timeout=soon"])
    assert not (tmp_path / "eval").exists()


# ---- the zero-shot baseline: a base model, no checkpoint ----------------------------------------------
def test_zero_shot_base_model(tmp_path, shared_data, tokenizer, capsys):
    from gptft.generate import main as generate_main

    scores = evaluate(["model=gpt2-tiny", "prompt_style=chatml", "limit=3", "max_new_tokens=4", f"out={tmp_path}"])
    assert json.loads((tmp_path / "scores.json").read_text()) == scores
    assert "base model gpt2-tiny (random weights), no fine-tuning" in capsys.readouterr().out
    assert scores["checkpoint"] is None and scores["base_model"]["name"] == "gpt2-tiny"
    test, gen = scores["test"], scores["generation"]
    # the 110 test entries scored by the instruct task's own test step; responses for the first 3
    assert test["ppl"] == pytest.approx(math.exp(test["loss"])) and test["tokens"] > 1000
    assert gen["n"] == 3 and gen["prompt_style"] == "chatml" and scores["judge"] == {"enabled": False}
    responses = json.loads((tmp_path / "responses.json").read_text())
    entries = json.loads((shared_data / "instruction-data.json").read_text())[935:938]
    assert [(r["instruction"], r["output"]) for r in responses] == [(e["instruction"], e["output"]) for e in entries]
    # the untouched model's answers: generate gives the same one in the same prompt style
    first = entries[0]
    generate_main(["model=gpt2-tiny", "prompt_style=chatml", f"prompt={first['instruction']}",
                   f"input={first.get('input', '')}", "max_new_tokens=4"])
    assert capsys.readouterr().out.rsplit("\n[", 1)[0].strip() == responses[0]["model_response"]


def test_zero_shot_argument_checks(capsys, tmp_path, shared_data):
    with pytest.raises(SystemExit, match="a checkpoint \\(ckpt=\\) brings its own model"):
        evaluate(["ckpt=x.ckpt", "model=gpt2-tiny"])
    with pytest.raises(SystemExit, match="unknown prompt style 'klingon'"):
        evaluate(["model=gpt2-tiny", "prompt_style=klingon", f"out={tmp_path}"])
    with pytest.raises(SystemExit, match="unknown model='gpt3'"):
        evaluate(["model=gpt3"])
    assert capsys.readouterr().err.startswith("error: ")
