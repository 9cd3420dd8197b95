"""POST /predict for classifier checkpoints: {"text": ...} or {"texts": [...]} -> label and probabilities.

The request is checked by FastAPI against `PredictRequest` before it is queued (LitServe takes the
request type from `decode_request`'s annotation); concurrent requests are batched by LitServe
(`max_batch_size`, `batch_timeout`) into one forward pass of `gptft.classify.classify`."""

from typing import Optional

import litserve as ls
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_TEXTS = 256
MAX_CHARS = 100_000


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    text: Optional[str] = Field(None, max_length=MAX_CHARS)
    texts: Optional[list[str]] = Field(None, max_length=MAX_TEXTS)

    @field_validator("text")
    @classmethod
    def _text(cls, value):
        if value is not None and not value.strip():
            raise ValueError("text is empty")
        return value

    @field_validator("texts")
    @classmethod
    def _texts(cls, value):
        if value is not None:
            if not value:
                raise ValueError("texts is an empty list")
            for i, t in enumerate(value):
                if not t.strip():
                    raise ValueError(f"texts[{i}] is empty")
                if len(t) > MAX_CHARS:
                    raise ValueError(f"texts[{i}] has {len(t)} characters; at most {MAX_CHARS}")
        return value

    @model_validator(mode="after")
    def _one(self):
        if (self.text is None) == (self.texts is None):
            raise ValueError('give exactly one of "text" (a string) or "texts" (a list of strings)')
        return self


class OnDevice:
    """The task, given `gptft.classify`'s CPU batches on its own device (LitServe may pick a GPU)."""

    def __init__(self, task, device):
        self.task, self.device = task, device

    def __call__(self, batch):
        return self.task({k: v.to(self.device) for k, v in batch.items()})

    def __getattr__(self, name):  # label_names, backbone, meta: the task's
        return getattr(self.task, name)


class ClassifyAPI(ls.LitAPI):
    def __init__(self, ckpt: str, rows_per_forward: int = 64, **kwargs):
        super().__init__(**kwargs)
        self.ckpt, self.rows = ckpt, rows_per_forward

    def setup(self, device):
        from ..tasks.classifier import ClassifierTask
        from .model_info import load_served

        task, self.tokenizer, _ = load_served(self.ckpt, ClassifierTask)
        self.task = OnDevice(task.to(device), device)

    def decode_request(self, request: PredictRequest):
        return {"texts": [request.text] if request.texts is None else request.texts, "single": request.texts is None}

    def _classify(self, requests: list[dict]) -> list[dict]:
        from ..classify import classify, widths

        flat = [t for r in requests for t in r["texts"]]
        results = classify(self.task, self.tokenizer, flat, self.rows)
        limit = widths(self.task)[1]
        out, at = [], 0
        for r in requests:
            mine = [{k: v for k, v in res.items() if k != "text"} for res in results[at: at + len(r["texts"])]]
            at += len(r["texts"])
            for res in mine:
                if res["truncated"]:
                    res["note"] = f"text truncated to the model's {limit} tokens"
            out.append(mine[0] if r["single"] else {"results": mine})
        return out

    def predict(self, x):
        # batched (max_batch_size > 1): a list of decoded requests, one forward pass for all their texts
        return self._classify(x) if self.max_batch_size > 1 else self._classify([x])[0]

    def encode_response(self, output):
        return output
