"""Run by tests/test_export.py in a fresh interpreter that cannot import gptft: what `transformers` alone
makes of exported folders. argv: jobs.json results.json. Each job names a folder (and a gguf_file) and asks for
  logits       {name: token ids}: the logits of each sequence, alone (saved as tensors: results.json.pt)
  texts        texts classified in padded batches of 16 with the exported tokenizer: ids, logits, labels
  generate     [token ids]: greedy continuations of max_new_tokens
  chat         [messages]: ids of apply_chat_template(..., add_generation_prompt=True)
  tokenizer    false: skip the tokenizer (GGUF builds it from the vocabulary, which takes seconds)
"""
import json
import sys

sys.modules["gptft"] = None  # the venv's editable install must stay out of reach: `import gptft` fails
try:
    import gptft  # noqa: F401
    raise SystemExit("gptft is importable in the reference process")
except ImportError:
    pass

import torch  # noqa: E402
from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification,  # noqa: E402
                          AutoTokenizer)


def run(name: str, job: dict, tensors: dict) -> dict:
    where = {"gguf_file": job["gguf_file"]} if job.get("gguf_file") else {}
    auto = AutoModelForSequenceClassification if job["kind"] == "classifier" else AutoModelForCausalLM
    model = auto.from_pretrained(job["folder"], dtype=torch.float32, **where).eval()
    tok = AutoTokenizer.from_pretrained(job["folder"], **where) if job.get("tokenizer", True) else None
    out = {"class": type(model).__name__, "config": json.loads(model.config.to_json_string())}
    with torch.no_grad():
        tensors[name] = {k: model(torch.tensor([ids])).logits[0] for k, ids in job.get("logits", {}).items()}
        if job.get("texts"):
            texts, labels, logits = job["texts"], [], []
            for start in range(0, len(texts), 16):
                batch = tok(texts[start : start + 16], padding=True, return_tensors="pt")
                z = model(**batch).logits
                logits += z.tolist()
                labels += [model.config.id2label[int(i)] for i in z.argmax(-1)]
            out.update(ids=[tok(t)["input_ids"] for t in texts], text_logits=logits, labels=labels)
        out["generate"] = [
            model.generate(torch.tensor([ids]), max_new_tokens=job["max_new_tokens"], do_sample=False,
                           attention_mask=torch.ones(1, len(ids), dtype=torch.long))[0, len(ids):].tolist()
            for ids in job.get("generate", [])]
    out["chat"] = [list(tok.apply_chat_template(m, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])
                   for m in job.get("chat", [])]
    return out


if __name__ == "__main__":
    jobs = json.loads(open(sys.argv[1], encoding="utf-8").read())
    tensors = {}
    results = {name: run(name, job, tensors) for name, job in jobs.items()}
    torch.save(tensors, sys.argv[2] + ".pt")
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        json.dump(results, f)
