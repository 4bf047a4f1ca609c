"""Stand-in for ``flash_attn.bert_padding``: move between padded ``(batch, seqlen, ...)`` and packed
``(total_nnz, ...)`` layouts (plain PyTorch, so it runs anywhere).

Version note: ``unpad_input`` returned 4 values up to flash-attn 2.6.3 and returns 5 since 2.7.0
(``unused_mask`` argument and the trailing ``seqused`` output were added). The shim follows the
current API (it reports ``flash_attn.__version__`` 2.8.3), so callers written for <= 2.6 that unpack
four values must use ``unpad_input(...)[:4]`` - exactly as with a real current flash-attn install.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

__ascend_patch_shim__ = True


def _flat_index(indices: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """indices (n,) -> (n, *like.shape[1:]) for gather/scatter along dim 0."""
    return indices.view(-1, *([1] * (like.dim() - 1))).expand(indices.shape[0], *like.shape[1:])


class IndexFirstAxis(torch.autograd.Function):
    """``input[indices]`` along dim 0; the backward scatters into zeros."""

    @staticmethod
    def forward(ctx, input: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        assert input.ndim >= 2
        ctx.save_for_backward(indices)
        ctx.first_axis_dim = input.shape[0]
        return torch.gather(input, 0, _flat_index(indices, input))

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (indices,) = ctx.saved_tensors
        grad_input = grad_output.new_zeros((ctx.first_axis_dim, *grad_output.shape[1:]))
        grad_input.scatter_(0, _flat_index(indices, grad_output), grad_output)
        return grad_input, None


index_first_axis = IndexFirstAxis.apply


class IndexPutFirstAxis(torch.autograd.Function):
    """A zero tensor of ``first_axis_dim`` rows with ``values`` written at ``indices``."""

    @staticmethod
    def forward(ctx, values: torch.Tensor, indices: torch.Tensor, first_axis_dim: int) -> torch.Tensor:
        assert indices.ndim == 1
        assert values.ndim >= 2
        ctx.save_for_backward(indices)
        output = values.new_zeros((first_axis_dim, *values.shape[1:]))
        output[indices] = values
        return output

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (indices,) = ctx.saved_tensors
        return grad_output[indices], None, None


index_put_first_axis = IndexPutFirstAxis.apply


class IndexFirstAxisResidual(torch.autograd.Function):
    """Returns ``(input[indices], input.detach())``; gradients of both outputs flow back to input."""

    @staticmethod
    def forward(ctx, input: torch.Tensor, indices: torch.Tensor):
        assert input.ndim >= 2
        ctx.save_for_backward(indices)
        ctx.first_axis_dim = input.shape[0]
        return input[indices], input.detach()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor, grad_residual: torch.Tensor):
        (indices,) = ctx.saved_tensors
        assert grad_residual.shape[1:] == grad_output.shape[1:]
        grad_input = grad_residual.clone()
        grad_input.index_add_(0, indices, grad_output)
        return grad_input, None


index_first_axis_residual = IndexFirstAxisResidual.apply


def unpad_input(
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor,
    unused_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, torch.Tensor]:
    """Pack the valid tokens of a padded batch.

    Arguments:
        hidden_states: (batch, seqlen, ...)
        attention_mask: (batch, seqlen), bool / int, 1 = valid token.
        unused_mask: (batch, seqlen), bool / int, 1 = allocated but unused (kept in the packed output).
    Return (5 values, flash-attn >= 2.7):
        hidden_states: (total_nnz, ...), the tokens selected by attention_mask + unused_mask.
        indices: (total_nnz,), their positions in the flattened (batch * seqlen) input.
        cu_seqlens: (batch + 1,) int32 cumulative lengths.
        max_seqlen_in_batch: int.
        seqused: (batch,) int32, tokens selected by attention_mask alone.
    """
    all_masks = (attention_mask + unused_mask) if unused_mask is not None else attention_mask
    seqlens_in_batch = all_masks.sum(dim=-1, dtype=torch.int32)
    used_seqlens_in_batch = attention_mask.sum(dim=-1, dtype=torch.int32)
    indices = torch.nonzero(all_masks.flatten(), as_tuple=False).flatten()
    max_seqlen_in_batch = int(seqlens_in_batch.max().item())
    cu_seqlens = F.pad(torch.cumsum(seqlens_in_batch, dim=0, dtype=torch.int32), (1, 0))
    packed = index_first_axis(rearrange(hidden_states, "b s ... -> (b s) ..."), indices)
    return packed, indices, cu_seqlens, max_seqlen_in_batch, used_seqlens_in_batch


def unpad_input_for_concatenated_sequences(
    hidden_states: torch.Tensor,
    attention_mask_in_length: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Pack rows that hold several concatenated samples.

    ``attention_mask_in_length[b]`` lists the lengths of the samples concatenated in row ``b``
    (e.g. ``[2, 3, 0, 0, 0, 0]``: two samples of 2 and 3 tokens, then padding). Each sample becomes
    its own sequence in ``cu_seqlens``.

    Return: hidden_states (total_nnz, ...), indices (total_nnz,), cu_seqlens (n_samples + 1,) int32,
    max_seqlen_in_batch (int).
    """
    length = attention_mask_in_length.sum(dim=-1)
    seqlen = attention_mask_in_length.size(-1)
    positions = torch.arange(seqlen, device=length.device, dtype=length.dtype).expand(len(length), seqlen)
    attention_mask_2d = positions < length.unsqueeze(1)
    sample_lengths = attention_mask_in_length.flatten()
    seqlens_in_batch = sample_lengths[sample_lengths != 0]
    indices = torch.nonzero(attention_mask_2d.flatten(), as_tuple=False).flatten()
    max_seqlen_in_batch = int(seqlens_in_batch.max().item())
    cu_seqlens = F.pad(torch.cumsum(seqlens_in_batch, dim=0, dtype=torch.int32), (1, 0))
    packed = index_first_axis(rearrange(hidden_states, "b s ... -> (b s) ..."), indices)
    return packed, indices, cu_seqlens, max_seqlen_in_batch


def pad_input(hidden_states: torch.Tensor, indices: torch.Tensor, batch: int, seqlen: int) -> torch.Tensor:
    """Inverse of :func:`unpad_input`: (total_nnz, ...) -> (batch, seqlen, ...), zeros at padding."""
    output = index_put_first_axis(hidden_states, indices, batch * seqlen)
    return rearrange(output, "(b s) ... -> b s ...", b=batch)


__all__ = [
    "IndexFirstAxis", "IndexFirstAxisResidual", "IndexPutFirstAxis", "index_first_axis",
    "index_first_axis_residual", "index_put_first_axis", "pad_input", "unpad_input",
    "unpad_input_for_concatenated_sequences",
]  # fmt: skip
