"""Stand-in for ``xformers.ops.indexing``: ``scaled_index_add`` and ``index_select_cat`` in plain PyTorch.

Upstream (facebookresearch/xformers, ``xformers/ops/indexing.py``) runs both as Triton kernels, so
they need CUDA. DINOv2's ``NestedTensorBlock`` (and MingTok's copy of it) imports them next to
``fmha`` for its nested-tensor training path with stochastic depth: ``index_select_cat`` gathers the
kept samples of every crop size into one packed row, ``scaled_index_add`` adds the residual of the
kept samples back, scaled by LayerScale's gamma. Here both are built from ``index_select`` /
``index_add_`` / ``cat``: autograd derives the backward, and the ops exist on NPU and CPU alike.

Semantics kept from upstream: ``scaled_index_add`` writes into ``input`` and returns that very
tensor (so ``input`` must not be a leaf that requires grad, as upstream); indices are meant to be
unique (a repeated index accumulates, like the ``torch.index_add`` upstream documents as its
equivalent). ``index_select_cat`` returns one flat tensor.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__ascend_patch_shim__ = True


def scaled_index_add(
    input: torch.Tensor,
    index: torch.Tensor,
    source: torch.Tensor,
    scaling: torch.Tensor | None = None,
    alpha: float = 1.0,
) -> torch.Tensor:
    """In place: ``input[index[i]] += alpha * scaling * source[i]``; returns ``input``.

    Shapes as upstream: ``input`` ``[B, M, D]``, ``index`` ``[Bi]`` (integer, ``Bi <= B``),
    ``source`` ``[Bi, M, D]``, ``scaling`` ``[D]`` or None. Same result as
    ``torch.index_add(input, 0, index, scaling * source, alpha=alpha)``, written into ``input``.
    """
    if input.ndim != 3 or source.ndim != 3:
        raise ValueError(f"scaled_index_add: input and source must be 3-D [B, M, D] (got {input.ndim}-D and "
                         f"{source.ndim}-D)")
    if input.shape[1:] != source.shape[1:]:
        raise ValueError(f"scaled_index_add: input {tuple(input.shape)} and source {tuple(source.shape)} must "
                         "agree on dimensions 1 and 2")
    if index.ndim != 1 or index.shape[0] != source.shape[0]:
        raise ValueError(f"scaled_index_add: index must be 1-D with one entry per source row (got shape "
                         f"{tuple(index.shape)} for {source.shape[0]} source rows)")
    if source.shape[0] > input.shape[0]:
        raise ValueError(f"scaled_index_add: source has more rows ({source.shape[0]}) than input "
                         f"({input.shape[0]})")
    if scaling is not None:
        if scaling.shape != (input.shape[2],):
            raise ValueError(f"scaled_index_add: scaling must have shape [D] = [{input.shape[2]}] (got "
                             f"{tuple(scaling.shape)})")
        source = source * scaling
    # index_add_ needs one dtype; upstream stores in input's dtype too.
    return input.index_add_(0, index.long(), source.to(input.dtype), alpha=alpha)


def index_select_cat(sources: Sequence[torch.Tensor], indices: Sequence[torch.Tensor]) -> torch.Tensor:
    """``torch.cat([s[i].flatten() for s, i in zip(sources, indices)])``: the chosen rows, packed flat.

    ``sources[k]`` is ``[S_k, D_k]`` and ``indices[k]`` ``[I_k]``; the result has
    ``sum_k I_k * D_k`` elements. Gradients flow back to the selected rows of each source.
    """
    if len(sources) != len(indices):
        raise ValueError(f"index_select_cat: {len(sources)} sources but {len(indices)} index tensors")
    if not sources:
        raise ValueError("index_select_cat: needs at least one (source, index) pair")
    for k, (source, index) in enumerate(zip(sources, indices)):
        if source.ndim != 2 or index.ndim != 1:
            raise ValueError(f"index_select_cat: pair {k}: source must be 2-D [S, D] and index 1-D (got "
                             f"{tuple(source.shape)} and {tuple(index.shape)})")
    return torch.cat([s.index_select(0, i.long()).reshape(-1) for s, i in zip(sources, indices)])


__all__ = ["index_select_cat", "scaled_index_add"]
