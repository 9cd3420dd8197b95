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


def test_fp32_inputs_give_the_exact_gradients():
    q, k, v, g = qkvg(40, torch.float32, seed=1)
    ours = grads(causal_fp32_backward, q, k, v, g)
    exact = grads(sdpa, *(x.double() for x in (q, k, v, g)))
    for mine, ref in zip(ours, exact):
        torch.testing.assert_close(mine.double(), ref, atol=1e-5 * ref.abs().max().item(), rtol=0)


def test_strided_grouped_and_partial_inputs_as_the_models_pass_them():
    """q, k, v as the blocks make them: (B, T, H, D) transposed, the KV heads repeated for the query heads (SmolLM2),
    and gradients wanted for only some of them."""
    gen = torch.Generator().manual_seed(3)
    b, t, h, kv, d = 2, 33, 6, 2, 16
    q0 = torch.randn(b, t, h, d, generator=gen)
    k0, v0 = (torch.randn(b, t, kv, d, generator=gen) for _ in range(2))
    g = torch.randn(b, h, t, d, generator=gen)

    def run(fn, dtype, k_grad):
        q = q0.to(dtype).requires_grad_()
        k = k0.to(dtype).requires_grad_(k_grad)
        v = v0.to(dtype).requires_grad_()
        expand = [x.transpose(1, 2).repeat_interleave(h // kv, dim=1) for x in (k, v)]
        fn(q.transpose(1, 2), *expand).backward(g.to(dtype))
        return q.grad, k.grad, v.grad

    for k_grad in (True, False):
        ours = run(causal_fp32_backward, torch.bfloat16, k_grad)
        exact = run(sdpa, torch.float64, k_grad)
        assert (ours[1] is None) == (not k_grad)
        for mine, ref in zip(ours, exact):
            if ref is not None:
                torch.testing.assert_close(mine.double(), ref, atol=1e-2 * ref.abs().max().item(), rtol=0)


def test_backward_is_fp32_inside_autocast_and_under_compile():
    q, k, v, g = qkvg(24, torch.bfloat16, seed=4)
    plain = grads(causal_fp32_backward, q, k, v, g)

    def in_autocast(*xs):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return causal_fp32_backward(*xs)

    q2, k2, v2 = (x.detach().requires_grad_() for x in (q, k, v))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # backward run inside autocast too
        causal_fp32_backward(q2, k2, v2).backward(g)
    compiled = grads(torch.compile(in_autocast, backend="aot_eager", fullgraph=True), q, k, v, g)
    for a, b_, c in zip(plain[1:], (q2.grad, k2.grad, v2.grad), compiled[1:]):
        assert torch.equal(a, b_)
        torch.testing.assert_close(c, a, atol=0, rtol=0)


def test_chosen_only_for_short_16_bit_cpu_training_without_dropout():
    q, k, v, _ = qkvg(8, torch.bfloat16)
    q.requires_grad_()
    assert wants_fp32_backward(q, k, v, 0.0)
    assert not wants_fp32_backward(q, k, v, 0.1)  # dropout: SDPA's own kernel
    assert not wants_fp32_backward(q.detach(), k, v, 0.0)  # nothing to differentiate
    with torch.no_grad():
        assert not wants_fp32_backward(q, k, v, 0.0)
    assert not wants_fp32_backward(q.float(), k.float(), v.float(), 0.0)  # fp32 has a fast fused backward
    assert not wants_fp32_backward(q.half(), k.half(), v.half(), 0.0)  # fp16: not measured
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
