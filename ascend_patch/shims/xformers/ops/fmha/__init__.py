"""Stand-in for ``xformers.ops.fmha``: ``memory_efficient_attention`` and friends on SDPA.

Layouts and semantics are xformers' (facebookresearch/xformers 0.0.35, ``xformers/ops/fmha/__init__.py``):

* ``[B, M, H, K]`` (BMHK); ``[B, M, K]`` means one head; ``[B, M, G, H, K]`` (BMGHK) is grouped-query
  attention where key/value are expanded over ``H`` (``expand``: stride 0 there). The shim runs those
  as GQA with ``G`` key/value heads instead of materialising the expansion.
* ``attn_bias``: None, a tensor broadcastable to ``[B, H, Mq, Mk]`` (``[B, G, H, Mq, Mk]`` for BMGHK), or
  an :mod:`.attn_bias` class. Unknown :class:`AttentionBias` subclasses are materialised (correct,
  slow, logged once).
* ``p`` is dropout on the attention probabilities, applied whenever ``p > 0`` (there is no training
  flag in xformers either). ``scale`` defaults to ``K ** -0.5``.
* ``op`` picks a CUDA kernel upstream; the shim has one implementation, so it is ignored (logged once
  per op). Quantized (int32) keys/values raise ``NotImplementedError``.
* ``output_dtype`` wider than the inputs (fp32 for bf16/fp16 inputs, the default of
  ``memory_efficient_attention_partial``) is the precision of the whole computation, as upstream's
  kernels accumulate in fp32 and write that; a narrower one only casts the result.
* The log-sum-exp returned by the ``..._requires_grad`` / ``..._partial`` variants is fp32
  ``[B, H, Mq]`` (``[1, H, total_q]`` for block-diagonal biases, packed) with ``-inf`` for rows that see
  no key, so :func:`merge_attentions` gives them zero weight.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from typing import Any

import torch

from ascend_patch.engine import calls

from ....sdpa import AttentionResult, attention, varlen_attention
from . import attn_bias, ck, common, cutlass, flash, triton_splitk
from .attn_bias import (
    VARLEN_BIASES,
    AttentionBias,
    BlockDiagonalCausalFromBottomRightMask,
    BlockDiagonalCausalLocalAttentionFromBottomRightMask,
    BlockDiagonalCausalLocalAttentionMask,
    BlockDiagonalCausalLocalAttentionPaddedKeysMask,
    BlockDiagonalCausalMask,
    BlockDiagonalCausalWithOffsetPaddedKeysMask,
    BlockDiagonalLocalAttentionPaddedKeysMask,
    BlockDiagonalMask,
    BlockDiagonalPaddedKeysMask,
    LocalAttentionFromBottomRightMask,
    LowerTriangularFromBottomRightLocalAttentionMask,
    LowerTriangularFromBottomRightMask,
    LowerTriangularMask,
    LowerTriangularMaskWithTensorBias,
)
from .common import AttentionBwOpBase, AttentionFwOpBase, AttentionOp, AttentionOpBase, Inputs, bmk2bmhk

__ascend_patch_shim__ = True

logger = logging.getLogger("ascend_patch.shims")

MemoryEfficientAttentionCutlassOp = (cutlass.FwOp, cutlass.BwOp)
MemoryEfficientAttentionCutlassFwdFlashBwOp = (cutlass.FwOp, flash.BwOp)
MemoryEfficientAttentionFlashAttentionOp = (flash.FwOp, flash.BwOp)
MemoryEfficientAttentionCkOp = (ck.FwOp, ck.BwOp)
MemoryEfficientAttentionSplitKCkOp = (triton_splitk.FwOp, ck.BwOp)
ALL_FW_OPS: list[type[AttentionFwOpBase]] = [cutlass.FwOp, flash.FwOp, ck.FwOp, triton_splitk.FwOp]
ALL_BW_OPS: list[type[AttentionBwOpBase]] = [cutlass.BwOp, flash.BwOp, ck.BwOp]

_noted_ops: set = set()
_noted_biases: set = set()

# Exact bias type -> (causal, alignment, (window_left, window_right)) for the dense (non-packed) biases.
_DENSE_BIASES = {
    LowerTriangularMask: lambda b: (True, "top_left", (-1, -1)),
    LowerTriangularMaskWithTensorBias: lambda b: (True, "top_left", (-1, -1)),
    LowerTriangularFromBottomRightMask: lambda b: (True, "bottom_right", (-1, -1)),
    LowerTriangularFromBottomRightLocalAttentionMask: lambda b: (True, "bottom_right", (b._window_size - 1, -1)),
    LocalAttentionFromBottomRightMask: lambda b: (False, "bottom_right", (b.window_left, b.window_right)),
}
_PACKED_BIASES = (
    BlockDiagonalMask, BlockDiagonalCausalMask, BlockDiagonalCausalFromBottomRightMask,
    BlockDiagonalCausalLocalAttentionMask, BlockDiagonalCausalLocalAttentionFromBottomRightMask,
    BlockDiagonalPaddedKeysMask, BlockDiagonalCausalWithOffsetPaddedKeysMask,
    BlockDiagonalLocalAttentionPaddedKeysMask, BlockDiagonalCausalLocalAttentionPaddedKeysMask,
)


def _note_op(op: Any) -> None:
    if op is None:
        return
    key = repr(op)
    if key not in _noted_ops:
        _noted_ops.add(key)
        logger.info("xformers memory_efficient_attention: op=%s ignored; the ascend_patch shim always runs "
                    "torch SDPA (the op only selects a CUDA kernel, not the result)", key)


def _validate(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, p: float) -> None:
    if key.dtype == torch.int32 or value.dtype == torch.int32:
        raise NotImplementedError(
            "key/value: quantized int32 K/V (xformers' split-k int4 KV cache) is not supported by the "
            "ascend_patch xformers shim; dequantize the cache before calling memory_efficient_attention"
        )
    if query.ndim not in (3, 4, 5) or key.ndim != query.ndim or value.ndim != query.ndim:
        raise ValueError(
            "Query/Key/Value should all have BMGHK, BMHK or BMK shape.\n"
            f"  query.shape: {tuple(query.shape)}\n  key.shape  : {tuple(key.shape)}\n"
            f"  value.shape: {tuple(value.shape)}"
        )
    if key.dtype != query.dtype or value.dtype != query.dtype:
        raise ValueError(f"Query/Key/Value should all have the same dtype, got {query.dtype}, {key.dtype}, "
                         f"{value.dtype}")
    if not 0.0 <= p < 1.0:
        raise ValueError(f"Invalid dropout probability: p={p}")


def _run(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    bias: torch.Tensor | AttentionBias | None,
    p: float,
    scale: float | None,
    output_dtype: torch.dtype | None,
    want_lse: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Normalize the layout to BMHK, plan the bias, call the SDPA core, restore the layout."""
    if calls.STATE.enabled:
        calls.log_call("attention", f"xformers.ops.memory_efficient_attention(attn_bias={type(bias).__name__})",
                       "-> SDPA shim")
    _validate(query, key, value, p)
    ndim = query.ndim
    if ndim == 3:  # BMK: one head
        query, key, value = query.unsqueeze(2), key.unsqueeze(2), value.unsqueeze(2)
        if isinstance(bias, torch.Tensor):
            bias = bias.unsqueeze(1)
        if isinstance(bias, LowerTriangularMaskWithTensorBias):
            bias = LowerTriangularMaskWithTensorBias(bias._bias.unsqueeze(1))
    groups = None
    if ndim == 5:
        b_, mq, groups, hpg, kdim = query.shape
        query = query.reshape(b_, mq, groups * hpg, kdim)
        # K/V expanded over the heads of a group (stride 0, or one head) -> GQA on G key/value heads.
        if (key.shape[3] == 1 or key.stride(3) == 0) and (value.shape[3] == 1 or value.stride(3) == 0):
            key, value = key[:, :, :, 0], value[:, :, :, 0]
        else:
            key = key.expand(-1, -1, groups, hpg, -1).reshape(key.shape[0], key.shape[1], groups * hpg, -1)
            value = value.expand(-1, -1, groups, hpg, -1).reshape(value.shape[0], value.shape[1], groups * hpg, -1)

        def to_4d(t: torch.Tensor) -> torch.Tensor:
            t = t.expand(b_, groups, hpg, mq, key.shape[1])
            return t.reshape(b_, groups * hpg, mq, key.shape[1])

        if isinstance(bias, torch.Tensor):
            bias = to_4d(bias)
        elif isinstance(bias, LowerTriangularMaskWithTensorBias):
            bias = LowerTriangularMaskWithTensorBias(to_4d(bias._bias))

    if _computes_in(query.dtype, output_dtype):
        # A wider output_dtype (fp32 out of bf16/fp16 inputs, the default of the partial API) is the
        # precision of the computation upstream: the kernels accumulate in fp32 and write that result,
        # and xformers' merge tests compare against fp32. Computing in bf16 and upcasting would round
        # every partial output to a bf16 step first, an error merge_attentions then carries on.
        # The upcast is exact; done after the BMGHK reshape so stride-0 K/V are not materialised.
        query, key, value = query.to(output_dtype), key.to(output_dtype), value.to(output_dtype)

    kwargs = {"softmax_scale": scale, "dropout_p": p, "return_lse": want_lse}
    packed = None
    if bias is None:
        pass
    elif isinstance(bias, torch.Tensor):
        kwargs["attn_bias"] = _check_tensor_bias(bias, query, key)
    elif type(bias) in _DENSE_BIASES:
        causal, alignment, window = _DENSE_BIASES[type(bias)](bias)
        kwargs.update(causal=causal, causal_alignment=alignment, window=window)
        if isinstance(bias, LowerTriangularMaskWithTensorBias):
            kwargs["attn_bias"] = _check_tensor_bias(bias._bias, query, key)
    elif type(bias) in _PACKED_BIASES:
        packed = bias
    elif isinstance(bias, AttentionBias):
        # A user-defined subclass: its materialize() is its definition, so use it (slow but exact).
        name = type(bias).__name__
        if name not in _noted_biases:
            _noted_biases.add(name)
            logger.warning("xformers attn_bias %s is not one the shim knows; materializing it as a dense "
                           "tensor (correct but slow)", name)
        try:
            dense = bias.materialize((query.shape[1], key.shape[1]), dtype=query.dtype, device=query.device)
        except NotImplementedError:
            raise NotImplementedError(
                f"attn_bias: {name} has no materialize() and is not supported by the ascend_patch xformers shim"
            ) from None
        kwargs["attn_bias"] = dense.view(1, 1, *dense.shape[-2:])
    else:
        raise ValueError(f"attn_bias must be None, a torch.Tensor or an AttentionBias, got {type(bias).__name__}")

    if packed is None:
        res = attention(query, key, value, **kwargs)
    else:
        res = _run_packed(query, key, value, packed, kwargs)
    out, lse = (res.out, res.lse) if isinstance(res, AttentionResult) else (res, None)
    if lse is not None:
        lse = lse.masked_fill(lse == math.inf, -math.inf)  # xformers marks "no key" rows with -inf
    if ndim == 3:
        out = out.squeeze(2)
    elif ndim == 5:
        out = out.view(out.shape[0], out.shape[1], groups, -1, out.shape[-1])
        if lse is not None:
            lse = lse.view(lse.shape[0], groups, -1, lse.shape[-1])
    if output_dtype is not None:
        out = out.to(output_dtype)
    return out, lse


