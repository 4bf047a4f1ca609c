"""Issue 14, "bad input": the flash_attn shim either computes the right numbers or raises one line that
names the argument, the value it saw and the fix - never a bare IndexError, never silently wrong rows.

* ``cu_seqlens_q`` / ``cu_seqlens_k``: type, dtype, shape, start, order, range and batch size checked on
  the one host copy the shim reads anyway (one device read per varlen call, counted on the simulated NPU);
* ``max_seqlen_q`` / ``max_seqlen_k``: an over-estimate gives the exact numbers (upstream allows it); an
  under-estimate, which leaves rows uncomputed on CUDA, is computed as if exact, against a per-sequence
  SDPA reference, with one warning;
* ``window_size``: anything but a pair of ints >= -1 is refused with the expected form ``(left, right)``;
* ``flash_attn_with_kvcache``: batch sizes and ``cache_batch_idx`` that would index past the cache.

Every case runs on the CPU and on the simulated NPU (``target``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

import pytest
import torch
import torch.nn.functional as F
from conftest import device_of

from ascend_patch.shims.flash_attn import flash_attn_interface as fai

H, D = 2, 16
LENS = [3, 8, 5]  # q and k share them unless a case says otherwise
CU = [0, 3, 11, 16]
TOTAL = 16
CU_FIX = "cumsum"  # the fix every malformed cu_seqlens message gives: F.pad(seqlens.cumsum(...), (1, 0))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _packed(device: str, total: int = TOTAL) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return tuple(torch.randn(total, H, D).to(device) for _ in range(3))  # type: ignore[return-value]


def _cu(values: list[int], device: str) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int32).to(device)


# ----------------------------------------------------------------------------- cu_seqlens / max_seqlen

# (id, overrides of flash_attn_varlen_func's arguments built on the device, error, what the message must say:
#  the argument, the value seen, and the fix)
VARLEN_BAD: list[tuple[str, Callable[[str], dict], type[Exception], tuple[str, ...]]] = [
    ("cu_q_not_from_0", lambda d: {"cu_seqlens_q": _cu([1, 3, 11, 16], d)}, ValueError,
     ("cu_seqlens_q", "start at 0", "[1, 3, 11, 16]", CU_FIX)),
    ("cu_q_decreasing", lambda d: {"cu_seqlens_q": _cu([0, 11, 3, 16], d)}, ValueError,
     ("cu_seqlens_q", "never decrease", "cu_seqlens_q[2] = 3", CU_FIX)),
    ("cu_k_decreasing", lambda d: {"cu_seqlens_k": _cu([0, 3, 2, 16], d)}, ValueError,
     ("cu_seqlens_k", "never decrease", "[0, 3, 2, 16]", CU_FIX)),
    ("cu_q_past_total_q", lambda d: {"cu_seqlens_q": _cu([0, 3, 11, 17], d)}, ValueError,
     ("cu_seqlens_q", "17", "q has 16 rows", "q.shape[0]")),
    ("cu_k_past_total_k", lambda d: {"cu_seqlens_k": _cu([0, 3, 11, 30], d)}, ValueError,
     ("cu_seqlens_k", "30", "k has 16 rows", "k.shape[0]")),
    ("cu_float", lambda d: {"cu_seqlens_q": torch.tensor(CU, dtype=torch.float32).to(d)}, TypeError,
     ("cu_seqlens_q", "torch.float32", "cu_seqlens_q.to(torch.int32)")),
    ("cu_bool", lambda d: {"cu_seqlens_k": torch.tensor([True, False]).to(d)}, TypeError,
     ("cu_seqlens_k", "torch.bool", "to(torch.int32)")),
    ("cu_2d", lambda d: {"cu_seqlens_q": _cu(CU, d)[None]}, ValueError,
     ("cu_seqlens_q", "1-D", "(1, 4)", CU_FIX)),
    ("cu_empty", lambda d: {"cu_seqlens_k": _cu([], d)}, ValueError,
     ("cu_seqlens_k", "(0,)", CU_FIX)),
    ("cu_python_list", lambda d: {"cu_seqlens_q": list(CU)}, TypeError,
     ("cu_seqlens_q", "list", "torch.tensor(")),
    ("batch_sizes_differ", lambda d: {"cu_seqlens_k": _cu([0, 3, 16], d)}, ValueError,
     ("cu_seqlens_q has 4 entries (3 sequences)", "cu_seqlens_k has 3 (2 sequences)", "same batch")),
    ("max_seqlen_q_none", lambda d: {"max_seqlen_q": None}, TypeError, ("max_seqlen_q", "None", "int(")),
    ("max_seqlen_k_float", lambda d: {"max_seqlen_k": 8.5}, TypeError, ("max_seqlen_k", "8.5", "int(")),
]  # fmt: skip


@pytest.mark.parametrize("case, overrides, error, must_say", VARLEN_BAD, ids=[c[0] for c in VARLEN_BAD])
def test_bad_varlen_input_names_argument_value_and_fix(target, case, overrides, error, must_say):
    device = device_of(target)
    q, k, v = _packed(device)
    args = {"cu_seqlens_q": _cu(CU, device), "cu_seqlens_k": _cu(CU, device), "max_seqlen_q": 8, "max_seqlen_k": 8}
    args.update(overrides(device))
    with pytest.raises(error) as err:
        fai.flash_attn_varlen_func(q, k, v, causal=True, **args)
    message = str(err.value)
    assert "\n" not in message
    for fragment in must_say:
        assert fragment in message, (fragment, message)


def _paged(device: str, n_pages: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A paged cache of 4-row pages: 10 pages, ``n_pages`` per sequence (3 sequences)."""
    k_cache, v_cache = (torch.randn(10, 4, H, D).to(device) for _ in range(2))
    table = torch.randperm(10)[: 3 * n_pages].view(3, n_pages).to(torch.int32).to(device)
    return k_cache, v_cache, table


