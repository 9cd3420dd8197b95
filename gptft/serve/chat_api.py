"""POST /v1/chat/completions for instruction checkpoints, on LitServe's OpenAISpec.

`ChatSpec` narrows LitServe's request model (unknown fields refused, `seed` added, ranges checked) and
checks the prompt before queueing it, so that a bad request gets a 400 also when `stream=true` (once a
stream has started, LitServe can only report an error inside it). The conversation must be one user
message: gptft's instruction models are trained on single instructions, rendered with the checkpoint's
prompt style exactly as `python -m gptft.generate` renders `prompt=`."""

import functools
import json
import random
from typing import Optional

import litserve as ls
from fastapi import BackgroundTasks, HTTPException
from litserve.specs.openai import ChatCompletionRequest, OpenAISpec
from pydantic import ConfigDict, Field

from ..errors import GptftError
from .text_stream import TextStream


class ChatRequest(ChatCompletionRequest):
    model_config = ConfigDict(extra="forbid")
    temperature: Optional[float] = Field(1.0, ge=0, le=2)  # OpenAI's default
    top_p: Optional[float] = Field(1.0, gt=0, le=1)
    max_tokens: Optional[int] = Field(None, ge=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    seed: Optional[int] = None


@functools.lru_cache(maxsize=4)
def _tokenizer(spec_json: str):
    from ..models.tokenizer import tokenizer_from_spec

    return tokenizer_from_spec(json.loads(spec_json))


def message_text(message) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    parts = []
    for part in content:
        if getattr(part, "type", None) != "text" or not hasattr(part, "text"):
            raise GptftError(f"messages[0].content holds a {getattr(part, 'type', '?')!r} part; this model reads text only")
        parts.append(part.text)
    return "".join(parts)


def prompt_ids(messages, style, tokenizer) -> list[int]:
    """The prompt's token ids: the one user message as the instruction, in the checkpoint's prompt style."""
    if not messages:
        raise GptftError("messages is empty: send one message with role 'user'")
    if len(messages) != 1 or messages[0].role != "user":
        roles = [m.role for m in messages]
        raise GptftError(f"messages has roles {roles}; this model follows single instructions (prompt style "
                         f"{style.name}): send exactly one message with role 'user'")
    text = message_text(messages[0])
    if not text.strip():
        raise GptftError("messages[0].content is empty")
    return style.encode_prompt(tokenizer, {"instruction": text, "input": ""})


def refused_options(req: ChatRequest) -> list[str]:
    """Options this server cannot honour: refused rather than silently ignored."""
    out = []
    if req.n not in (None, 1):
        out.append(f"n={req.n} (only n=1)")
    if req.tools:
        out.append("tools")
    if req.stop:
        out.append("stop")
    if req.response_format is not None and req.response_format.type != "text":
        out.append(f"response_format {req.response_format.type}")
    if req.presence_penalty or req.frequency_penalty:
        out.append("presence_penalty/frequency_penalty (only 0)")
    return out


class ChatSpec(OpenAISpec):
    def __init__(self, meta: dict, context_length: int, default_max_tokens: int):
        super().__init__()
        self.tokenizer_spec = json.dumps(meta["tokenizer"], sort_keys=True)
        self.style_name, self.context, self.default_max_tokens = meta["prompt_style"], context_length, default_max_tokens

    def check(self, req: ChatRequest) -> None:
        """400 for anything the worker would refuse; fills in max_tokens."""
        from ..data.prompts import get_prompt_style

        refused = refused_options(req)
        if refused:
            raise HTTPException(400, f"not supported by this server: {', '.join(refused)}")
        if req.max_completion_tokens is not None:
            req.max_tokens = req.max_completion_tokens
        req.max_tokens = req.max_tokens or self.default_max_tokens
        try:
            n = len(prompt_ids(req.messages, get_prompt_style(self.style_name), _tokenizer(self.tokenizer_spec)))
        except GptftError as err:
            raise HTTPException(400, str(err)) from None
        if n >= self.context:
            raise HTTPException(400, f"the prompt has {n} tokens but the model's context holds {self.context}; "
                                     f"shorten the message")
        if req.max_tokens > self.context:
            raise HTTPException(400, f"max_tokens={req.max_tokens} is more than the model's whole context of "
                                     f"{self.context} tokens; use max_tokens<={self.context - n} for this prompt")

    async def chat_completion(self, request: ChatRequest, background_tasks: BackgroundTasks):
        self.check(request)
        return await super().chat_completion(request, background_tasks)

    def _finish(self, usage, max_tokens: int) -> str:
        # generation stops at the end-of-text token (not counted), the budget, or a full context
        full = usage.prompt_tokens + usage.completion_tokens >= self.context
        return "length" if usage.completion_tokens >= max_tokens or full else "stop"

    async def non_streaming_completion(self, request, generator_list):
        response = await super().non_streaming_completion(request, generator_list)
        response.choices[0].finish_reason = self._finish(response.usage, request.max_tokens)
        return response

    async def streaming_completion(self, request, pipe_responses):
        async for line in super().streaming_completion(request, pipe_responses):
            payload = line[len("data: "):].strip() if line.startswith("data: ") else ""
            if payload.startswith("{") and '"usage":{' in payload:  # the last chunk: it carries the usage
                chunk = json.loads(payload)
                usage = chunk["usage"]
                full = usage["prompt_tokens"] + usage["completion_tokens"] >= self.context
                chunk["choices"][0]["finish_reason"] = (
                    "length" if usage["completion_tokens"] >= request.max_tokens or full else "stop")
                line = f"data: {json.dumps(chunk)}\n\n"
            yield line


class ChatAPI(ls.LitAPI):
    def __init__(self, ckpt: str, **kwargs):
        super().__init__(**kwargs)
        self.ckpt = ckpt

    def setup(self, device):
        from ..data.prompts import get_prompt_style
        from ..tasks.instruct import InstructTask
        from .model_info import load_served

        task, self.tokenizer, meta = load_served(self.ckpt, InstructTask)
        self.model = task.backbone.to(device).eval()
        self.style, self.device = get_prompt_style(meta["prompt_style"]), device

    def decode_request(self, request, context):
        try:
            return prompt_ids(request.messages, self.style, self.tokenizer)
        except GptftError as err:
            raise HTTPException(400, str(err)) from None

    def predict(self, ids, context):
        import torch

        from ..models.generation import generate_stream

        seed = context.get("seed")
        generator = torch.Generator(device=self.model_device).manual_seed(
            random.randrange(2**63) if seed is None else seed)
        stream, n = TextStream(self.tokenizer), 0
        for token in generate_stream(self.model, ids, context["max_tokens"], temperature=context["temperature"],
                                     top_p=context["top_p"], eos_id=self.tokenizer.eot_id, generator=generator):
            n += 1
            piece = stream.push(token)
            if piece:
                yield piece
        tail = stream.finish()
        if tail:
            yield tail
        # the usage: LitServe takes it from the last item
        yield {"role": "assistant", "content": "", "prompt_tokens": len(ids), "completion_tokens": n,
               "total_tokens": len(ids) + n}

    @property
    def model_device(self):
        return next(self.model.parameters()).device
