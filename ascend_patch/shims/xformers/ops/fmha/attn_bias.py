"""Stand-in for ``xformers.ops.fmha.attn_bias``: the structured biases ``memory_efficient_attention``
accepts instead of a dense tensor.

Class names, constructors, fields and helpers follow facebookresearch/xformers 0.0.35
(``xformers/ops/fmha/attn_bias.py``), so upstream code builds them unchanged; ``materialize()`` returns
the same 0 / -inf tensor. The shim's ``memory_efficient_attention`` turns each class into SDPA
arguments (see ``fmha.__init__._plan``): a causal flag with its alignment, a window, or packed
("block-diagonal") sequences handled like flash_attn's varlen.

Alignment, as upstream: ``LowerTriangularMask`` and ``BlockDiagonalCausalMask`` are causal from the
TOP-LEFT corner (query i sees key j <= i); the ``...FromBottomRight...`` and ``...WithOffset...``
classes align the diagonal's end with the last key (query i sees j <= i + n_keys - n_queries).

Paged and "gappy" key layouts are not provided: constructing those classes raises
``NotImplementedError`` naming them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch

__ascend_patch_shim__ = True


def _get_default_bias_device(device: torch.device | None = None) -> torch.device:
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    npu = getattr(torch, "npu", None)
    if npu is not None and npu.is_available():
        return torch.device("npu")
    return torch.device("cpu")


def _int_tensor(values: Sequence[int], device: torch.device) -> torch.Tensor:
    return torch.tensor(list(values), dtype=torch.int32, device=device)


def _band_bias(
    shape: tuple[int, ...],
    dtype: torch.dtype,
    device: str | torch.device,
    *,
    bottom_right: bool,
    left: int | None = None,
    right: int | None = None,
) -> torch.Tensor:
    """0 where ``-left <= j - i - shift <= right`` (None = unbounded), -inf elsewhere; shape ``shape``."""
    n_q, n_k = shape[-2:]
    shift = n_k - n_q if bottom_right else 0
    rel = torch.arange(n_k, device=device)[None, :] - torch.arange(n_q, device=device)[:, None] - shift
    keep = torch.ones(n_q, n_k, dtype=torch.bool, device=device)
    if right is not None:
        keep &= rel <= right
    if left is not None:
        keep &= rel >= -left
    bias = torch.zeros(n_q, n_k, dtype=dtype, device=device).masked_fill(~keep, -math.inf)
    return bias.expand(shape)


def _block_bias(block: tuple[bool, bool, int | None, int | None], shape: tuple[int, int],
                dtype: torch.dtype, device: str | torch.device) -> torch.Tensor:
    """One diagonal block of a block-diagonal bias; ``block`` = (causal, bottom_right, left, right)."""
    causal, bottom_right, left, right = block
    if not causal and left is None and right is None:
        return torch.zeros(shape, dtype=dtype, device=device)
    return _band_bias(shape, dtype, device, bottom_right=bottom_right, left=left, right=0 if causal else right)


class AttentionBias:
    """Base class for structured attention biases (added to ``Q @ K^T`` before the softmax)."""

    def materialize(
        self,
        shape: tuple[int, ...],
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> torch.Tensor:
        """The bias as a dense ``torch.Tensor`` of ``shape`` ``[*, q_seqlen, k_seqlen]`` (slow; for tests)."""
        raise NotImplementedError()


class LowerTriangularMask(AttentionBias):
    """Causal mask aligned top-left: query i attends keys 0..i."""

    def __init__(self, device: torch.device | None = None) -> None:
        """``device`` is unused (kept for backward compatibility, as upstream)."""

    def to(self, device: torch.device) -> LowerTriangularMask:
        return self

    def materialize(
        self, shape: tuple[int, ...], dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
    ) -> torch.Tensor:
        return _band_bias(shape, dtype, device, bottom_right=False, right=0)

    def add_bias(self, bias: torch.Tensor) -> LowerTriangularMaskWithTensorBias:
        """A new causal mask that also adds the tensor ``bias``."""
        return LowerTriangularMaskWithTensorBias(bias)


@dataclass
class LocalAttentionFromBottomRightMask(AttentionBias):
    """Query q attends key k iff ``q - window_left <= k + s <= q + window_right``, ``s = n_queries - n_keys``."""

    window_left: int
    window_right: int

    def to(self, device) -> LocalAttentionFromBottomRightMask:
        return self

    def __post_init__(self) -> None:
        if self.window_left < 0:
            raise ValueError(f"Invalid window value passed to `LocalAttentionFromBottomRightMask`: expected "
                             f"`window_left > 0` but got window_left={self.window_left}")
        if self.window_right < 0:
            raise ValueError(f"Invalid window value passed to `LocalAttentionFromBottomRightMask`: expected "
                             f"`window_right > 0` but got window_right={self.window_right}")

    def materialize(
        self, shape: tuple[int, ...], dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
    ) -> torch.Tensor:
        return _band_bias(shape, dtype, device, bottom_right=True, left=self.window_left, right=self.window_right)


class LowerTriangularFromBottomRightMask(AttentionBias):
    """Causal mask whose diagonal ends at the last key: query i attends keys ``j <= i + n_keys - n_queries``."""

    def to(self, device: torch.device) -> LowerTriangularFromBottomRightMask:
        return self

    def materialize(
        self, shape: tuple[int, ...], dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
    ) -> torch.Tensor:
        return _band_bias(shape, dtype, device, bottom_right=True, right=0)

    def make_local_attention(self, window_size: int) -> LowerTriangularFromBottomRightLocalAttentionMask:
        """Causal (bottom-right) + local: each query sees at most ``window_size`` keys."""
        return LowerTriangularFromBottomRightLocalAttentionMask(window_size)


@dataclass
class LowerTriangularFromBottomRightLocalAttentionMask(LowerTriangularFromBottomRightMask):
    """:class:`LowerTriangularFromBottomRightMask` restricted to the last ``_window_size`` keys of each row."""

    _window_size: int

    def to(self, device: torch.device) -> LowerTriangularFromBottomRightLocalAttentionMask:
        return self

    def __post_init__(self) -> None:
        if self._window_size <= 0:
            raise ValueError(f"Expected `window_size > 0`, but window_size={self._window_size}")

    def materialize(
        self, shape: tuple[int, ...], dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
    ) -> torch.Tensor:
        return _band_bias(shape, dtype, device, bottom_right=True, left=self._window_size - 1, right=0)


class LowerTriangularMaskWithTensorBias(LowerTriangularMask):
    """A top-left causal mask plus an additive tensor bias (broadcastable to ``[B, H, Mq, Mk]``)."""

    def __init__(self, bias: torch.Tensor) -> None:
        self._bias = bias

    def to(self, device: torch.device) -> LowerTriangularMaskWithTensorBias:
        return LowerTriangularMaskWithTensorBias(self._bias.to(device))

    def materialize(
        self, shape: tuple[int, ...], dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
    ) -> torch.Tensor:
        return super().materialize(shape, dtype=dtype, device=device) + self._bias


@dataclass
class _SeqLenInfo:
    """(Internal) a dimension cut into consecutive blocks, e.g. lengths [2, 3, 2] ->
    ``seqstart_py == [0, 2, 5, 7]``, ``max_seqlen == 3``, ``min_seqlen == 2``."""

    seqstart: torch.Tensor
    max_seqlen: int
    min_seqlen: int
    seqstart_py: list[int]

    def to(self, device: torch.device) -> _SeqLenInfo:
        if self.seqstart.device == torch.device(device):
            return self
        return _SeqLenInfo(seqstart=self.seqstart.to(device), max_seqlen=self.max_seqlen,
                           min_seqlen=self.min_seqlen, seqstart_py=self.seqstart_py)

    def intervals(self) -> Iterable[tuple[int, int]]:
        yield from zip(self.seqstart_py, self.seqstart_py[1:])

    @classmethod
    def _get_seqstart(cls, seqlens: Iterable[int], *, device: torch.device
                      ) -> tuple[int, int, list[int], torch.Tensor]:
        assert not isinstance(seqlens, torch.Tensor)
        lengths = [int(s) for s in seqlens]
        seqstart_py = [0]
        for n in lengths:
            seqstart_py.append(seqstart_py[-1] + n)
        min_seqlen = min(lengths) if lengths else -1
        max_seqlen = max(lengths) if lengths else -1
        return min_seqlen, max_seqlen, seqstart_py, _int_tensor(seqstart_py, device)

    @classmethod
    def from_seqlens(cls, seqlens: Iterable[int], *, device: torch.device | None = None) -> _SeqLenInfo:
        device = _get_default_bias_device(device)
        min_seqlen, max_seqlen, seqstart_py, seqstart = cls._get_seqstart(seqlens, device=device)
        return cls(max_seqlen=max_seqlen, min_seqlen=min_seqlen, seqstart=seqstart, seqstart_py=seqstart_py)

    def from_seqlens_inplace(self, seqlens: Iterable[int]) -> None:
        """Update in place with the same number of blocks (CUDA-graph friendly upstream)."""
        _, max_seqlen, seqstart_py, seqstart = self._get_seqstart(seqlens, device=self.seqstart.device)
        assert len(seqstart_py) == len(self.seqstart_py), "in-place update must keep the number of blocks"
        assert self.max_seqlen >= max_seqlen, "in-place update cannot exceed the previous max_seqlen"
        self.seqstart_py[:] = seqstart_py
        self.seqstart.copy_(seqstart)

    def split(self, x: torch.Tensor, batch_sizes: Sequence[int] | None = None) -> list[torch.Tensor]:
        if self.seqstart_py[-1] != x.shape[1] or x.shape[0] != 1:
            raise ValueError(
                f"Invalid `torch.Tensor` of shape {x.shape}, expected format (B, M, *) with B=1 and "
                f"M={self.seqstart_py[-1]}\n seqstart: {self.seqstart_py}"
            )
        if batch_sizes is None:
            batch_sizes = [1] * (len(self.seqstart_py) - 1)
        chunks, it = [], 0
        for bs in batch_sizes:
            chunks.append(self.seqstart_py[it + bs] - self.seqstart_py[it])
            it += bs
        return [t.reshape([bs, -1, *t.shape[2:]]) for bs, t in zip(batch_sizes, x.split(chunks, dim=1))]


@dataclass
class _PaddedSeqLenInfo(_SeqLenInfo):
    """(Internal) blocks padded to the same length ``padding``; block i uses its first ``seqlen_py[i]`` slots."""

    seqlen: torch.Tensor
    seqlen_py: list[int]
    padding: int

    def __post_init__(self) -> None:
        assert len(self.seqstart_py) == len(self.seqlen_py) + 1

    def to(self, device: torch.device) -> _PaddedSeqLenInfo:
        if self.seqlen.device == torch.device(device):
            return self
        return _PaddedSeqLenInfo(seqstart=self.seqstart.to(device), max_seqlen=self.max_seqlen,
                                 min_seqlen=self.min_seqlen, seqstart_py=self.seqstart_py,
                                 seqlen=self.seqlen.to(device), seqlen_py=self.seqlen_py, padding=self.padding)

    def intervals(self) -> Iterable[tuple[int, int]]:
        for start, length in zip(self.seqstart_py, self.seqlen_py):
            yield start, start + length

    @classmethod
    def from_seqlens(cls, seqlens: Iterable[int], *, device: torch.device | None = None) -> _SeqLenInfo:
        raise RuntimeError("Use either `_SeqLenInfo.from_seqlens` or `_PaddedSeqLenInfo.from_seqlens_padded`")

    @classmethod
    def from_seqlens_padded(cls, seqlens: Sequence[int], padding: int, *,
                            device: torch.device | None = None) -> _PaddedSeqLenInfo:
        assert not isinstance(seqlens, torch.Tensor)
        seqlens = [int(s) for s in seqlens]
        assert all(s <= padding for s in seqlens), f"Seqlens {seqlens} Padding {padding}"
        device = _get_default_bias_device(device)
        seqstart_py = list(range(0, len(seqlens) * padding + 1, padding))
        return cls(seqlen=_int_tensor(seqlens, device), seqlen_py=seqlens, max_seqlen=max(seqlens),
                   min_seqlen=min(seqlens), seqstart=_int_tensor(seqstart_py, device), seqstart_py=seqstart_py,
                   padding=padding)

    def split(self, x: torch.Tensor, batch_sizes: Sequence[int] | None = None) -> list[torch.Tensor]:
        raise NotImplementedError("_PaddedSeqLenInfo.split")


@dataclass
class BlockDiagonalMask(AttentionBias):
    """Queries and keys cut into the same number of blocks; block i of the queries attends only to
    block i of the keys. Inputs are packed along the sequence with batch size 1 (see
    :meth:`from_tensor_list` / :meth:`split`)."""

    q_seqinfo: _SeqLenInfo
    k_seqinfo: _SeqLenInfo
    _batch_sizes: Sequence[int] | None = None

    # The shim's reading of a block: (causal, bottom-right aligned, window left, window right).
    _SHIM_BLOCK: ClassVar[tuple[bool, bool, int | None, int | None]] = (False, False, None, None)

    def to(self, device) -> BlockDiagonalMask:
        return replace(self, q_seqinfo=self.q_seqinfo.to(device), k_seqinfo=self.k_seqinfo.to(device))

    def _shim_block(self) -> tuple[bool, bool, int | None, int | None]:
        return self._SHIM_BLOCK

    def materialize(
        self, shape: tuple[int, ...], dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
    ) -> torch.Tensor:
        """Dense bias: -inf outside the diagonal blocks, each block's own mask inside."""
        assert shape[-1] == self.k_seqinfo.seqstart_py[-1], (shape[-1], self.k_seqinfo.seqstart_py[-1])
        assert shape[-2] == self.q_seqinfo.seqstart_py[-1], (shape[-2], self.q_seqinfo.seqstart_py[-1])
        mask = torch.full(shape[-2:], -math.inf, dtype=dtype, device=device)
        for (qs, qe), (ks, ke) in zip(self.q_seqinfo.intervals(), self.k_seqinfo.intervals()):
            mask[qs:qe, ks:ke] = _block_bias(self._shim_block(), (qe - qs, ke - ks), dtype, device)
        return mask.view((1,) * (len(shape) - 2) + tuple(mask.shape)).expand(shape)

    @classmethod
    def from_seqlens(
        cls,
        q_seqlen: Sequence[int],
        kv_seqlen: Sequence[int] | None = None,
        *,
        device: torch.device | None = None,
    ) -> BlockDiagonalMask:
        """From the query block lengths and (default: the same) key/value block lengths."""
        device = _get_default_bias_device(device)
        assert kv_seqlen is None or len(q_seqlen) == len(kv_seqlen)
        q_seqinfo = _SeqLenInfo.from_seqlens(q_seqlen, device=device)
        if kv_seqlen is None or list(q_seqlen) == list(kv_seqlen):
            k_seqinfo = q_seqinfo
        else:
            k_seqinfo = _SeqLenInfo.from_seqlens(kv_seqlen, device=device)
        return cls(q_seqinfo=q_seqinfo, k_seqinfo=k_seqinfo)

    @classmethod
    def from_tensor_list(cls, tensors: Sequence[torch.Tensor]) -> tuple[BlockDiagonalMask, torch.Tensor]:
        """Bias for tensors ``[B_i, M_i, *]`` and their concatenation ``[1, sum_i B_i * M_i, *]``."""
        batch_sizes = [t.shape[0] for t in tensors]
        seqlens = [t.shape[1] for t in tensors for _ in range(t.shape[0])]
        block_diag = cls.from_seqlens(seqlens)
        block_diag._batch_sizes = batch_sizes
        concat = torch.cat([t.reshape([1, -1, *t.shape[2:]]) for t in tensors], dim=1)
        return block_diag, concat

    @classmethod
    def from_tensor_lists_qkv(
        cls,
        tensors_q: Sequence[torch.Tensor],
        tensors_k: Sequence[torch.Tensor],
        tensors_v: Sequence[torch.Tensor] | None = None,
    ) -> tuple[BlockDiagonalMask, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        assert len(tensors_q) == len(tensors_k)
        assert tensors_v is None or len(tensors_v) == len(tensors_q)
        q_seqlens: list[int] = []
        kv_seqlens: list[int] = []
        for i, (q, k) in enumerate(zip(tensors_q, tensors_k)):
            assert q.shape[0] == k.shape[0]
            assert tensors_v is None or tensors_v[i].shape[:2] == k.shape[:2]
            q_seqlens += [q.shape[1]] * q.shape[0]
            kv_seqlens += [k.shape[1]] * k.shape[0]
        block_diag = cls.from_seqlens(q_seqlens, kv_seqlens)
        block_diag._batch_sizes = [t.shape[0] for t in tensors_q]

        def cat(ts):
            return torch.cat([t.reshape([1, -1, *t.shape[2:]]) for t in ts], dim=1)

        return block_diag, cat(tensors_q), cat(tensors_k), (cat(tensors_v) if tensors_v is not None else None)

    def split_queries(self, tensor: torch.Tensor) -> Sequence[torch.Tensor]:
        return self.q_seqinfo.split(tensor, self._batch_sizes)

    def split_kv(self, tensor: torch.Tensor) -> Sequence[torch.Tensor]:
        return self.k_seqinfo.split(tensor, self._batch_sizes)

    def split(self, tensor: torch.Tensor) -> Sequence[torch.Tensor]:
        """Inverse of :meth:`from_tensor_list`: ``[1, sum M_i, *]`` -> list of ``[B_i, M_i, *]``."""
        assert self.q_seqinfo is self.k_seqinfo
        return self.q_seqinfo.split(tensor, self._batch_sizes)

    def make_causal(self) -> BlockDiagonalCausalMask:
        """Each block causal, aligned top-left."""
        return BlockDiagonalCausalMask(q_seqinfo=self.q_seqinfo, k_seqinfo=self.k_seqinfo,
                                       _batch_sizes=self._batch_sizes)

    def make_causal_from_bottomright(self) -> BlockDiagonalCausalFromBottomRightMask:
        """Each block causal, aligned bottom-right (allows a non-causal key prefix)."""
        return BlockDiagonalCausalFromBottomRightMask(q_seqinfo=self.q_seqinfo, k_seqinfo=self.k_seqinfo,
                                                      _batch_sizes=self._batch_sizes)

    def make_local_attention(self, window_size: int) -> BlockDiagonalCausalLocalAttentionMask:
        return BlockDiagonalCausalLocalAttentionMask(q_seqinfo=self.q_seqinfo, k_seqinfo=self.k_seqinfo,
                                                     _batch_sizes=self._batch_sizes, _window_size=window_size)

    def make_local_attention_from_bottomright(
        self, window_size: int
    ) -> BlockDiagonalCausalLocalAttentionFromBottomRightMask:
        return BlockDiagonalCausalLocalAttentionFromBottomRightMask(
            q_seqinfo=self.q_seqinfo, k_seqinfo=self.k_seqinfo, _batch_sizes=self._batch_sizes,
            _window_size=window_size,
        )


@dataclass
class BlockDiagonalCausalMask(BlockDiagonalMask):
    """:class:`BlockDiagonalMask` with each block causal from its top-left corner."""

    _SHIM_BLOCK = (True, False, None, None)


@dataclass
class BlockDiagonalCausalFromBottomRightMask(BlockDiagonalMask):
    """:class:`BlockDiagonalMask` with each block causal from its bottom-right corner (needs keys >= queries)."""

    _SHIM_BLOCK = (True, True, None, None)

    def __post_init__(self) -> None:
        for i, ((qs, qe), (ks, ke)) in enumerate(zip(self.q_seqinfo.intervals(), self.k_seqinfo.intervals())):
            if ke - ks < qe - qs:
                raise ValueError(f"Block #{i} has num_keys={ke - ks} and num_queries={qe - qs}."
                                 " Expected `num_keys >= num_queries`")


@dataclass
class BlockDiagonalCausalLocalAttentionMask(BlockDiagonalCausalMask):
    """Causal (top-left) blocks where query i sees keys ``i - window_size < j <= i``."""

    _window_size: int = 0  # forced due to inheritance and default arguments (as upstream)

    def __post_init__(self) -> None:
        if self._window_size <= 0:
            raise ValueError(f"Expected `window_size > 0`, but window_size={self._window_size}")
        q_lens = [e - s for s, e in self.q_seqinfo.intervals()]
        k_lens = [e - s for s, e in self.k_seqinfo.intervals()]
        for q, k in zip(q_lens, k_lens):
            if q - self._window_size >= k:
                raise RuntimeError(f"No keys are attended in q_seqlen {q} k_seqlen {k} with sliding window "
                                   f"{self._window_size}")

    def _shim_block(self):
        return (True, False, self._window_size - 1, None)


@dataclass
class BlockDiagonalCausalLocalAttentionFromBottomRightMask(BlockDiagonalCausalFromBottomRightMask):
    """Causal (bottom-right) blocks, each query seeing its last ``window_size`` keys."""

    _window_size: int = 0  # forced due to inheritance and default arguments (as upstream)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self._window_size <= 0:
            raise ValueError(f"Expected `window_size > 0`, but window_size={self._window_size}")

    def _shim_block(self):
        return (True, True, self._window_size - 1, None)


@dataclass
class BlockDiagonalPaddedKeysMask(AttentionBias):
    """Block-diagonal with keys stored in fixed-size slots: block i's keys are the first
    ``k_seqinfo.seqlen_py[i]`` of slot ``[i * padding, (i + 1) * padding)``."""

    q_seqinfo: _SeqLenInfo
    k_seqinfo: _PaddedSeqLenInfo

    _SHIM_BLOCK: ClassVar[tuple[bool, bool, int | None, int | None]] = (False, True, None, None)

    def to(self, device) -> BlockDiagonalPaddedKeysMask:
        return replace(self, q_seqinfo=self.q_seqinfo.to(device), k_seqinfo=self.k_seqinfo.to(device))

    def _shim_block(self) -> tuple[bool, bool, int | None, int | None]:
        return self._SHIM_BLOCK

    def materialize(
        self, shape: tuple[int, ...], dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
    ) -> torch.Tensor:
        if shape[-1] != self.k_seqinfo.seqstart_py[-1]:
            raise ValueError("k shapes wrong")
        if shape[-2] != self.q_seqinfo.seqstart_py[-1]:
            raise ValueError("q shapes wrong")
        mask = torch.full(shape[-2:], -math.inf, dtype=dtype, device=device)
        for (qs, qe), (ks, ke) in zip(self.q_seqinfo.intervals(), self.k_seqinfo.intervals()):
            mask[qs:qe, ks:ke] = _block_bias(self._shim_block(), (qe - qs, ke - ks), dtype, device)
        return mask.view((1,) * (len(shape) - 2) + tuple(mask.shape)).expand(shape)

    @classmethod
    def from_seqlens(
        cls,
        q_seqlen: Sequence[int],
        kv_padding: int,
        kv_seqlen: Sequence[int],
        causal_diagonal: Any = None,
        *,
        device: torch.device | None = None,
    ) -> BlockDiagonalPaddedKeysMask:
        """``causal_diagonal`` is unused (backward compatibility, as upstream)."""
        device = _get_default_bias_device(device)
        assert kv_seqlen is None or len(q_seqlen) == len(kv_seqlen), (q_seqlen, kv_seqlen)
        q_seqinfo = _SeqLenInfo.from_seqlens(q_seqlen, device=device)
        k_seqinfo = _PaddedSeqLenInfo.from_seqlens_padded(kv_seqlen, kv_padding, device=device)
        return cls(q_seqinfo=q_seqinfo, k_seqinfo=k_seqinfo)

    def make_paged(self, block_tables: torch.Tensor, page_size: int, paged_type: type[Any]) -> Any:
        raise NotImplementedError(
            "attn_bias: BlockDiagonalPaddedKeysMask.make_paged (paged KV cache biases) is not provided by the "
            "ascend_patch xformers shim; gather the pages into a padded cache and use BlockDiagonalPaddedKeysMask"
        )

    def make_local_attention(self, window_left: int, window_right: int
                             ) -> BlockDiagonalLocalAttentionPaddedKeysMask:
        return BlockDiagonalLocalAttentionPaddedKeysMask(q_seqinfo=self.q_seqinfo, k_seqinfo=self.k_seqinfo,
                                                         window_left=window_left, window_right=window_right)


@dataclass
class BlockDiagonalCausalWithOffsetPaddedKeysMask(BlockDiagonalPaddedKeysMask):
    """Padded keys, each block causal from its bottom-right corner (decoding against a KV cache)."""

    causal_diagonal: Any = None  # unused. Exists for BC only.
    _SHIM_BLOCK = (True, True, None, None)


@dataclass
class BlockDiagonalLocalAttentionPaddedKeysMask(BlockDiagonalPaddedKeysMask):
    """Padded keys, non-causal local window per block, bottom-right aligned."""

    window_left: int
    window_right: int

    def _shim_block(self):
        return (False, True, self.window_left, self.window_right)

    @classmethod
    def from_seqlens_local(cls, q_seqlen: Sequence[int], kv_padding: int, kv_seqlen: Sequence[int],
                           window_left: int, window_right: int) -> BlockDiagonalLocalAttentionPaddedKeysMask:
        assert kv_seqlen is None or len(q_seqlen) == len(kv_seqlen), (q_seqlen, kv_seqlen)
        return cls(q_seqinfo=_SeqLenInfo.from_seqlens(q_seqlen),
                   k_seqinfo=_PaddedSeqLenInfo.from_seqlens_padded(kv_seqlen, kv_padding),
                   window_left=window_left, window_right=window_right)


@dataclass
class BlockDiagonalCausalLocalAttentionPaddedKeysMask(BlockDiagonalPaddedKeysMask):
    """Padded keys, causal (bottom-right) with each query seeing its last ``_window_size`` keys."""

    _window_size: int

    def _shim_block(self):
        return (True, True, self._window_size - 1, None)

    @classmethod
    def from_seqlens_local(cls, q_seqlen: Sequence[int], kv_padding: int, kv_seqlen: Sequence[int],
                           window_size: int) -> BlockDiagonalCausalLocalAttentionPaddedKeysMask:
        assert kv_seqlen is None or len(q_seqlen) == len(kv_seqlen), (q_seqlen, kv_seqlen)
        return cls(q_seqinfo=_SeqLenInfo.from_seqlens(q_seqlen),
                   k_seqinfo=_PaddedSeqLenInfo.from_seqlens_padded(kv_seqlen, kv_padding),
                   _window_size=window_size)


class _NotProvidedBias(AttentionBias):
    """Placeholder for upstream biases the shim does not implement: importable, not constructible."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(
            f"attn_bias: xformers' {type(self).__name__} (paged / gappy key layouts) is not provided by the "
            "ascend_patch xformers shim; use BlockDiagonalPaddedKeysMask / BlockDiagonalCausalWithOffset"
            "PaddedKeysMask on a gathered cache, or flash_attn_with_kvcache(block_table=...)"
        )

    @classmethod
    def from_seqlens(cls, *args: Any, **kwargs: Any) -> Any:
        return cls()


class PagedBlockDiagonalPaddedKeysMask(_NotProvidedBias):
    pass


class PagedBlockDiagonalCausalWithOffsetPaddedKeysMask(PagedBlockDiagonalPaddedKeysMask):
    pass


class BlockDiagonalGappyKeysMask(_NotProvidedBias):
    pass


class BlockDiagonalCausalWithOffsetGappyKeysMask(BlockDiagonalGappyKeysMask):
    pass


class PagedBlockDiagonalGappyKeysMask(_NotProvidedBias):
    pass


class PagedBlockDiagonalCausalWithOffsetGappyKeysMask(PagedBlockDiagonalGappyKeysMask):
    pass


VARLEN_BIASES = (
    BlockDiagonalMask,
    BlockDiagonalGappyKeysMask,
    BlockDiagonalPaddedKeysMask,
    PagedBlockDiagonalPaddedKeysMask,
    PagedBlockDiagonalGappyKeysMask,
)

__all__ = [
    "VARLEN_BIASES",
    "AttentionBias",
    "BlockDiagonalCausalFromBottomRightMask",
    "BlockDiagonalCausalLocalAttentionFromBottomRightMask",
    "BlockDiagonalCausalLocalAttentionMask",
    "BlockDiagonalCausalLocalAttentionPaddedKeysMask",
    "BlockDiagonalCausalMask",
    "BlockDiagonalCausalWithOffsetGappyKeysMask",
    "BlockDiagonalCausalWithOffsetPaddedKeysMask",
    "BlockDiagonalGappyKeysMask",
    "BlockDiagonalLocalAttentionPaddedKeysMask",
    "BlockDiagonalMask",
    "BlockDiagonalPaddedKeysMask",
    "LocalAttentionFromBottomRightMask",
    "LowerTriangularFromBottomRightLocalAttentionMask",
    "LowerTriangularFromBottomRightMask",
    "LowerTriangularMask",
    "LowerTriangularMaskWithTensorBias",
    "PagedBlockDiagonalCausalWithOffsetGappyKeysMask",
    "PagedBlockDiagonalCausalWithOffsetPaddedKeysMask",
    "PagedBlockDiagonalGappyKeysMask",
    "PagedBlockDiagonalPaddedKeysMask",
]  # fmt: skip
