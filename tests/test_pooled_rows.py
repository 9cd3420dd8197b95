"""Classification computes the top block only at the pooled position of each row: the same numbers."""
import pytest
import torch

from gptft.models.gpt2 import GPT, gpt2_config
from gptft.models.llama import Llama, llama_config


def tiny(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if arch == "gpt2":
        return GPT(gpt2_config("gpt2-tiny", vocab_size=500, context_length=64))
    return Llama(llama_config("smollm2-135m", n_layer=3, n_embd=64, n_head=4, n_kv_head=2, intermediate_size=96,
                              vocab_size=500))


def states_and_grads(model, ids, at, only_at: bool, dtype):
    model.zero_grad()
    with torch.autocast("cpu", dtype, enabled=dtype == torch.bfloat16):
        x = model.embed(ids)
        if only_at:
            h = model.final_norm(model.run_blocks(x, at=at))[:, 0]
        else:
            h = model.final_norm(model.run_blocks(x))[torch.arange(len(at)), at]
    h.double().pow(2).sum().backward()
    return h.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.bfloat16, 3e-2)])  # the math; bf16 rounding
def test_top_block_at_the_pooled_rows_equals_the_full_block(arch, dtype, tol):
    model = tiny(arch).to(torch.float64 if dtype == torch.float64 else torch.float32).train()
    ids = torch.randint(0, 500, (4, 23), generator=torch.Generator().manual_seed(1))
    at = torch.tensor([22, 0, 9, 15])  # last-token pooling of rows of lengths 23, 1, 10, 16; -1 is the book's
    full, g_full = states_and_grads(model, ids, at, False, dtype)
    fast, g_fast = states_and_grads(model, ids, at, True, dtype)
    assert full.shape == fast.shape == (4, 64) and full.dtype == torch.float64 or dtype == torch.bfloat16
    assert (full - fast).abs().max() <= tol * full.abs().max()
    assert g_full.keys() == g_fast.keys() and any(".h.2." in n or ".layers.2." in n for n in g_full)
    for name, g in g_full.items():
        assert (g - g_fast[name]).abs().max() <= tol * g.abs().max() + 1e-7, name
