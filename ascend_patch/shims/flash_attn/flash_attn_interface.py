"""Stand-in for ``flash_attn.flash_attn_interface`` (flash-attention 2.8.x API) on SDPA.

Signatures, defaults, layouts and return values are upstream's (Dao-AILab/flash-attention,
``flash_attn/flash_attn_interface.py``), because callers probe them: transformers inspects
``inspect.signature(flash_attn_varlen_func).parameters`` to decide which kwargs (``window_size``,
``softcap``, ``dropout_p``, ...) it may pass. Every argument is honoured except the two that only
change speed (``deterministic``, ``num_splits``).

Differences worth knowing (none changes the output):

* fp32 inputs are accepted (real flash_attn wants fp16/bf16) so the shim runs on CPU.
* An under-estimated ``max_seqlen_q`` / ``max_seqlen_k`` (rows past it are left uncomputed by the CUDA
  kernel) is computed as if exact, with one warning; malformed ``cu_seqlens``, ``window_size`` and
  KV-cache indices raise one line naming the argument, the value and the fix (see ``_varlen``).
* ``return_attn_probs=True`` returns ``(out, softmax_lse, S_dmask)`` like upstream; ``S_dmask`` is
  an empty tensor when ``dropout_p == 0`` (upstream too) and otherwise the probabilities with the
  dropped entries negated, unpadded ``(batch, nheads, seqlen_q, seqlen_k)`` where the CUDA kernel
  rounds both lengths up to multiples of 128 (the ROCm build does not round either).
* Gradients come from autograd through SDPA / the math path, not from custom kernels.
* The private ops (``_flash_attn_forward`` / ``_flash_attn_backward`` and their ``_varlen_`` pairs) and
  the ``FlashAttn*Func`` autograd classes exist with upstream's signatures for ring / context-parallel
  code. ``rng_state`` is a placeholder, so the private backward ops refuse ``dropout_p > 0``; the
  classes keep their forward graph and support dropout.
"""

from __future__ import annotations

import logging
import operator
import sys
from collections.abc import Sequence

import torch

from ascend_patch.engine import calls
from ..sdpa import (AttentionResult, attention, check_cu_seqlens_tensor, check_offsets, gather_paged, host_lists,
                    seq_lengths, varlen_attention)
from .layers.rotary import _rotate

__ascend_patch_shim__ = True

logger = logging.getLogger("ascend_patch.shims")

_Out = torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _check_window(window_size: object) -> tuple[int, int]:
    """``window_size`` as two ints, or one error naming it, the value seen and the expected form.

    Upstream's binding takes any pair of ints and treats every negative side as unbounded; -1 is the
    documented spelling, so anything below it is refused here as a likely mistake (e.g. a negated size).
    """
    expected = ("expected a pair of ints (left, right), -1 meaning unlimited: (-1, -1) for no window, "
                "(256, 0) for the previous 256 keys")
    try:
        left, right = window_size  # type: ignore[misc]
        if isinstance(left, bool) or isinstance(right, bool):
            raise TypeError
        left, right = operator.index(left), operator.index(right)
    except (TypeError, ValueError):  # not iterable, not two items, not ints (1.5, "a", None)
        raise TypeError(f"window_size={window_size!r}: {expected}") from None
    if left < -1 or right < -1:
        raise ValueError(f"window_size={window_size!r}: sides below -1; {expected}")
    return left, right


def _kernel_window(window_size: Sequence[int], causal: bool, seqlen_k: int) -> tuple[int, int]:
    """The window the CUDA kernel really applies (flash_api.cpp ``mha_fwd`` + ``set_params_fprop``).

    Sides wider than ``seqlen_k`` become unbounded (-1), causal sets the right side to 0, and a window
    bounded on the left only gets ``right = seqlen_k`` - which is *not* unbounded when
    ``seqlen_q > seqlen_k + 1`` (the kernel then masks the start of the first rows; we do the same).
    ``seqlen_k`` is the batch's max for varlen and the cache length for the KV-cache call, as upstream.
    """
    left, right = _check_window(window_size)
    left = -1 if left < 0 or left >= seqlen_k else left
    right = -1 if right < 0 or right >= seqlen_k else right
    if causal:
        right = 0
    if left >= 0 and right < 0:
        right = seqlen_k
    return left, right


def _alibi_lse_shift(window: tuple[int, int], alibi_slopes: torch.Tensor | None) -> bool:
    # With a pure causal mask (no left window) the kernel adds +slope * j instead of
    # -slope * |i + sk - sq - j| (alibi.h): same probabilities, but the returned log-sum-exp is
    # larger by slope * (i + sk - sq). We return what the kernel returns.
    return alibi_slopes is not None and window[0] < 0 and window[1] == 0


def _slopes(alibi_slopes: torch.Tensor, lse: torch.Tensor) -> torch.Tensor:
    return alibi_slopes.to(device=lse.device, dtype=lse.dtype)


