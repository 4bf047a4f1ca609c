"""The one attention core behind the ``flash_attn`` and ``xformers`` shims.

Everything funnels into :func:`attention`, which works on flash_attn's layout
``(batch, seqlen, heads, headdim)`` and calls ``torch.nn.functional.scaled_dot_product_attention``
(SDPA) whenever the arguments allow it. On Ascend, SDPA with 4-D BNSD inputs and no mask or a
boolean mask is what reaches the fused attention kernel (see ``docs/torch-npu-facts.md``), so the
hot paths below never build masks they do not need:

* no causal / window / padding: plain SDPA, GQA through ``enable_gqa``;
* causal with the diagonal at the top-left corner (``q_len == k_len``, or xformers' top-left masks):
  SDPA ``is_causal=True``;
* bottom-right causal where the constraint is vacuous (a decoding step, ``q_len == 1``): no mask;
* otherwise a boolean keep-mask (True = attend), still the fused kernel on NPU.

The explicit "math path" (``softmax(QK^T * scale + bias) @ V`` in fp32) is used only for what SDPA
cannot express or return: ``softcap`` (tanh on the logits), the log-sum-exp / attention probabilities
(``return_attn_probs``), and ALiBi (an additive float bias, which sends SDPA to its own unfused math
kernel on NPU anyway; we keep it in fp32 as flash_attn does, bf16 would round ``slope * distance``).

Semantics follow flash_attn (Dao-AILab/flash-attention, ``flash_attn_interface.py`` docstrings and
``tests/test_flash_attn.py::attention_ref``):

* causal with ``q_len != k_len`` is aligned BOTTOM-RIGHT: query ``i`` sees key ``j`` iff
  ``j <= i + k_len - q_len``; SDPA's ``is_causal`` is top-left, so we build the mask then;
* ``window=(left, right)``, ``-1`` = unbounded, also bottom-right aligned:
  ``i + k_len - q_len - left <= j <= i + k_len - q_len + right``; causal forces ``right = 0``;
* ALiBi adds ``-slope * |i + k_len - q_len - j|``; softcap maps logits to ``softcap * tanh(s / softcap)``
  before ALiBi and masking (flash_attn's kernel order);
* a query row that sees no key outputs 0 (and log-sum-exp ``+inf``), never NaN.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from packaging.version import Version

from . import npu_fusion

__ascend_patch_shim__ = True

logger = logging.getLogger("ascend_patch.shims")

# ``enable_gqa`` arrived in torch 2.5. Transformers' sdpa_attention.py uses it on CUDA and Ascend
# only when there is no mask (with a mask both fall back to the math kernel), and so do we.
_SDPA_HAS_GQA = Version(torch.__version__).release >= (2, 5)

_ALIGNMENTS = ("bottom_right", "top_left")

# ``cu_seqlens`` and per-sequence lengths of the packed paths: a device tensor, or already a host list of ints.
Offsets = torch.Tensor | Sequence[int]


class AttentionResult(NamedTuple):
    """What :func:`attention` returns when ``return_lse`` or ``return_probs`` is set."""

    out: torch.Tensor  # (batch, q_len, heads, v_dim)
    lse: torch.Tensor | None  # (batch, heads, q_len), fp32; +inf on rows that see no key
    probs: torch.Tensor | None  # (batch, heads, q_len, k_len); dropped entries negated


_noted_reasons: set = set()


def _note_math_path(softcap: bool, alibi: bool, result: bool) -> None:
    """Say once (DEBUG) why a call left the fused SDPA path: it is slower and uses O(Sq*Sk) memory."""
    reason = ", ".join(n for n, on in (("softcap", softcap), ("alibi_slopes", alibi),
                                       ("lse/probabilities requested", result)) if on)
    if reason not in _noted_reasons:
        _noted_reasons.add(reason)
        logger.debug("attention shim: explicit math path (not fused SDPA) because of %s", reason)


def _repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, Hk, S, D) -> (B, Hk * n_rep, S, D); query head h reads key/value head h // n_rep (flash_attn)."""
    if n_rep == 1:
        return x
    b, h, s, d = x.shape
    return x[:, :, None].expand(b, h, n_rep, s, d).reshape(b, h * n_rep, s, d)


