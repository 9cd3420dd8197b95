"""The fp32 backward of short causal attention: SDPA's forward bits, gradients at least as exact as SDPA's own."""
import pytest
import torch
import torch.nn.functional as F

from gptft.models.kv_cache import causal_attention
from gptft.models.short_attention import MAX_ROW, causal_fp32_backward, wants_fp32_backward


def qkvg(t, dtype, seed=0, b=3, h=4, d=32):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, t, d, generator=g).to(dtype) for _ in range(4)]


def grads(fn, q, k, v, grad):
    q, k, v = (x.detach().requires_grad_() for x in (q, k, v))
    out = fn(q, k, v)
    out.backward(grad)
    return out, q.grad, k.grad, v.grad


def sdpa(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


@pytest.mark.parametrize("t", [1, 7, 64, MAX_ROW])
def test_forward_is_sdpa_and_gradients_are_closer_to_exact(t):
    q, k, v, g = qkvg(t, torch.bfloat16, seed=t)
    exact = grads(sdpa, *(x.double() for x in (q, k, v, g)))
    ours = grads(causal_fp32_backward, q, k, v, g)
    fused = grads(sdpa, q, k, v, g)
    assert torch.equal(ours[0], fused[0])  # the same forward call, the same bits
    for mine, kernel, ref in zip(ours[1:], fused[1:], exact[1:]):
        assert mine.dtype == torch.bfloat16
        scale = ref.abs().max()
        if scale == 0:  # one position: the weights are constant 1, so q and k get no gradient
            assert not mine.any()
            continue
        err = (mine.double() - ref).abs().max() / scale
        assert err < 1e-2  # bf16 rounding of the result
        assert err <= (kernel.double() - ref).abs().max() / scale * 1.25 + 1e-3


def test_gradients_match_fp32_autograd_of_the_same_math():
    q, k, v, g = qkvg(40, torch.float32, seed=1)
    ours = grads(causal_fp32_backward, *(x.bfloat16() for x in (q, k, v, g)))
    ref = grads(sdpa, *(x.bfloat16().float() for x in (q, k, v, g)))
    for mine, r in zip(ours[1:], ref[1:]):
        torch.testing.assert_close(mine.float(), r, atol=2e-2 * r.abs().max().item(), rtol=0)
    # a wrong gradient would be caught: the gradient of another output direction differs
    other = grads(causal_fp32_backward, *(x.bfloat16() for x in (q, k, v)), -g.bfloat16())
    assert not torch.allclose(other[1].float(), ref[1], atol=1e-3)


def test_chosen_only_for_short_16_bit_cpu_training_without_dropout():
    q, k, v, _ = qkvg(8, torch.bfloat16)
    q.requires_grad_()
    assert wants_fp32_backward(q, k, v, 0.0)
    assert not wants_fp32_backward(q, k, v, 0.1)  # dropout: SDPA's own kernel
    assert not wants_fp32_backward(q.detach(), k, v, 0.0)  # nothing to differentiate
    with torch.no_grad():
        assert not wants_fp32_backward(q, k, v, 0.0)
    assert not wants_fp32_backward(q.float(), k.float(), v.float(), 0.0)  # fp32 has a fast fused backward
    long = [x.requires_grad_() for x in qkvg(MAX_ROW + 1, torch.bfloat16)[:3]]
    assert not wants_fp32_backward(*long, 0.0)


def test_causal_attention_routes_short_bf16_training_rows():
    q, k, v, g = qkvg(12, torch.bfloat16, seed=2)
    q.requires_grad_()
    out = causal_attention(q, k, v, past=0)
    assert type(out.grad_fn).__name__ == "_Fp32BackwardBackward"
    assert torch.equal(out, sdpa(q, k, v))
    with torch.no_grad():
        assert causal_attention(q, k, v, past=0).grad_fn is None
