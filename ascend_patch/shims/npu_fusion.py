"""The attention shims' NPU path: ``torch_npu.npu_fusion_attention`` wherever it expresses the call exactly.

On an NPU (real or simulated) the flash_attn / xformers shims hand their calls to Ascend's fused
attention op instead of SDPA, which on an NPU reaches that kernel only for BNSD inputs with no mask
or a boolean one (docs/torch-npu-facts.md): a packed varlen call, bottom-right causality and sliding
windows would otherwise take SDPA's unfused path. The mapping (torch_npu's ``npu_fusion_attention``
documentation; op-plugin ``FlashAttentionKernelNpuOpApi.cpp``):

- dense ``(B, S, N, D)``: ``input_layout="BSND"``; packed ``(T, N, D)``: ``"TND"`` with the cumulative
  host lists ``actual_seq_qlen`` / ``actual_seq_kvlen``;
- no mask: ``sparse_mode=0``; causal aligned bottom-right (flash_attn): ``sparse_mode=3``; top-left
  (SDPA's ``is_causal``, xformers' ``LowerTriangularMask``): ``sparse_mode=2``; a window ``(left,
  right)`` aligned bottom-right: ``sparse_mode=4`` with ``pre_tockens=left``, ``next_tockens=right``.
  Modes 2-4 take the compressed ``2048 x 2048`` upper triangle as ``atten_mask`` (True = masked out);
- ``scale`` is always passed (the op's default is 1.0, not ``D ** -0.5``); ``keep_prob = 1 - dropout_p``.

What the op cannot express exactly stays on SDPA, and :func:`reason_to_skip` says why: softcap,
ALiBi, an explicit bias or padding (``seqlens_*``, ``key_leftpad``), the log-sum-exp or the
probabilities, a top-left window, rows that would see no key (the op rejects them), empty
sequences, more than 256 query heads, a head dim over 768. Each call site's path is in the
migration log.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from typing import Any

import torch

from ascend_patch.engine import calls

__ascend_patch_shim__ = True

_NO_MASK, _TOP_LEFT_CAUSAL, _BOTTOM_RIGHT_CAUSAL, _BAND = 0, 2, 3, 4
_UNBOUNDED = 2147483647  # the op's default pre/next_tockens
_COMPRESSED = 2048  # the mask modes 2-4 take: the upper triangle of a 2048 x 2048 block
_MAX_HEADS, _MAX_HEAD_DIM = 256, 768


def fusion_op(device: torch.device) -> Any:
    """``torch_npu.npu_fusion_attention`` when tensors on ``device`` can use it, else None (never imports torch_npu)."""
    if device.type != "npu":
        return None
    return getattr(sys.modules.get("torch_npu"), "npu_fusion_attention", None)


@functools.lru_cache(maxsize=8)
def _compressed_mask(device: torch.device) -> torch.Tensor:
    return torch.ones(_COMPRESSED, _COMPRESSED, dtype=torch.bool, device=device).triu_(1)


def reason_to_skip(
    q_heads: int, kv_heads: int, dim: int, v_dim: int, q_lens: Sequence[int], k_lens: Sequence[int], *,
    causal: bool, causal_alignment: str, window: tuple[int, int], extras: Sequence[str],
) -> str | None:
    """Why the fused op cannot run this call exactly (None: it can). ``window`` is normalized (-1 = unbounded)."""
    if extras:
        return ", ".join(extras)
    if q_heads > _MAX_HEADS or q_heads % kv_heads:
        return f"{q_heads} query heads over {kv_heads} key heads"
    if dim > _MAX_HEAD_DIM or v_dim > dim:
        return f"head dims {dim}/{v_dim}"
    if min(k_lens, default=0) == 0 or min(q_lens, default=0) == 0:
        return "an empty sequence"
    masked = causal or window != (-1, -1)
    if _is_band(causal, window) and causal_alignment != "bottom_right":
        return "a top-left window"
    if masked and causal_alignment == "bottom_right" and any(lq > lk for lq, lk in zip(q_lens, k_lens)):
        return "rows that see no key"  # more queries than keys: the op rejects such rows
    return None


def _is_band(causal: bool, window: tuple[int, int]) -> bool:
    """A window narrower than plain causality (a normalized causal window is ``(-1, 0)``)."""
    return window != (-1, -1) and not (causal and window[0] < 0)


def _sparse_args(causal: bool, causal_alignment: str, window: tuple[int, int], device: torch.device) -> dict[str, Any]:
    left, right = window
    if _is_band(causal, window):
        return {"sparse_mode": _BAND, "atten_mask": _compressed_mask(device),
                "pre_tockens": _UNBOUNDED if left < 0 else left, "next_tockens": _UNBOUNDED if right < 0 else right}
    if causal:
        mode = _BOTTOM_RIGHT_CAUSAL if causal_alignment == "bottom_right" else _TOP_LEFT_CAUSAL
        return {"sparse_mode": mode, "atten_mask": _compressed_mask(device)}
    return {"sparse_mode": _NO_MASK}  # fmt: skip


def _log(layout: str, sparse: dict[str, Any]) -> None:
    if calls.STATE.enabled:
        change = f"-> npu_fusion_attention({layout}, sparse_mode={sparse['sparse_mode']})"
        calls.log_call("attention", "attention on npu", change)


def note_sdpa(reason: str) -> None:
    """An npu call the fused op cannot express: SDPA, and why, in the migration log."""
    if calls.STATE.enabled:
        calls.log_call("attention", "attention on npu", f"-> SDPA ({reason})")


def dense(
    op: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool, causal_alignment: str,
    window: tuple[int, int], scale: float, dropout_p: float,
) -> torch.Tensor:
    """``(B, Sq, Nq, D)`` attention through the fused op; ``(B, Sq, Nq, Dv)``."""
    sparse = _sparse_args(causal, causal_alignment, window, q.device)
    _log("BSND", sparse)
    return op(q, k, v, q.shape[2], "BSND", scale=scale, keep_prob=1.0 - dropout_p, **sparse)[0]


def packed(
    op: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_q: Sequence[int], cu_k: Sequence[int], *,
    causal: bool, causal_alignment: str, window: tuple[int, int], scale: float, dropout_p: float,
) -> torch.Tensor:
    """Packed ``(T, Nq, D)`` attention through the fused op (TND); rows past ``cu_q[-1]`` come back zero."""
    sparse = _sparse_args(causal, causal_alignment, window, q.device)
    _log("TND", sparse)
    out = op(q, k, v, q.shape[1], "TND", scale=scale, keep_prob=1.0 - dropout_p, actual_seq_qlen=list(cu_q[1:]),
             actual_seq_kvlen=list(cu_k[1:]), **sparse)[0]  # fmt: skip
    tail = q.shape[0] - cu_q[-1]
    return out if tail == 0 else torch.cat([out[: cu_q[-1]], out.new_zeros(tail, *out.shape[1:])])
