"""The optional LLM judge of `python -m gptft.evaluate`: a chat server scores each instruct response 0-100
against the reference answer. `judge.api=ollama`: Ollama's /api/chat; `judge.api=openai`: any
OpenAI-compatible /v1/chat/completions (OpenAI, vLLM, llama.cpp's server, `python -m gptft.serve`)."""
from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

from tqdm import tqdm


class JudgeError(RuntimeError):
    """The judge server cannot be used; the message says what to start."""


def judge_prompt(prompt: str, reference: str, response: str) -> str:
    return (
        "You are grading the answer of a language model to an instruction.\n\n"
        f"Instruction prompt given to the model:\n{prompt}\n\n"
        f"Reference answer:\n{reference}\n\n"
        f"Model answer:\n{response}\n\n"
        "How well does the model answer match the reference answer and complete the instruction? "
        "Give a score from 0 (useless) to 100 (as good as the reference). "
        "Reply with the integer score only, no other text."
    )


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def parse_score(text: str) -> int | None:
    """The first number in the reply, rounded, if it lies in 0..100; else None."""
    m = _NUMBER.search(text or "")
    if not m:
        return None
    value = float(m.group())
    return round(value) if 0 <= value <= 100 else None


def _endpoint(url: str, api: str) -> str:
    url = url.rstrip("/")
    if api == "ollama":
        return url + "/api/chat"
    return url + ("/chat/completions" if url.endswith("/v1") else "/v1/chat/completions")


def _request(api: str, model: str, content: str) -> dict:
    messages = [{"role": "user", "content": content}]
    if api == "ollama":
        return {"model": model, "messages": messages, "stream": False, "options": {"temperature": 0, "seed": 123}}
    return {"model": model, "messages": messages, "stream": False, "temperature": 0, "seed": 123}


def _reply_text(api: str, reply) -> str:
    if api == "ollama":
        return str(reply["message"]["content"])
    return str(reply["choices"][0]["message"]["content"])


def ask_judge(url: str, model: str, content: str, timeout: float, api: str = "ollama",
              api_key: str | None = None) -> str:
    """The reply text of one chat call (deterministic options) to an Ollama or OpenAI-compatible server."""
    endpoint = _endpoint(url, api)
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    req = urllib.request.Request(endpoint, data=json.dumps(_request(api, model, content)).encode(), method="POST",
                                 headers=headers)
    hint = (f"Ollama (or a compatible server) must be running at {url} with the model pulled, e.g. `ollama run {model}`"
            if api == "ollama" else f"an OpenAI-compatible server must answer at {url} for model {model!r} "
                                   f"(judge.api_key for its key), e.g. `python -m gptft.serve ckpt=...`")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            reply = json.loads(resp.read().decode("utf-8"))
    except urllib.error.HTTPError as err:
        detail = err.read().decode("utf-8", "replace")[:200]
        raise JudgeError(f"LLM judge: {endpoint} answered HTTP {err.code} ({detail.strip()}). {hint}") from None
    except (urllib.error.URLError, OSError) as err:  # refused, unknown host, timeout
        reason = getattr(err, "reason", err)
        raise JudgeError(f"LLM judge: cannot reach {endpoint} ({reason}). {hint}") from None
    except ValueError as err:
        raise JudgeError(f"LLM judge: {endpoint} did not return JSON ({err}). {hint}") from None
    try:
        return _reply_text(api, reply)
    except (KeyError, IndexError, TypeError):
        raise JudgeError(f"LLM judge: {endpoint} returned no reply text: {str(reply)[:200]}. {hint}") from None


def run_judge(records: list[dict], prompts: list[str], cfg) -> dict:
    """Adds "judge_score" to each record; returns the summary for scores.json.

    `cfg` has api, url, model, api_key and timeout. The first transport error stops judging: every later call
    would fail the same way.
    """
    scores = []
    try:
        for rec, prompt in zip(tqdm(records, desc="judging", unit="resp"), prompts):
            reply = ask_judge(cfg.url, cfg.model, judge_prompt(prompt, rec["output"], rec["model_response"]),
                              float(cfg.timeout), cfg.api, cfg.api_key)
            scores.append(parse_score(reply))
    except JudgeError as err:
        return {"api": cfg.api, "url": cfg.url, "model": cfg.model, "error": str(err)}
    for rec, s in zip(records, scores):
        rec["judge_score"] = s
    valid = [s for s in scores if s is not None]
    return {"api": cfg.api, "url": cfg.url, "model": cfg.model, "mean": sum(valid) / len(valid) if valid else None,
            "n_scored": len(valid), "n_unparsed": len(scores) - len(valid), "scores": scores}
