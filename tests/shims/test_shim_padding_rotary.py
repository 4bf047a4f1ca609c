"""flash_attn.bert_padding and flash_attn.layers.rotary shims."""

from __future__ import annotations

import math

import pytest
import torch

from ascend_patch.shims.flash_attn import bert_padding as bp
from ascend_patch.shims.flash_attn import flash_attn_varlen_func
from ascend_patch.shims.flash_attn.layers import rotary


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_unpad_pad_round_trip():
    x = torch.randn(3, 6, 4, 5)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0]])
    result = bp.unpad_input(x, mask)
    assert len(result) == 5  # flash-attn >= 2.7 returns (hidden, indices, cu_seqlens, max_seqlen, seqused)
    packed, indices, cu, max_len, used = result
    assert packed.shape == (10, 4, 5)
    assert indices.tolist() == [0, 1, 2, 6, 7, 8, 9, 10, 11, 12]
    assert cu.dtype == torch.int32 and cu.tolist() == [0, 3, 9, 10]
    assert max_len == 6 and isinstance(max_len, int)
    assert used.dtype == torch.int32 and used.tolist() == [3, 6, 1]
    torch.testing.assert_close(packed, x.reshape(18, 4, 5)[indices])
    back = bp.pad_input(packed, indices, 3, 6)
    torch.testing.assert_close(back, x * mask[:, :, None, None])


def test_unpad_input_unused_mask():
    x = torch.randn(2, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]])
    unused = torch.tensor([[0, 0, 1, 0], [0, 1, 1, 0]])
    _, indices, cu, max_len, used = bp.unpad_input(x, mask, unused)
    assert indices.tolist() == [0, 1, 2, 4, 5, 6] and cu.tolist() == [0, 3, 6]
    assert max_len == 3 and used.tolist() == [2, 1]


def test_unpad_input_for_concatenated_sequences():
    x = torch.randn(3, 6, 2)
    lengths = torch.tensor([[2, 3, 0, 0, 0, 0], [3, 2, 0, 0, 0, 0], [6, 0, 0, 0, 0, 0]])
    packed, indices, cu, max_len = bp.unpad_input_for_concatenated_sequences(x, lengths)
    assert cu.tolist() == [0, 2, 5, 8, 10, 16] and max_len == 6
    assert indices.tolist() == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 17]
    torch.testing.assert_close(packed, x.reshape(18, 2)[indices])


def test_index_functions_gradients():
    x = torch.randn(7, 3, 2, dtype=torch.float64, requires_grad=True)
    idx = torch.tensor([5, 0, 3])
    assert torch.autograd.gradcheck(lambda t: bp.index_first_axis(t, idx), (x,))
    vals = torch.randn(3, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: bp.index_put_first_axis(t, idx, 7), (vals,))
    out, residual = bp.index_first_axis_residual(x, idx)
    assert torch.equal(out, x.detach()[idx]) and torch.equal(residual, x.detach())
    (out.sum() + (residual * 2).sum()).backward()
    expected = torch.full_like(x, 2.0)
    expected[idx] += 1
    torch.testing.assert_close(x.grad, expected)


def test_padding_helpers_drive_varlen_like_transformers(ref):
    # The transformers flash path: unpad q/k/v with the padding mask, varlen attention, pad back.
    x = torch.randn(2, 7, 4, 16)
    mask = torch.tensor([[1] * 5 + [0] * 2, [1] * 7])
    packed, indices, cu, max_len, _ = bp.unpad_input(x, mask)
    out = bp.pad_input(flash_attn_varlen_func(packed, packed, packed, cu, cu, max_len, max_len, causal=True),
                       indices, 2, 7)
    for b, n in enumerate([5, 7]):
        expected, _ = ref.attention(x[b:b + 1, :n], x[b:b + 1, :n], x[b:b + 1, :n], causal=True)
        torch.testing.assert_close(out[b:b + 1, :n].double(), expected, atol=1e-5, rtol=0)
        assert (out[b, n:] == 0).all()


# ----------------------------------------------------------------------------- rotary


