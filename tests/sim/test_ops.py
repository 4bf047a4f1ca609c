"""The simulated torch_npu's ops: GELU numerics and npu_fusion_attention against explicit references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ascend_patch.sim import numerics


@pytest.fixture(scope="module")
def torch_npu(sim_npu):
    import torch_npu

    return torch_npu


@pytest.fixture
def tanh_gelu(monkeypatch):
    """GELU as on an NPU without TORCH_NPU_USE_COMPATIBLE_IMPL (the variable is read once per process)."""
    monkeypatch.delenv(numerics.COMPATIBLE_IMPL_ENV, raising=False)
    monkeypatch.setattr(numerics, "_compatible_impl", None)


# --- GELU ------------------------------------------------------------------------------------


def test_plain_gelu_on_npu_is_the_tanh_form_whatever_approximate_says(torch_npu, tanh_gelu):
    x = torch.linspace(-6, 6, 2001)
    erf, tanh = F.gelu(x), F.gelu(x, approximate="tanh")
    assert (erf - tanh).abs().max() > 1e-4  # the two forms do differ
    for approximate in ("none", "tanh"):
        assert torch.equal(F.gelu(x.npu(), approximate=approximate).cpu(), tanh)
        assert torch.equal(torch.nn.GELU(approximate=approximate)(x.npu()).cpu(), tanh)
    # gradients follow the same kernel (aclnnGeluBackward)
    leaf = x.npu().requires_grad_()
    F.gelu(leaf).sum().backward()
    ref = x.clone().requires_grad_()
    F.gelu(ref, approximate="tanh").sum().backward()
    assert torch.equal(leaf.grad.cpu(), ref.grad)


def test_compatible_impl_makes_plain_gelu_exact(torch_npu, monkeypatch):
    monkeypatch.setenv(numerics.COMPATIBLE_IMPL_ENV, "1")
    monkeypatch.setattr(numerics, "_compatible_impl", None)
    x = torch.linspace(-6, 6, 2001)
    assert torch.equal(F.gelu(x.npu()).cpu(), F.gelu(x))
    monkeypatch.setenv(numerics.COMPATIBLE_IMPL_ENV, "0")  # read once: later changes do nothing
    assert torch.equal(F.gelu(x.npu()).cpu(), F.gelu(x))


def test_npu_gelu_is_exact_erf_and_differentiable(torch_npu, tanh_gelu):
    x = torch.linspace(-6, 6, 2001)
    assert torch.equal(torch_npu.npu_gelu(x.npu()).cpu(), F.gelu(x))
    assert torch.equal(torch_npu.npu_gelu(x.npu(), approximate="none").cpu(), F.gelu(x))
    assert torch.equal(torch_npu.npu_gelu(x.npu(), approximate="tanh").cpu(), F.gelu(x, approximate="tanh"))
    leaf = x.npu().requires_grad_()
    out = torch_npu.npu_gelu(leaf)
    assert str(out.device) == "npu:0"
    out.sum().backward()
    ref = x.clone().requires_grad_()
    F.gelu(ref).sum().backward()
    assert torch.equal(leaf.grad.cpu(), ref.grad)
    with pytest.raises(RuntimeError, match="none or tanh"):
        torch_npu.npu_gelu(x.npu(), approximate="quick")
    with pytest.raises(RuntimeError, match="must be an npu tensor"):
        torch_npu.npu_gelu(x)


# --- npu_fusion_attention ----------------------------------------------------------------------

B, N, N_KV, SQ, SKV, D = 2, 4, 2, 5, 7, 8
SCALE = D**-0.5


def masked_positions(kind: str, sq: int, skv: int, mask: torch.Tensor | None) -> torch.Tensor | None:
    """True = masked out. Causal masks written out index by index, independently of the simulator."""
    if kind == "none":
        return None
    if kind == "mask":
        return mask
    i = torch.arange(sq).unsqueeze(1)
    j = torch.arange(skv).unsqueeze(0)
    offset = 0 if kind == "top_left" else skv - sq
    return j > i + offset


def reference_bnsd(q, k, v, masked, scale=SCALE, pse=None):
    """softmax(scale * (pse + Q K^T)) V, heads of K/V shared by groups of query heads (GQA)."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    scores = q @ k.transpose(-1, -2)
    if pse is not None:
        scores = scores + pse
    scores = scores * scale
    if masked is not None:
        scores = scores.masked_fill(masked, float("-inf"))
    return scores.softmax(-1) @ v


