"""On an NPU the shims run ``torch_npu.npu_fusion_attention``: the simulated op (which checks its
arguments as the real one does) against the same call on the CPU's SDPA path, over flash_attn's
feature grid; what the op cannot express stays on SDPA, and the migration log says which path ran."""

from __future__ import annotations

import itertools

import pytest
import torch

import ascend_patch


@pytest.fixture
def shims():
    with ascend_patch.patched("attention", device="sim"):
        from flash_attn import flash_attn_func, flash_attn_varlen_func
        from xformers import ops as xops

        yield flash_attn_func, flash_attn_varlen_func, xops
    ascend_patch.report(clear=True)


def _paths() -> list[str]:
    return [r.detail for r in ascend_patch.report().filter(patch="attention", action="call")
            if r.target == "attention on npu"]  # fmt: skip


def _randn(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=_randn.gen)


_randn.gen = torch.Generator().manual_seed(0)  # type: ignore[attr-defined]

DENSE_GRID = list(itertools.product(
    [(5, 5), (3, 9), (1, 6)],                      # (seqlen_q, seqlen_k): square, prefill on a cache, decoding
    [False, True],                                 # causal
    [(-1, -1), (4, 0), (2, 3), (-1, 2)],           # window_size
    [(4, 4), (4, 2), (6, 1)],                      # (heads_q, heads_kv): MHA, GQA, MQA
))  # fmt: skip


@pytest.mark.parametrize("lens, causal, window, heads", DENSE_GRID)
def test_dense_npu_path_matches_sdpa(shims, lens, causal, window, heads):
    flash_attn_func = shims[0]
    (sq, sk), (hq, hk) = lens, heads
    q, k, v = _randn(2, sq, hq, 16), _randn(2, sk, hk, 16), _randn(2, sk, hk, 8)
    expected = flash_attn_func(q, k, v, causal=causal, window_size=window, softmax_scale=0.3)
    got = flash_attn_func(q.npu(), k.npu(), v.npu(), causal=causal, window_size=window, softmax_scale=0.3)
    torch.testing.assert_close(got.cpu(), expected, rtol=1e-5, atol=1e-5)
    assert got.is_contiguous()  # as flash_attn's: callers view it (VAR: out.view(B, L, C))
    assert _paths()[-1].startswith("-> npu_fusion_attention(BSND")


@pytest.mark.parametrize("causal, window, heads", list(itertools.product(
    [False, True], [(-1, -1), (8, 0), (3, 2)], [(4, 4), (4, 2)],
)))  # fmt: skip
def test_varlen_npu_path_matches_sdpa(shims, causal, window, heads):
    flash_attn_varlen_func = shims[1]
    hq, hk = heads
    lens_q, lens_k = [5, 1, 9], [7, 4, 9]
    cu_q = torch.tensor([0, *torch.tensor(lens_q).cumsum(0).tolist()], dtype=torch.int32)
    cu_k = torch.tensor([0, *torch.tensor(lens_k).cumsum(0).tolist()], dtype=torch.int32)
    q, k, v = _randn(sum(lens_q), hq, 16), _randn(sum(lens_k), hk, 16), _randn(sum(lens_k), hk, 16)
    args = (max(lens_q), max(lens_k))
    expected = flash_attn_varlen_func(q, k, v, cu_q, cu_k, *args, causal=causal, window_size=window)
    got = flash_attn_varlen_func(q.npu(), k.npu(), v.npu(), cu_q.npu(), cu_k.npu(), *args, causal=causal,
                                 window_size=window)  # fmt: skip
    torch.testing.assert_close(got.cpu(), expected, rtol=1e-5, atol=1e-5)
    assert _paths()[-1].startswith("-> npu_fusion_attention(TND")