PAGED_BAD = [
    # 2 pages of 4 rows hold 8 keys: a 9-key sequence would read the last page again (silently wrong)
    ("longer_than_the_block_table", 2, [0, 3, 12, 17], ("cu_seqlens_k", "9 keys", "block_table holds 8")),
    ("block_table_rows_differ", 3, [0, 3, 11], ("block_table", "(2, ...)", "(3, 3)")),
]


@pytest.mark.parametrize("case, n_pages, cu_k, must_say", PAGED_BAD, ids=[c[0] for c in PAGED_BAD])
def test_bad_paged_varlen_input_is_refused(target, case, n_pages, cu_k, must_say):
    device = device_of(target)
    k_cache, v_cache, table = _paged(device, n_pages)
    n_seq = len(cu_k) - 1
    q = torch.randn(2 * n_seq, H, D).to(device)
    cu_q = _cu(list(range(0, 2 * n_seq + 1, 2)), device)
    with pytest.raises(ValueError) as err:
        fai.flash_attn_varlen_func(q, k_cache, v_cache, cu_q, _cu(cu_k, device), 2, 12, causal=True,
                                   block_table=table)
    for fragment in must_say:
        assert fragment in str(err.value), (fragment, str(err.value))


def _sdpa_reference(q, k, v, lens_q, lens_k, causal=False, window=(-1, -1)) -> torch.Tensor:
    """Each sequence on its own through torch's SDPA in float64, flash_attn's bottom-right mask built here."""
    outs, sq0, sk0 = [], 0, 0
    for lq, lk in zip(lens_q, lens_k):
        qs, ks, vs = (t.cpu().double()[a : a + n].transpose(0, 1) for t, a, n in ((q, sq0, lq), (k, sk0, lk),
                                                                                  (v, sk0, lk)))
        rel = torch.arange(lk)[None, :] - torch.arange(lq)[:, None] - (lk - lq)  # j - diagonal
        left, right = window
        right = 0 if causal else right
        keep = torch.ones(lq, lk, dtype=torch.bool)
        if right >= 0:
            keep &= rel <= right
        if left >= 0:
            keep &= rel >= -left
        outs.append(F.scaled_dot_product_attention(qs, ks, vs, attn_mask=keep).transpose(0, 1))
        sq0, sk0 = sq0 + lq, sk0 + lk
    return torch.cat(outs)


# Every varlen path that reads max_seqlen: the sliding window (clamped with max_seqlen_k, as the CUDA
# kernel does), the padded path of paged caches, and the qkvpacked spelling.
HINT_CASES = [
    ("window", {"window_size": (2, 1)}),
    ("causal_window", {"causal": True, "window_size": (3, 0)}),
    ("left_window_only", {"window_size": (2, -1)}),
    ("alibi_lse", {"causal": True, "window_size": (4, 0), "alibi_slopes": "ones", "return_attn_probs": True}),
    ("qkvpacked_window", {"window_size": (1, 3), "packed": True}),
]


def _call_varlen(q, k, v, cu, max_seqlen: int, kwargs: dict):
    kwargs = dict(kwargs)
    if kwargs.get("alibi_slopes") == "ones":
        kwargs["alibi_slopes"] = torch.full((H,), 0.5).to(q.device)
    if kwargs.pop("packed", False):
        return fai.flash_attn_varlen_qkvpacked_func(torch.stack((q, k, v), 1), cu, max_seqlen, **kwargs)
    return fai.flash_attn_varlen_func(q, k, v, cu, cu, max_seqlen, max_seqlen, **kwargs)