def to_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    b, n, s, d = t.shape
    return {
        "BNSD": t,
        "BSND": t.transpose(1, 2),
        "BSH": t.transpose(1, 2).reshape(b, s, n * d),
        "SBH": t.permute(2, 0, 1, 3).reshape(s, b, n * d),
    }[layout].contiguous()


CASES = [("none", 0), ("mask", 0), ("mask", 1), ("top_left", 2), ("bottom_right", 3)]


@pytest.mark.parametrize("layout", ["BSH", "SBH", "BSND", "BNSD"])
@pytest.mark.parametrize(("kind", "sparse_mode"), CASES)
def test_fusion_attention_matches_softmax_reference(torch_npu, layout, kind, sparse_mode):
    torch.manual_seed(0)
    q, k, v = torch.randn(B, N, SQ, D), torch.randn(B, N_KV, SKV, D), torch.randn(B, N_KV, SKV, D)
    user_mask = torch.rand(B, 1, SQ, SKV) > 0.6
    user_mask[..., 0] = False  # no fully masked rows
    expected = reference_bnsd(q, k, v, masked_positions(kind, SQ, SKV, user_mask))
    # sparse modes 2/3 take the compressed 2048x2048 triu mask, as transformers passes it
    atten_mask = {"none": None, "mask": user_mask}.get(kind, torch.ones(2048, 2048).triu(1).bool())
    out = torch_npu.npu_fusion_attention(
        to_layout(q, layout).npu(), to_layout(k, layout).npu(), to_layout(v, layout).npu(), N, layout,
        atten_mask=None if atten_mask is None else atten_mask.npu(), scale=SCALE, sparse_mode=sparse_mode,
    )  # fmt: skip
    assert isinstance(out, tuple) and len(out) == 7
    assert str(out[0].device) == "npu:0" and out[0].shape == to_layout(q, layout).shape
    torch.testing.assert_close(out[0].cpu(), to_layout(expected, layout), rtol=1e-5, atol=1e-5)
    assert out[1].shape == (B, N, SQ, 8) and out[1].dtype == torch.float32
    assert out[2].shape == (B, N, SQ, 8) and out[4:] == (0, 0, 0)


@pytest.mark.parametrize(("kind", "sparse_mode"), CASES)
def test_fusion_attention_tnd_matches_per_sequence_reference(torch_npu, kind, sparse_mode):
    torch.manual_seed(1)
    q_lens, kv_lens = [2, 3, 4], [3, 3, 6]
    max_mask = torch.rand(max(q_lens), max(kv_lens)) > 0.6
    max_mask[:, 0] = False
    queries, keys, values, expected = [], [], [], []
    for sq, skv in zip(q_lens, kv_lens):
        q, k, v = torch.randn(1, N, sq, D), torch.randn(1, N_KV, skv, D), torch.randn(1, N_KV, skv, D)
        masked = masked_positions(kind, sq, skv, max_mask[:sq, :skv])
        expected.append(reference_bnsd(q, k, v, masked)[0].transpose(0, 1))
        queries.append(q[0].transpose(0, 1))
        keys.append(k[0].transpose(0, 1))
        values.append(v[0].transpose(0, 1))
    atten_mask = {"none": None, "mask": max_mask}.get(kind, torch.ones(2048, 2048).triu(1).bool())
    out = torch_npu.npu_fusion_attention(
        torch.cat(queries).npu(), torch.cat(keys).npu(), torch.cat(values).npu(), N, "TND",
        atten_mask=None if atten_mask is None else atten_mask.npu(), scale=SCALE, sparse_mode=sparse_mode,
        actual_seq_qlen=[2, 5, 9], actual_seq_kvlen=[3, 6, 12],
    )  # fmt: skip
    torch.testing.assert_close(out[0].cpu(), torch.cat(expected), rtol=1e-5, atol=1e-5)
    assert out[1].shape == (9, N, 8)