def test_top_left_causal_and_block_diagonal_masks(shims):
    xops = shims[2]
    q, k, v = _randn(1, 10, 2, 16), _randn(1, 10, 2, 16), _randn(1, 10, 2, 16)
    for bias in (xops.LowerTriangularMask(), xops.fmha.attn_bias.BlockDiagonalCausalMask.from_seqlens([4, 6])):
        expected = xops.memory_efficient_attention(q, k, v, attn_bias=bias)
        got = xops.memory_efficient_attention(q.npu(), k.npu(), v.npu(), attn_bias=bias)
        torch.testing.assert_close(got.cpu(), expected, rtol=1e-5, atol=1e-5)
    assert _paths() == ["-> npu_fusion_attention(BSND, sparse_mode=2)", "-> npu_fusion_attention(TND, sparse_mode=2)"]


def test_what_the_fused_op_cannot_express_stays_on_sdpa(shims):
    flash_attn_func = shims[0]
    q, k, v = _randn(1, 6, 2, 16), _randn(1, 4, 2, 16), _randn(1, 4, 2, 16)
    cases = {
        "softcap": dict(softcap=5.0),
        "alibi_slopes": dict(alibi_slopes=torch.tensor([0.5, 0.25])),
        "lse/probabilities": dict(return_attn_probs=True),
        "rows that see no key": dict(causal=True),  # 6 queries, 4 keys: the first rows see nothing
    }
    for reason, kwargs in cases.items():
        expected = flash_attn_func(q, k, v, **kwargs)
        npu_kwargs = {key: (value.npu() if isinstance(value, torch.Tensor) else value) for key, value in kwargs.items()}
        got = flash_attn_func(q.npu(), k.npu(), v.npu(), **npu_kwargs)
        first = (lambda x: x[0]) if kwargs.get("return_attn_probs") else (lambda x: x)
        torch.testing.assert_close(first(got).cpu(), first(expected), rtol=1e-5, atol=1e-5)
        assert _paths()[-1] == f"-> SDPA ({reason})", reason


def test_fused_path_backward_matches(shims):
    flash_attn_func = shims[0]
    q, k, v = (_randn(1, 6, 2, 16).requires_grad_() for _ in range(3))
    flash_attn_func(q, k, v, causal=True).square().sum().backward()
    expected = [t.grad.clone() for t in (q, k, v)]
    qn, kn, vn = (t.detach().npu().requires_grad_() for t in (q, k, v))
    flash_attn_func(qn, kn, vn, causal=True).square().sum().backward()
    for got, want in zip((qn.grad, kn.grad, vn.grad), expected):
        torch.testing.assert_close(got.cpu(), want, rtol=1e-5, atol=1e-5)


def test_packed_sequences_are_not_padded(monkeypatch):
    """flash_attn varlen: one mask-free SDPA call per distinct length, correct even with a low max_seqlen."""
    from ascend_patch.shims import sdpa

    seen = []
    real = sdpa.F.scaled_dot_product_attention

    def recording(q, k, v, attn_mask=None, **kwargs):
        seen.append((tuple(q.shape), attn_mask))
        return real(q, k, v, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(sdpa.F, "scaled_dot_product_attention", recording)
    lens = [3, 8, 3, 5]
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32)
    q, k, v = (_randn(sum(lens), 2, 16) for _ in range(3))
    out = sdpa.varlen_attention(q, k, v, cu, cu, 2, 2)  # max_seqlen under-estimated: only an upper bound matters
    assert sorted(shape[0] for shape, _ in seen) == [1, 1, 2] and all(mask is None for _, mask in seen)
    for start, end in zip(cu[:-1].tolist(), cu[1:].tolist()):
        one = real(*(t[start:end].transpose(0, 1)[None] for t in (q, k, v)))[0].transpose(0, 1)
        torch.testing.assert_close(out[start:end], one, rtol=1e-5, atol=1e-6)
    for bad in ([0, 5, 3, 19], [1, 3, 11, 19], [0, 3, 11, 40]):
        with pytest.raises(ValueError, match="cu_seqlens_q"):
            sdpa.varlen_attention(q, k, v, torch.tensor(bad), torch.tensor(bad), 8, 8)
