"""The flash_attn shim against the float64 reference (tests/shims/conftest.py)."""

from __future__ import annotations

import inspect
import math

import pytest
import torch

from ascend_patch.shims import flash_attn as fa
from ascend_patch.shims.flash_attn import flash_attn_interface as fai

ATOL = 1e-5
B, D = 2, 16


def rand(*shape, dtype=torch.float32, grad=False):
    return torch.randn(*shape, dtype=dtype).requires_grad_(grad)


def qkv(sq, sk, hq=4, hk=4, dtype=torch.float32, grad=False, dv=D):
    return rand(B, sq, hq, D, dtype=dtype, grad=grad), rand(B, sk, hk, D, dtype=dtype, grad=grad), \
        rand(B, sk, hk, dv, dtype=dtype, grad=grad)


def close(a, b, atol=ATOL):
    assert a.shape == b.shape, (a.shape, b.shape)
    torch.testing.assert_close(a.double(), b.double(), atol=atol, rtol=0)


SHAPES = [(8, 8), (5, 11), (11, 5), (1, 9)]
HEADS = [(4, 4), (4, 2), (4, 1)]  # MHA, GQA, MQA


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("sq,sk", SHAPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("hq,hk", HEADS)
def test_flash_attn_func_matches_reference(ref, sq, sk, causal, hq, hk):
    q, k, v = qkv(sq, sk, hq, hk)
    out = fa.flash_attn_func(q, k, v, causal=causal)
    expected, _ = ref.attention(q, k, v, causal=causal)
    assert out.is_contiguous() and out.dtype == q.dtype
    close(out, expected)


def kernel_window(window, causal, sk):
    """flash_api.cpp (mha_fwd, set_params_fprop): sides >= seqlen_k -> -1; causal -> right 0; a left-only
    window gets right = seqlen_k (finite, so it bites when seqlen_q > seqlen_k + 1)."""
    left, right = window
    left = -1 if left < 0 or left >= sk else left
    right = -1 if right < 0 or right >= sk else right
    if causal:
        right = 0
    if left >= 0 and right < 0:
        right = sk
    return left, right


@pytest.mark.parametrize("sq,sk", [(8, 8), (5, 11), (11, 5)])
@pytest.mark.parametrize("window", [(2, 0), (0, 3), (3, 3), (-1, 2), (4, -1), (1, 1), (20, 1)])
@pytest.mark.parametrize("causal", [False, True])
def test_window_size(ref, sq, sk, window, causal):
    q, k, v = qkv(sq, sk, 4, 2)
    out = fa.flash_attn_func(q, k, v, causal=causal, window_size=window)
    expected, _ = ref.attention(q, k, v, causal=causal, window=kernel_window(window, causal, sk))
    close(out, expected)


def test_left_only_window_follows_the_kernel_when_q_is_much_longer():
    # window (4, -1), seqlen_q 11 > seqlen_k 5 + 1: the kernel's right bound is seqlen_k, not infinity,
    # so query 0 sees no key (j <= 0 + 5 - 11 + 5 = -1) and outputs 0; query 1 sees key 0 only.
    q, k, v = qkv(11, 5)
    out = fa.flash_attn_func(q, k, v, window_size=(4, -1))
    assert (out[:, 0] == 0).all()
    torch.testing.assert_close(out[:, 1], v[:, 0], atol=1e-6, rtol=0)


@pytest.mark.parametrize("sq,sk", [(8, 8), (5, 11), (11, 5)])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("per_batch", [False, True])
def test_alibi_slopes(ref, sq, sk, causal, per_batch):
    q, k, v = qkv(sq, sk, 4, 2)
    slopes = torch.rand(B, 4) * 0.5 if per_batch else torch.rand(4) * 0.5
    out = fa.flash_attn_func(q, k, v, causal=causal, alibi_slopes=slopes)
    expected, _ = ref.attention(q, k, v, causal=causal, alibi=slopes)
    close(out, expected)


@pytest.mark.parametrize("kw", [
    {}, {"causal": True}, {"window_size": (2, 1)}, {"causal": True, "alibi": True}, {"softmax_scale": 0.3},
])
@pytest.mark.parametrize("sq,sk", [(8, 8), (4, 9), (9, 4)])
def test_softcap(ref, kw, sq, sk):
    q, k, v = qkv(sq, sk, 4, 1)
    q = q * 4  # large logits so the cap matters
    slopes = torch.rand(4) if kw.pop("alibi", False) else None
    out = fa.flash_attn_func(q, k, v, softcap=2.5, alibi_slopes=slopes, **kw)
    expected, _ = ref.attention(q, k, v, softcap=2.5, alibi=slopes, causal=kw.get("causal", False),
                                window=kw.get("window_size", (-1, -1)), scale=kw.get("softmax_scale"))
    close(out, expected)
    plain, _ = ref.attention(q, k, v, alibi=slopes, causal=kw.get("causal", False),
                             window=kw.get("window_size", (-1, -1)), scale=kw.get("softmax_scale"))
    assert (out.double() - plain).abs().max() > 1e-3  # softcap really changed the numbers


@pytest.mark.parametrize("scale", [0.1, 1.0])
@pytest.mark.parametrize("causal", [False, True])
def test_softmax_scale(ref, scale, causal):
    q, k, v = qkv(6, 10)
    close(fa.flash_attn_func(q, k, v, softmax_scale=scale, causal=causal),
          ref.attention(q, k, v, scale=scale, causal=causal)[0])


def test_head_dim_of_value_may_differ(ref):
    q, k, v = qkv(6, 7, dv=8)
    close(fa.flash_attn_func(q, k, v, causal=True), ref.attention(q, k, v, causal=True)[0])


def test_fully_masked_rows_output_zero_not_nan():
    # q_len > k_len, bottom-right causal: the first sq - sk queries see no key at all.
    q, k, v = qkv(7, 3)
    out, lse, _ = fa.flash_attn_func(q, k, v, causal=True, return_attn_probs=True)
    assert torch.isfinite(out).all()
    assert (out[:, :4] == 0).all() and (out[:, 4:].abs() > 0).any()
    assert torch.isinf(lse[:, :, :4]).all() and (lse[:, :, :4] > 0).all()
    # same through the SDPA path (no return_attn_probs) and with a window that leaves rows empty
    assert (fa.flash_attn_func(q, k, v, causal=True)[:, :4] == 0).all()
    out_w = fa.flash_attn_func(q, k, v, window_size=(0, 0))
    assert torch.isfinite(out_w).all() and (out_w[:, :4] == 0).all()


@pytest.mark.parametrize("sq,sk", [(8, 8), (5, 11), (11, 5)])
@pytest.mark.parametrize("causal", [False, True])
def test_return_attn_probs_lse(ref, sq, sk, causal):
    q, k, v = qkv(sq, sk, 4, 2)
    out, lse, s_dmask = fa.flash_attn_func(q, k, v, causal=causal, return_attn_probs=True)
    expected, lse_ref = ref.attention(q, k, v, causal=causal)
    close(out, expected)
    assert lse.dtype == torch.float32 and lse.shape == (B, 4, sq)
    finite = torch.isfinite(lse_ref)
    assert torch.equal(torch.isfinite(lse), finite)
    close(lse[finite], lse_ref[finite])
    assert s_dmask.numel() == 0  # upstream returns an empty S_dmask when dropout_p == 0


@pytest.mark.parametrize("causal,window", [(True, (-1, -1)), (False, (-1, 0)), (False, (-1, -1)), (True, (2, 0))])
def test_alibi_lse_as_the_kernel_returns_it(ref, causal, window):
    # Pure causal + ALiBi: the kernel adds +slope * j (alibi.h), so its lse exceeds the -slope*|i+sk-sq-j|
    # one by slope * (i + sk - sq); probabilities and outputs are the same.
    q, k, v = qkv(5, 8, 4, 2)
    slopes = torch.rand(B, 4)
    out, lse, _ = fa.flash_attn_func(q, k, v, causal=causal, window_size=window, alibi_slopes=slopes,
                                     return_attn_probs=True)
    expected, lse_ref = ref.attention(q, k, v, causal=causal, window=window, alibi=slopes)
    close(out, expected)
    if not causal and window == (-1, -1) or window[0] >= 0:
        close(lse, lse_ref)
    else:
        close(lse, lse_ref + slopes[:, :, None].double() * (torch.arange(5) + 3).double())


def test_dropout_zero_equals_reference_and_positive_is_seeded(ref):
    q, k, v = qkv(6, 9, 4, 2)
    close(fa.flash_attn_func(q, k, v, dropout_p=0.0, causal=True), ref.attention(q, k, v, causal=True)[0])
    torch.manual_seed(123)
    a = fa.flash_attn_func(q, k, v, dropout_p=0.3, causal=True)
    torch.manual_seed(123)
    b = fa.flash_attn_func(q, k, v, dropout_p=0.3, causal=True)
    c = fa.flash_attn_func(q, k, v, dropout_p=0.3, causal=True)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert (a.double() - ref.attention(q, k, v, causal=True)[0]).abs().max() > 1e-3


def test_dropout_is_unbiased(ref):
    # 2048 copies of one problem in a batch: each copy draws its own dropout mask; the mean is the reference.
    q, k, v = (t[:1].expand(2048, *t.shape[1:]).contiguous() for t in qkv(4, 6, 2, 2))
    out = fa.flash_attn_func(q, k, v, dropout_p=0.25)
    expected, _ = ref.attention(q[:1], k[:1], v[:1])
    torch.testing.assert_close(out.double().mean(0, keepdim=True), expected, atol=0.06, rtol=0)


def test_dropout_s_dmask_encodes_the_mask(ref):
    q, k, v = qkv(5, 8, 2, 2)
    p = 0.4
    out, lse, s = fa.flash_attn_func(q, k, v, dropout_p=p, causal=True, return_attn_probs=True)
    assert s.shape == (B, 2, 5, 8)
    probs = s.abs()
    _, lse_ref = ref.attention(q, k, v, causal=True)
    close(lse, lse_ref)
    kept = torch.where(s > 0, s, torch.zeros_like(s)) / (1 - p)
    rebuilt = torch.einsum("bhqk,bkhd->bqhd", kept.double(), v.double())
    close(out, rebuilt)
    close(probs.sum(-1), torch.ones(B, 2, 5))  # the magnitudes are the softmax probabilities
    dropped = (s < 0).sum().item() / (s != 0).sum().item()
    assert 0.2 < dropped < 0.6


@pytest.mark.parametrize("causal", [False, True])
def test_qkvpacked_and_kvpacked(ref, causal):
    q, k, v = qkv(7, 7)
    expected, _ = ref.attention(q, k, v, causal=causal)
    close(fa.flash_attn_qkvpacked_func(torch.stack([q, k, v], dim=2), causal=causal), expected)
    q2, k2, v2 = qkv(5, 9, 4, 2)
    close(fa.flash_attn_kvpacked_func(q2, torch.stack([k2, v2], dim=2), causal=causal),
          ref.attention(q2, k2, v2, causal=causal)[0])


def _pack(lens, h, dim=D, grad=False, dtype=torch.float32):
    x = torch.randn(sum(lens), h, dim, dtype=dtype).requires_grad_(grad)
    cu = torch.tensor([0] + list(torch.tensor(lens).cumsum(0)), dtype=torch.int32)
    return x, cu


VARLEN_LENS = [([3, 7, 1, 5], [3, 7, 1, 5]), ([2, 6, 4], [5, 3, 9]), ([4, 1], [0, 6])]


@pytest.mark.parametrize("q_lens,k_lens", VARLEN_LENS)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("hq,hk", [(4, 4), (4, 2)])
def test_varlen_matches_per_sequence_reference(ref, q_lens, k_lens, causal, hq, hk):
    q, cu_q = _pack(q_lens, hq)
    k, cu_k = _pack(k_lens, hk)
    v, _ = _pack(k_lens, hk)
    out, lse, _ = fa.flash_attn_varlen_func(q, k, v, cu_q, cu_k, max(q_lens), max(k_lens), causal=causal,
                                            return_attn_probs=True)
    expected, lse_ref = ref.varlen(q, k, v, q_lens, k_lens, causal=causal)
    close(out, expected)
    assert lse.shape == (hq, sum(q_lens))  # upstream's varlen lse layout
    finite = torch.isfinite(lse_ref)
    assert torch.equal(torch.isfinite(lse), finite)
    close(lse[finite], lse_ref[finite])
    # and the plain (SDPA) path
    close(fa.flash_attn_varlen_func(q, k, v, cu_q, cu_k, max(q_lens), max(k_lens), causal=causal), expected)


@pytest.mark.parametrize("kw", [{"window_size": (2, 1)}, {"softcap": 3.0, "causal": True},
                                {"alibi": True, "causal": True}, {"softmax_scale": 0.25}])
def test_varlen_options(ref, kw):
    q_lens, k_lens = [3, 8, 5], [6, 8, 2]
    q, cu_q = _pack(q_lens, 4)
    k, cu_k = _pack(k_lens, 2)
    v, _ = _pack(k_lens, 2)
    slopes = torch.rand(3, 4) if kw.pop("alibi", False) else None
    out = fa.flash_attn_varlen_func(q, k, v, cu_q, cu_k, 8, 8, alibi_slopes=slopes, **kw)
    expected, _ = ref.varlen(q, k, v, q_lens, k_lens, causal=kw.get("causal", False), alibi=slopes,
                             window=kw.get("window_size", (-1, -1)), softcap=kw.get("softcap", 0.0),
                             scale=kw.get("softmax_scale"))
    close(out, expected)


def test_varlen_and_kvcache_alibi_causal_lse(ref):
    q_lens, k_lens = [3, 5], [6, 5]
    q, cu_q = _pack(q_lens, 4)
    k, cu_k = _pack(k_lens, 2)
    v, _ = _pack(k_lens, 2)
    slopes = torch.rand(2, 4)
    out, lse, _ = fa.flash_attn_varlen_func(q, k, v, cu_q, cu_k, 5, 6, causal=True, alibi_slopes=slopes,
                                            return_attn_probs=True)
    expected, lse_ref = ref.varlen(q, k, v, q_lens, k_lens, causal=True, alibi=slopes)
    close(out, expected)
    pos = torch.cat([torch.arange(3) + 3, torch.arange(5) + 0]).double()
    per_token = torch.cat([slopes[0:1].expand(3, 4), slopes[1:2].expand(5, 4)]).t().double()
    close(lse, lse_ref + per_token * pos)

    k_cache, v_cache = torch.randn(B, 10, 2, D), torch.randn(B, 10, 2, D)
    qc = torch.randn(B, 2, 4, D)
    seqlens = torch.tensor([4, 7], dtype=torch.int32)
    out, lse = fa.flash_attn_with_kvcache(qc, k_cache, v_cache, cache_seqlens=seqlens, causal=True,
                                          alibi_slopes=slopes, return_softmax_lse=True)
    expected, lse_ref = _cache_ref(ref, qc, k_cache, v_cache, seqlens, causal=True, alibi=slopes)
    close(out, expected)
    shift = torch.stack([torch.arange(2) + int(n) - 2 for n in seqlens]).double()
    close(lse, lse_ref + slopes.double()[:, :, None] * shift[:, None, :])


@pytest.mark.parametrize("causal", [False, True])
def test_varlen_packed_variants(ref, causal):
    lens = [4, 9, 2]
    qkv_p, cu = _pack(lens, 3 * 4)
    qkv_p = qkv_p.view(-1, 3, 4, D)
    q, k, v = qkv_p.unbind(1)
    expected, _ = ref.varlen(q, k, v, lens, lens, causal=causal)
    close(fa.flash_attn_varlen_qkvpacked_func(qkv_p, cu, max(lens), causal=causal), expected)
    k_lens = [7, 3, 5]
    kv, cu_k = _pack(k_lens, 2 * 2)
    kv = kv.view(-1, 2, 2, D)
    q2, cu_q = _pack(lens, 4)
    out = fa.flash_attn_varlen_kvpacked_func(q2, kv, cu_q, cu_k, max(lens), max(k_lens), causal=causal)
    close(out, ref.varlen(q2, kv[:, 0], kv[:, 1], lens, k_lens, causal=causal)[0])


def test_varlen_paged_block_table(ref):
    page, n_blocks = 4, 12
    k_lens, q_lens = [9, 3, 12], [2, 3, 1]
    k_cache = torch.randn(n_blocks, page, 2, D)
    v_cache = torch.randn(n_blocks, page, 2, D)
    block_table = torch.randperm(n_blocks, dtype=torch.int32).view(3, 4)[:, :3].contiguous()
    q, cu_q = _pack(q_lens, 4)
    cu_k = torch.tensor([0, 9, 12, 24], dtype=torch.int32)
    out = fa.flash_attn_varlen_func(q, k_cache, v_cache, cu_q, cu_k, 3, 12, causal=True, block_table=block_table)
    # reference: gather each sequence's pages by hand
    ks, vs = [], []
    for b, n in enumerate(k_lens):
        pages = [int(p) for p in block_table[b]]
        ks.append(torch.cat([k_cache[p] for p in pages])[:n])
        vs.append(torch.cat([v_cache[p] for p in pages])[:n])
    expected, _ = ref.varlen(q, torch.cat(ks), torch.cat(vs), q_lens, k_lens, causal=True)
    close(out, expected)


# ----------------------------------------------------------------------------- kv cache


def _cache_ref(ref, q, k_cache_after, v_cache_after, seqlens_k, leftpad=None, batch_idx=None, **kw):
    outs, lses = [], []
    for b in range(q.shape[0]):
        row = b if batch_idx is None else int(batch_idx[b])
        start = 0 if leftpad is None else int(leftpad[b])
        end = int(seqlens_k[b])
        kw_b = dict(kw)
        if kw_b.get("alibi") is not None and kw_b["alibi"].dim() == 2:
            kw_b["alibi"] = kw_b["alibi"][b]
        o, l = ref.attention(q[b:b + 1], k_cache_after[row:row + 1, start:end], v_cache_after[row:row + 1, start:end],
                             **kw_b)
        outs.append(o)
        lses.append(l)
    return torch.cat(outs), torch.cat(lses)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("hq,hk", [(4, 4), (4, 1)])
@pytest.mark.parametrize("new_kv", [False, True])
def test_kvcache_update_and_attend(ref, causal, hq, hk, new_kv):
    cache_len, sq = 16, 3
    k_cache, v_cache = torch.randn(B, cache_len, hk, D), torch.randn(B, cache_len, hk, D)
    before_k, before_v = k_cache.clone(), v_cache.clone()
    cache_seqlens = torch.tensor([5, 9], dtype=torch.int32)
    q = torch.randn(B, sq, hq, D)
    k_new = torch.randn(B, sq, hk, D) if new_kv else None
    v_new = torch.randn(B, sq, hk, D) if new_kv else None
    out, lse = fa.flash_attn_with_kvcache(q, k_cache, v_cache, k_new, v_new, cache_seqlens=cache_seqlens,
                                          causal=causal, return_softmax_lse=True)
    exp_k, exp_v = before_k.clone(), before_v.clone()
    if new_kv:
        for b in range(B):
            s = int(cache_seqlens[b])
            exp_k[b, s:s + sq] = k_new[b]
            exp_v[b, s:s + sq] = v_new[b]
    assert torch.equal(k_cache, exp_k) and torch.equal(v_cache, exp_v)  # updated in place, nothing else touched
    seqlens_k = cache_seqlens + (sq if new_kv else 0)
    expected, lse_ref = _cache_ref(ref, q, exp_k, exp_v, seqlens_k, causal=causal)
    close(out, expected)
    close(lse, lse_ref)


def test_kvcache_int_seqlens_batch_idx_leftpad_window_alibi(ref):
    cache_len, sq = 14, 2
    k_cache, v_cache = torch.randn(4, cache_len, 2, D), torch.randn(4, cache_len, 2, D)
    batch_idx = torch.tensor([3, 1], dtype=torch.int32)
    leftpad = torch.tensor([2, 0], dtype=torch.int32)
    q = torch.randn(B, sq, 4, D)
    k_new, v_new = torch.randn(B, 1, 2, D), torch.randn(B, 1, 2, D)
    slopes = torch.rand(B, 4)
    out = fa.flash_attn_with_kvcache(q, k_cache, v_cache, k_new, v_new, cache_seqlens=6, cache_batch_idx=batch_idx,
                                     cache_leftpad=leftpad, causal=True, window_size=(3, 0), alibi_slopes=slopes)
    assert torch.equal(k_cache[3, 6], k_new[0, 0]) and torch.equal(v_cache[1, 6], v_new[1, 0])
    seqlens_k = torch.tensor([7, 7])
    expected, _ = _cache_ref(ref, q, k_cache, v_cache, seqlens_k, leftpad=leftpad, batch_idx=batch_idx,
                             causal=True, window=(3, 0), alibi=slopes)
    close(out, expected)


def test_kvcache_without_seqlens_uses_whole_cache(ref):
    q, k_cache, v_cache = torch.randn(B, 1, 4, D), torch.randn(B, 10, 2, D), torch.randn(B, 10, 2, D)
    close(fa.flash_attn_with_kvcache(q, k_cache, v_cache, causal=True), ref.attention(q, k_cache, v_cache)[0])


@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("causal", [False, True])
def test_kvcache_rotary(ref, interleaved, causal):
    cache_len, sq, rot = 12, 2, 8
    k_cache, v_cache = torch.randn(B, cache_len, 2, D), torch.randn(B, cache_len, 2, D)
    cache_seqlens = torch.tensor([3, 7], dtype=torch.int32)
    angle = torch.rand(cache_len, rot // 2) * 2 * math.pi
    cos, sin = angle.cos(), angle.sin()
    q = torch.randn(B, sq, 4, D)
    k_new, v_new = torch.randn(B, sq, 2, D), torch.randn(B, sq, 2, D)
    before_k, before_v = k_cache.clone(), v_cache.clone()
    out = fa.flash_attn_with_kvcache(q, k_cache, v_cache, k_new, v_new, rotary_cos=cos, rotary_sin=sin,
                                     cache_seqlens=cache_seqlens, causal=causal, rotary_interleaved=interleaved)
    pos = cache_seqlens[:, None].long() + torch.arange(sq)[None]
    k_rot = ref.rotate(k_new, cos, sin, pos, interleaved)
    # causal/local: q at its own positions; otherwise every query token at position cache_seqlens
    q_pos = pos if causal else cache_seqlens[:, None].long().expand(B, sq)
    q_rot = ref.rotate(q, cos, sin, q_pos, interleaved)
    exp_k, exp_v = before_k.clone().double(), before_v.clone().double()
    for b in range(B):
        s = int(cache_seqlens[b])
        exp_k[b, s:s + sq] = k_rot[b]
        exp_v[b, s:s + sq] = v_new[b].double()
    close(k_cache, exp_k)
    close(v_cache, exp_v)
    expected, _ = _cache_ref(ref, q_rot, exp_k, exp_v, cache_seqlens + sq, causal=causal)
    close(out, expected)


def test_kvcache_paged(ref):
    page, n_blocks = 4, 10
    k_cache, v_cache = torch.randn(n_blocks, page, 2, D), torch.randn(n_blocks, page, 2, D)
    block_table = torch.tensor([[7, 2, 5], [0, 9, 4]], dtype=torch.int32)
    cache_seqlens = torch.tensor([5, 10], dtype=torch.int32)
    q, k_new, v_new = torch.randn(B, 2, 4, D), torch.randn(B, 2, 2, D), torch.randn(B, 2, 2, D)
    out = fa.flash_attn_with_kvcache(q, k_cache, v_cache, k_new, v_new, cache_seqlens=cache_seqlens,
                                     block_table=block_table, causal=True)
    logical_k = torch.stack([torch.cat([k_cache[int(p)] for p in row]) for row in block_table])
    logical_v = torch.stack([torch.cat([v_cache[int(p)] for p in row]) for row in block_table])
    for b in range(B):
        s = int(cache_seqlens[b])
        assert torch.equal(logical_k[b, s:s + 2], k_new[b]) and torch.equal(logical_v[b, s:s + 2], v_new[b])
    expected, _ = _cache_ref(ref, q, logical_k, logical_v, cache_seqlens + 2, causal=True)
    close(out, expected)


def test_kvcache_argument_errors():
    q, kc, vc = torch.randn(B, 1, 4, D), torch.randn(B, 8, 4, D), torch.randn(B, 8, 4, D)
    with pytest.raises(ValueError, match="seqlens_k"):
        fa.flash_attn_with_kvcache(q, kc, vc, torch.randn(B, 1, 4, D), torch.randn(B, 1, 4, D))
    with pytest.raises(ValueError, match="cache_batch_idx"):
        fa.flash_attn_with_kvcache(q, kc, vc, cache_seqlens=1, block_table=torch.zeros(B, 1, dtype=torch.int32),
                                   cache_batch_idx=torch.zeros(B, dtype=torch.int32))


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("sq,sk,causal,window", [(7, 4, True, (-1, -1)), (5, 9, True, (2, 0)), (6, 6, False, (1, 2))])
def test_gradients_match_reference(ref, sq, sk, causal, window):
    q, k, v = qkv(sq, sk, 4, 2, dtype=torch.float64, grad=True)
    out = fa.flash_attn_func(q, k, v, causal=causal, window_size=window)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), g)
    expected, _ = ref.attention(q, k, v, causal=causal, window=window)
    grads_ref = torch.autograd.grad(expected, (q, k, v), g)
    for a, b in zip(grads, grads_ref):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)