def _assert_same(got, expected) -> None:
    """out (and softmax_lse, when returned) bit for bit."""
    pairs = [(got, expected)] if isinstance(got, torch.Tensor) else list(zip(got[:2], expected[:2]))
    for a, b in pairs:
        torch.testing.assert_close(a.cpu(), b.cpu(), rtol=0, atol=0)


@pytest.mark.parametrize("case, kwargs", HINT_CASES, ids=[c[0] for c in HINT_CASES])
def test_overestimated_max_seqlen_gives_the_exact_numbers(target, case, kwargs):
    device = device_of(target)
    q, k, v = _packed(device)
    cu = _cu(CU, device)
    exact = _call_varlen(q, k, v, cu, max(LENS), kwargs)
    over = _call_varlen(q, k, v, cu, 64, kwargs)
    _assert_same(over, exact)


@pytest.mark.parametrize("case, kwargs", HINT_CASES, ids=[c[0] for c in HINT_CASES])
def test_underestimated_max_seqlen_is_computed_as_if_exact(target, case, kwargs, monkeypatch, caplog):
    device = device_of(target)
    q, k, v = _packed(device)
    cu = _cu(CU, device)
    monkeypatch.setattr(fai, "_warned_hints", set(), raising=False)
    with caplog.at_level(logging.WARNING, logger="ascend_patch.shims"):
        under = _call_varlen(q, k, v, cu, 2, kwargs)
    out = under if isinstance(under, torch.Tensor) else under[0]
    if "alibi_slopes" not in kwargs:
        causal = kwargs.get("causal", False)
        expected = _sdpa_reference(q, k, v, LENS, LENS, causal=causal, window=kwargs["window_size"])
        torch.testing.assert_close(out.cpu().double(), expected, rtol=0, atol=1e-5)
    _assert_same(under, _call_varlen(q, k, v, cu, max(LENS), kwargs))
    name = "max_seqlen" if kwargs.get("packed") else "max_seqlen_q"
    assert f"{name}=2 is below the longest sequence" in caplog.text and "(8)" in caplog.text


def test_underestimated_max_seqlen_k_with_a_paged_cache(target):
    """The paged path gathers max_seqlen_k cache positions per sequence: an under-estimate dropped keys."""
    device = device_of(target)
    k_cache, v_cache, table = _paged(device, 3)
    lens_k = [5, 12, 7]
    q = torch.randn(6, H, D).to(device)
    cu_q, cu_k = _cu([0, 2, 4, 6], device), _cu([0, 5, 17, 24], device)
    under = fai.flash_attn_varlen_func(q, k_cache, v_cache, cu_q, cu_k, 2, 4, causal=True, block_table=table)
    pages = table.long().cpu()
    k_seq = torch.cat([k_cache.cpu()[pages[b]].flatten(0, 1)[:n] for b, n in enumerate(lens_k)])
    v_seq = torch.cat([v_cache.cpu()[pages[b]].flatten(0, 1)[:n] for b, n in enumerate(lens_k)])
    expected = _sdpa_reference(q, k_seq, v_seq, [2, 2, 2], lens_k, causal=True)
    torch.testing.assert_close(under.cpu().double(), expected, rtol=0, atol=1e-5)