def _finish(res: torch.Tensor | AttentionResult, q: torch.Tensor, dropout_p: float,
            return_attn_probs: bool) -> _Out:
    if not return_attn_probs:
        return res
    assert isinstance(res, AttentionResult)
    # Upstream asks the kernel for S_dmask only when dropout_p > 0 and returns torch.empty((0,)) otherwise.
    s_dmask = res.probs if dropout_p > 0 else torch.empty((0,), dtype=q.dtype, device=q.device)
    return res.out, res.lse, s_dmask


def _log_call(causal: bool) -> None:
    """Migration log: the public flash_attn function two frames up, e.g. flash_attn_func(causal=True)."""
    if calls.STATE.enabled:
        calls.log_call("attention", f"{sys._getframe(2).f_code.co_name}(causal={causal})", "-> SDPA shim")


def _dense(q, k, v, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
           return_attn_probs) -> _Out:
    _log_call(causal)
    window = _kernel_window(window_size, causal, k.shape[1])
    res = attention(
        q, k, v, causal=causal, causal_alignment="bottom_right", window=window,
        softmax_scale=softmax_scale, dropout_p=dropout_p, alibi_slopes=alibi_slopes, softcap=softcap,
        return_lse=return_attn_probs, return_probs=return_attn_probs and dropout_p > 0,
    )
    if return_attn_probs and _alibi_lse_shift(window, alibi_slopes):
        sq, sk = q.shape[1], k.shape[1]
        pos = torch.arange(sq, device=q.device, dtype=res.lse.dtype) + (sk - sq)
        slopes = _slopes(alibi_slopes, res.lse)
        slopes = slopes.view(-1, slopes.shape[-1], 1)
        res = res._replace(lse=res.lse + slopes * pos)
    return _finish(res, q, dropout_p, return_attn_probs)


def _seqlen_hint(value: object, name: str) -> int:
    try:
        return operator.index(value)  # an int, or a one-element integer tensor
    except TypeError:
        raise TypeError(f"{name} must be an int (the longest sequence's length), got {value!r}; "
                        f"pass int(seqlens.max())") from None


_warned_hints: set[str] = set()


def _longest(hint: int, lens: Sequence[int], name: str, cu_name: str) -> int:
    """The ``max_seqlen_*`` the shim runs with: ``max(hint, longest sequence)``.

    Upstream reads max_seqlen only to size the kernel's launch grid (and, for max_seqlen_k, to clamp
    the window, see _kernel_window); an under-estimate leaves the rows past it uncomputed on CUDA. The
    lengths are on the host here anyway, so an under-estimate is computed as if exact (one warning per
    argument: the same code gives wrong rows on CUDA) and an over-estimate is kept, as upstream does.
    """
    longest = max(lens, default=0)
    if hint >= longest:
        return hint
    if name not in _warned_hints:
        _warned_hints.add(name)
        logger.warning("flash_attn shim: %s=%d is below the longest sequence in %s (%d); using %d (flash_attn's "
                       "CUDA kernel would leave the rows past %d uncomputed)", name, hint, cu_name, longest,
                       longest, hint)
    return longest


