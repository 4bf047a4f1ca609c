"""Issue "Attention on the NPU's own kernels", item 3: gaps between the shims and upstream.

Each test compares with an explicit reference (the float64 loops of tests/shims/conftest.py, or
torch.autograd through them) on the CPU and on the simulated NPU (``target``). Coverage:

* xformers ``output_dtype=torch.float32`` on bf16/fp16 inputs is computed in fp32, so partial
  attention merged with ``merge_attentions`` matches an fp32 reference (no bf16 rounding step);
* ``flash_attn_with_kvcache`` raises ``ValueError`` when ``cache_seqlens`` (+ new tokens) passes the
  cache length or the block table's capacity, also when appending to a full cache (was: silently
  fewer keys, or an IndexError), and leaves the cache untouched;
* in-place rotary (``apply_rotary_emb(inplace=True)``, ``apply_rotary_emb_qkv_``, ``_kv_``) on a leaf
  that requires grad works as upstream (flash-attention ``tests/test_rotary.py``);
* zero keys give zero outputs and zero gradients, connected to the graph (dense, lse, xformers, varlen);
* the private ``_flash_attn_varlen_forward`` / ``_backward`` ops and the six ``FlashAttn*Func``
  autograd classes, with flash-attention 2.8.3's argument order, outputs and backward buffers.
"""

from __future__ import annotations

import inspect

import pytest
import torch
from conftest import device_of

from ascend_patch.shims.flash_attn import flash_attn_func, flash_attn_varlen_func, flash_attn_with_kvcache
from ascend_patch.shims.flash_attn import flash_attn_interface as fai
from ascend_patch.shims.flash_attn.layers import rotary
from ascend_patch.shims.xformers.ops import fmha

B, H, D = 2, 4, 16


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def close(actual: torch.Tensor, expected: torch.Tensor, atol: float) -> None:
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    torch.testing.assert_close(actual.detach().cpu().double(), expected.detach().cpu().double(), atol=atol, rtol=0)


def leaves(*tensors: torch.Tensor, device: str) -> list[torch.Tensor]:
    return [t.detach().to(device).requires_grad_(True) for t in tensors]


def ref_leaves(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.detach().cpu().double().requires_grad_(True) for t in tensors]


def assert_grads(out, inputs, expected, ref_inputs, g: torch.Tensor, atol: float = 1e-4) -> None:
    got = torch.autograd.grad(out, inputs, g.to(device=out.device, dtype=out.dtype))
    want = torch.autograd.grad(expected, ref_inputs, g.double())
    for name, a, b in zip("qkv", got, want):
        assert a.device == out.device, name
        close(a, b, atol)


# ----------------------------------------------------------------------------- 1. xformers output_dtype


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("causal", [False, True])
def test_xformers_fp32_output_dtype_is_computed_in_fp32(ref, target, dtype, causal):
    device = device_of(target)
    q, k, v = (torch.randn(B, m, H, D, dtype=dtype) for m in (5, 9, 9))
    bias = fmha.attn_bias.LowerTriangularMask() if causal else None
    out = fmha.memory_efficient_attention(q.to(device), k.to(device), v.to(device), attn_bias=bias,
                                          output_dtype=torch.float32)
    assert out.dtype == torch.float32 and out.device.type == device
    # The reference sees the same (exactly representable) bf16/fp16 values: only fp32 arithmetic is
    # left, ~1e-7 here, where a bf16 (fp16) result is off by ~2e-3 (~2e-4).
    expected, _ = ref.attention(q, k, v, causal=causal, align="top_left")
    close(out, expected, atol=1e-5)


def test_xformers_partial_bf16_chunks_merge_to_the_fp32_reference(ref, target):
    device = device_of(target)
    q = torch.randn(B, 4, H, D, dtype=torch.bfloat16)
    k, v = torch.randn(B, 13, H, D, dtype=torch.bfloat16), torch.randn(B, 13, H, D, dtype=torch.bfloat16)
    qd, kd, vd = q.to(device), k.to(device), v.to(device)
    chunks = [fmha.memory_efficient_attention_partial(qd, kd[:, a:b], vd[:, a:b]) for a, b in ((0, 5), (5, 13))]
    assert all(o.dtype == torch.float32 for o, _ in chunks)  # upstream's default for the partial API
    merged, lse = fmha.merge_attentions([o for o, _ in chunks], [lse for _, lse in chunks],
                                        output_dtype=torch.float32)
    expected, lse_ref = ref.attention(q, k, v)
    close(merged, expected, atol=1e-5)
    close(lse, lse_ref, atol=1e-5)


