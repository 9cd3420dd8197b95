"""Llama backbone (SmolLM2): RMSNorm, rotary positions, grouped-query attention, SwiGLU.

Same interface as `gpt2.GPT` (see the top of gpt2.py), so tasks work unchanged. Parameter
names follow Hugging Face's `LlamaForCausalLM`, so safetensors checkpoints load by name.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .backbone import Backbone
from .kv_cache import KVCache, attention_at, causal_attention, rows_at
from ..errors import ConfigError


@dataclass
class LlamaConfig:
    vocab_size: int = 49152
    context_length: int = 8192
    n_layer: int = 30
    n_head: int = 9
    n_kv_head: int = 3
    n_embd: int = 576
    intermediate_size: int = 1536
    rope_theta: float = 100000.0
    rms_norm_eps: float = 1e-5
    tie_embeddings: bool = True
    dropout: float = 0.0


# Published SmolLM2 shapes (the -Instruct variants share them), for random init.
SIZES = {
    "smollm2-135m": dict(n_layer=30, n_embd=576, n_head=9, n_kv_head=3, intermediate_size=1536),
    "smollm2-360m": dict(n_layer=32, n_embd=960, n_head=15, n_kv_head=5, intermediate_size=2560),
}


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # normalise in fp32 even under bf16: the mean of squares loses too much otherwise
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


class Rope:
    """cos/sin tables in HF's "rotate half" layout, kept out of the state dict and out of
    `module.to(dtype)`: a bf16 table would blur positions far into an 8k context."""

    def __init__(self, head_dim: int, theta: float):
        self.head_dim, self.theta = head_dim, theta
        self._table: tuple[torch.Tensor, torch.Tensor] | None = None

    def __call__(self, start: int, length: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin for positions start .. start + length - 1, each (length, head_dim), fp32."""
        need, t = start + length, self._table
        if t is None or t[0].device != torch.device(device) or t[0].shape[0] < need:
            n = max(need, 2 * (0 if t is None else t[0].shape[0]), 256)
            exps = torch.arange(0, self.head_dim, 2, dtype=torch.float32, device=device)
            inv_freq = 1.0 / (self.theta ** (exps / self.head_dim))
            angles = torch.outer(torch.arange(n, dtype=torch.float32, device=device), inv_freq)
            angles = torch.cat((angles, angles), dim=-1)
            self._table = t = (angles.cos(), angles.sin())
        return t[0][start:need], t[1][start:need]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (B, H, T, D); cos/sin: (T, D) in fp32."""
    return (x.float() * cos + rotate_half(x.float()) * sin).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        if cfg.n_embd % cfg.n_head or cfg.n_head % cfg.n_kv_head:
            raise ConfigError(
                f"need n_embd % n_head == 0 and n_head % n_kv_head == 0, got "
                f"n_embd={cfg.n_embd}, n_head={cfg.n_head}, n_kv_head={cfg.n_kv_head}"
            )
        self.n_head, self.n_kv_head = cfg.n_head, cfg.n_kv_head
        self.head_dim = cfg.n_embd // cfg.n_head
        kv_dim = cfg.n_kv_head * self.head_dim
        self.q_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)
        self.k_proj = nn.Linear(cfg.n_embd, kv_dim, bias=False)
        self.v_proj = nn.Linear(cfg.n_embd, kv_dim, bias=False)
        self.o_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)
        self.dropout = cfg.dropout

    def forward(self, x, cos, sin, cache: KVCache | None = None, at: torch.Tensor | None = None) -> torch.Tensor:
        b, t, c = x.shape
        k = self.k_proj(x).view(b, t, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.n_kv_head, self.head_dim).transpose(1, 2)
        k = apply_rope(k, cos, sin)
        if at is not None:  # queries only at `at`
            q = self.q_proj(rows_at(x, at)).view(b, 1, self.n_head, self.head_dim).transpose(1, 2)
            q = apply_rope(q, cos[at][:, None, None], sin[at][:, None, None])
            rep = self.n_head // self.n_kv_head
            k, v = (k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)) if rep > 1 else (k, v)
            y = attention_at(q, k, v, at, self.dropout if self.training else 0.0)
            return self.o_proj(y.transpose(1, 2).reshape(b, 1, c))
        q = self.q_proj(x).view(b, t, self.n_head, self.head_dim).transpose(1, 2)
        q = apply_rope(q, cos, sin)
        past = 0
        if cache is not None:  # the cache holds the few KV heads, expanded only for SDPA
            past = cache.length
            k, v = cache.append(k, v)
        rep = self.n_head // self.n_kv_head
        if rep > 1:  # query head h reads KV head h // rep, as in HF's repeat_kv
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        y = causal_attention(q, k, v, past, self.dropout if self.training else 0.0)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, c))


class MLP(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.n_embd, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.n_embd, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.n_embd, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.n_embd, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, cos, sin, cache: KVCache | None = None, at: torch.Tensor | None = None) -> torch.Tensor:
        """at: (B,) one position per row: only those rows' outputs, (B, 1, C) (keys and values still from all)."""
        h = self.drop(self.self_attn(self.input_layernorm(x), cos, sin, cache, at))
        x = rows_at(x, at) + h
        return x + self.drop(self.mlp(self.post_attention_layernorm(x)))


class Llama(Backbone):
    arch = "llama"
    lora_groups = {"attention": "self_attn", "mlp": "mlp"}  # lora.targets names -> block submodule
    # what a block reading one row still computes everywhere
    every_position_linears = {"self_attn.k_proj": 1.0, "self_attn.v_proj": 1.0}

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.config = cfg
        self.model = nn.ModuleDict(
            dict(
                embed_tokens=nn.Embedding(cfg.vocab_size, cfg.n_embd),
                layers=nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer)),
                norm=RMSNorm(cfg.n_embd, cfg.rms_norm_eps),
            )
        )
        self.drop = nn.Dropout(cfg.dropout)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.rope = Rope(cfg.n_embd // cfg.n_head, cfg.rope_theta)
        self.apply(self._init_weights)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # HF Llama's initializer_range; skipped on the meta device, where loaders build first
        if isinstance(module, (nn.Linear, nn.Embedding)) and not module.weight.is_meta:
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    # -- the backbone interface -------------------------------------------------------------
    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.layers

    @property
    def final_norm(self) -> nn.Module:
        return self.model.norm

    @property
    def embedding(self) -> nn.Embedding:
        return self.model.embed_tokens

    def embed(self, idx: torch.Tensor, pos_offset: int = 0) -> torch.Tensor:
        """Token embeddings only: positions enter each attention layer through RoPE."""
        self.check_length(pos_offset, idx.shape[1])
        return self.drop(self.model.embed_tokens(idx))

    def run_blocks(
        self,
        x: torch.Tensor,
        start: int = 0,
        stop: int | None = None,
        kv_caches: list[KVCache] | None = None,
        pos_offset: int = 0,
        at: torch.Tensor | None = None,
    ) -> torch.Tensor:
        stop = len(self.blocks) if stop is None else stop
        cos, sin = self.rope(pos_offset, x.shape[1], x.device)
        for i in range(start, stop):
            x = self.call_block(self.blocks[i], x, cos, sin, cache=None if kv_caches is None else kv_caches[i],
                                at=at if i == stop - 1 else None)
        return x

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())  # tied weights count once


def llama_config(name: str, **overrides) -> LlamaConfig:
    if name not in SIZES:
        raise ConfigError(f"unknown Llama size {name!r}; choose one of {sorted(SIZES)}")
    return LlamaConfig(**{**SIZES[name], **overrides})