def test_gradients_softcap_alibi_and_varlen(ref):
    q, k, v = qkv(5, 7, 4, 1, dtype=torch.float64, grad=True)
    slopes = torch.rand(4, dtype=torch.float64)
    out = fa.flash_attn_func(q, k, v, causal=True, softcap=2.0, alibi_slopes=slopes)
    expected, _ = ref.attention(q, k, v, causal=True, softcap=2.0, alibi=slopes)
    g = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, (q, k, v), g), torch.autograd.grad(expected, (q, k, v), g)):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)

    q_lens, k_lens = [3, 6, 2], [5, 4, 6]
    qp, cu_q = _pack(q_lens, 4, grad=True, dtype=torch.float64)
    kp, cu_k = _pack(k_lens, 2, grad=True, dtype=torch.float64)
    vp, _ = _pack(k_lens, 2, grad=True, dtype=torch.float64)
    out = fa.flash_attn_varlen_func(qp, kp, vp, cu_q, cu_k, 6, 6, causal=True)
    expected, _ = ref.varlen(qp, kp, vp, q_lens, k_lens, causal=True)
    g = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, (qp, kp, vp), g), torch.autograd.grad(expected, (qp, kp, vp), g)):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)


def test_low_level_forward_backward(ref):
    q, k, v = qkv(5, 8, 4, 2, dtype=torch.float64)
    out, lse, _s_dmask, _rng = fai._flash_attn_forward(q, k, v, 0.0, D ** -0.5, True, -1, -1, 0.0, None, False)
    expected, lse_ref = ref.attention(q, k, v, causal=True)
    close(out, expected)
    close(lse, lse_ref)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    dout = torch.randn_like(out)
    fai._flash_attn_backward(dout, q, k, v, out, lse, dq, dk, dv, 0.0, D ** -0.5, True, -1, -1, 0.0, None, False)
    qr, kr, vr = (t.clone().requires_grad_(True) for t in (q, k, v))
    grads = torch.autograd.grad(ref.attention(qr, kr, vr, causal=True)[0], (qr, kr, vr), dout)
    for a, b in zip((dq, dk, dv), grads):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)
    with pytest.raises(NotImplementedError, match="dropout_p"):
        fai._flash_attn_backward(dout, q, k, v, out, lse, dq, dk, dv, 0.1, D ** -0.5, True, -1, -1, 0.0, None,
                                 False)


