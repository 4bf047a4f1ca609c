"""The xformers shim against the float64 reference (tests/shims/conftest.py)."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from ascend_patch.shims import xformers
from ascend_patch.shims.xformers import ops as xops
from ascend_patch.shims.xformers.ops import fmha
from ascend_patch.shims.xformers.ops.fmha import attn_bias as ab

B, H, K = 2, 4, 16


def close(a, b, atol=1e-5):
    assert a.shape == b.shape, (a.shape, b.shape)
    torch.testing.assert_close(a.double(), b.double(), atol=atol, rtol=0)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def bmhk(mq, mk, h=H, dtype=torch.float32, grad=False, kv=K):
    return (torch.randn(B, mq, h, K, dtype=dtype).requires_grad_(grad),
            torch.randn(B, mk, h, K, dtype=dtype).requires_grad_(grad),
            torch.randn(B, mk, h, kv, dtype=dtype).requires_grad_(grad))


@pytest.mark.parametrize("mq,mk", [(8, 8), (5, 11), (11, 5)])
def test_no_bias_and_scale(ref, mq, mk):
    q, k, v = bmhk(mq, mk)
    close(xops.memory_efficient_attention(q, k, v), ref.attention(q, k, v)[0])
    close(xops.memory_efficient_attention(q, k, v, scale=0.2), ref.attention(q, k, v, scale=0.2)[0])
    close(xops.memory_efficient_attention_forward(q, k, v, None, 0.0, 0.5), ref.attention(q, k, v, scale=0.5)[0])


@pytest.mark.parametrize("shape", [(B, H, 6, 9), (1, H, 6, 9), (B, 1, 6, 9), (6, 9)])
def test_tensor_bias(ref, shape):
    q, k, v = bmhk(6, 9)
    bias = torch.randn(*shape)
    bias[..., 2] = -math.inf  # a masked key column
    close(xops.memory_efficient_attention(q, k, v, attn_bias=bias), ref.attention(q, k, v, bias=bias)[0])


def test_tensor_bias_wrong_shape_raises():
    q, k, v = bmhk(6, 9)
    with pytest.raises(ValueError, match="attention bias"):
        xops.memory_efficient_attention(q, k, v, attn_bias=torch.zeros(B, H, 5, 9))


@pytest.mark.parametrize("mq,mk", [(8, 8), (5, 11), (11, 5)])
def test_lower_triangular_is_top_left(ref, mq, mk):
    q, k, v = bmhk(mq, mk)
    out = xops.memory_efficient_attention(q, k, v, attn_bias=xops.LowerTriangularMask())
    close(out, ref.attention(q, k, v, causal=True, align="top_left")[0])


@pytest.mark.parametrize("mq,mk", [(8, 8), (5, 11), (11, 5)])
def test_lower_triangular_from_bottom_right(ref, mq, mk):
    q, k, v = bmhk(mq, mk)
    out = xops.memory_efficient_attention(q, k, v, attn_bias=ab.LowerTriangularFromBottomRightMask())
    expected, _ = ref.attention(q, k, v, causal=True, align="bottom_right")
    close(out, expected)
    if mq > mk:
        assert (out[:, : mq - mk] == 0).all()


@pytest.mark.parametrize("mq,mk", [(8, 8), (5, 11)])
def test_local_masks(ref, mq, mk):
    q, k, v = bmhk(mq, mk)
    out = xops.memory_efficient_attention(q, k, v, attn_bias=ab.LowerTriangularFromBottomRightMask()
                                          .make_local_attention(3))
    close(out, ref.attention(q, k, v, causal=True, window=(2, 0))[0])
    out = xops.memory_efficient_attention(q, k, v, attn_bias=ab.LocalAttentionFromBottomRightMask(2, 1))
    close(out, ref.attention(q, k, v, window=(2, 1))[0])


def test_lower_triangular_with_tensor_bias(ref):
    q, k, v = bmhk(7, 7)
    bias = torch.randn(B, H, 7, 7)
    mask = xops.LowerTriangularMask().add_bias(bias)
    assert isinstance(mask, ab.LowerTriangularMaskWithTensorBias)
    close(xops.memory_efficient_attention(q, k, v, attn_bias=mask),
          ref.attention(q, k, v, causal=True, align="top_left", bias=bias)[0])


def _blocks_ref(ref, q, k, v, q_lens, k_lens, k_starts=None, **kw):
    """Reference for a packed batch of one: each block attends within itself."""
    outs, qs = [], 0
    k_starts = k_starts or [sum(k_lens[:i]) for i in range(len(k_lens))]
    for lq, lk, ks in zip(q_lens, k_lens, k_starts):
        o, _ = ref.attention(q[:, qs:qs + lq], k[:, ks:ks + lk], v[:, ks:ks + lk], **kw)
        outs.append(o)
        qs += lq
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("q_lens,k_lens", [([3, 5, 2], [3, 5, 2]), ([2, 4], [5, 3]), ([4, 1, 3], [6, 2, 7])])
def test_block_diagonal_masks(ref, q_lens, k_lens):
    q = torch.randn(1, sum(q_lens), H, K)
    k, v = torch.randn(1, sum(k_lens), 2, K), torch.randn(1, sum(k_lens), 2, K)
    k_rep, v_rep = k.repeat_interleave(2, dim=2), v.repeat_interleave(2, dim=2)  # xformers BMHK: same heads
    bias = ab.BlockDiagonalMask.from_seqlens(q_lens, k_lens)
    close(xops.memory_efficient_attention(q, k_rep, v_rep, attn_bias=bias), _blocks_ref(ref, q, k, v, q_lens, k_lens))
    close(xops.memory_efficient_attention(q, k_rep, v_rep, attn_bias=bias.make_causal()),
          _blocks_ref(ref, q, k, v, q_lens, k_lens, causal=True, align="top_left"))
    if all(lk >= lq for lq, lk in zip(q_lens, k_lens)):
        close(xops.memory_efficient_attention(q, k_rep, v_rep, attn_bias=bias.make_causal_from_bottomright()),
              _blocks_ref(ref, q, k, v, q_lens, k_lens, causal=True))
        close(xops.memory_efficient_attention(q, k_rep, v_rep, attn_bias=bias.make_local_attention_from_bottomright(2)),
              _blocks_ref(ref, q, k, v, q_lens, k_lens, causal=True, window=(1, 0)))
    else:
        with pytest.raises(ValueError, match="num_keys >= num_queries"):
            bias.make_causal_from_bottomright()
    if all(lq - 3 < lk for lq, lk in zip(q_lens, k_lens)):
        close(xops.memory_efficient_attention(q, k_rep, v_rep, attn_bias=bias.make_local_attention(3)),
              _blocks_ref(ref, q, k, v, q_lens, k_lens, causal=True, window=(2, 0), align="top_left"))


def test_block_diagonal_from_tensor_list_and_split(ref):
    xs = [torch.randn(1, 3, H, K), torch.randn(2, 5, H, K), torch.randn(1, 2, H, K)]
    bias, x = ab.BlockDiagonalMask.from_tensor_list(xs)
    assert x.shape == (1, 3 + 10 + 2, H, K) and bias.q_seqinfo.seqstart_py == [0, 3, 8, 13, 15]
    out = xops.memory_efficient_attention(x, x, x, attn_bias=bias.make_causal())
    parts = bias.split(out)
    assert [p.shape for p in parts] == [t.shape for t in xs]
    for t, p in zip(xs, parts):
        close(p, ref.attention(t, t, t, causal=True, align="top_left")[0])


def test_padded_keys_masks(ref):
    q_lens, kv_pad, k_lens = [1, 2, 1], 6, [4, 6, 2]
    q = torch.randn(1, sum(q_lens), H, K)
    k, v = torch.randn(1, kv_pad * 3, H, K), torch.randn(1, kv_pad * 3, H, K)
    starts = [0, 6, 12]
    bias = ab.BlockDiagonalCausalWithOffsetPaddedKeysMask.from_seqlens(q_lens, kv_pad, k_lens)
    close(xops.memory_efficient_attention(q, k, v, attn_bias=bias),
          _blocks_ref(ref, q, k, v, q_lens, k_lens, starts, causal=True))
    bias = ab.BlockDiagonalPaddedKeysMask.from_seqlens(q_lens, kv_pad, k_lens)
    close(xops.memory_efficient_attention(q, k, v, attn_bias=bias), _blocks_ref(ref, q, k, v, q_lens, k_lens, starts))
    bias = ab.BlockDiagonalCausalLocalAttentionPaddedKeysMask.from_seqlens_local(q_lens, kv_pad, k_lens, 3)
    close(xops.memory_efficient_attention(q, k, v, attn_bias=bias),
          _blocks_ref(ref, q, k, v, q_lens, k_lens, starts, causal=True, window=(2, 0)))


def test_materialize_matches_definitions(ref):
    def dense(pred, mq, mk):
        return torch.tensor([[0.0 if pred(i, j) else -math.inf for j in range(mk)] for i in range(mq)])

    for mq, mk in [(4, 6), (6, 4), (5, 5)]:
        torch.testing.assert_close(xops.LowerTriangularMask().materialize((mq, mk)),
                                   dense(lambda i, j: j <= i, mq, mk))
        torch.testing.assert_close(ab.LowerTriangularFromBottomRightMask().materialize((2, mq, mk)),
                                   dense(lambda i, j, mq=mq, mk=mk: j <= i + mk - mq, mq, mk).expand(2, mq, mk))
        torch.testing.assert_close(ab.LocalAttentionFromBottomRightMask(1, 2).materialize((mq, mk)),
                                   dense(lambda i, j, mq=mq, mk=mk: i + mk - mq - 1 <= j <= i + mk - mq + 2, mq, mk))
    bias = ab.BlockDiagonalMask.from_seqlens([2, 3], [3, 2]).make_causal()
    expected = dense(lambda i, j: (i < 2 and j < 3 and j <= i) or (i >= 2 and j >= 3 and j - 3 <= i - 2), 5, 5)
    torch.testing.assert_close(bias.materialize((5, 5)), expected)


@pytest.mark.parametrize("bias", [None, "causal", "block"])
def test_dropout_p(ref, bias):
    if bias == "block":
        q = torch.randn(1, 9, H, K)
        k, v = torch.randn(1, 9, H, K), torch.randn(1, 9, H, K)
        mask = ab.BlockDiagonalMask.from_seqlens([4, 5])
        expected = _blocks_ref(ref, q, k, v, [4, 5], [4, 5])
    else:
        q, k, v = bmhk(6, 8)
        mask = xops.LowerTriangularMask() if bias else None
        expected, _ = ref.attention(q, k, v, causal=bool(bias), align="top_left")
    close(xops.memory_efficient_attention(q, k, v, attn_bias=mask, p=0.0), expected)
    torch.manual_seed(7)
    a = xops.memory_efficient_attention(q, k, v, attn_bias=mask, p=0.3)
    torch.manual_seed(7)
    b = xops.memory_efficient_attention(q, k, v, attn_bias=mask, p=0.3)
    assert torch.equal(a, b)
    assert (a.double() - expected).abs().max() > 1e-3
    assert not torch.equal(a, xops.memory_efficient_attention(q, k, v, attn_bias=mask, p=0.3))


@pytest.mark.parametrize("bias", [None, "causal"])
def test_bmghk_gqa(ref, bias):
    g, hpg = 2, 3
    q = torch.randn(B, 6, g, hpg, K)
    k = torch.randn(B, 8, g, 1, K).expand(B, 8, g, hpg, K)
    v = torch.randn(B, 8, g, 1, K).expand(B, 8, g, hpg, K)
    mask = ab.LowerTriangularFromBottomRightMask() if bias else None
    out = xops.memory_efficient_attention(q, k, v, attn_bias=mask)
    assert out.shape == (B, 6, g, hpg, K)
    expected, _ = ref.attention(q.reshape(B, 6, g * hpg, K), k[:, :, :, 0], v[:, :, :, 0], causal=bool(bias))
    close(out, expected.view(B, 6, g, hpg, K))
    # a 5-D tensor bias (B, G, H, Mq, Mk) and a materialised (non-expanded) K/V give the same numbers
    tb = torch.randn(B, g, hpg, 6, 8)
    out_t = xops.memory_efficient_attention(q, k.contiguous(), v.contiguous(), attn_bias=tb)
    expected_t, _ = ref.attention(q.reshape(B, 6, g * hpg, K), k[:, :, :, 0], v[:, :, :, 0],
                                  bias=tb.reshape(B, g * hpg, 6, 8))
    close(out_t, expected_t.view(B, 6, g, hpg, K))


def test_bmk_three_dims_and_output_dtype(ref):
    q, k, v = torch.randn(B, 5, K), torch.randn(B, 7, K), torch.randn(B, 7, K)
    out = xops.memory_efficient_attention(q, k, v, attn_bias=torch.randn(B, 5, 7).clamp(max=0))
    assert out.shape == (B, 5, K)
    out = xops.memory_efficient_attention(q, k, v, output_dtype=torch.float64)
    assert out.dtype == torch.float64
    close(out, ref.attention(q[:, :, None], k[:, :, None], v[:, :, None])[0][:, :, 0])


def test_requires_grad_forward_backward_and_autograd(ref):
    q, k, v = bmhk(6, 9, dtype=torch.float64, grad=True)
    bias = ab.LowerTriangularFromBottomRightMask()
    out, lse = xops.memory_efficient_attention_forward_requires_grad(q, k, v, attn_bias=bias)
    expected, lse_ref = ref.attention(q, k, v, causal=True)
    close(out, expected)
    close(lse, lse_ref)
    g = torch.randn_like(out)
    grads_ref = torch.autograd.grad(expected, (q, k, v), g)
    grads = xops.memory_efficient_attention_backward(g, out, lse, q, k, v, attn_bias=bias)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)
    out2 = xops.memory_efficient_attention(q, k, v, attn_bias=bias)
    for a, b in zip(torch.autograd.grad(out2, (q, k, v), g), grads_ref):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)
    # gradient through a learned tensor bias and through a block-diagonal (packed) bias
    tb = torch.randn(1, H, 6, 9, dtype=torch.float64, requires_grad=True)
    o = xops.memory_efficient_attention(q, k, v, attn_bias=tb)
    e, _ = ref.attention(q, k, v, bias=tb)
    g2 = torch.randn_like(o)
    for a, b in zip(torch.autograd.grad(o, (q, tb), g2), torch.autograd.grad(e, (q, tb), g2)):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)
    qp = torch.randn(1, 7, H, K, dtype=torch.float64, requires_grad=True)
    blocks = ab.BlockDiagonalCausalMask.from_seqlens([3, 4])
    o = xops.memory_efficient_attention(qp, qp, qp, attn_bias=blocks)
    e = _blocks_ref(ref, qp, qp, qp, [3, 4], [3, 4], causal=True, align="top_left")
    g3 = torch.randn_like(o)
    torch.testing.assert_close(torch.autograd.grad(o, qp, g3)[0], torch.autograd.grad(e, qp, g3)[0],
                               atol=1e-10, rtol=1e-8)


def test_partial_and_merge_attentions(ref):
    q, k, v = bmhk(5, 10)
    full, _ = ref.attention(q, k, v)
    o1, l1 = fmha.memory_efficient_attention_partial(q, k[:, :4], v[:, :4])
    o2, l2 = fmha.memory_efficient_attention_partial(q, k[:, 4:], v[:, 4:])
    assert o1.dtype == torch.float32 and l1.shape == (B, H, 5)
    merged, lse = fmha.merge_attentions([o1, o2], [l1, l2])
    close(merged, full)
    close(lse, ref.attention(q, k, v)[1])
    # a chunk that no query can see (lse -inf) gets weight 0
    o3, l3 = fmha.memory_efficient_attention_partial(q, k[:, :3], v[:, :3], attn_bias=torch.full((5, 3), -math.inf))
    assert torch.isneginf(l3).all()
    close(fmha.merge_attentions([o1, o2, o3], [l1, l2, l3])[0], full)


def test_not_implemented_names_the_argument():
    with pytest.raises(NotImplementedError, match="attn_bias.*PagedBlockDiagonalPaddedKeysMask"):
        ab.PagedBlockDiagonalPaddedKeysMask.from_seqlens([1], 4, [2])
    with pytest.raises(NotImplementedError, match="attn_bias.*BlockDiagonalGappyKeysMask"):
        ab.BlockDiagonalGappyKeysMask()
    with pytest.raises(NotImplementedError, match="attn_bias.*make_paged"):
        ab.BlockDiagonalPaddedKeysMask.from_seqlens([1], 4, [2]).make_paged(torch.zeros(1, 1), 4, object)
    q = torch.randn(B, 4, H, K)
    kq = torch.zeros(B, 6, H, K // 4, dtype=torch.int32)
    with pytest.raises(NotImplementedError, match="key/value"):
        xops.memory_efficient_attention(q, kq, kq)
    with pytest.raises(NotImplementedError, match="dropout"):
        xops.memory_efficient_attention_forward_requires_grad(q, q, q, p=0.1)

    class Opaque(xops.AttentionBias):
        pass

    with pytest.raises(NotImplementedError, match="attn_bias: Opaque"):
        xops.memory_efficient_attention(q, q, q, attn_bias=Opaque())


def test_unknown_bias_subclass_is_materialized(ref, caplog):
    class EvenKeys(xops.AttentionBias):
        def materialize(self, shape, dtype=torch.float32, device="cpu"):
            keep = (torch.arange(shape[-1]) % 2 == 0).expand(shape[-2], -1)
            return torch.zeros(shape[-2:], dtype=dtype, device=device).masked_fill(~keep, -math.inf)

    q, k, v = bmhk(4, 6)
    fmha._noted_biases.clear()
    with caplog.at_level(logging.WARNING, logger="ascend_patch.shims"):
        out = xops.memory_efficient_attention(q, k, v, attn_bias=EvenKeys())
    close(out, ref.attention(q, k, v, allowed=lambda b, i, j: j % 2 == 0)[0])
    assert "EvenKeys" in caplog.text


def test_op_is_ignored_with_a_note(ref, caplog):
    q, k, v = bmhk(4, 4)
    fmha._noted_ops.clear()
    with caplog.at_level(logging.INFO, logger="ascend_patch.shims"):
        out = xops.memory_efficient_attention(q, k, v, op=xops.MemoryEfficientAttentionFlashAttentionOp)
    close(out, ref.attention(q, k, v)[0])
    assert "ignored" in caplog.text


def test_module_surface_unbind_swiglu():
    assert xformers.__version__ and xformers.__ascend_patch_shim__
    from ascend_patch.shims.xformers.ops import fmha as fm
    assert fm.attn_bias is ab and xops.fmha is fm
    assert xops.AttentionMask is xops.AttentionBias
    assert fm.flash.FwOp.NAME and fm.cutlass.BwOp.NAME
    x = torch.randn(3, 4, 5, requires_grad=True)
    parts = xops.unbind(x, 1)
    assert len(parts) == 4 and torch.equal(parts[2], x[:, 2])
    stacked = xops.stack_or_none(parts, 1)
    assert stacked is not None and torch.equal(stacked, x)
    assert xops.stack_or_none([torch.randn(2), torch.randn(2)], 0) is None
    sum(p.sum() for p in parts).backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    mod = xops.SwiGLU(8, 12, 6)
    assert set(dict(mod.named_parameters())) == {"w12.weight", "w12.bias", "w3.weight", "w3.bias"}
    inp = torch.randn(2, 8)
    w1, w2 = mod.w12.weight[:12], mod.w12.weight[12:]
    b1, b2 = mod.w12.bias[:12], mod.w12.bias[12:]
    expected = (torch.nn.functional.silu(inp @ w1.T + b1) * (inp @ w2.T + b2)) @ mod.w3.weight.T + mod.w3.bias
    torch.testing.assert_close(mod(inp), expected)