def _varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale,
            causal, window_size, softcap, alibi_slopes, return_attn_probs, block_table=None, seqused_k=None,
            leftpad_k=None, packed: bool = False) -> _Out:
    """``seqused_k`` / ``leftpad_k`` (only the private varlen op has them upstream): sequence ``b`` uses
    key rows ``cu_seqlens_k[b] + leftpad_k[b] : cu_seqlens_k[b] + seqused_k[b]``. ``packed``: called
    with one ``cu_seqlens`` / ``max_seqlen`` (the qkvpacked API), so errors name those."""
    _log_call(causal)
    names = ("cu_seqlens", "cu_seqlens", "max_seqlen", "max_seqlen") if packed else (
        "cu_seqlens_q", "cu_seqlens_k", "max_seqlen_q", "max_seqlen_k")
    if q.dim() != 3:
        raise ValueError(f"varlen q must be (total_q, nheads, headdim), got {tuple(q.shape)}")
    if leftpad_k is not None and block_table is not None:
        raise ValueError("We don't support Paged KV and leftpad_k running at the same time yet")
    _check_window(window_size)  # before the device read below
    hint_q, hint_k = _seqlen_hint(max_seqlen_q, names[2]), _seqlen_hint(max_seqlen_k, names[3])
    check_cu_seqlens_tensor(cu_seqlens_q, names[0])
    check_cu_seqlens_tensor(cu_seqlens_k, names[1])
    # The one host copy of every length (one device sync): torch_npu's packed op takes them as host
    # lists anyway, the grouped SDPA path needs them, and so do the checks here.
    cu_q, cu_k, used, pad = host_lists(cu_seqlens_q, cu_seqlens_k, seqused_k, leftpad_k)
    check_offsets(cu_q, names[0], q.shape[0], "q")
    check_offsets(cu_k, names[1], None if block_table is not None else k.shape[0], "k")  # paged: k is the cache
    if len(cu_q) != len(cu_k):
        raise ValueError(
            f"cu_seqlens_q has {len(cu_q)} entries ({len(cu_q) - 1} sequences) but cu_seqlens_k has {len(cu_k)} "
            f"({len(cu_k) - 1} sequences); both hold batch_size + 1 cumulative lengths of the same batch"
        )
    if pad is not None:
        # The diagonal and ALiBi distances depend only on the key count, so left padding is the
        # padded-keys layout starting at cu_seqlens_k[b] + leftpad_k[b]; that layout must start at
        # row 0, hence the shift by the first start.
        starts = [a + p for a, p in zip(cu_k, pad)]
        ends = cu_k[1:] if used is None else [a + u for a, u in zip(cu_k, used)]
        first = starts[0] if starts else 0
        k, v = k[first:], v[first:]
        cu_k, used = [s - first for s in starts] + [cu_k[-1] - first], [e - s for s, e in zip(starts, ends)]
    lens_q = seq_lengths(cu_q)
    lens_k = used if used is not None else seq_lengths(cu_k)
    max_q = _longest(hint_q, lens_q, names[2], names[0])
    max_k = _longest(hint_k, lens_k, names[3], names[1])
    window = _kernel_window(window_size, causal, max_k)
    res = varlen_attention(
        q, k, v, cu_q, cu_k, max_q, max_k, block_table=block_table,
        seqlens_k=used, causal=causal, causal_alignment="bottom_right", window=window,
        softmax_scale=softmax_scale, dropout_p=dropout_p, alibi_slopes=alibi_slopes, softcap=softcap,
        return_lse=return_attn_probs, return_probs=return_attn_probs and dropout_p > 0,
    )
    if return_attn_probs and _alibi_lse_shift(window, alibi_slopes):
        cu_q_t = torch.tensor(cu_q, device=q.device, dtype=torch.long)  # host -> device: no sync
        t = torch.arange(q.shape[0], device=q.device)
        seq = torch.searchsorted(cu_q_t[1:].contiguous(), t, right=True).clamp_(max=cu_q_t.numel() - 2)
        # the kernel's key count: seqused_k (left padding already taken off above), else the span
        len_k = torch.tensor(lens_k, device=q.device, dtype=torch.long)
        pos = (t - cu_q_t[seq] + len_k[seq] - (cu_q_t[seq + 1] - cu_q_t[seq])).to(res.lse.dtype)
        slopes = _slopes(alibi_slopes, res.lse)
        slopes = slopes[:, None] if slopes.dim() == 1 else slopes[seq].t()  # (nheads, total_q)
        res = res._replace(lse=res.lse + slopes * pos)
    return _finish(res, q, dropout_p, return_attn_probs)


def flash_attn_qkvpacked_func(
    qkv: torch.Tensor,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: Sequence[int] = (-1, -1),  # -1 means infinite context window
    softcap: float = 0.0,  # <=0.0 means deactivate
    alibi_slopes: torch.Tensor | None = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
) -> _Out:
    """qkv: (batch_size, seqlen, 3, nheads, headdim) -> out (batch_size, seqlen, nheads, headdim).

    With ``return_attn_probs``: ``(out, softmax_lse (batch, nheads, seqlen), S_dmask)``.
    ``deterministic`` only selects a backward kernel upstream and is ignored.
    """
    q, k, v = qkv.unbind(2)
    return _dense(q, k, v, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
                  return_attn_probs)


def flash_attn_kvpacked_func(
    q: torch.Tensor,
    kv: torch.Tensor,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: Sequence[int] = (-1, -1),  # -1 means infinite context window
    softcap: float = 0.0,  # 0.0 means deactivated
    alibi_slopes: torch.Tensor | None = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
) -> _Out:
    """q: (batch, seqlen_q, nheads, d); kv: (batch, seqlen_k, 2, nheads_k, d). Causal is bottom-right."""
    k, v = kv.unbind(2)
    return _dense(q, k, v, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
                  return_attn_probs)


def flash_attn_func(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: Sequence[int] = (-1, -1),  # -1 means infinite context window
    softcap: float = 0.0,  # 0.0 means deactivated
    alibi_slopes: torch.Tensor | None = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
) -> _Out:
    """q: (batch, seqlen_q, nheads, d); k, v: (batch, seqlen_k, nheads_k, d) -> (batch, seqlen_q, nheads, d).

    MQA/GQA when ``nheads_k`` divides ``nheads``. ``causal`` and ``window_size`` are aligned to the
    bottom-right corner when ``seqlen_q != seqlen_k``: query ``i`` sees keys
    ``[i + seqlen_k - seqlen_q - window_size[0], i + seqlen_k - seqlen_q + window_size[1]]``; a row that
    sees no key outputs 0. ``alibi_slopes`` (nheads,) or (batch, nheads) adds
    ``-slope * |i + seqlen_k - seqlen_q - j|``; ``softcap > 0`` caps the logits with tanh.
    """
    return _dense(q, k, v, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
                  return_attn_probs)


def flash_attn_varlen_qkvpacked_func(
    qkv: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: Sequence[int] = (-1, -1),  # -1 means infinite context window
    softcap: float = 0.0,  # 0.0 means deactivated
    alibi_slopes: torch.Tensor | None = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
) -> _Out:
    """qkv: (total, 3, nheads, headdim); cu_seqlens: (batch + 1,) int32 -> out (total, nheads, headdim).

    With ``return_attn_probs`` the log-sum-exp has upstream's varlen layout ``(nheads, total)``.
    """
    q, k, v = qkv.unbind(1)
    return _varlen(q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, dropout_p, softmax_scale, causal,
                   window_size, softcap, alibi_slopes, return_attn_probs, packed=True)


