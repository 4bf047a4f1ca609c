"""Stand-in for ``xformers.ops.fmha.flash``: placeholder ``FwOp``/``BwOp`` and ``torch.ops.xformers_flash.flash_fwd``.

xformers registers its FlashAttention kernel as the PyTorch operator ``xformers_flash::flash_fwd``
(xformers 0.0.28-0.0.35 signature), and code names it at import: lingua lists it among the ops
selective activation checkpointing must not recompute, and compares dispatched ops with
``FwOp.OPERATOR``. Here it is the flash_attn shim (SDPA): dense ``[B, M, H, K]`` inputs, or packed
``[total, H, K]`` ones with ``cu_seqlens``. It returns ``(out, lse, rng_state)`` like upstream;
``seqused_k`` and ``block_tables`` (paged KV) raise. There is no ``flash_bwd``: autograd runs
through SDPA when the shim's attention functions are called, which is what code does.
The operator stays registered after revert (PyTorch cannot unregister it); it is ours, not upstream's.
"""

from __future__ import annotations

import torch

from ....flash_attn.flash_attn_interface import flash_attn_func, flash_attn_varlen_func
from .common import _make_ops

__ascend_patch_shim__ = True


def _unsupported(name: str) -> NotImplementedError:
    return NotImplementedError(f"ascend_patch xformers shim: xformers_flash::flash_fwd with {name} is not supported")


def _flash_fwd(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    cu_seqlens_q: torch.Tensor | None,
    cu_seqlens_k: torch.Tensor | None,
    seqused_k: torch.Tensor | None,
    max_seqlen_q: int,
    max_seqlen_k: int,
    p: float,
    softmax_scale: float,
    is_causal: bool,
    window_left: int,
    window_right: int,
    return_softmax: bool,
    block_tables: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if seqused_k is not None:
        raise _unsupported("seqused_k")
    if block_tables is not None:
        raise _unsupported("block_tables")
    window = (window_left, window_right)
    if cu_seqlens_q is None:
        out, lse, _ = flash_attn_func(query, key, value, p, softmax_scale, is_causal, window, return_attn_probs=True)
    else:
        out, lse, _ = flash_attn_varlen_func(
            query, key, value, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, p, softmax_scale, is_causal,
            window, return_attn_probs=True,
        )  # fmt: skip
    return out, lse.float(), torch.zeros(2, dtype=torch.int64, device=query.device)  # (seed, offset) as upstream


def _register() -> torch._ops.OpOverloadPacket:
    namespace = torch.ops.xformers_flash
    if not hasattr(namespace, "flash_fwd"):  # this module re-imported, or reloaded
        op = torch.library.custom_op("xformers_flash::flash_fwd", _flash_fwd, mutates_args=())

        @op.register_fake
        def _(query, key, value, cu_seqlens_q, *args):  # type: ignore[no-untyped-def]
            out = query.new_empty((*query.shape[:-1], value.shape[-1]))
            heads = query.shape[-2]
            lse_shape = (heads, query.shape[0]) if cu_seqlens_q is not None else (query.shape[0], heads, query.shape[1])
            return out, query.new_empty(lse_shape, dtype=torch.float32), query.new_empty(2, dtype=torch.int64)

    return namespace.flash_fwd


FwOp, BwOp = _make_ops(__name__, "fa2")
FwOp.OPERATOR = _register()