def test_fusion_attention_semantics(torch_npu):
    torch.manual_seed(2)
    q, k, v = (torch.randn(1, 2, 4, 8) for _ in range(3))
    qn, kn, vn = q.npu(), k.npu(), v.npu()
    # scale defaults to 1.0, not 1/sqrt(d)
    default = torch_npu.npu_fusion_attention(qn, kn, vn, 2, "BNSD")[0]
    torch.testing.assert_close(default.cpu(), reference_bnsd(q, k, v, None, scale=1.0), rtol=1e-5, atol=1e-5)
    # atten_mask=None: the causal sparse modes compute the full matrix (op docs)
    full = torch_npu.npu_fusion_attention(qn, kn, vn, 2, "BNSD", scale=SCALE, sparse_mode=3)[0]
    torch.testing.assert_close(full.cpu(), reference_bnsd(q, k, v, None), rtol=1e-5, atol=1e-5)
    # pse is added before scaling: softmax(scale * (pse + QK^T))
    pse = torch.randn(1, 2, 4, 4)
    with_pse = torch_npu.npu_fusion_attention(qn, kn, vn, 2, "BNSD", pse=pse.npu(), scale=SCALE)[0]
    torch.testing.assert_close(with_pse.cpu(), reference_bnsd(q, k, v, None, pse=pse), rtol=1e-5, atol=1e-5)
    # keep_prob < 1 is dropout with probability 1 - keep_prob, reproducible under manual_seed
    torch.manual_seed(3)
    drop1 = torch_npu.npu_fusion_attention(qn, kn, vn, 2, "BNSD", keep_prob=0.5)
    torch.manual_seed(3)
    drop2 = torch_npu.npu_fusion_attention(qn, kn, vn, 2, "BNSD", keep_prob=0.5)
    assert torch.equal(drop1[0].cpu(), drop2[0].cpu()) and not torch.equal(drop1[0].cpu(), default.cpu())
    assert drop1[6] == 1 * 2 * 4 * 4
    # fp16 in, fp16 out
    half = torch_npu.npu_fusion_attention(qn.half(), kn.half(), vn.half(), 2, "BNSD", scale=SCALE)[0]
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float().cpu(), reference_bnsd(q, k, v, None), rtol=2e-3, atol=2e-3)
    for bad, message in (
        (lambda: torch_npu.npu_fusion_attention(q, k, v, 2, "BNSD"), "must be an npu tensor"),
        (lambda: torch_npu.npu_fusion_attention(qn, kn, vn, 2, "NSD"), "input_layout should be BSH/SBH/BNSD/BSND/TND"),
        (lambda: torch_npu.npu_fusion_attention(qn, kn, vn, 2, "TND"), "actual_seq_qlen"),
        (lambda: torch_npu.npu_fusion_attention(qn, kn, vn, 2, "BNSD", keep_prob=0.0), "keep_prob"),
    ):
        with pytest.raises(RuntimeError, match=message):
            bad()
    # the full table of rejected calls and of sparse modes 4-8 is in test_fusion_attention.py


def test_fusion_attention_gradients_match_reference(torch_npu):
    torch.manual_seed(4)
    q, k, v = (torch.randn(1, 3, 2, 8, requires_grad=True) for _ in range(3))  # BSND
    qn, kn, vn = (t.detach().npu().requires_grad_() for t in (q, k, v))
    mask = torch.ones(2048, 2048).triu(1).bool().npu()
    torch_npu.npu_fusion_attention(qn, kn, vn, 2, "BSND", atten_mask=mask, scale=SCALE, sparse_mode=2)[
        0
    ].sum().backward()
    causal = masked_positions("top_left", 3, 3, None)
    reference_bnsd(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal).sum().backward()
    for ours, ref in ((qn, q), (kn, k), (vn, v)):
        torch.testing.assert_close(ours.grad.cpu(), ref.grad, rtol=1e-5, atol=1e-5)


def test_transformers_npu_flash_attention_runs_on_the_simulator(torch_npu):
    from transformers.integrations import npu_flash_attention

    torch.manual_seed(5)
    q, k, v = (torch.randn(2, 6, 4, 8) for _ in range(3))  # BSND, as flash_attn takes them
    out = npu_flash_attention.npu_flash_attn_func(q.npu(), k.npu(), v.npu(), causal=True)
    expected = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
    torch.testing.assert_close(out.cpu(), expected.transpose(1, 2), rtol=1e-5, atol=1e-5)
