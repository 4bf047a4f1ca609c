"""Stand-in for ``xformers.ops``: the attention entry points (on SDPA), ``unbind``, ``SwiGLU``, and the
indexing ops ``scaled_index_add`` / ``index_select_cat`` (DINOv2's nested-tensor training path).

Other upstream ops (sequence-parallel fused matmuls, sparse24, tiled_matmul, rope_padded, RMSNorm...)
are not provided; importing them fails with ImportError, which upstream code treats as "xformers
feature unavailable".
"""

import torch

from . import fmha
from .fmha import (
    AttentionBias,
    AttentionOp,
    AttentionOpBase,
    LowerTriangularMask,
    MemoryEfficientAttentionCkOp,
    MemoryEfficientAttentionCutlassFwdFlashBwOp,
    MemoryEfficientAttentionCutlassOp,
    MemoryEfficientAttentionFlashAttentionOp,
    MemoryEfficientAttentionSplitKCkOp,
    memory_efficient_attention,
    memory_efficient_attention_backward,
    memory_efficient_attention_forward,
    memory_efficient_attention_forward_requires_grad,
)
from .fmha import AttentionBias as AttentionMask
from .indexing import index_select_cat, scaled_index_add
from .swiglu_op import SwiGLU, swiglu
from .unbind import get_stack_strides, stack_or_none, unbind

__ascend_patch_shim__ = True


def masked_matmul(a: torch.Tensor, b: torch.Tensor, mask: "torch.Tensor | None" = None) -> torch.Tensor:
    """``a @ b`` with ``mask`` applied: a boolean mask keeps True (others -> -inf), a float mask is added."""
    att = a @ b
    if mask is None:
        return att
    if mask.dtype == torch.bool:
        if mask.ndim == 2:
            mask = mask.unsqueeze(0).expand(att.shape[0], -1, -1)
        return att.masked_fill(~mask, float("-inf"))
    return att + mask


__all__ = [
    "AttentionBias", "AttentionMask", "AttentionOp", "AttentionOpBase", "LowerTriangularMask",
    "MemoryEfficientAttentionCkOp", "MemoryEfficientAttentionCutlassFwdFlashBwOp",
    "MemoryEfficientAttentionCutlassOp", "MemoryEfficientAttentionFlashAttentionOp",
    "MemoryEfficientAttentionSplitKCkOp", "SwiGLU", "fmha", "get_stack_strides", "index_select_cat",
    "masked_matmul", "memory_efficient_attention", "memory_efficient_attention_backward",
    "memory_efficient_attention_forward", "memory_efficient_attention_forward_requires_grad",
    "scaled_index_add", "stack_or_none", "swiglu", "unbind",
]  # fmt: skip