def flash_attn_varlen_kvpacked_func(
    q: torch.Tensor,
    kv: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: Sequence[int] = (-1, -1),  # -1 means infinite context window
    softcap: float = 0.0,  # 0.0 means deactivated
    alibi_slopes: torch.Tensor | None = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
) -> _Out:
    """q: (total_q, nheads, d); kv: (total_k, 2, nheads_k, d). Causal is bottom-right per sequence."""
    k, v = kv.unbind(1)
    return _varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale,
                   causal, window_size, softcap, alibi_slopes, return_attn_probs)


def flash_attn_varlen_func(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: Sequence[int] = (-1, -1),  # -1 means infinite context window
    softcap: float = 0.0,  # 0.0 means deactivated
    alibi_slopes: torch.Tensor | None = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
    block_table: torch.Tensor | None = None,
) -> _Out:
    """q: (total_q, nheads, d); k, v: (total_k, nheads_k, d) -> (total_q, nheads, d).

    Sequence ``b`` is rows ``cu_seqlens_q[b]:cu_seqlens_q[b+1]`` of q (same for k/v with
    ``cu_seqlens_k``); causal / window / ALiBi are bottom-right aligned per sequence. With
    ``block_table (batch, max_num_blocks_per_seq)``, k and v are paged caches
    ``(num_blocks, page_block_size, nheads_k, d)`` and ``cu_seqlens_k`` gives each sequence's length.
    """
    return _varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale,
                   causal, window_size, softcap, alibi_slopes, return_attn_probs, block_table=block_table)


def _range(t: torch.Tensor) -> torch.Tensor | None:
    """``(max, min)`` of ``t`` on its device, None when empty: read back together with the others."""
    flat = t.reshape(-1)
    return torch.stack((flat.max(), flat.min())) if flat.numel() else None


def _check_kvcache_inputs(batch: int, k_cache: torch.Tensor, k: torch.Tensor | None,
                          cache_seqlens: int | torch.Tensor | None, cache_batch_idx: torch.Tensor | None,
                          block_table: torch.Tensor | None) -> int:
    """The cache length each sequence sees (the block table's capacity when paged), after one-line
    ValueErrors for what would otherwise index past the cache (a bare IndexError here).

    The CUDA kernel checks none of the values: it reads (and, appending, writes) past the sequence's
    cache rows, into the next sequence or outside the allocation; the shim would attend to fewer keys
    than asked without a word, or fail with a bare IndexError while appending. Shapes cost nothing;
    the values of ``cache_seqlens`` and ``cache_batch_idx`` come back in one host read (one sync; a
    silently truncated cache is worse). The block table's entries are not read: upstream leaves
    unused pages arbitrary.
    """
    paged = block_table is not None
    if k is not None and k.shape[0] != batch:
        raise ValueError(f"k must be (batch_size, seqlen_new, nheads_k, headdim) with batch_size = q.shape[0] = "
                         f"{batch}, got {tuple(k.shape)}")
    if isinstance(cache_seqlens, torch.Tensor) and cache_seqlens.numel() != batch:
        raise ValueError(f"cache_seqlens must hold one length per sequence, shape ({batch},), got "
                         f"{tuple(cache_seqlens.shape)}; pass an int when every sequence has the same length")
    if paged and (block_table.dim() != 2 or block_table.shape[0] != batch):
        raise ValueError(f"block_table must be (batch_size, max_num_blocks_per_seq) with batch_size = {batch}, got "
                         f"{tuple(block_table.shape)}")
    capacity = block_table.shape[1] * k_cache.shape[1] if paged else k_cache.shape[1]
    if cache_batch_idx is not None:
        if cache_batch_idx.numel() != batch:
            raise ValueError(f"cache_batch_idx must hold one cache row per sequence, shape ({batch},), got "
                             f"{tuple(cache_batch_idx.shape)}")
    elif not paged and k_cache.shape[0] < batch:
        raise ValueError(f"k_cache holds {k_cache.shape[0]} sequences (k_cache.shape[0]) but q has batch_size "
                         f"{batch}; allocate a cache row per sequence or pass cache_batch_idx")
    lengths = _range(cache_seqlens) if isinstance(cache_seqlens, torch.Tensor) else None
    rows = _range(cache_batch_idx) if cache_batch_idx is not None else None
    lengths, rows = host_lists(lengths, rows)  # the one read
    if rows is not None and (rows[1] < 0 or rows[0] >= k_cache.shape[0]):
        bad = rows[1] if rows[1] < 0 else rows[0]
        raise ValueError(f"cache_batch_idx has {bad}, outside k_cache's rows 0..{k_cache.shape[0] - 1} "
                         f"(k_cache.shape[0] = {k_cache.shape[0]}); each entry picks one sequence's cache row")
    if cache_seqlens is None or (lengths is None and not isinstance(cache_seqlens, int)):
        return capacity
    if isinstance(cache_seqlens, int):  # known on the host: no read at all
        longest = shortest = cache_seqlens
    else:
        longest, shortest = lengths
    seqlen_new = 0 if k is None else k.shape[1]
    where = (f"the block table's capacity ({capacity} = max_num_blocks_per_seq * page_block_size)" if paged
             else f"the KV cache length (k_cache.shape[1] = {capacity})")
    if shortest < 0:
        raise ValueError(f"cache_seqlens must be >= 0, got {shortest}")
    if longest + seqlen_new > capacity:
        if seqlen_new:
            raise ValueError(
                f"KV cache is full: appending {seqlen_new} new token(s) at cache_seqlens={longest} needs "
                f"{longest + seqlen_new} positions, more than {where}; allocate a longer cache or evict entries"
            )
        raise ValueError(f"cache_seqlens ({longest}) exceeds {where}")
    return capacity


