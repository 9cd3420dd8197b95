"""A gptft backbone + head under transformers' class names: config.json and the weights.

Names follow `GPT2LMHeadModel` / `GPT2ForSequenceClassification` / `LlamaForCausalLM` /
`LlamaForSequenceClassification`. gptft's GPT-2 blocks are nn.Linear ([out, in]); transformers' GPT-2
keeps OpenAI's Conv1D layout ([in, out]), hence the transposes.
"""
from __future__ import annotations

import re

import torch

from ..errors import CheckpointError

CLASSES = {("gpt2", "lm"): "GPT2LMHeadModel", ("gpt2", "classifier"): "GPT2ForSequenceClassification",
           ("llama", "lm"): "LlamaForCausalLM", ("llama", "classifier"): "LlamaForSequenceClassification"}
_CONV1D = re.compile(r"transformer\.h\.\d+\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight")
_BODY = {  # the parameter names a plain gptft backbone has (anything else, e.g. adapters, is refused)
    "gpt2": re.compile(r"transformer\.(wte|wpe|ln_f)\.\w+|transformer\.h\.\d+\.(ln_1|ln_2|attn\.c_attn|attn\.c_proj|"
                       r"mlp\.c_fc|mlp\.c_proj)\.(weight|bias)"),
    "llama": re.compile(r"model\.(embed_tokens|norm)\.weight|model\.layers\.\d+\.(input_layernorm|"
                        r"post_attention_layernorm|self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)\.weight"),
}
HEAD = {"lm": "lm_head", "classifier": "score"}


def is_tied(backbone) -> bool:
    return backbone.head.weight is backbone.embedding.weight


def body_tensors(backbone) -> dict[str, torch.Tensor]:
    """The backbone's weights without the head, in nn.Linear layout, under transformers' names.
    GPT-2 built with bias=False gets zero biases (the same computation)."""
    arch = backbone.arch
    out = {}
    for name, t in backbone.state_dict().items():
        if name.startswith("lm_head."):
            continue
        if not _BODY[arch].fullmatch(name):
            raise CheckpointError(f"the checkpoint's {arch} backbone has a parameter {name!r} that transformers' "
                                  f"{arch} has no place for; export handles plain fine-tuned backbones")
        out[name] = t.detach().float().contiguous()
    if arch == "gpt2" and not backbone.config.bias:
        for name in [n for n in out if n.endswith(".weight") and not n.endswith(("wte.weight", "wpe.weight"))]:
            out.setdefault(name[: -len("weight")] + "bias", torch.zeros(out[name].shape[0]))
    return out


def classifier_head(backbone, pooling: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(score weight, changed body tensors). transformers' score layer has no bias: for GPT-2 it moves
    into the final LayerNorm's bias, which feeds only the score (ln_f.bias + d with W d = b); Llama's
    RMSNorm has no bias, so a Llama head needs none (task.head_bias=false) and one with a bias is refused."""
    if pooling != "last_token":
        raise CheckpointError(
            f"this classifier was trained with pooling={pooling}: it reads position -1 (a pad token in a padded "
            f"batch), while transformers' sequence classifiers read each row's last non-pad token, so the "
            f"exported model would predict differently; retrain with pooling=last_token (the default)")
    head = backbone.head
    weight = head.weight.detach().double()
    bias = None if head.bias is None else head.bias.detach().double()
    if bias is None or not bias.any():
        return weight.float(), {}
    if backbone.arch != "gpt2":
        raise CheckpointError(
            f"the classifier head has a bias, and transformers' {CLASSES[(backbone.arch, 'classifier')]} has none "
            f"(nor has the {backbone.arch} final norm, to carry it), so the export would change the model's scores; "
            f"train the classifier with task.head_bias=false to get one that exports")
    shift = torch.linalg.pinv(weight) @ bias
    if (weight @ shift - bias).abs().max() > 1e-6 * max(1.0, float(bias.abs().max())):
        raise CheckpointError("the classifier head's bias cannot be moved into the final LayerNorm (its classes "
                              "outnumber the hidden width or its rows are dependent); this head cannot be exported")
    ln_bias = backbone.final_norm.bias
    base = torch.zeros(weight.shape[1], dtype=torch.float64) if ln_bias is None else ln_bias.detach().double()
    return weight.float(), {"transformer.ln_f.bias": (base + shift).float()}


def hf_state_dict(backbone, kind: str, pooling: str | None = None, conv1d: bool = True) -> dict[str, torch.Tensor]:
    """Every tensor of the exported model under its transformers name. conv1d=False keeps GPT-2's
    blocks in nn.Linear layout (what GGUF stores)."""
    out = body_tensors(backbone)
    if kind == "classifier":
        weight, changed = classifier_head(backbone, pooling)
        out.update(changed)
        out["score.weight"] = weight
    elif not is_tied(backbone):  # a tied head is the embedding, stored once
        if backbone.head.bias is not None:
            raise CheckpointError("the LM head has a bias, which transformers' causal LMs lack")
        out["lm_head.weight"] = backbone.head.weight.detach().float().contiguous()
    if backbone.arch == "gpt2" and conv1d:
        out = {k: (v.t().contiguous() if _CONV1D.fullmatch(k) else v) for k, v in out.items()}
    return out


def hf_config(backbone, kind: str, tokenizer, label_names: list[str] | None, dtype: str = "float32") -> dict:
    """config.json of the exported model."""
    cfg, arch = backbone.config, backbone.arch
    bos = getattr(tokenizer, "bos_id", None)
    ids = {"bos_token_id": tokenizer.eot_id if bos is None else bos, "eos_token_id": tokenizer.eot_id,
           "pad_token_id": tokenizer.pad_id}
    if arch == "gpt2":
        shape = {"model_type": "gpt2", "vocab_size": cfg.vocab_size, "n_positions": cfg.context_length,
                 "n_embd": cfg.n_embd, "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_inner": None,
                 "activation_function": "gelu_new", "layer_norm_epsilon": cfg.layer_norm_eps,
                 "resid_pdrop": cfg.dropout, "embd_pdrop": cfg.dropout, "attn_pdrop": cfg.dropout,
                 "scale_attn_weights": True}
    else:
        shape = {"model_type": "llama", "vocab_size": cfg.vocab_size, "hidden_size": cfg.n_embd,
                 "intermediate_size": cfg.intermediate_size, "num_hidden_layers": cfg.n_layer,
                 "num_attention_heads": cfg.n_head, "num_key_value_heads": cfg.n_kv_head,
                 "head_dim": cfg.n_embd // cfg.n_head, "max_position_embeddings": cfg.context_length,
                 "rms_norm_eps": cfg.rms_norm_eps, "rope_theta": cfg.rope_theta,
                 "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
                 "hidden_act": "silu", "attention_bias": False, "mlp_bias": False, "attention_dropout": 0.0}
    out = {"architectures": [CLASSES[(arch, kind)]], **shape, **ids, "dtype": dtype,
           "tie_word_embeddings": kind == "lm" and is_tied(backbone)}
    if kind == "classifier":
        out["id2label"] = {str(i): n for i, n in enumerate(label_names)}
        out["label2id"] = {n: i for i, n in enumerate(label_names)}
        out["problem_type"] = "single_label_classification"
    return out