def _computes_in(input_dtype: torch.dtype, output_dtype: torch.dtype | None) -> bool:
    """True when ``output_dtype`` is a strictly wider float type than the inputs (then compute in it)."""
    return (output_dtype is not None and output_dtype.is_floating_point and output_dtype != input_dtype
            and torch.promote_types(input_dtype, output_dtype) == output_dtype)


def _check_tensor_bias(bias: torch.Tensor, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    expected = (query.shape[0], query.shape[2], query.shape[1], key.shape[1])
    try:
        torch.broadcast_shapes(tuple(bias.shape), expected)
    except RuntimeError:
        raise ValueError(f"Invalid shape for attention bias: {tuple(bias.shape)} (expected {expected}, or "
                         f"broadcastable to it)") from None
    return bias


def _run_packed(query, key, value, bias, kwargs) -> torch.Tensor | AttentionResult:
    """Block-diagonal biases: batch of 1 holding packed sequences -> the varlen core."""
    if query.shape[0] != 1 or key.shape[0] != 1 or value.shape[0] != 1:
        raise ValueError(
            "Expected batch_size=1 when using block-diagonal bias\n"
            f"  query.shape: {tuple(query.shape)}\n  key.shape  : {tuple(key.shape)}\n"
            f"  value.shape: {tuple(value.shape)}"
        )
    q_start = bias.q_seqinfo.seqstart_py
    k_start = bias.k_seqinfo.seqstart_py
    if query.shape[1] != q_start[-1]:
        raise ValueError(f"query has {query.shape[1]} tokens but attn_bias describes {q_start[-1]}")
    if key.shape[1] < k_start[-1]:
        raise ValueError(f"key has {key.shape[1]} tokens but attn_bias describes {k_start[-1]}")
    causal, bottom_right, left, right = bias._shim_block()
    seqlens_k = None
    if isinstance(bias, BlockDiagonalPaddedKeysMask):
        k_lens = seqlens_k = list(bias.k_seqinfo.seqlen_py)
    else:
        k_lens = [e - s for s, e in itertools.pairwise(k_start)]
    q_lens = [e - s for s, e in itertools.pairwise(q_start)]
    # The bias keeps its lengths on the host: handed over as lists, the varlen core reads nothing back.
    res = varlen_attention(
        query[0], key[0], value[0], list(q_start), list(k_start), max(q_lens, default=0), max(k_lens, default=0),
        seqlens_k=seqlens_k, causal=causal, causal_alignment="bottom_right" if bottom_right else "top_left",
        window=(-1 if left is None else left, -1 if right is None else right), **kwargs,
    )
    if isinstance(res, torch.Tensor):
        return res.unsqueeze(0)
    return AttentionResult(res.out.unsqueeze(0), None if res.lse is None else res.lse.unsqueeze(0), res.probs)


def memory_efficient_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_bias: torch.Tensor | AttentionBias | None = None,
    p: float = 0.0,
    scale: float | None = None,
    *,
    op: AttentionOp | None = None,
    output_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``softmax(query @ key^T * scale + attn_bias)`` with dropout ``p``, times ``value``.

    query ``[B, Mq, H, K]``, key ``[B, Mkv, H, K]``, value ``[B, Mkv, H, Kv]`` -> ``[B, Mq, H, Kv]``
    (also ``[B, M, K]`` and ``[B, M, G, H, K]``, see the module docstring). Differentiable.
    """
    _note_op(op)
    return _run(query, key, value, attn_bias, p, scale, output_dtype, want_lse=False)[0]


def memory_efficient_attention_forward(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_bias: torch.Tensor | AttentionBias | None = None,
    p: float = 0.0,
    scale: float | None = None,
    *,
    op: type[AttentionFwOpBase] | None = None,
    output_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """The forward pass of :func:`memory_efficient_attention`."""
    _note_op(op)
    return _run(query, key, value, attn_bias, p, scale, output_dtype, want_lse=False)[0]


def memory_efficient_attention_forward_requires_grad(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_bias: torch.Tensor | AttentionBias | None = None,
    p: float = 0.0,
    scale: float | None = None,
    *,
    op: type[AttentionFwOpBase] | None = None,
    output_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns ``(output, lse)``; ``lse`` feeds :func:`memory_efficient_attention_backward`."""
    if p != 0.0:
        raise NotImplementedError(
            "dropout is not supported on the non-autograd API."
            " If you want to use dropout, please call `memory_efficient_attention` directly"
        )
    _note_op(op)
    out, lse = _run(query, key, value, attn_bias, p, scale, output_dtype, want_lse=True)
    return out, lse


def memory_efficient_attention_backward(
    grad: torch.Tensor,
    output: torch.Tensor,
    lse: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_bias: torch.Tensor | AttentionBias | None = None,
    p: float = 0.0,
    scale: float | None = None,
    *,
    op: type[AttentionBwOpBase] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dq, dk, dv)`` for ``grad`` of the output (recomputes the forward under autograd)."""
    if p != 0.0:
        raise NotImplementedError(
            "dropout is not supported on the non-autograd API."
            " If you want to use dropout, please call `memory_efficient_attention` directly"
        )
    _note_op(op)
    with torch.enable_grad():
        q, k, v = (t.detach().requires_grad_(True) for t in (query, key, value))
        out = _run(q, k, v, attn_bias, 0.0, scale, None, want_lse=False)[0]
        dq, dk, dv = torch.autograd.grad(out, (q, k, v), grad.to(out.dtype))
    return dq, dk, dv


def memory_efficient_attention_partial(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_bias: torch.Tensor | AttentionBias | None = None,
    p: float = 0.0,
    scale: float | None = None,
    *,
    op: AttentionOp | type[AttentionFwOpBase] | None = None,
    output_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(output, lse)`` over part of the keys, to be combined with :func:`merge_attentions`.

    The output is fp32 unless ``output_dtype`` says otherwise (fp64 inputs stay fp64), as upstream.
    """
    if p != 0.0:
        raise NotImplementedError("dropout is not supported.")
    _note_op(op)
    if output_dtype is None:
        output_dtype = torch.float64 if query.dtype == torch.float64 else torch.float32
    return _run(query, key, value, attn_bias, 0.0, scale, output_dtype, want_lse=True)


def merge_attentions(
    attn_split: torch.Tensor | Sequence[torch.Tensor],
    lse_split: torch.Tensor | Sequence[torch.Tensor],
    write_lse: bool = True,
    output_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Combine attention over disjoint key chunks of the same queries (https://arxiv.org/abs/2402.05099).

    ``out = sum_i out_i * exp(lse_i - lse)``, ``lse = log(sum_i exp(lse_i))``. Chunks are
    ``[B, M, (G,) H, K]`` with lse ``[B, (G,) H, M]``, as a list or stacked on a leading dimension.
    """
    attns = list(attn_split.unbind(0)) if isinstance(attn_split, torch.Tensor) else list(attn_split)
    lses = list(lse_split.unbind(0)) if isinstance(lse_split, torch.Tensor) else list(lse_split)
    if len(attns) != len(lses) or not attns:
        raise ValueError(f"Incompatible number of LSE and attention chunks: {len(attns)=}, {len(lses)=}")
    requires_grad = torch.is_grad_enabled() and any(t.requires_grad for t in attns + lses)
    if requires_grad and not write_lse:
        raise ValueError("write_lse should be true if inputs require gradients.")
    out_dtype = output_dtype or attns[0].dtype
    lse = torch.stack([t.float() for t in lses])  # (n, B, [G,] H, M)
    total = torch.logsumexp(lse, dim=0)
    # chunks whose lse is -inf (no key) get weight 0; rows empty everywhere stay 0 instead of NaN
    weights = torch.exp(lse - total.masked_fill(torch.isinf(total), 0.0))
    weights = weights.movedim(-1, 2).unsqueeze(-1)  # (n, B, M, [G,] H, 1)
    out = (torch.stack([t.float() for t in attns]) * weights).sum(0)
    return out.to(out_dtype), (total.to(lses[0].dtype) if write_lse else None)


__all__ = [
    "ALL_BW_OPS",
    "ALL_FW_OPS",
    "VARLEN_BIASES",
    "AttentionBias",
    "AttentionBwOpBase",
    "AttentionFwOpBase",
    "AttentionOp",
    "AttentionOpBase",
    "BlockDiagonalMask",
    "Inputs",
    "LowerTriangularMask",
    "MemoryEfficientAttentionCkOp",
    "MemoryEfficientAttentionCutlassFwdFlashBwOp",
    "MemoryEfficientAttentionCutlassOp",
    "MemoryEfficientAttentionFlashAttentionOp",
    "MemoryEfficientAttentionSplitKCkOp",
    "attn_bias",
    "bmk2bmhk",
    "ck",
    "common",
    "cutlass",
    "flash",
    "memory_efficient_attention",
    "memory_efficient_attention_backward",
    "memory_efficient_attention_forward",
    "memory_efficient_attention_forward_requires_grad",
    "memory_efficient_attention_partial",
    "merge_attentions",
    "triton_splitk",
]  # fmt: skip