def _cos_sin(seqlen, rot_dim, dtype=torch.float32):
    angle = torch.rand(seqlen, rot_dim // 2, dtype=torch.float64) * 2 * math.pi
    return angle.cos().to(dtype), angle.sin().to(dtype)


@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("offsets", [0, 3, "tensor"])
@pytest.mark.parametrize("rot_dim", [8, 16])
def test_apply_rotary_emb(ref, interleaved, offsets, rot_dim):
    x = torch.randn(2, 5, 3, 16)
    cos, sin = _cos_sin(12, rot_dim)
    off = torch.tensor([1, 6]) if offsets == "tensor" else offsets
    out = rotary.apply_rotary_emb(x, cos, sin, interleaved=interleaved, seqlen_offsets=off)
    pos = torch.arange(5)[None].expand(2, 5) + (off[:, None] if isinstance(off, torch.Tensor) else off)
    torch.testing.assert_close(out.double(), ref.rotate(x, cos, sin, pos, interleaved), atol=1e-6, rtol=0)


def test_apply_rotary_emb_varlen_and_out_of_range(ref):
    x = torch.randn(9, 2, 8)
    cu = torch.tensor([0, 4, 9], dtype=torch.int32)
    cos, sin = _cos_sin(6, 8)
    out = rotary.apply_rotary_emb(x, cos, sin, seqlen_offsets=torch.tensor([0, 2]), cu_seqlens=cu, max_seqlen=5)
    pos = torch.tensor([0, 1, 2, 3, 2, 3, 4, 5, 6])  # position 6 is past cos: left unrotated
    torch.testing.assert_close(out.double(), ref.rotate(x[None], cos, sin, pos[None], False)[0], atol=1e-6, rtol=0)


def test_rotary_gradient_and_inplace_variants():
    cos, sin = _cos_sin(8, 8, torch.float64)
    x = torch.randn(2, 4, 3, 10, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: rotary.apply_rotary_emb(t, cos, sin, interleaved=True,
                                                                      seqlen_offsets=2), (x,))
    qkv = torch.randn(2, 4, 3, 3, 10, dtype=torch.float64)
    expected = qkv.clone()
    expected[:, :, 0] = rotary.apply_rotary_emb(qkv[:, :, 0], cos, sin)
    expected[:, :, 1] = rotary.apply_rotary_emb(qkv[:, :, 1], cos, sin)
    result = rotary.apply_rotary_emb_qkv_(qkv, cos, sin)
    assert result is qkv and torch.equal(qkv, expected)
    kv = torch.randn(2, 4, 2, 3, 10, dtype=torch.float64)
    exp_kv = kv.clone()
    exp_kv[:, :, 0] = rotary.apply_rotary_emb(kv[:, :, 0], cos, sin)
    assert torch.equal(rotary.apply_rotary_emb_kv_(kv, cos, sin), exp_kv)
    # in place on a non-leaf keeps autograd right
    base = torch.randn(2, 4, 3, 10, dtype=torch.float64, requires_grad=True)
    y = base * 1.0
    rotary.apply_rotary_emb(y, cos, sin, inplace=True)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    base2 = base.detach().clone().requires_grad_(True)
    (rotary.apply_rotary_emb(base2, cos, sin) * g).sum().backward()
    torch.testing.assert_close(base.grad, base2.grad)


def test_rotary_embedding_module_and_torch_reference(ref):
    module = rotary.RotaryEmbedding(8, base=10000.0)
    qkv = torch.randn(2, 5, 3, 2, 8)
    pos = torch.arange(5)[None].expand(2, 5) + 2
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, 8, 2, dtype=torch.float64) / 8))
    angles = torch.outer(torch.arange(7, dtype=torch.float64), inv_freq)
    expected_q = ref.rotate(qkv[:, :, 0], angles.cos(), angles.sin(), pos, False)
    expected_k = ref.rotate(qkv[:, :, 1], angles.cos(), angles.sin(), pos, False)
    expected_v = qkv[:, :, 2].clone()
    module(qkv, seqlen_offset=2)
    torch.testing.assert_close(qkv[:, :, 0].double(), expected_q, atol=1e-5, rtol=0)
    torch.testing.assert_close(qkv[:, :, 1].double(), expected_k, atol=1e-5, rtol=0)
    assert torch.equal(qkv[:, :, 2], expected_v)
    x = torch.randn(2, 5, 3, 8)
    cos, sin = _cos_sin(5, 8)
    for inter in (False, True):
        torch.testing.assert_close(rotary.apply_rotary_emb_torch(x, cos, sin, inter),
                                   rotary.apply_rotary_emb(x, cos, sin, inter), atol=1e-6, rtol=0)
