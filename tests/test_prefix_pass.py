"""The frozen-prefix pass that fills the cache before training: its frozen weights cast once."""
import pytest
import torch

from gptft.models.gpt2 import GPT, gpt2_config
from gptft.models.llama import Llama, llama_config
from gptft.tasks.finetune import linears_cast_once


def tiny(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if arch == "gpt2":
        return GPT(gpt2_config("gpt2-tiny", vocab_size=500, context_length=64)).eval().requires_grad_(False)
    return Llama(llama_config("smollm2-135m", n_layer=3, n_embd=64, n_head=4, n_kv_head=2, intermediate_size=96,
                              vocab_size=500)).eval().requires_grad_(False)


def model_blocks(model) -> str:
    return next(n for n, m in model.named_modules() if m is model.blocks) + "."


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_weights_cast_once_give_autocast_s_bits_and_come_back(arch):
    model = tiny(arch)
    ids = torch.randint(0, 500, (3, 17), generator=torch.Generator().manual_seed(1))
    before = {n: p for n, p in model.named_parameters()}
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        x = model.embed(ids)
        plain = model.run_blocks(x, 0, 2)
        with linears_cast_once(model.blocks[:2], "cpu"):
            cast = {n: p.dtype for n, p in model.blocks.named_parameters()}  # "0.attn.c_attn.weight", ...
            outside = {p.dtype for n, p in model.named_parameters() if not n.startswith(model_blocks(model))}
            once = model.run_blocks(x, 0, 2)
    assert torch.equal(once, plain)
    linear = {n for n, m in model.blocks.named_modules() if isinstance(m, torch.nn.Linear)}
    for name, dtype in cast.items():
        low = name.rsplit(".", 1)[0] in linear and int(name.split(".")[0]) < 2
        assert dtype == (torch.bfloat16 if low else torch.float32), name  # norms and the blocks above untouched
    assert outside == {torch.float32} and sum(t == torch.bfloat16 for t in cast.values()) >= 8
    assert all(p is before[n] and p.dtype == torch.float32 for n, p in model.named_parameters())
    with linears_cast_once(model.blocks, "cpu"):  # no autocast: nothing changes
        assert all(p is before[n] for n, p in model.named_parameters())