def _alibi_bias(slopes: torch.Tensor, rel: torch.Tensor, batch: int, heads: int, dtype: torch.dtype) -> torch.Tensor:
    """-slope * |j - i - offset| in ``dtype`` (fp32, or fp64 for fp64 inputs), shape (batch|1, heads, Sq, Sk)."""
    slopes = slopes.to(device=rel.device, dtype=dtype)
    if slopes.shape == (heads,):
        slopes = slopes.view(1, heads, 1, 1)
    elif slopes.shape == (batch, heads):
        slopes = slopes.view(batch, heads, 1, 1)
    else:
        raise ValueError(
            f"alibi_slopes must have shape (nheads,) or (batch_size, nheads) = ({heads},) or ({batch}, {heads}), "
            f"got {tuple(slopes.shape)}"
        )
    return -slopes * rel.abs().to(dtype)


def _normalize_window(window: Sequence[int], causal: bool) -> tuple[int, int]:
    left, right = (int(w) for w in window)
    left = -1 if left < 0 else left
    right = -1 if right < 0 else right
    if causal:  # flash_attn: causal is a window whose right edge is the diagonal (flash_api.cpp)
        right = 0
    return left, right


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    causal_alignment: str = "bottom_right",
    window: Sequence[int] = (-1, -1),
    softmax_scale: float | None = None,
    dropout_p: float = 0.0,
    alibi_slopes: torch.Tensor | None = None,
    softcap: float = 0.0,
    attn_bias: torch.Tensor | None = None,
    seqlens_q: torch.Tensor | None = None,
    seqlens_k: torch.Tensor | None = None,
    key_leftpad: torch.Tensor | None = None,
    return_lse: bool = False,
    return_probs: bool = False,
) -> torch.Tensor | AttentionResult:
    """Attention on ``(batch, seqlen, heads, headdim)`` tensors; returns ``(batch, q_len, heads, v_dim)``.

    Args:
        q: ``(B, Sq, Hq, D)``; k: ``(B, Sk, Hk, D)``; v: ``(B, Sk, Hk, Dv)``. ``Hq % Hk == 0`` (GQA/MQA:
            query head ``h`` uses key/value head ``h // (Hq // Hk)``).
        causal: mask keys after the diagonal; ``causal_alignment`` puts the diagonal's end at the
            bottom-right corner (flash_attn, xformers ``...FromBottomRight`` masks) or the top-left
            corner (SDPA ``is_causal``, xformers ``LowerTriangularMask``).
        window: ``(left, right)`` sliding window, ``-1`` = unbounded, aligned like ``causal``.
        softmax_scale: scale of ``QK^T``; default ``D ** -0.5``.
        dropout_p: dropout on the attention probabilities (always applied when > 0, as flash_attn).
        alibi_slopes: ``(Hq,)`` or ``(B, Hq)``; adds ``-slope * |i + off - j|``.
        softcap: > 0 caps logits to ``softcap * tanh(logits / softcap)``.
        attn_bias: boolean keep-mask (True = attend) or additive float bias, broadcastable to
            ``(B, Hq, Sq, Sk)``.
        seqlens_q / seqlens_k: ``(B,)`` valid lengths of right-padded batches (the varlen paths); the
            bottom-right diagonal then sits at each sequence's own end. ``key_leftpad``: ``(B,)`` first
            valid key (flash_attn's ``cache_leftpad``); it does not move the diagonal.
        return_lse / return_probs: return an :class:`AttentionResult` with the fp32 log-sum-exp of the
            (scaled, capped, biased) logits and/or the probabilities (entries dropped by dropout negated,
            flash_attn's ``S_dmask`` convention). Both need the math path.
    """
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(
            f"q, k, v must be 4-D (batch, seqlen, heads, headdim); got {tuple(q.shape)}, {tuple(k.shape)}, "
            f"{tuple(v.shape)}"
        )
    batch, sq, hq, dim = q.shape
    _, sk, hk, _ = k.shape
    if k.shape[0] != batch or v.shape[0] != batch or v.shape[1] != sk or v.shape[2] != hk:
        raise ValueError(f"incompatible shapes: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if k.shape[3] != dim:
        raise ValueError(f"q and k must have the same head dimension, got {dim} and {k.shape[3]}")
    if hk == 0 or hq % hk != 0:
        raise ValueError(f"number of heads in key/value ({hk}) must divide the number of heads in query ({hq})")
    if causal_alignment not in _ALIGNMENTS:
        raise ValueError(f"causal_alignment must be one of {_ALIGNMENTS}, got {causal_alignment!r}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {dropout_p}")
    scale = dim ** -0.5 if softmax_scale is None else float(softmax_scale)
    want_result = return_lse or return_probs

    if sk == 0:  # nothing to attend to: flash_attn's zero output / +inf lse
        # Zeros that stay in the graph, so backward gives zero dq (and empty dk/dv) as flash_attn's
        # does, instead of "does not require grad" for code that backpropagates through an empty
        # KV cache. Sums over empty slices are exactly 0 and read no value (no NaN from inf inputs).
        tie = q[..., :0].sum(-1, keepdim=True) + k.sum() + v.sum()  # (B, Sq, Hq, 1) zeros
        out = q.new_zeros(batch, sq, hq, v.shape[3]) + tie.to(q.dtype)
        if not want_result:
            return out
        lse = torch.full((batch, hq, sq), math.inf, device=q.device, dtype=torch.float32)
        probs = q.new_zeros(batch, hq, sq, 0) if return_probs else None
        return AttentionResult(out, lse, probs)

    left, right = _normalize_window(window, causal)
    per_batch = seqlens_q is not None or seqlens_k is not None or key_leftpad is not None
    device = q.device

    op = npu_fusion.fusion_op(device)
    if op is not None:
        extras = [name for name, on in (("softcap", softcap > 0), ("alibi_slopes", alibi_slopes is not None),
                                        ("an explicit bias", attn_bias is not None), ("padding", per_batch),
                                        ("lse/probabilities", want_result)) if on]  # fmt: skip
        reason = npu_fusion.reason_to_skip(
            hq, hk, dim, v.shape[3], [sq], [sk], causal=causal, causal_alignment=causal_alignment,
            window=(left, right), extras=extras,
        )
        if reason is None:
            return npu_fusion.dense(op, q, k, v, causal=causal, causal_alignment=causal_alignment,
                                    window=(left, right), scale=scale, dropout_p=dropout_p)  # fmt: skip
        npu_fusion.note_sdpa(reason)

    # --- which keys each query sees: rel = j - i - offset, offset placing the diagonal ---
    rel: torch.Tensor | None = None
    keep: torch.Tensor | None = None
    row_valid: torch.Tensor | None = None  # (B|1, 1|H, Sq, 1): rows that see at least one key
    is_causal = False
    if per_batch:
        sk_b = (seqlens_k.to(device=device, dtype=torch.long) if seqlens_k is not None
                else torch.full((batch,), sk, device=device, dtype=torch.long))
        sq_b = (seqlens_q.to(device=device, dtype=torch.long) if seqlens_q is not None
                else torch.full((batch,), sq, device=device, dtype=torch.long))
        offset = (sk_b - sq_b) if causal_alignment == "bottom_right" else torch.zeros_like(sk_b)
        i = torch.arange(sq, device=device).view(1, 1, sq, 1)
        j = torch.arange(sk, device=device).view(1, 1, 1, sk)
        rel = j - i - offset.view(batch, 1, 1, 1)
        keep = (j < sk_b.view(batch, 1, 1, 1)) & (i < sq_b.view(batch, 1, 1, 1))
        if key_leftpad is not None:
            keep = keep & (j >= key_leftpad.to(device=device, dtype=torch.long).view(batch, 1, 1, 1))
        if right >= 0:
            keep = keep & (rel <= right)
        if left >= 0:
            keep = keep & (rel >= -left)
        # Lengths live on the device: checking for empty rows on the host would sync, so always guard.
        row_valid = keep.any(-1, keepdim=True)
    else:
        offset_int = sk - sq if causal_alignment == "bottom_right" else 0
        # Drop constraints no row can hit (e.g. a decoding step: q_len == 1 sees every cached key).
        if right >= 0 and offset_int + right >= sk - 1:
            right = -1
        if left >= 0 and (sq - 1) + offset_int - left <= 0:
            left = -1
        if right == 0 and left < 0 and offset_int == 0:
            is_causal = True  # the diagonal starts at the top-left corner: SDPA's own causal mask
        elif right >= 0 or left >= 0 or alibi_slopes is not None:
            i = torch.arange(sq, device=device).view(1, 1, sq, 1)
            j = torch.arange(sk, device=device).view(1, 1, 1, sk)
            rel = j - i - offset_int
            if right >= 0:
                keep = rel <= right
            if left >= 0:
                keep = (rel >= -left) if keep is None else keep & (rel >= -left)
            # Rows are monotone in i, so only the first row (window ends before key 0) and the last
            # row (window starts after the last key) can be empty; decide that on the host.
            if keep is not None and ((right >= 0 and offset_int + right < 0) or
                                     (left >= 0 and sq - 1 + offset_int - left > sk - 1)):
                row_valid = keep.any(-1, keepdim=True)

    float_bias: torch.Tensor | None = None
    if attn_bias is not None:
        if attn_bias.dtype == torch.bool:
            keep = attn_bias if keep is None else keep & attn_bias
            row_valid = keep.any(-1, keepdim=True)
            if is_causal:  # fold SDPA's causal mask into the explicit one
                tri = torch.ones(sq, sk, dtype=torch.bool, device=device).tril()
                keep, is_causal = keep & tri, False
                row_valid = keep.any(-1, keepdim=True)
        else:
            float_bias = attn_bias
            if is_causal:
                keep = torch.ones(sq, sk, dtype=torch.bool, device=device).tril().view(1, 1, sq, sk)
                is_causal = False

    alibi: torch.Tensor | None = None
    if alibi_slopes is not None:
        if rel is None:  # is_causal fast path was chosen above; ALiBi needs the distances anyway
            i = torch.arange(sq, device=device).view(1, 1, sq, 1)
            j = torch.arange(sk, device=device).view(1, 1, 1, sk)
            rel = j - i
        alibi = _alibi_bias(alibi_slopes, rel, batch, hq, torch.float64 if q.dtype == torch.float64 else torch.float32)
        if is_causal:
            keep, is_causal = (rel <= 0), False

    use_math = softcap > 0 or want_result or alibi is not None
    if use_math:
        _note_math_path(softcap > 0, alibi is not None, want_result)
        return _math_attention(q, k, v, scale, keep, float_bias, alibi, softcap, dropout_p, is_causal,
                               want_result, return_lse, return_probs)

    qh, kh, vh = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    mask: torch.Tensor | None = None
    if keep is not None:
        # A row with no visible key would be 0/0; let it see everything and zero it afterwards, so
        # neither the forward nor the backward ever meets a NaN.
        mask = keep if row_valid is None else keep | ~row_valid
    if float_bias is not None:
        fb = float_bias.to(q.dtype)
        mask = fb if mask is None else fb.masked_fill(~mask, -math.inf)
    extra = {}
    if hq != hk:
        if mask is None and _SDPA_HAS_GQA:
            extra["enable_gqa"] = True
        else:
            kh, vh = _repeat_kv(kh, hq // hk), _repeat_kv(vh, hq // hk)
    if mask is not None and mask.dim() < 4:
        mask = mask.view((1,) * (4 - mask.dim()) + tuple(mask.shape))
    out = F.scaled_dot_product_attention(
        qh, kh, vh, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale, **extra
    )
    if row_valid is not None:
        out = out.masked_fill(~row_valid, 0.0)
    # flash_attn returns a contiguous (B, S, H, D) tensor and callers .view() it.
    return out.transpose(1, 2).contiguous()


def _math_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    keep: torch.Tensor | None,
    float_bias: torch.Tensor | None,
    alibi: torch.Tensor | None,
    softcap: float,
    dropout_p: float,
    is_causal: bool,
    want_result: bool,
    return_lse: bool,
    return_probs: bool,
) -> torch.Tensor | AttentionResult:
    """softmax(QK^T * scale [capped] + bias, masked) @ V, accumulated in fp32 (fp64 stays fp64)."""
    hq, hk = q.shape[2], k.shape[2]
    acc = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    qh = q.transpose(1, 2).to(acc)
    kh = _repeat_kv(k.transpose(1, 2), hq // hk).to(acc)
    vh = _repeat_kv(v.transpose(1, 2), hq // hk).to(acc)
    scores = torch.matmul(qh, kh.transpose(-1, -2)) * scale
    if softcap > 0:
        scores = torch.tanh(scores / softcap) * softcap
    if alibi is not None:
        scores = scores + alibi.to(acc)
    if float_bias is not None:
        scores = scores + float_bias.to(acc)
    if is_causal:
        sq, sk = scores.shape[-2:]
        keep = torch.ones(sq, sk, dtype=torch.bool, device=q.device).tril()
    if keep is not None:
        scores = scores.masked_fill(~keep, -math.inf)
    # Rows with no finite logit: compute on zeros (finite forward and backward), then zero them.
    empty = scores.detach().amax(-1, keepdim=True) == -math.inf
    scores = scores.masked_fill(empty, 0.0)
    lse = torch.logsumexp(scores, dim=-1, keepdim=True)
    probs = torch.exp(scores - lse).masked_fill(empty, 0.0)
    signed = probs
    if dropout_p > 0:
        dropped = torch.rand_like(probs) < dropout_p
        used = probs.masked_fill(dropped, 0.0) * (1.0 / (1.0 - dropout_p))
        if return_probs:
            signed = torch.where(dropped, -probs, probs)
    else:
        used = probs
    out = torch.matmul(used, vh).to(q.dtype).transpose(1, 2).contiguous()
    if not want_result:
        return out
    lse_out = lse.squeeze(-1).masked_fill(empty.squeeze(-1), math.inf).float() if return_lse else None
    return AttentionResult(out, lse_out, signed.to(q.dtype) if return_probs else None)


# --------------------------------------------------------------------------------------------
# Packed ("varlen") sequences: pad into a batch, run one attention call, gather back.
# One fused call with a boolean mask beats a Python loop of small calls on an accelerator, and
# nothing here reads lengths back to the host (no device sync).
# --------------------------------------------------------------------------------------------


def pad_packed(x: torch.Tensor, starts: torch.Tensor, lens: torch.Tensor, max_len: int) -> torch.Tensor:
    """Rows ``starts[b] .. starts[b] + lens[b]`` of ``x (total, ...)`` -> ``(B, max_len, ...)``.

    Positions past a sequence's length repeat row 0; callers mask them out (``seqlens_*``).
    """
    pos = torch.arange(max_len, device=x.device)
    idx = starts.to(device=x.device, dtype=torch.long)[:, None] + pos[None, :]
    valid = pos[None, :] < lens.to(device=x.device, dtype=torch.long)[:, None]
    idx = torch.where(valid, idx, torch.zeros_like(idx)).clamp_(0, max(x.shape[0] - 1, 0))
    return x[idx]


def gather_paged(cache: torch.Tensor, block_table: torch.Tensor, max_len: int) -> torch.Tensor:
    """Paged KV cache ``(num_blocks, page, ...)`` + ``block_table (B, pages)`` -> ``(B, max_len, ...)``."""
    page = cache.shape[1]
    pos = torch.arange(max_len, device=cache.device)
    col = (pos // page).clamp_(max=block_table.shape[1] - 1)
    blocks = block_table.to(device=cache.device, dtype=torch.long)[:, col]
    return cache[blocks, (pos % page).expand_as(blocks)]


def unpad_to_packed(x: torch.Tensor, cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """Inverse of :func:`pad_packed` for contiguous packing: ``(B, L, ...)`` -> ``(total, ...)``.

    Rows not covered by ``cu_seqlens`` (past ``cu_seqlens[-1]``) come back as zeros.
    """
    batch, length = x.shape[:2]
    cu = cu_seqlens.to(device=x.device, dtype=torch.long)
    t = torch.arange(total, device=x.device)
    b = torch.searchsorted(cu[1:].contiguous(), t, right=True).clamp_(max=batch - 1)
    pos = (t - cu[b]).clamp_(0, max(length - 1, 0))
    out = x[b, pos]
    covered = (t < cu[-1]).view(-1, *([1] * (out.dim() - 1)))
    return out.masked_fill(~covered, 0)


def varlen_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: Offsets,
    cu_seqlens_k: Offsets,
    max_seqlen_q: int,
    max_seqlen_k: int,
    *,
    seqlens_k: Offsets | None = None,
    block_table: torch.Tensor | None = None,
    **kwargs,
) -> torch.Tensor | AttentionResult:
    """:func:`attention` over packed sequences (flash_attn's varlen layout).

    ``q (total_q, Hq, D)`` holds sequence ``b`` at rows ``cu_seqlens_q[b]:cu_seqlens_q[b+1]``; keys
    likewise through ``cu_seqlens_k``, or, when ``seqlens_k`` is given, at rows
    ``cu_seqlens_k[b] : cu_seqlens_k[b] + seqlens_k[b]`` (xformers' padded-keys layout). With
    ``block_table``, ``k``/``v`` are paged caches ``(num_blocks, page, Hk, D)`` and sequence ``b``'s
    keys are its first ``cu_seqlens_k[b+1] - cu_seqlens_k[b]`` cache positions.

    Sequences are not padded to the longest: those of equal lengths go through :func:`attention`
    together, each group with no mask to build (one fused SDPA call per distinct length, no
    ``(B, max_q, max_k)`` mask, which would also send SDPA to its unfused path). The lengths are read
    on the host in one transfer (or given as host lists: no read at all), so ``max_seqlen_*`` only
    has to be an upper bound; where padding needs it, an under-estimate is raised to the longest
    sequence. The padded path remains for paged caches and for ``return_probs``.

    Returns ``(total_q, Hq, Dv)``, or an :class:`AttentionResult` whose ``lse`` is flash_attn's
    varlen layout ``(Hq, total_q)`` and whose ``probs`` stay padded ``(B, Hq, max_q, max_k)``.
    """
    paged = block_table is not None
    cu_q, cu_k, used_k = host_lists(cu_seqlens_q, cu_seqlens_k, seqlens_k)
    check_offsets(cu_q, "cu_seqlens_q", q.shape[0], "q")
    # padded keys: each sequence's start only, spans may overlap; paged: k is the cache, not packed rows
    check_offsets(cu_k, "cu_seqlens_k", None if paged else k.shape[0], "k", increasing=used_k is None)
    if len(cu_k) != len(cu_q):
        raise ValueError(
            f"cu_seqlens_q has {len(cu_q)} entries ({len(cu_q) - 1} sequences) but cu_seqlens_k has {len(cu_k)} "
            f"({len(cu_k) - 1} sequences); both hold batch_size + 1 cumulative lengths of the same batch"
        )
    fused = _fused_packed(q, k, v, cu_q, cu_k, used_k is not None, paged, kwargs)
    if fused is not None:
        return fused
    if paged or kwargs.get("return_probs"):
        return _padded_varlen(q, k, v, cu_q, cu_k, int(max_seqlen_q), int(max_seqlen_k),
                              seqlens_k=used_k, block_table=block_table, **kwargs)  # fmt: skip
    if used_k is not None:
        k_starts, k_lens = cu_k[:-1], used_k
    else:
        k_starts, k_lens = cu_k[:-1], seq_lengths(cu_k)
    groups: dict[tuple[int, int], list[int]] = {}
    for b, (start, end) in enumerate(itertools.pairwise(cu_q)):
        groups.setdefault((end - start, k_lens[b]), []).append(b)
    outs: list[torch.Tensor | None] = [None] * len(k_starts)
    lses: list[torch.Tensor | None] = [None] * len(k_starts)
    slopes = kwargs.pop("alibi_slopes", None)
    for (len_q, len_k), members in groups.items():
        if len_q == 0:
            continue
        qs = _rows(q, [cu_q[b] for b in members], len_q)
        ks, vs = (_rows(t, [k_starts[b] for b in members], len_k) for t in (k, v))
        group_slopes = slopes[members] if slopes is not None and slopes.dim() == 2 else slopes
        res = attention(qs, ks, vs, alibi_slopes=group_slopes, **kwargs)
        out, lse = (res, None) if isinstance(res, torch.Tensor) else (res.out, res.lse)
        for i, b in enumerate(members):
            outs[b] = out[i]
            lses[b] = None if lse is None else lse[i]
    tail = q.shape[0] - cu_q[-1]  # rows past the last sequence: zeros, as flash_attn leaves them
    out = torch.cat([o for o in outs if o is not None] + [q.new_zeros(tail, q.shape[1], v.shape[-1])])
    if not kwargs.get("return_lse"):
        return out
    lse = torch.cat([x for x in lses if x is not None] + [q.new_zeros(q.shape[1], tail, dtype=torch.float32)], 1)
    return AttentionResult(out, lse, None)


def _fused_packed(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_q: list[int], cu_k: list[int], padded_keys: bool,
    paged: bool, kwargs: dict,
) -> torch.Tensor | None:
    """The packed call through ``npu_fusion_attention`` (TND) on an NPU, when it expresses it; else None."""
    op = npu_fusion.fusion_op(q.device)
    if op is None:
        return None
    causal = bool(kwargs.get("causal", False))
    window = _normalize_window(kwargs.get("window", (-1, -1)), causal)
    extras = [name for name, on in (
        ("softcap", kwargs.get("softcap", 0.0) > 0), ("alibi_slopes", kwargs.get("alibi_slopes") is not None),
        ("an explicit bias", kwargs.get("attn_bias") is not None), ("padded keys", padded_keys),
        ("a paged cache", paged), ("padding", kwargs.get("key_leftpad") is not None),
        ("lse/probabilities", bool(kwargs.get("return_lse") or kwargs.get("return_probs"))),
    ) if on]  # fmt: skip
    alignment = kwargs.get("causal_alignment", "bottom_right")
    reason = npu_fusion.reason_to_skip(
        q.shape[1], k.shape[1], q.shape[2], v.shape[2], seq_lengths(cu_q), seq_lengths(cu_k), causal=causal,
        causal_alignment=alignment, window=window, extras=extras,
    )
    if reason is not None:
        npu_fusion.note_sdpa(reason)
        return None
    scale = kwargs.get("softmax_scale")
    return npu_fusion.packed(op, q, k, v, cu_q, cu_k, causal=causal, causal_alignment=alignment, window=window,
                             scale=q.shape[2] ** -0.5 if scale is None else float(scale),
                             dropout_p=float(kwargs.get("dropout_p", 0.0)))  # fmt: skip


_CU_FIX = "build it as torch.nn.functional.pad(seqlens.cumsum(0, dtype=torch.int32), (1, 0))"


def check_cu_seqlens_tensor(cu_seqlens: object, name: str) -> None:
    """One-line TypeError/ValueError unless ``cu_seqlens`` is a 1-D integer tensor (flash_attn's contract).

    Upstream wants int32; any integer dtype is read the same way, so only what would be misread
    (floats truncated by ``int()``, bools) or mis-shaped is refused. Checks metadata only: no device read.
    """
    if not isinstance(cu_seqlens, torch.Tensor):
        raise TypeError(f"{name} must be a 1-D int32 tensor of batch_size + 1 cumulative lengths, got "
                        f"{type(cu_seqlens).__name__}; pass torch.tensor(..., dtype=torch.int32, device=q.device)")
    if cu_seqlens.dtype == torch.bool or cu_seqlens.dtype.is_floating_point or cu_seqlens.dtype.is_complex:
        raise TypeError(f"{name} must have an integer dtype (flash_attn uses torch.int32), got {cu_seqlens.dtype}; "
                        f"pass {name}.to(torch.int32)")
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() == 0:
        raise ValueError(f"{name} must be 1-D, (batch_size + 1,), got shape {tuple(cu_seqlens.shape)}; {_CU_FIX}")


def host_lists(*values: Offsets | None) -> list[list[int] | None]:
    """Each value as a host list of ints (None stays None), the device tensors read in ONE transfer.

    The grouping, torch_npu's packed op (``actual_seq_qlen`` / ``actual_seq_kvlen`` are host lists) and
    every check below need the lengths on the host; reading them together costs one device sync per
    call instead of one per tensor. Host lists are only copied.
    """
    out = [None if x is None or isinstance(x, torch.Tensor) else [int(n) for n in x] for x in values]
    by_device: dict[torch.device, list[int]] = {}
    for i, x in enumerate(values):
        if isinstance(x, torch.Tensor):
            by_device.setdefault(x.device, []).append(i)
    for members in by_device.values():  # one device in practice: one transfer
        flat = torch.cat([values[i].reshape(-1).to(torch.long) for i in members]).tolist()
        pos = 0
        for i in members:
            out[i], pos = flat[pos : pos + values[i].numel()], pos + values[i].numel()
    return out


def seq_lengths(offsets: Sequence[int]) -> list[int]:
    """Per-sequence lengths of a host copy of ``cu_seqlens``."""
    return [b - a for a, b in itertools.pairwise(offsets)]


def _show(offsets: Sequence[int]) -> str:
    """A list for an error message, shortened when long (a batch can hold thousands of sequences)."""
    if len(offsets) <= 12:
        return str(list(offsets))
    return f"[{', '.join(map(str, offsets[:5]))}, ..., {', '.join(map(str, offsets[-3:]))}] ({len(offsets)} entries)"


def check_offsets(offsets: Sequence[int], name: str, rows: int | None, tensor: str, increasing: bool = True) -> None:
    """One-line ValueError unless ``offsets`` (a host copy of ``name``) starts at 0, never decreases and fits.

    ``rows``: the packed tensor's row count (``tensor.shape[0]``), None when it is not packed (a paged
    cache). The last entry may stay below ``rows``: flash_attn leaves the rows past it alone (a
    preallocated or CUDA-graph-padded buffer), the shim returns zeros there. ``increasing=False`` for
    xformers' padded keys, where only each sequence's start is given.
    """
    if not offsets:
        raise ValueError(f"{name} must have batch_size + 1 >= 1 entries, got an empty tensor; {_CU_FIX}")
    if offsets[0] != 0:
        raise ValueError(f"{name} must start at 0, got {_show(offsets)}; {_CU_FIX}")
    if increasing:
        for i in range(1, len(offsets)):
            if offsets[i] < offsets[i - 1]:
                raise ValueError(f"{name} must never decrease, got {_show(offsets)} ({name}[{i}] = {offsets[i]} < "
                                 f"{name}[{i - 1}] = {offsets[i - 1]}); {_CU_FIX}")
    elif min(offsets) < 0:
        raise ValueError(f"{name} must not be negative, got {_show(offsets)}")
    top = max(offsets)
    if rows is not None and top > rows:
        raise ValueError(f"{name} reaches {top} but {tensor} has {rows} rows ({tensor}.shape[0]); its last entry is "
                         f"the total token count and must be at most {tensor}.shape[0]")


def _rows(x: torch.Tensor, starts: list[int], length: int) -> torch.Tensor:
    """``(len(starts), length, ...)``: the rows ``start : start + length`` of ``x`` for each start."""
    if len(starts) == 1:
        return x[starts[0] : starts[0] + length].unsqueeze(0)  # a view: no copy for a lone sequence
    return torch.stack([x[s : s + length] for s in starts])


def _padded_varlen(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_q_host: list[int],
    cu_k_host: list[int],
    max_seqlen_q: int,
    max_seqlen_k: int,
    *,
    seqlens_k: list[int] | None,
    block_table: torch.Tensor | None,
    **kwargs,
) -> torch.Tensor | AttentionResult:
    """Every sequence padded to the longest and one masked call: paged caches, attention probabilities."""
    lens_q_host = seq_lengths(cu_q_host)
    lens_k_host = seqlens_k if seqlens_k is not None else seq_lengths(cu_k_host)
    batch = len(lens_q_host)
    if block_table is not None:
        if block_table.dim() != 2 or block_table.shape[0] != batch:
            raise ValueError(f"block_table must be (batch_size, max_num_blocks_per_seq) = ({batch}, ...), got "
                             f"{tuple(block_table.shape)}; one row of page indices per sequence of cu_seqlens_k")
        capacity = block_table.shape[1] * k.shape[1]
        if max(lens_k_host, default=0) > capacity:
            raise ValueError(
                f"cu_seqlens_k gives a sequence {max(lens_k_host)} keys but block_table holds {capacity} positions "
                f"(max_num_blocks_per_seq {block_table.shape[1]} * page_block_size {k.shape[1]}); add pages"
            )
    # The padded length must cover every sequence: an under-estimated max_seqlen would drop rows and keys.
    # An over-estimate is kept as given (the probabilities come back padded to it, as upstream's S_dmask).
    max_seqlen_q = max(max_seqlen_q, max(lens_q_host, default=0))
    max_seqlen_k = max(max_seqlen_k, max(lens_k_host, default=0))
    # host -> device copies of a few ints: no sync
    cu_q = torch.tensor(cu_q_host, device=q.device, dtype=torch.long)
    cu_k = torch.tensor(cu_k_host, device=q.device, dtype=torch.long)
    lens_q = torch.tensor(lens_q_host, device=q.device, dtype=torch.long)
    lens_k = torch.tensor(lens_k_host, device=q.device, dtype=torch.long)
    q_pad = pad_packed(q, cu_q[:-1], lens_q, max_seqlen_q)
    if block_table is not None:
        k_pad = gather_paged(k, block_table, max_seqlen_k)
        v_pad = gather_paged(v, block_table, max_seqlen_k)
    else:
        k_pad = pad_packed(k, cu_k[:-1], lens_k, max_seqlen_k)
        v_pad = pad_packed(v, cu_k[:-1], lens_k, max_seqlen_k)
    res = attention(q_pad, k_pad, v_pad, seqlens_q=lens_q, seqlens_k=lens_k, **kwargs)
    total_q = q.shape[0]
    if isinstance(res, torch.Tensor):
        return unpad_to_packed(res, cu_q, total_q)
    out = unpad_to_packed(res.out, cu_q, total_q)
    lse = None
    if res.lse is not None:
        lse = unpad_to_packed(res.lse.transpose(1, 2), cu_q, total_q).t().contiguous()
    return AttentionResult(out, lse, res.probs)


__all__ = [
    "AttentionResult", "attention", "gather_paged", "pad_packed", "unpad_to_packed", "varlen_attention",
]  # fmt: skip