# ----------------------------------------------------------------------------- 2. KV-cache capacity


def _cache(device: str, paged: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """8 positions per sequence: a contiguous (B, 8, ...) cache, or 4 pages of 2 per sequence (shuffled)."""
    if not paged:
        return torch.randn(B, 8, H, D).to(device), torch.randn(B, 8, H, D).to(device), None
    table = torch.randperm(10)[:8].view(B, 4).to(torch.int32)
    return torch.randn(10, 2, H, D).to(device), torch.randn(10, 2, H, D).to(device), table.to(device)


@pytest.mark.parametrize("paged", [False, True], ids=["contiguous", "paged"])
@pytest.mark.parametrize("case", ["lengths_past_the_cache", "append_to_a_full_cache", "int_append_past_the_end"])
def test_kvcache_capacity_overflow_raises_and_leaves_the_cache_alone(ref, target, paged, case):
    device = device_of(target)
    k_cache, v_cache, table = _cache(device, paged)
    before = k_cache.cpu().clone(), v_cache.cpu().clone()
    q = torch.randn(B, 1, H, D)
    new = {}
    if case == "lengths_past_the_cache":
        seqlens, match = torch.tensor([3, 9], dtype=torch.int32).to(device), "exceeds"
    else:
        seqlens = torch.tensor([8, 2], dtype=torch.int32).to(device) if case == "append_to_a_full_cache" else 8
        new, match = {"k": torch.randn(B, 1, H, D).to(device), "v": torch.randn(B, 1, H, D).to(device)}, "full"
    with pytest.raises(ValueError, match=match) as err:
        flash_attn_with_kvcache(q.to(device), k_cache, v_cache, cache_seqlens=seqlens, block_table=table,
                                causal=True, **new)
    assert ("block table" in str(err.value)) == paged
    assert torch.equal(k_cache.cpu(), before[0]) and torch.equal(v_cache.cpu(), before[1])

    # the boundary: appending the token that fills the last position is fine and sees every key
    k_new, v_new = torch.randn(B, 1, H, D), torch.randn(B, 1, H, D)
    out = flash_attn_with_kvcache(q.to(device), k_cache, v_cache, k_new.to(device), v_new.to(device),
                                  cache_seqlens=torch.tensor([7, 4], dtype=torch.int32).to(device),
                                  block_table=table, causal=True)
    if paged:
        rows = table.long().cpu()
        logical_k, logical_v = k_cache.cpu()[rows].flatten(1, 2), v_cache.cpu()[rows].flatten(1, 2)
    else:
        logical_k, logical_v = k_cache.cpu(), v_cache.cpu()
    assert torch.equal(logical_k[0, 7], k_new[0, 0])  # the last position was written
    for b, used in enumerate((8, 5)):
        expected, _ = ref.attention(q[b:b + 1], logical_k[b:b + 1, :used], logical_v[b:b + 1, :used], causal=True)
        close(out[b:b + 1], expected, atol=1e-5)


# ----------------------------------------------------------------------------- 3. in-place rotary on a leaf


def _cos_sin(seqlen: int, rotary_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    angle = torch.rand(seqlen, rotary_dim // 2) * 6.2832
    return angle.cos(), angle.sin()


@pytest.mark.parametrize("variant", ["apply_rotary_emb", "qkv_", "qkv_gqa", "kv_"])
def test_inplace_rotary_on_a_leaf_that_requires_grad(ref, target, variant):
    # upstream test_rotary.py: x = torch.randn(..., requires_grad=True); out = fn(x, inplace); out.backward(g)
    device = device_of(target)
    cos, sin = _cos_sin(6, 8)
    shape = {"apply_rotary_emb": (B, 6, 3, 12), "qkv_": (B, 6, 3, 3, 12), "qkv_gqa": (B, 6, 4 + 2 * 2, 12),
             "kv_": (B, 6, 2, 3, 12)}[variant]
    x0 = torch.randn(*shape)
    x = x0.clone().to(device).requires_grad_(True)
    cos_d, sin_d = cos.to(device), sin.to(device)
    if variant == "apply_rotary_emb":
        out = rotary.apply_rotary_emb(x, cos_d, sin_d, inplace=True, seqlen_offsets=0)
    elif variant == "qkv_":
        out = rotary.apply_rotary_emb_qkv_(x, cos_d, sin_d)
    elif variant == "qkv_gqa":
        out = rotary.apply_rotary_emb_qkv_(x, cos_d, sin_d, num_heads_q=4)
    else:
        out = rotary.apply_rotary_emb_kv_(x, cos_d, sin_d)

    # reference: rotate the Q/K parts in float64 (conftest loops), autograd for the gradient
    xr = x0.double().requires_grad_(True)
    pos = torch.arange(6)[None].expand(B, 6)
    if variant == "apply_rotary_emb":
        expected = ref.rotate(xr, cos, sin, pos, False)
    elif variant == "qkv_":
        expected = torch.stack([ref.rotate(xr[:, :, 0], cos, sin, pos, False),
                                ref.rotate(xr[:, :, 1], cos, sin, pos, False), xr[:, :, 2]], dim=2)
    elif variant == "qkv_gqa":
        expected = torch.cat([ref.rotate(xr[:, :, :4], cos, sin, pos, False),
                              ref.rotate(xr[:, :, 4:6], cos, sin, pos, False), xr[:, :, 6:]], dim=2)
    else:
        expected = torch.stack([ref.rotate(xr[:, :, 0], cos, sin, pos, False), xr[:, :, 1]], dim=2)
    close(out, expected, atol=1e-5)
    close(x.detach(), expected, atol=1e-5)  # in place: the leaf's own data is rotated, as upstream
    assert out.grad_fn is not None and x.is_leaf
    g = torch.randn(*shape)
    out.backward(g.to(device))
    assert x.grad is not None and x.grad.device == x.device
    close(x.grad, torch.autograd.grad(expected, xr, g.double())[0], atol=1e-5)


# ----------------------------------------------------------------------------- 4. zero keys


@pytest.mark.parametrize("api", ["flash_attn_func", "flash_attn_func_lse", "xformers"])
def test_zero_keys_give_zero_outputs_and_zero_gradients(target, api):
    device = device_of(target)
    q, k, v = leaves(torch.randn(B, 3, H, D), torch.randn(B, 0, 2, D), torch.randn(B, 0, 2, 8), device=device)
    if api == "xformers":
        q, k, v = leaves(q, torch.randn(B, 0, H, D), torch.randn(B, 0, H, 8), device=device)
        out = fmha.memory_efficient_attention(q, k, v)
    elif api == "flash_attn_func_lse":
        out, lse, _ = flash_attn_func(q, k, v, causal=True, return_attn_probs=True)
        assert torch.isinf(lse).all() and lse.device == q.device
    else:
        out = flash_attn_func(q, k, v, causal=True)
    assert out.shape == (B, 3, H, 8) and out.device == q.device and (out == 0).all()
    assert out.grad_fn is not None  # connected, so a training step through an empty cache runs
    out.backward(torch.randn(out.shape).to(device))
    assert torch.equal(q.grad.cpu(), torch.zeros(q.shape))
    assert k.grad is not None and k.grad.shape == k.shape and v.grad is not None and v.grad.shape == v.shape


def test_zero_keys_varlen(ref, target):
    device = device_of(target)
    # every sequence without keys (an empty packed cache) ...
    q, k, v = leaves(torch.randn(5, H, D), torch.randn(0, H, D), torch.randn(0, H, D), device=device)
    cu_q = torch.tensor([0, 2, 5], dtype=torch.int32).to(device)
    cu_k = torch.tensor([0, 0, 0], dtype=torch.int32).to(device)
    out = flash_attn_varlen_func(q, k, v, cu_q, cu_k, 3, 0, causal=True)
    assert (out == 0).all() and out.grad_fn is not None
    out.backward(torch.randn(out.shape).to(device))
    assert torch.equal(q.grad.cpu(), torch.zeros(q.shape)) and k.grad.shape == k.shape
    # ... and one sequence of length 0 among others: its rows 0 with zero gradient, the rest exact
    q_lens, k_lens = [2, 3, 2], [4, 0, 3]
    q0, k0, v0 = torch.randn(7, H, D), torch.randn(7, H, D), torch.randn(7, H, D)
    q, k, v = leaves(q0, k0, v0, device=device)
    cu_q = torch.tensor([0, 2, 5, 7], dtype=torch.int32).to(device)
    cu_k = torch.tensor([0, 4, 4, 7], dtype=torch.int32).to(device)
    out = flash_attn_varlen_func(q, k, v, cu_q, cu_k, 3, 4, causal=True)
    qr, kr, vr = ref_leaves(q0, k0, v0)
    expected, _ = ref.varlen(qr, kr, vr, q_lens, k_lens, causal=True)
    close(out, expected, atol=1e-5)
    assert (out[2:5] == 0).all()
    assert_grads(out, (q, k, v), expected, (qr, kr, vr), torch.randn(out.shape))


# ----------------------------------------------------------------------------- 5. private ops, Function classes


def _packed(lens: list[int], heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32)
    return torch.randn(sum(lens), heads, D), cu


@pytest.mark.parametrize("keys", ["plain", "seqused_k", "leftpad_k"])
def test_private_varlen_forward_and_backward(ref, target, keys):
    device = device_of(target)
    q_lens, k_lens = [3, 5, 2], [6, 4, 5]
    q0, cu_q = _packed(q_lens, H)
    k0, cu_k = _packed(k_lens, 2)  # GQA
    v0, _ = _packed(k_lens, 2)
    used = torch.tensor(k_lens)
    pad = torch.zeros(3, dtype=torch.long)
    extra = {}
    if keys == "seqused_k":
        used = torch.tensor([4, 4, 3])
        extra["seqused_k"] = used.to(torch.int32).to(device)
    elif keys == "leftpad_k":
        pad = torch.tensor([2, 0, 1])
        extra["leftpad_k"] = pad.to(torch.int32).to(device)
    q, k, v = (t.to(device) for t in (q0, k0, v0))
    cu_qd, cu_kd = cu_q.to(device), cu_k.to(device)
    scale = 0.3
    out, lse, s_dmask, rng_state = fai._flash_attn_varlen_forward(
        q, k, v, cu_qd, cu_kd, 5, 6, 0.0, scale, True, -1, -1, 0.0, None, False, None, **extra)
    assert lse.shape == (H, 10) and lse.dtype == torch.float32 and s_dmask.numel() == 0 and rng_state.numel() == 2

    # reference: sequence b uses key rows cu_k[b] + pad[b] : cu_k[b] + used[b], bottom-right causal
    qr, kr, vr = ref_leaves(q0, k0, v0)
    outs, lses = [], []
    for b in range(3):
        qs, ks = slice(int(cu_q[b]), int(cu_q[b + 1])), slice(int(cu_k[b] + pad[b]), int(cu_k[b] + used[b]))
        o, l = ref.attention(qr[None, qs], kr[None, ks], vr[None, ks], causal=True, scale=scale)
        outs.append(o[0])
        lses.append(l[0])
    expected, lse_ref = torch.cat(outs), torch.cat(lses, dim=1)
    close(out, expected, atol=1e-5)
    close(lse, lse_ref, atol=1e-5)
    if keys != "plain":
        return  # upstream's varlen backward takes neither seqused_k nor leftpad_k

    # backward: gradients land in the caller's buffers (ring attention accumulates from them)
    dout = torch.randn(out.shape)
    dq, dk, dv = (torch.full_like(t, float("nan")) for t in (q, k, v))
    softmax_d = fai._flash_attn_varlen_backward(
        dout.to(device), q, k, v, out, lse, dq, dk, dv, cu_qd, cu_kd, 5, 6, 0.0, scale, True, -1, -1, 0.0, None,
        False, rng_state)
    want = torch.autograd.grad(expected, (qr, kr, vr), dout.double())
    for got, exp in zip((dq, dk, dv), want):
        close(got, exp, atol=1e-4)
    close(softmax_d, (dout.double() * expected).sum(-1).t(), atol=1e-4)
    with pytest.raises(NotImplementedError, match="dropout_p"):
        fai._flash_attn_varlen_backward(dout.to(device), q, k, v, out, lse, dq, dk, dv, cu_qd, cu_kd, 5, 6, 0.1,
                                        scale, True, -1, -1, 0.0, None, False, rng_state)


def _function_case(cls: str, device: str, return_softmax: bool):
    """(apply args in upstream's order, device leaves, reference leaves, reference fn -> (out, lse))."""
    window, softcap, alibi, det, grad = (-1, -1), 0.0, None, False, torch.is_grad_enabled()
    if "Varlen" not in cls:
        q0, k0, v0 = torch.randn(B, 5, H, D), torch.randn(B, 7, H, D), torch.randn(B, 7, H, D)
        if cls == "FlashAttnQKVPackedFunc":
            k0, v0 = torch.randn(B, 5, H, D), torch.randn(B, 5, H, D)
            (qkv,) = leaves(torch.stack([q0, k0, v0], dim=2), device=device)
            args = (qkv, 0.0, None, True, window, softcap, alibi, det, return_softmax, grad)
            ins = (qkv,)
        elif cls == "FlashAttnKVPackedFunc":
            q, kv = leaves(q0, torch.stack([k0, v0], dim=2), device=device)
            args, ins = (q, kv, 0.0, None, True, window, softcap, alibi, det, return_softmax, grad), (q, kv)
        else:
            q, k, v = leaves(q0, k0, v0, device=device)
            args, ins = (q, k, v, 0.0, None, True, window, softcap, alibi, det, return_softmax, grad), (q, k, v)
        rq, rk, rv = ref_leaves(q0, k0, v0)
        return args, ins, (rq, rk, rv), lambda ref: ref.attention(rq, rk, rv, causal=True)
    lens = [3, 4]
    q0, cu = _packed(lens, H)
    k0, _ = _packed(lens, H)
    v0, _ = _packed(lens, H)
    cu_d = cu.to(device)
    if cls == "FlashAttnVarlenQKVPackedFunc":
        (qkv,) = leaves(torch.stack([q0, k0, v0], dim=1), device=device)
        args = (qkv, cu_d, 4, 0.0, None, True, window, softcap, alibi, det, return_softmax, grad)
        ins = (qkv,)
    elif cls == "FlashAttnVarlenKVPackedFunc":
        q, kv = leaves(q0, torch.stack([k0, v0], dim=1), device=device)
        args = (q, kv, cu_d, cu_d, 4, 4, 0.0, None, True, window, softcap, alibi, det, return_softmax, grad)
        ins = (q, kv)
    else:
        q, k, v = leaves(q0, k0, v0, device=device)
        args = (q, k, v, cu_d, cu_d, 4, 4, 0.0, None, True, window, softcap, alibi, det, return_softmax, None, grad)
        ins = (q, k, v)
    rq, rk, rv = ref_leaves(q0, k0, v0)
    return args, ins, (rq, rk, rv), lambda ref: ref.varlen(rq, rk, rv, lens, lens, causal=True)


FUNCTION_CLASSES = ["FlashAttnFunc", "FlashAttnQKVPackedFunc", "FlashAttnKVPackedFunc", "FlashAttnVarlenFunc",
                    "FlashAttnVarlenQKVPackedFunc", "FlashAttnVarlenKVPackedFunc"]


@pytest.mark.parametrize("cls", FUNCTION_CLASSES)
@pytest.mark.parametrize("return_softmax", [False, True])
def test_autograd_function_classes(ref, target, cls, return_softmax):
    device = device_of(target)
    func = getattr(fai, cls)
    assert issubclass(func, torch.autograd.Function)
    args, ins, ref_ins, reference = _function_case(cls, device, return_softmax)
    res = func.apply(*args)
    out = res[0] if return_softmax else res
    expected, lse_ref = reference(ref)
    close(out, expected, atol=1e-5)
    if return_softmax:
        assert len(res) == 3 and res[2].numel() == 0  # S_dmask: empty without dropout, as upstream
        close(res[1], lse_ref, atol=1e-5)
    g = torch.randn(out.shape)
    got = torch.autograd.grad(out, ins, g.to(device))
    dq, dk, dv = torch.autograd.grad(expected, ref_ins, g.double())
    packed = {1: lambda: [torch.stack([dq, dk, dv], dim=-3)], 2: lambda: [dq, torch.stack([dk, dv], dim=-3)],
              3: lambda: [dq, dk, dv]}[len(ins)]()
    for a, b in zip(got, packed):
        close(a, b, atol=1e-4)


def test_function_class_with_dropout_backpropagates_its_own_mask(target):
    # The classes keep their forward graph: the backward uses the very dropout mask of the forward.
    # S_dmask (dropped entries negated) gives the mask, so the gradient is checked against it.
    device = device_of(target)
    q0, k0, v0 = torch.randn(1, 4, 2, D), torch.randn(1, 6, 2, D), torch.randn(1, 6, 2, D)
    q, k, v = leaves(q0, k0, v0, device=device)
    p = 0.3
    out, _lse, s_dmask = fai.FlashAttnFunc.apply(q, k, v, p, None, False, (-1, -1), 0.0, None, False, True, True)
    kept = (s_dmask.detach().cpu() >= 0).double()  # (1, H, 4, 6)
    rq, rk, rv = ref_leaves(q0, k0, v0)
    scores = torch.einsum("bqhd,bkhd->bhqk", rq, rk) * D ** -0.5
    expected = torch.einsum("bhqk,bkhd->bqhd", torch.softmax(scores, -1) * kept / (1 - p), rv)
    close(out, expected, atol=1e-5)
    g = torch.randn(out.shape)
    for a, b in zip(torch.autograd.grad(out, (q, k, v), g.to(device)),
                    torch.autograd.grad(expected, (rq, rk, rv), g.double())):
        close(a, b, atol=1e-4)


# flash-attention v2.8.3 flash_attn/flash_attn_interface.py (_flash_attn_forward / _backward were already
# there, with upstream's order, and are covered by test_shim_flash_attn.py::test_low_level_forward_backward)
UPSTREAM_PRIVATE_SIGNATURES = {
    "_flash_attn_varlen_forward": "q k v cu_seqlens_q cu_seqlens_k max_seqlen_q max_seqlen_k dropout_p "
                                  "softmax_scale causal window_size_left window_size_right softcap alibi_slopes "
                                  "return_softmax block_table leftpad_k seqused_k zero_tensors",
    "_flash_attn_varlen_backward": "dout q k v out softmax_lse dq dk dv cu_seqlens_q cu_seqlens_k max_seqlen_q "
                                   "max_seqlen_k dropout_p softmax_scale causal window_size_left window_size_right "
                                   "softcap alibi_slopes deterministic rng_state zero_tensors",
    "FlashAttnFunc.forward": "ctx q k v dropout_p softmax_scale causal window_size softcap alibi_slopes "
                             "deterministic return_softmax is_grad_enabled",
    "FlashAttnQKVPackedFunc.forward": "ctx qkv dropout_p softmax_scale causal window_size softcap alibi_slopes "
                                      "deterministic return_softmax is_grad_enabled",
    "FlashAttnKVPackedFunc.forward": "ctx q kv dropout_p softmax_scale causal window_size softcap alibi_slopes "
                                     "deterministic return_softmax is_grad_enabled",
    "FlashAttnVarlenFunc.forward": "ctx q k v cu_seqlens_q cu_seqlens_k max_seqlen_q max_seqlen_k dropout_p "
                                   "softmax_scale causal window_size softcap alibi_slopes deterministic "
                                   "return_softmax block_table is_grad_enabled",
    "FlashAttnVarlenQKVPackedFunc.forward": "ctx qkv cu_seqlens max_seqlen dropout_p softmax_scale causal "
                                            "window_size softcap alibi_slopes deterministic return_softmax "
                                            "is_grad_enabled",
    "FlashAttnVarlenKVPackedFunc.forward": "ctx q kv cu_seqlens_q cu_seqlens_k max_seqlen_q max_seqlen_k dropout_p "
                                           "softmax_scale causal window_size softcap alibi_slopes deterministic "
                                           "return_softmax is_grad_enabled",
}


@pytest.mark.parametrize("name", sorted(UPSTREAM_PRIVATE_SIGNATURES))
def test_private_ops_and_function_classes_have_upstream_signatures(name):
    obj = fai
    for part in name.split("."):
        obj = getattr(obj, part)
    params = inspect.signature(obj).parameters
    assert list(params) == UPSTREAM_PRIVATE_SIGNATURES[name].split()
    if name == "_flash_attn_varlen_forward":
        defaults = {n: p.default for n, p in params.items() if p.default is not inspect.Parameter.empty}
        assert defaults == {"window_size_left": -1, "window_size_right": -1, "softcap": 0.0, "alibi_slopes": None,
                            "return_softmax": False, "block_table": None, "leftpad_k": None, "seqused_k": None,
                            "zero_tensors": False}