def flash_attn_with_kvcache(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    k: torch.Tensor | None = None,
    v: torch.Tensor | None = None,
    rotary_cos: torch.Tensor | None = None,
    rotary_sin: torch.Tensor | None = None,
    cache_seqlens: int | torch.Tensor | None = None,
    cache_batch_idx: torch.Tensor | None = None,
    cache_leftpad: torch.Tensor | None = None,
    block_table: torch.Tensor | None = None,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: Sequence[int] = (-1, -1),  # -1 means infinite context window
    softcap: float = 0.0,  # 0.0 means deactivated
    rotary_interleaved: bool = True,
    alibi_slopes: torch.Tensor | None = None,
    num_splits: int = 0,
    return_softmax_lse: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Incremental decoding against a KV cache, with upstream's semantics.

    If ``k``/``v`` (batch, seqlen_new, nheads_k, d) are given they are written *in place* into
    ``k_cache``/``v_cache`` at positions ``cache_seqlens[b] ...`` (through ``cache_batch_idx`` or the paged
    ``block_table``), rotated first by ``rotary_cos``/``rotary_sin`` when given; q is rotated at the same
    positions when causal/local, else all of q at position ``cache_seqlens``. Then q attends to the first
    ``cache_seqlens + seqlen_new`` cache entries (all of them when ``cache_seqlens`` is None), skipping the
    first ``cache_leftpad[b]``; causal/window/ALiBi are bottom-right aligned. ``num_splits`` is a speed
    knob and is ignored. No backward, as upstream. ``cache_seqlens + seqlen_new`` beyond the cache length
    (the block table's capacity when paged) raises ``ValueError``; the CUDA kernel leaves it undefined.

    Returns out (batch, seqlen_q, nheads, d), plus softmax_lse (batch, nheads, seqlen_q) when
    ``return_softmax_lse``.
    """
    if q.dim() != 4:
        raise ValueError(f"q must be (batch_size, seqlen, nheads, headdim), got {tuple(q.shape)}")
    batch, seqlen_q = q.shape[:2]
    device = q.device
    paged = block_table is not None
    if paged and cache_batch_idx is not None:
        raise ValueError("Paged KVcache does not support cache_batch_idx")
    if paged and cache_leftpad is not None:
        raise ValueError("We don't support Paged KV and leftpad_k running at the same time yet")
    if (k is None) != (v is None):
        raise ValueError("If key is supplied, value must also be passed in (and vice versa)")
    if k is not None and cache_seqlens is None:
        raise ValueError("If key is supplied, seqlens_k must also be passed in")
    if rotary_cos is not None and (k is None or rotary_sin is None):
        raise ValueError("If rotary cos/sin are provided, new key / value to be appended to KV cache must also "
                         "be provided, and rotary_sin together with rotary_cos")
    _check_window(window_size)  # before the device read below
    seqlen_cache = _check_kvcache_inputs(batch, k_cache, k, cache_seqlens, cache_batch_idx, block_table)
    if isinstance(cache_seqlens, int):
        cache_seqlens = torch.full((batch,), cache_seqlens, dtype=torch.int32, device=device)
    left, right = _kernel_window(window_size, causal, seqlen_cache)
    # the kernel rotates q per position when causal or local (its is_causal is window (-1, 0))
    positional_q = left >= 0 or right >= 0

    if k is not None:
        seqlen_new = k.shape[1]
        offsets = cache_seqlens.to(device=device, dtype=torch.long)
        if rotary_cos is not None:
            k = _rotate(k, rotary_cos, rotary_sin, offsets, None, rotary_interleaved)
            if positional_q:
                q = _rotate(q, rotary_cos, rotary_sin, offsets, None, rotary_interleaved)
            else:  # every query token sits at position cache_seqlens
                q_flat = q.reshape(batch, 1, seqlen_q * q.shape[2], q.shape[3])
                q = _rotate(q_flat, rotary_cos, rotary_sin, offsets, None, rotary_interleaved).reshape(q.shape)
        pos = offsets[:, None] + torch.arange(seqlen_new, device=device)[None, :]  # (batch, seqlen_new)
        with torch.no_grad():  # the cache is a buffer updated in place, as the CUDA kernel does
            if paged:
                page = k_cache.shape[1]
                blocks = block_table.to(device=device, dtype=torch.long).gather(1, pos // page)
                k_cache[blocks, pos % page] = k.to(k_cache.dtype)
                v_cache[blocks, pos % page] = v.to(v_cache.dtype)
            else:
                rows = (cache_batch_idx.to(device=device, dtype=torch.long) if cache_batch_idx is not None
                        else torch.arange(batch, device=device))[:, None].expand_as(pos)
                k_cache[rows, pos] = k.to(k_cache.dtype)
                v_cache[rows, pos] = v.to(v_cache.dtype)
        seqlens_k = offsets + seqlen_new
    else:
        seqlens_k = cache_seqlens.to(device=device, dtype=torch.long) if cache_seqlens is not None else None

    if paged:
        keys = gather_paged(k_cache, block_table, seqlen_cache)
        values = gather_paged(v_cache, block_table, seqlen_cache)
    elif cache_batch_idx is not None:
        idx = cache_batch_idx.to(device=device, dtype=torch.long)
        keys, values = k_cache[idx], v_cache[idx]
    else:
        keys, values = k_cache[:batch], v_cache[:batch]
    if seqlens_k is None and cache_leftpad is None:
        res = attention(q, keys, values, causal=causal, window=(left, right), softmax_scale=softmax_scale,
                        alibi_slopes=alibi_slopes, softcap=softcap, return_lse=return_softmax_lse)
    else:
        if seqlens_k is None:
            seqlens_k = torch.full((batch,), seqlen_cache, device=device, dtype=torch.long)
        res = attention(q, keys, values, causal=causal, window=(left, right), softmax_scale=softmax_scale,
                        alibi_slopes=alibi_slopes, softcap=softcap, seqlens_k=seqlens_k,
                        key_leftpad=cache_leftpad, return_lse=return_softmax_lse)
    if not return_softmax_lse:
        return res
    lse = res.lse
    if _alibi_lse_shift((left, right), alibi_slopes):
        total = seqlens_k if seqlens_k is not None else torch.full((batch,), seqlen_cache, device=device)
        if cache_leftpad is not None:
            total = total - cache_leftpad.to(device=device, dtype=torch.long)
        pos = torch.arange(seqlen_q, device=device)[None, :] + (total - seqlen_q)[:, None]  # (batch, seqlen_q)
        slopes = _slopes(alibi_slopes, lse)
        lse = lse + slopes.view(-1, slopes.shape[-1], 1) * pos[:, None, :].to(lse.dtype)
    return res.out, lse


# --- lower-level entry points some libraries (ring attention, ...) import -------------------


def _flash_attn_forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    dropout_p: float,
    softmax_scale: float,
    causal: bool,
    window_size_left: int,
    window_size_right: int,
    softcap: float,
    alibi_slopes: torch.Tensor | None,
    return_softmax: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Upstream's op: returns ``(out, softmax_lse, S_dmask, rng_state)``; rng_state is a placeholder."""
    out, lse, s_dmask = _dense(q, k, v, dropout_p, softmax_scale, causal, (window_size_left, window_size_right),
                               softcap, alibi_slopes, True)
    if not return_softmax:
        s_dmask = torch.empty((0,), dtype=q.dtype, device=q.device)
    return out, lse, s_dmask, torch.zeros(2, dtype=torch.int64, device=q.device)


def _flash_attn_backward(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    softmax_lse: torch.Tensor,
    dq: torch.Tensor | None,
    dk: torch.Tensor | None,
    dv: torch.Tensor | None,
    dropout_p: float,
    softmax_scale: float,
    causal: bool,
    window_size_left: int,
    window_size_right: int,
    softcap: float,
    alibi_slopes: torch.Tensor | None,
    deterministic: bool,
    rng_state: torch.Tensor | None = None,
) -> torch.Tensor:
    """Upstream's op: writes dq/dk/dv (recomputing the forward) and returns ``softmax_d``.

    ``softmax_d = rowsum(dout * out)``, fp32 ``(batch, nheads, seqlen_q)``, unpadded (the kernel's has
    seqlen_q rounded up to a multiple of 128).
    """
    _no_dropout_replay(dropout_p, "_flash_attn_backward", "flash_attn_func / FlashAttnFunc")
    window = (window_size_left, window_size_right)
    _recompute_into(lambda q_, k_, v_: _dense(q_, k_, v_, 0.0, softmax_scale, causal, window, softcap,
                                              alibi_slopes, False),
                    dout, (q, k, v), (dq, dk, dv))
    return (dout.float() * out.float()).sum(-1).transpose(1, 2).contiguous()


def _no_dropout_replay(dropout_p: float, name: str, instead: str) -> None:
    if dropout_p > 0:
        raise NotImplementedError(
            f"{name} with dropout_p > 0: the shim cannot replay the forward's dropout mask from rng_state "
            f"(a placeholder, not the CUDA kernel's Philox seed/offset); use {instead} (autograd) for "
            "training with dropout"
        )


def _recompute_into(run, dout: torch.Tensor, inputs: tuple[torch.Tensor, ...],
                    buffers: tuple[torch.Tensor | None, ...]) -> None:
    """Gradients of ``run(*inputs)`` for ``dout``, recomputed under autograd, copied into ``buffers``.

    Upstream's backward ops fill caller-owned dq/dk/dv (ring attention accumulates from them); a None
    buffer is skipped, as upstream then allocates one it does not return.
    """
    with torch.enable_grad():
        leaves = tuple(t.detach().requires_grad_(True) for t in inputs)
        out = run(*leaves)
        grads = torch.autograd.grad(out, leaves, dout.to(out.dtype))
    for dst, g in zip(buffers, grads):
        if dst is not None:
            dst.copy_(g)


def _flash_attn_varlen_forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    dropout_p: float,
    softmax_scale: float,
    causal: bool,
    window_size_left: int = -1,
    window_size_right: int = -1,
    softcap: float = 0.0,
    alibi_slopes: torch.Tensor | None = None,
    return_softmax: bool = False,
    block_table: torch.Tensor | None = None,
    leftpad_k: torch.Tensor | None = None,
    seqused_k: torch.Tensor | None = None,
    zero_tensors: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Upstream's varlen op: ``(out (total_q, nheads, d), softmax_lse (nheads, total_q), S_dmask, rng_state)``.

    ``seqused_k (batch,)``: sequence ``b`` uses only its first ``seqused_k[b]`` keys; ``leftpad_k (batch,)``
    skips its first ``leftpad_k[b]`` keys (the diagonal stays at the sequence's end). ``zero_tensors`` only
    pre-zeroes the kernel's buffers; rows outside every sequence come back 0 here anyway. rng_state is a
    placeholder.
    """
    out, lse, s_dmask = _varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p,
                                softmax_scale, causal, (window_size_left, window_size_right), softcap,
                                alibi_slopes, True, block_table=block_table, seqused_k=seqused_k,
                                leftpad_k=leftpad_k)
    if not return_softmax:
        s_dmask = torch.empty((0,), dtype=q.dtype, device=q.device)
    return out, lse, s_dmask, torch.zeros(2, dtype=torch.int64, device=q.device)


def _flash_attn_varlen_backward(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    softmax_lse: torch.Tensor,
    dq: torch.Tensor | None,
    dk: torch.Tensor | None,
    dv: torch.Tensor | None,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    dropout_p: float,
    softmax_scale: float,
    causal: bool,
    window_size_left: int,
    window_size_right: int,
    softcap: float,
    alibi_slopes: torch.Tensor | None,
    deterministic: bool,
    rng_state: torch.Tensor | None = None,
    zero_tensors: bool = False,
) -> torch.Tensor:
    """Upstream's varlen backward op: writes dq/dk/dv (recomputing the forward), returns ``softmax_d``.

    ``softmax_d = rowsum(dout * out)``, fp32 ``(nheads, total_q)``, unpadded (the kernel's has 128 more
    columns per sequence). dq/dk/dv rows outside every sequence get 0.
    """
    _no_dropout_replay(dropout_p, "_flash_attn_varlen_backward", "flash_attn_varlen_func / FlashAttnVarlenFunc")
    window = (window_size_left, window_size_right)
    _recompute_into(lambda q_, k_, v_: _varlen(q_, k_, v_, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                               0.0, softmax_scale, causal, window, softcap, alibi_slopes, False),
                    dout, (q, k, v), (dq, dk, dv))
    return (dout.float() * out.float()).sum(-1).t().contiguous()


# --- upstream's autograd.Function classes (ring / context-parallel code calls their .apply) -----
#
# Same ``forward`` arguments, in upstream's order, as flash-attention 2.8.x (``window_size`` a pair,
# ``is_grad_enabled`` last) and the same outputs: ``out``, or ``(out, softmax_lse, S_dmask)`` with
# ``return_softmax``. Unlike upstream, backward does not recompute: forward runs the shim under
# autograd and keeps that graph. It holds about what upstream saves (SDPA saves q, k, v, out, lse),
# costs no second forward, and replays dropout exactly, which a recompute cannot without the CUDA
# kernel's Philox state. The graph is freed by the first backward, so a second one (retain_graph=True
# outside) raises instead of silently keeping every layer's buffers alive until the loss is freed.


def _fn_forward(ctx, run, inputs: tuple[torch.Tensor, ...], return_softmax: bool,
                is_grad_enabled: bool) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    is_grad = is_grad_enabled and any(t.requires_grad for t in inputs)
    leaves = tuple(t.detach().requires_grad_(t.requires_grad) for t in inputs)
    with torch.set_grad_enabled(is_grad):
        res = run(*leaves)
    out = res[0] if return_softmax else res
    ctx.graph = (out, leaves) if is_grad else None
    if not return_softmax:
        return out.detach()
    lse, s_dmask = res[1].detach(), res[2].detach()
    ctx.mark_non_differentiable(lse, s_dmask)
    return out.detach(), lse, s_dmask


def _fn_backward(ctx, dout: torch.Tensor, n_rest: int) -> tuple[torch.Tensor | None, ...]:
    if ctx.graph is None:
        raise RuntimeError(
            "flash_attn shim: backward through this attention a second time (retain_graph=True) is not "
            "supported; its buffers were freed after the first backward"
        )
    out, leaves = ctx.graph
    ctx.graph = None
    wanted = [t for t in leaves if t.requires_grad]
    grads = iter(torch.autograd.grad(out, wanted, dout.to(out.dtype)))
    return tuple(next(grads) if t.requires_grad else None for t in leaves) + (None,) * n_rest


class FlashAttnFunc(torch.autograd.Function):
    """``FlashAttnFunc.apply(q, k, v, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
    deterministic, return_softmax, is_grad_enabled)``."""

    @staticmethod
    def forward(ctx, q, k, v, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
                deterministic, return_softmax, is_grad_enabled):
        return _fn_forward(ctx, lambda q_, k_, v_: flash_attn_func(
            q_, k_, v_, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes, deterministic,
            return_softmax), (q, k, v), return_softmax, is_grad_enabled)

    @staticmethod
    def backward(ctx, dout, *args):
        return _fn_backward(ctx, dout, 9)


class FlashAttnQKVPackedFunc(torch.autograd.Function):
    """``FlashAttnQKVPackedFunc.apply(qkv, dropout_p, softmax_scale, causal, window_size, softcap,
    alibi_slopes, deterministic, return_softmax, is_grad_enabled)``."""

    @staticmethod
    def forward(ctx, qkv, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes, deterministic,
                return_softmax, is_grad_enabled):
        return _fn_forward(ctx, lambda qkv_: flash_attn_qkvpacked_func(
            qkv_, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes, deterministic,
            return_softmax), (qkv,), return_softmax, is_grad_enabled)

    @staticmethod
    def backward(ctx, dout, *args):
        return _fn_backward(ctx, dout, 9)


class FlashAttnKVPackedFunc(torch.autograd.Function):
    """``FlashAttnKVPackedFunc.apply(q, kv, dropout_p, softmax_scale, causal, window_size, softcap,
    alibi_slopes, deterministic, return_softmax, is_grad_enabled)``."""

    @staticmethod
    def forward(ctx, q, kv, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes, deterministic,
                return_softmax, is_grad_enabled):
        return _fn_forward(ctx, lambda q_, kv_: flash_attn_kvpacked_func(
            q_, kv_, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes, deterministic,
            return_softmax), (q, kv), return_softmax, is_grad_enabled)

    @staticmethod
    def backward(ctx, dout, *args):
        return _fn_backward(ctx, dout, 9)


class FlashAttnVarlenFunc(torch.autograd.Function):
    """``FlashAttnVarlenFunc.apply(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p,
    softmax_scale, causal, window_size, softcap, alibi_slopes, deterministic, return_softmax, block_table,
    is_grad_enabled)``."""

    @staticmethod
    def forward(ctx, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale,
                causal, window_size, softcap, alibi_slopes, deterministic, return_softmax, block_table,
                is_grad_enabled):
        return _fn_forward(ctx, lambda q_, k_, v_: flash_attn_varlen_func(
            q_, k_, v_, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale, causal,
            window_size, softcap, alibi_slopes, deterministic, return_softmax, block_table),
            (q, k, v), return_softmax, is_grad_enabled)

    @staticmethod
    def backward(ctx, dout, *args):
        return _fn_backward(ctx, dout, 14)


class FlashAttnVarlenQKVPackedFunc(torch.autograd.Function):
    """``FlashAttnVarlenQKVPackedFunc.apply(qkv, cu_seqlens, max_seqlen, dropout_p, softmax_scale, causal,
    window_size, softcap, alibi_slopes, deterministic, return_softmax, is_grad_enabled)``."""

    @staticmethod
    def forward(ctx, qkv, cu_seqlens, max_seqlen, dropout_p, softmax_scale, causal, window_size, softcap,
                alibi_slopes, deterministic, return_softmax, is_grad_enabled):
        return _fn_forward(ctx, lambda qkv_: flash_attn_varlen_qkvpacked_func(
            qkv_, cu_seqlens, max_seqlen, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
            deterministic, return_softmax), (qkv,), return_softmax, is_grad_enabled)

    @staticmethod
    def backward(ctx, dout, *args):
        return _fn_backward(ctx, dout, 11)


class FlashAttnVarlenKVPackedFunc(torch.autograd.Function):
    """``FlashAttnVarlenKVPackedFunc.apply(q, kv, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
    dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes, deterministic, return_softmax,
    is_grad_enabled)``."""

    @staticmethod
    def forward(ctx, q, kv, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale,
                causal, window_size, softcap, alibi_slopes, deterministic, return_softmax, is_grad_enabled):
        return _fn_forward(ctx, lambda q_, kv_: flash_attn_varlen_kvpacked_func(
            q_, kv_, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale, causal,
            window_size, softcap, alibi_slopes, deterministic, return_softmax), (q, kv), return_softmax,
            is_grad_enabled)

    @staticmethod
    def backward(ctx, dout, *args):
        return _fn_backward(ctx, dout, 13)


__all__ = [
    "flash_attn_func", "flash_attn_kvpacked_func", "flash_attn_qkvpacked_func", "flash_attn_varlen_func",
    "flash_attn_varlen_kvpacked_func", "flash_attn_varlen_qkvpacked_func", "flash_attn_with_kvcache",
]  # fmt: skip