# ----------------------------------------------------------------------------- dispatch to SDPA


def test_hot_paths_reach_sdpa_without_needless_masks(sdpa_calls):
    q, k, v = qkv(8, 8, 4, 2)
    fa.flash_attn_func(q, k, v)
    assert sdpa_calls[-1]["attn_mask"] is None and not sdpa_calls[-1]["is_causal"]
    assert sdpa_calls[-1].get("enable_gqa") is True  # GQA without repeating k/v
    fa.flash_attn_func(q, k, v, causal=True)  # q_len == k_len: SDPA's own causal mask
    assert sdpa_calls[-1]["attn_mask"] is None and sdpa_calls[-1]["is_causal"]
    q1 = torch.randn(B, 1, 4, D)
    fa.flash_attn_func(q1, k, v, causal=True)  # decoding step: bottom-right causal is vacuous
    assert sdpa_calls[-1]["attn_mask"] is None and not sdpa_calls[-1]["is_causal"]
    q3 = torch.randn(B, 3, 4, D)
    fa.flash_attn_func(q3, k, v, causal=True)  # chunked prefill: bottom-right boolean mask
    mask = sdpa_calls[-1]["attn_mask"]
    assert mask.dtype == torch.bool and mask.dim() == 4 and not sdpa_calls[-1]["is_causal"]
    n = len(sdpa_calls)
    fa.flash_attn_func(q, k, v, softcap=5.0)  # softcap needs the explicit math path
    assert len(sdpa_calls) == n