@contextlib.contextmanager
def _device_reads() -> Iterator[list[str]]:
    """Each read of a simulated-NPU tensor back to the host (a device sync on real hardware)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from ascend_patch.sim.tensor import SimTensor

    seen: list[str] = []
    real_tolist = SimTensor.tolist

    def tolist(self):
        seen.append("tolist")
        return real_tolist(self)

    class Reads(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is torch.ops.aten._local_scalar_dense.default and args[0].device.type == "npu":
                seen.append("item")
            if (func is torch.ops.aten._to_copy.default and args[0].device.type == "npu"
                    and str(kwargs.get("device")) == "cpu"):
                seen.append("cpu")
            return func(*args, **kwargs)

    SimTensor.tolist = tolist
    try:
        with Reads():
            yield seen
    finally:
        SimTensor.tolist = real_tolist


@pytest.mark.parametrize("kwargs", [{}, {"causal": True, "window_size": (2, 0)}, {"softcap": 5.0},
                                    {"return_attn_probs": True}, {"leftpad": True}],
                         ids=["fused", "window", "sdpa_softcap", "lse", "private_op_leftpad"])
def test_validation_reuses_the_one_host_copy_of_the_lengths(kwargs):
    """All checks and the real max_seqlen come from one read of cu_seqlens_q/k (+ seqused_k/leftpad_k)."""
    q, k, v = _packed("npu")
    cu = _cu(CU, "npu")
    with _device_reads() as reads:
        if kwargs.get("leftpad"):
            fai._flash_attn_varlen_forward(q, k, v, cu, cu, 8, 8, 0.0, None, False,
                                           seqused_k=_cu([3, 6, 5], "npu"), leftpad_k=_cu([1, 2, 0], "npu"))
        else:
            fai.flash_attn_varlen_func(q, k, v, cu, cu, 2, 2, **kwargs)
    assert reads == ["tolist"]


# ----------------------------------------------------------------------------- window_size

BAD_WINDOWS = [5, (1,), ("a", 2), (1.5, 2), None, (1, 2, 3), (-2, 0), (0, -5), (True, 0)]


def _window_calls(device: str) -> dict[str, Callable[[object], object]]:
    q, k, v = (torch.randn(1, 6, H, D).to(device) for _ in range(3))
    cu = _cu([0, 6], device)
    return {
        "flash_attn_func": lambda w: fai.flash_attn_func(q, k, v, window_size=w),
        "flash_attn_varlen_func": lambda w: fai.flash_attn_varlen_func(q[0], k[0], v[0], cu, cu, 6, 6, window_size=w),
        "flash_attn_with_kvcache": lambda w: fai.flash_attn_with_kvcache(q, k, v, cache_seqlens=6, window_size=w),
    }


@pytest.mark.parametrize("window", BAD_WINDOWS, ids=[repr(w) for w in BAD_WINDOWS])
@pytest.mark.parametrize("api", ["flash_attn_func", "flash_attn_varlen_func", "flash_attn_with_kvcache"])
def test_bad_window_size_names_the_expected_form(target, api, window):
    with pytest.raises((TypeError, ValueError)) as err:
        _window_calls(device_of(target))[api](window)
    message = str(err.value)
    for fragment in (f"window_size={window!r}", "(left, right)", "-1 meaning unlimited"):
        assert fragment in message, (fragment, message)


# ----------------------------------------------------------------------------- flash_attn_with_kvcache

# (id, overrides, what the message must say); the cache is (2 sequences, 6 positions), q has batch 2
KVCACHE_BAD: list[tuple[str, Callable[[str], dict], tuple[str, ...]]] = [
    ("cache_batch_idx_out_of_range", lambda d: {"cache_batch_idx": _cu([0, 5], d)},
     ("cache_batch_idx has 5", "rows 0..1", "k_cache.shape[0] = 2")),
    ("cache_batch_idx_negative", lambda d: {"cache_batch_idx": _cu([-1, 0], d)}, ("cache_batch_idx has -1",)),
    ("cache_batch_idx_wrong_batch", lambda d: {"cache_batch_idx": _cu([0], d)}, ("cache_batch_idx", "(2,)", "(1,)")),
    ("cache_seqlens_wrong_batch", lambda d: {"cache_seqlens": _cu([1, 2, 3], d)},
     ("cache_seqlens", "(2,)", "(3,)", "pass an int")),
    ("q_batch_above_cache_rows", lambda d: {"q": torch.randn(3, 1, H, D).to(d), "k": torch.randn(3, 1, H, D).to(d),
                                           "v": torch.randn(3, 1, H, D).to(d), "cache_seqlens": 1},
     ("k_cache holds 2 sequences", "batch_size 3", "cache_batch_idx")),
    ("new_k_batch_differs", lambda d: {"k": torch.randn(1, 1, H, D).to(d), "v": torch.randn(1, 1, H, D).to(d)},
     ("k must be", "batch_size = q.shape[0] = 2", "(1, 1, 2, 16)")),
]  # fmt: skip


@pytest.mark.parametrize("case, overrides, must_say", KVCACHE_BAD, ids=[c[0] for c in KVCACHE_BAD])
def test_bad_kvcache_input_is_refused_and_leaves_the_cache_alone(target, case, overrides, must_say):
    device = device_of(target)
    k_cache, v_cache = (torch.randn(2, 6, H, D).to(device) for _ in range(2))
    before = k_cache.cpu().clone(), v_cache.cpu().clone()
    args = {"q": torch.randn(2, 1, H, D).to(device), "k": torch.randn(2, 1, H, D).to(device),
            "v": torch.randn(2, 1, H, D).to(device), "cache_seqlens": _cu([2, 3], device)}
    args.update(overrides(device))
    q = args.pop("q")
    with pytest.raises(ValueError) as err:
        fai.flash_attn_with_kvcache(q, k_cache, v_cache, causal=True, **args)
    for fragment in must_say:
        assert fragment in str(err.value), (fragment, str(err.value))
    assert torch.equal(k_cache.cpu(), before[0]) and torch.equal(v_cache.cpu(), before[1])
