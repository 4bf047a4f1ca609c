"""Stand-in for ``xformers.ops.unbind``: ``unbind`` / ``stack_or_none`` / ``get_stack_strides``."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__ascend_patch_shim__ = True


def get_stack_strides(tensors: Sequence[torch.Tensor], dim: int) -> tuple[int, ...] | None:
    """Strides of ``torch.stack(tensors, dim)`` if the tensors already sit in memory as that stack
    (same storage, shape, strides, evenly spaced offsets), else None."""
    if len(tensors) <= 1 or dim > tensors[0].ndim:
        return None
    first = tensors[0]
    step = tensors[1].storage_offset() - first.storage_offset()
    strides = list(first.stride())
    strides.insert(dim, step)
    base = first.untyped_storage().data_ptr()
    for i, t in enumerate(tensors[1:], start=1):
        if t.shape != first.shape or t.stride() != first.stride():
            return None
        if t.storage_offset() != first.storage_offset() + i * step:
            return None
        if t.untyped_storage().data_ptr() != base:
            return None
    return tuple(strides)


def _stack_or_none_fw(tensors: Sequence[torch.Tensor], dim: int) -> torch.Tensor | None:
    strides = get_stack_strides(tensors, dim)
    if strides is None:
        return None
    shape = list(tensors[0].shape)
    shape.insert(dim, len(tensors))
    return tensors[0].as_strided(shape, strides)


class _Unbind(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, dim: int):
        ctx.dim = dim
        return x.unbind(dim)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):
        stacked = _stack_or_none_fw(grads, ctx.dim)
        return (stacked if stacked is not None else torch.stack(grads, dim=ctx.dim)), None


class _StackOrNone(torch.autograd.Function):
    @staticmethod
    def forward(ctx, dim: int, *tensors: torch.Tensor):
        ctx.dim = dim
        return _stack_or_none_fw(tensors, dim)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return (None, *grad.unbind(dim=ctx.dim))


def unbind(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, ...]:
    """``torch.unbind`` whose backward avoids a copy when the gradients are already stacked views."""
    return _Unbind.apply(x, dim)


def stack_or_none(tensors: Sequence[torch.Tensor], dim: int) -> torch.Tensor | None:
    """``torch.stack`` as a view when the tensors are already laid out as one; None otherwise."""
    return _StackOrNone.apply(dim, *tensors)


__all__ = ["get_stack_strides", "stack_or_none", "unbind"]