# ----------------------------------------------------------------------------- module surface

UPSTREAM_SIGNATURES = {
    "flash_attn_func": "q k v dropout_p softmax_scale causal window_size softcap alibi_slopes deterministic "
                       "return_attn_probs",
    "flash_attn_qkvpacked_func": "qkv dropout_p softmax_scale causal window_size softcap alibi_slopes "
                                 "deterministic return_attn_probs",
    "flash_attn_kvpacked_func": "q kv dropout_p softmax_scale causal window_size softcap alibi_slopes "
                                "deterministic return_attn_probs",
    "flash_attn_varlen_func": "q k v cu_seqlens_q cu_seqlens_k max_seqlen_q max_seqlen_k dropout_p softmax_scale "
                              "causal window_size softcap alibi_slopes deterministic return_attn_probs block_table",
    "flash_attn_varlen_qkvpacked_func": "qkv cu_seqlens max_seqlen dropout_p softmax_scale causal window_size "
                                        "softcap alibi_slopes deterministic return_attn_probs",
    "flash_attn_varlen_kvpacked_func": "q kv cu_seqlens_q cu_seqlens_k max_seqlen_q max_seqlen_k dropout_p "
                                       "softmax_scale causal window_size softcap alibi_slopes deterministic "
                                       "return_attn_probs",
    "flash_attn_with_kvcache": "q k_cache v_cache k v rotary_cos rotary_sin cache_seqlens cache_batch_idx "
                               "cache_leftpad block_table softmax_scale causal window_size softcap "
                               "rotary_interleaved alibi_slopes num_splits return_softmax_lse",
}


@pytest.mark.parametrize("name", sorted(UPSTREAM_SIGNATURES))
def test_signatures_match_upstream(name):
    params = inspect.signature(getattr(fa, name)).parameters
    assert list(params) == UPSTREAM_SIGNATURES[name].split()
    defaults = {n: p.default for n, p in params.items() if p.default is not inspect.Parameter.empty}
    assert defaults.get("dropout_p", 0.0) == 0.0 and defaults["causal"] is False
    assert tuple(defaults["window_size"]) == (-1, -1) and defaults["softcap"] == 0.0
    if name == "flash_attn_with_kvcache":
        assert defaults["rotary_interleaved"] is True and defaults["num_splits"] == 0


def test_version_and_markers():
    import importlib
    import pkgutil

    from packaging.version import Version

    from ascend_patch import shims
    from ascend_patch.shims import xformers

    assert Version("2.7.0") <= Version(fa.__version__) < Version("3")
    assert Version(xformers.__version__) >= Version("0.0.20")
    names = [shims.__name__] + [m.name for m in pkgutil.walk_packages(shims.__path__, prefix="ascend_patch.shims.")]
    assert len(names) > 10
    for name in names:
        assert getattr(importlib.import_module(name), "__ascend_patch_shim__", False) is True, name
