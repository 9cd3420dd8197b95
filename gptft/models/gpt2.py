"""GPT-2: config and blocks, with the Hugging Face parameter names; the task interface is in `backbone.py`."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .backbone import Backbone
from .kv_cache import KVCache, attention_at, causal_attention, rows_at
from ..errors import ConfigError


@dataclass
class GPTConfig:
    vocab_size: int = 50257
    context_length: int = 1024
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True
    layer_norm_eps: float = 1e-5


# Shapes of the published OpenAI checkpoints; gpt2-tiny is ours, for tests.
SIZES = {
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768),
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024),
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280),
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600),
    "gpt2-tiny": dict(n_layer=4, n_head=4, n_embd=64),
}


class SelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        if cfg.n_embd % cfg.n_head:
            raise ConfigError(f"n_embd={cfg.n_embd} is not divisible by n_head={cfg.n_head}")
        self.n_head = cfg.n_head
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = cfg.dropout
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, at: torch.Tensor | None = None) -> torch.Tensor:
        b, t, c = x.shape
        heads = lambda z, n: z.view(b, n, self.n_head, c // self.n_head).transpose(1, 2)  # noqa: E731
        if at is not None:
            q, k, v = self._qkv_at(x, at)
            y = attention_at(heads(q, 1), heads(k, t), heads(v, t), at, self.dropout if self.training else 0.0)
            return self.resid_drop(self.c_proj(y.transpose(1, 2).reshape(b, 1, c)))
        q, k, v = (heads(z, t) for z in self.c_attn(x).split(c, dim=2))
        past = 0
        if cache is not None:
            past = cache.length
            k, v = cache.append(k, v)
        y = causal_attention(q, k, v, past, self.dropout if self.training else 0.0)
        return self.resid_drop(self.c_proj(y.transpose(1, 2).reshape(b, t, c)))

    def _qkv_at(self, x: torch.Tensor, at: torch.Tensor):
        """q at the rows `at` only, keys and values over every position: the fused projection's weight split by its
        output rows. A wrapped projection (LoRA) runs whole and q is picked out after."""
        c = x.shape[-1]
        if type(self.c_attn) is not nn.Linear:
            q, k, v = self.c_attn(x).split(c, dim=2)
            return rows_at(q, at), k, v
        w, bias = self.c_attn.weight, self.c_attn.bias
        q = F.linear(rows_at(x, at), w[:c], None if bias is None else bias[:c])
        k, v = F.linear(x, w[c:], None if bias is None else bias[c:]).split(c, dim=2)
        return q, k, v


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_eps, bias=cfg.bias)
        self.attn = SelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_eps, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, at: torch.Tensor | None = None) -> torch.Tensor:
        """at: (B,) one position per row: only those rows' outputs, (B, 1, C) (keys and values still from all)."""
        h = self.attn(self.ln_1(x), cache, at)
        x = rows_at(x, at) + h
        return x + self.mlp(self.ln_2(x))


class GPT(Backbone):
    """GPT-2 with the Hugging Face parameter names (minus the `transformer.` quirks of Conv1D)."""

    arch = "gpt2"
    lora_groups = {"attention": "attn", "mlp": "mlp"}  # lora.targets names -> block submodule
    every_position_linears = {"attn.c_attn": 2 / 3}  # what a block reading one row still computes everywhere: k and v

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
                wpe=nn.Embedding(cfg.context_length, cfg.n_embd),
                drop=nn.Dropout(cfg.dropout),
                h=nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer)),
                ln_f=nn.LayerNorm(cfg.n_embd, eps=cfg.layer_norm_eps, bias=cfg.bias),
            )
        )
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied, as in GPT-2
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2's scaled init of residual projections
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    # -- the backbone interface -------------------------------------------------------------
    @property
    def blocks(self) -> nn.ModuleList:
        return self.transformer.h

    @property
    def final_norm(self) -> nn.Module:
        return self.transformer.ln_f

    @property
    def embedding(self) -> nn.Embedding:
        return self.transformer.wte

    def embed(self, idx: torch.Tensor, pos_offset: int = 0) -> torch.Tensor:
        t = idx.shape[1]
        self.check_length(pos_offset, t)
        pos = torch.arange(pos_offset, pos_offset + t, device=idx.device)
        return self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))

    def run_blocks(
        self,
        x: torch.Tensor,
        start: int = 0,
        stop: int | None = None,
        kv_caches: list[KVCache] | None = None,
        pos_offset: int = 0,  # unused: GPT-2 adds positions in `embed`
        at: torch.Tensor | None = None,
    ) -> torch.Tensor:
        stop = len(self.blocks) if stop is None else stop
        for i in range(start, stop):
            x = self.call_block(self.blocks[i], x, cache=None if kv_caches is None else kv_caches[i],
                                at=at if i == stop - 1 else None)
        return x


def gpt2_config(name: str, **overrides) -> GPTConfig:
    if name not in SIZES:
        raise ConfigError(f"unknown GPT-2 size {name!r}; choose one of {sorted(SIZES)}")
    return GPTConfig(**{**SIZES[name], **overrides})
