"""The shared core ascend_patch.shims.sdpa.attention, directly."""

from __future__ import annotations

import pytest
import torch

from ascend_patch.shims import sdpa
from ascend_patch.shims.flash_attn import flash_attn_func
from ascend_patch.shims.flash_attn.layers import rotary

B, H, D = 2, 4, 16


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def close(a, b, atol=1e-5):
    torch.testing.assert_close(a.double(), b.double(), atol=atol, rtol=0)


@pytest.mark.parametrize("sq,sk", [(6, 6), (4, 9), (9, 4)])
def test_top_left_alignment_and_boolean_mask(ref, sq, sk):
    q, k, v = torch.randn(B, sq, H, D), torch.randn(B, sk, 2, D), torch.randn(B, sk, 2, D)
    close(sdpa.attention(q, k, v, causal=True, causal_alignment="top_left"),
          ref.attention(q, k, v, causal=True, align="top_left")[0])
    keep = torch.rand(B, 1, sq, sk) > 0.4
    keep[0, 0, 0] = False  # a row with no key at all -> 0
    out = sdpa.attention(q, k, v, attn_bias=keep, causal=True)
    expected, _ = ref.attention(q, k, v, allowed=lambda b, i, j: bool(keep[b, 0, i, j]) and j <= i + sk - sq)
    close(out, expected)
    assert (out[0, 0] == 0).all()


def test_per_batch_lengths_and_leftpad(ref):
    q, k, v = torch.randn(B, 5, H, D), torch.randn(B, 9, H, D), torch.randn(B, 9, H, D)
    seqlens_q, seqlens_k, leftpad = torch.tensor([5, 3]), torch.tensor([9, 6]), torch.tensor([2, 0])
    out = sdpa.attention(q, k, v, causal=True, seqlens_q=seqlens_q, seqlens_k=seqlens_k, key_leftpad=leftpad)
    for b in range(B):
        sq_b, sk_b, lp = int(seqlens_q[b]), int(seqlens_k[b]), int(leftpad[b])
        expected, _ = ref.attention(q[b:b + 1, :sq_b], k[b:b + 1, lp:sk_b], v[b:b + 1, lp:sk_b], causal=True)
        close(out[b:b + 1, :sq_b], expected)
        assert (out[b, sq_b:] == 0).all()  # padded query rows


def test_bf16_paths_stay_close(ref):
    q, k, v = (torch.randn(B, 7, H, D).bfloat16() for _ in range(3))
    slopes = torch.rand(H)
    cases = [({"causal": True}, {"causal": True}),
             ({"causal": True, "softcap": 3.0, "alibi_slopes": slopes}, {"causal": True, "softcap": 3.0, "alibi": slopes})]
    for kw, rkw in cases:
        out = flash_attn_func(q, k, v, **kw)
        assert out.dtype == torch.bfloat16
        close(out, ref.attention(q, k, v, **rkw)[0], atol=3e-2)


def test_argument_errors_name_the_problem():
    q = torch.randn(B, 4, H, D)
    with pytest.raises(ValueError, match="must divide"):
        sdpa.attention(q, torch.randn(B, 4, 3, D), torch.randn(B, 4, 3, D))
    with pytest.raises(ValueError, match="alibi_slopes"):
        sdpa.attention(q, q, q, alibi_slopes=torch.rand(3))
    with pytest.raises(ValueError, match="causal_alignment"):
        sdpa.attention(q, q, q, causal=True, causal_alignment="middle")
    with pytest.raises(ValueError, match="dropout"):
        sdpa.attention(q, q, q, dropout_p=1.0)


def test_empty_keys():
    q = torch.randn(B, 3, H, D)
    empty = torch.randn(B, 0, H, D)
    out, lse, _ = flash_attn_func(q, empty, empty, return_attn_probs=True)
    assert out.shape == q.shape and (out == 0).all() and torch.isinf(lse).all()


def test_rotary_xpos_scales_queries_and_keys_oppositely():
    module = rotary.RotaryEmbedding(8, scale_base=64.0)
    q = torch.randn(1, 6, 2, 8)
    kv = torch.randn(1, 6, 2, 2, 8)
    q_out, kv_out = module(q.clone(), kv.clone())
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, 8, 2, dtype=torch.float32) / 8))
    angles = torch.outer(torch.arange(6, dtype=torch.float32), inv_freq)
    scale = (torch.arange(0, 8, 2, dtype=torch.float32) + 0.4 * 8) / (1.4 * 8)
    xpos = scale[None, :] ** ((torch.arange(6, dtype=torch.float32) - 3) / 64.0)[:, None]
    torch.testing.assert_close(q_out, rotary.apply_rotary_emb_torch(q, angles.cos() * xpos, angles.sin() * xpos))
    torch.testing.assert_close(kv_out[:, :, 0], rotary.apply_rotary_emb_torch(kv[:, :, 0], angles.cos() / xpos,
                                                                              angles.sin() / xpos))
    assert torch.equal(kv_out[:, :, 1], kv[:, :, 1])


SIM_SCRIPT = r"""
import torch
from ascend_patch import sim
sim.install()
from ascend_patch.shims.flash_attn import flash_attn_func, flash_attn_varlen_func, flash_attn_with_kvcache
from ascend_patch.shims.xformers.ops import fmha, memory_efficient_attention
torch.manual_seed(0)
q, k, v = torch.randn(2, 5, 4, 16), torch.randn(2, 9, 2, 16), torch.randn(2, 9, 2, 16)
cu_q, cu_k = torch.tensor([0, 2, 5], dtype=torch.int32), torch.tensor([0, 4, 9], dtype=torch.int32)
seqlens = torch.tensor([3, 7], dtype=torch.int32)
x = torch.randn(1, 5, 4, 16)
calls = [
    (flash_attn_func, (q, k, v), dict(causal=True)),
    (flash_attn_func, (q, k, v), dict(causal=True, softcap=3.0, alibi_slopes=torch.rand(4))),
    (flash_attn_varlen_func, (q[0], k[0], v[0], cu_q, cu_k, 3, 5), dict(causal=True)),
    (flash_attn_with_kvcache, (q[:, :1], k, v), dict(cache_seqlens=seqlens, causal=True)),
    (memory_efficient_attention, (x, x, x), dict(attn_bias=fmha.BlockDiagonalCausalMask.from_seqlens([2, 3]))),
]
npu = lambda t: t.to("npu") if isinstance(t, torch.Tensor) else t
for fn, args, kw in calls:
    cpu_out = fn(*args, **kw)
    npu_out = fn(*map(npu, args), **{n: npu(t) for n, t in kw.items()})
    assert npu_out.device.type == "npu", npu_out.device
    torch.testing.assert_close(npu_out.cpu(), cpu_out, atol=1e-5, rtol=0)
print("ok")
"""


def test_shims_run_on_the_simulated_npu():
    # ascend_patch.sim (an "npu" device backed by CPU memory) cannot be uninstalled: use a subprocess.
    import subprocess
    import sys

    pytest.importorskip("ascend_patch.sim")
    proc = subprocess.run([sys.executable, "-c", SIM_SCRIPT], check=False, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]
