"""Stand-in for ``flash_attn.layers.rotary`` in plain PyTorch (upstream uses a Triton kernel).

Same functions, arguments and semantics as Dao-AILab/flash-attention ``flash_attn/layers/rotary.py``
and ``flash_attn/ops/triton/rotary.py::apply_rotary``:

* ``cos``/``sin`` are ``(seqlen_rotary, rotary_dim / 2)``; only the first ``rotary_dim`` channels rotate,
  the rest pass through;
* ``interleaved=False`` pairs channel ``c`` with ``c + rotary_dim / 2`` (GPT-NeoX), ``True`` pairs
  ``2c`` with ``2c + 1`` (GPT-J);
* ``seqlen_offsets`` (int or ``(batch,)``) shifts each sequence's positions; with ``cu_seqlens`` the
  input is packed ``(total, nheads, headdim)``;
* positions past ``seqlen_rotary`` are left unrotated (the kernel loads cos=1, sin=0 there);
* the math runs in fp32 (fp64 for fp64 inputs) and is cast back; the backward rotates by the conjugate angle;
* in place (``inplace=True``, ``apply_rotary_emb_qkv_``, ``apply_rotary_emb_kv_``) the input's data is
  rotated and the returned tensor carries the gradient, also on a leaf that requires grad (upstream's
  ``tests/test_rotary.py`` does exactly that).
"""

from __future__ import annotations

import torch
from einops import rearrange

__ascend_patch_shim__ = True


def _rotate(
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    seqlen_offsets: int | torch.Tensor = 0,
    cu_seqlens: torch.Tensor | None = None,
    interleaved: bool = False,
    conjugate: bool = False,
) -> torch.Tensor:
    """Out-of-place rotary embedding (no autograd bookkeeping of its own)."""
    half = cos.shape[-1]
    rotary_dim = 2 * half
    if rotary_dim > x.shape[-1]:
        raise ValueError(f"rotary_dim ({rotary_dim}) must be <= headdim ({x.shape[-1]})")
    device = x.device
    if cu_seqlens is None:
        seqlen = x.shape[1]
        pos = torch.arange(seqlen, device=device)[None, :]  # (1, seqlen)
        if isinstance(seqlen_offsets, torch.Tensor):
            pos = pos + seqlen_offsets.to(device=device, dtype=torch.long)[:, None]
        else:
            pos = pos + int(seqlen_offsets)
    else:
        cu = cu_seqlens.to(device=device, dtype=torch.long)
        t = torch.arange(x.shape[0], device=device)
        seq = torch.searchsorted(cu[1:].contiguous(), t, right=True).clamp_(max=cu.numel() - 2)
        pos = t - cu[seq]
        if isinstance(seqlen_offsets, torch.Tensor):
            pos = pos + seqlen_offsets.to(device=device, dtype=torch.long)[seq]
        else:
            pos = pos + int(seqlen_offsets)
    seqlen_ro = cos.shape[0]
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    inside = ((pos >= 0) & (pos < seqlen_ro))[..., None]
    pos = pos.clamp(0, seqlen_ro - 1)
    c = torch.where(inside, cos.to(device)[pos].to(acc), 1.0)
    s = torch.where(inside, sin.to(device)[pos].to(acc), 0.0)
    if conjugate:
        s = -s
    c, s = c.unsqueeze(-2), s.unsqueeze(-2)  # broadcast over heads
    xr = x[..., :rotary_dim].to(acc)
    if interleaved:
        x1, x2 = xr[..., 0::2], xr[..., 1::2]
        rot = rearrange(torch.stack((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1), "... d two -> ... (d two)")
    else:
        x1, x2 = xr[..., :half], xr[..., half:]
        rot = torch.cat((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1)
    return torch.cat((rot.to(x.dtype), x[..., rotary_dim:]), dim=-1)


def rotate_half(x: torch.Tensor, interleaved: bool = False) -> torch.Tensor:
    """Map each channel pair (a, b) to (-b, a): halves of the last dim, or (even, odd) neighbours."""
    if interleaved:
        pairs = x.unflatten(-1, (-1, 2))
        return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def apply_rotary_emb_torch(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                           interleaved: bool = False) -> torch.Tensor:
    """Reference formula ``x * cos + rotate_half(x) * sin`` on the first ``rotary_dim`` channels.

    x: (batch_size, seqlen, nheads, headdim); cos, sin: (seqlen, rotary_dim / 2) or
    (batch_size, seqlen, rotary_dim / 2).
    """
    rot = 2 * cos.shape[-1]
    assert rot <= x.shape[-1]

    def widen(t: torch.Tensor) -> torch.Tensor:  # one angle per pair -> one per channel, broadcast over heads
        t = t.repeat_interleave(2, dim=-1) if interleaved else torch.cat((t, t), dim=-1)
        return t.unsqueeze(-2)

    head = x[..., :rot]
    return torch.cat((head * widen(cos) + rotate_half(head, interleaved) * widen(sin), x[..., rot:]), dim=-1)


def _may_mark_dirty(x: torch.Tensor) -> bool:
    """Whether an in-place rotation may rebase ``x``'s autograd history (``ctx.mark_dirty``).

    Upstream's Triton kernel writes the buffer and returns it without ``mark_dirty``: autograd then
    hands back an alias carrying the rotation's gradient, and ``x`` keeps its old history. autograd
    refuses ``mark_dirty`` on a leaf that requires grad, on views of one, and on views from
    ``unbind``/``split`` or made under no_grad: all accepted upstream, so there we do as upstream.
    Elsewhere (the usual ``linear(x).view(...)``) rebasing is allowed and keeps code that goes on
    using ``x`` instead of the result correct too, as the shim always did.
    """
    if not x.requires_grad or x.is_leaf:
        return False
    if not x._is_view():
        return True
    get_meta = getattr(torch._C._autograd, "_get_creation_meta", None)  # private; absent -> be safe
    base = x._base
    return (get_meta is not None and get_meta(x) == torch._C._autograd.CreationMeta.DEFAULT
            and not (base.is_leaf and base.requires_grad))


class ApplyRotaryEmb(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, cos, sin, interleaved=False, inplace=False, seqlen_offsets=0, cu_seqlens=None,
                max_seqlen=None):
        out = _rotate(x, cos, sin, seqlen_offsets, cu_seqlens, interleaved)
        ctx.save_for_backward(cos, sin)
        ctx.rest = (seqlen_offsets, cu_seqlens, interleaved)
        if inplace:
            dirty = _may_mark_dirty(x)  # before the write: a written unbind() view has no readable history
            x.copy_(out)  # grad mode is off here, so this is allowed on a leaf too (an optimizer's step)
            if dirty:
                ctx.mark_dirty(x)
            return x
        return out

    @staticmethod
    def backward(ctx, do):
        cos, sin = ctx.saved_tensors
        seqlen_offsets, cu_seqlens, interleaved = ctx.rest
        dx = _rotate(do, cos, sin, seqlen_offsets, cu_seqlens, interleaved, conjugate=True)
        return dx, None, None, None, None, None, None, None


def apply_rotary_emb(
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    interleaved: bool = False,
    inplace: bool = False,
    seqlen_offsets: int | torch.Tensor = 0,
    cu_seqlens: torch.Tensor | None = None,
    max_seqlen: int | None = None,
) -> torch.Tensor:
    """x: (batch_size, seqlen, nheads, headdim), or (total_seqlen, nheads, headdim) with cu_seqlens.

    cos, sin: (seqlen_rotary, rotary_dim / 2). Rotates the first rotary_dim channels of x.
    """
    if cu_seqlens is not None and max_seqlen is None:
        raise ValueError("If cu_seqlens is passed in, then max_seqlen must be passed")
    if inplace and not (torch.is_grad_enabled() and x.requires_grad):
        # Nothing to record (inference, the KV-cache path): rotate the buffer and hand it back.
        return x.copy_(_rotate(x, cos, sin, seqlen_offsets, cu_seqlens, interleaved))
    return ApplyRotaryEmb.apply(x, cos, sin, interleaved, inplace, seqlen_offsets, cu_seqlens, max_seqlen)


# For backward compatibility (upstream keeps this alias)
apply_rotary_emb_func = apply_rotary_emb


def _qk_views(qkv: torch.Tensor, num_heads_q: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The Q and K parts of a packed qkv, as views (for the in-place rotation)."""
    if qkv.dim() == 5:
        return qkv[:, :, 0], qkv[:, :, 1]
    if num_heads_q is None:
        raise ValueError("num_heads_q must be provided for a 4-D qkv")
    num_heads_k = (qkv.shape[2] - num_heads_q) // 2
    assert qkv.shape[2] == num_heads_q + 2 * num_heads_k
    return qkv[:, :, :num_heads_q], qkv[:, :, num_heads_q:num_heads_q + num_heads_k]


def _rotate_qk_(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cos_k: torch.Tensor | None,
                sin_k: torch.Tensor | None, interleaved: bool, seqlen_offsets: int | torch.Tensor,
                num_heads_q: int | None, conjugate: bool = False) -> torch.Tensor:
    """Rotate the Q and K parts of ``qkv`` in place (K by ``cos_k``/``sin_k`` when given)."""
    q, k = _qk_views(qkv, num_heads_q)
    cos_k = cos if cos_k is None else cos_k
    sin_k = sin if sin_k is None else sin_k
    q.copy_(_rotate(q, cos, sin, seqlen_offsets, None, interleaved, conjugate))
    k.copy_(_rotate(k, cos_k, sin_k, seqlen_offsets, None, interleaved, conjugate))
    return qkv


class ApplyRotaryEmbQKV_(torch.autograd.Function):
    """Upstream's Function for :func:`apply_rotary_emb_qkv_`: one node over the whole packed tensor, so
    the result carries the gradient of Q and K's rotation (and V's identity) whatever qkv is."""

    @staticmethod
    def forward(ctx, qkv, cos, sin, cos_k=None, sin_k=None, interleaved=False, seqlen_offsets=0,
                num_heads_q=None):
        dirty = _may_mark_dirty(qkv)
        _rotate_qk_(qkv, cos, sin, cos_k, sin_k, interleaved, seqlen_offsets, num_heads_q)
        ctx.save_for_backward(cos, sin, cos_k, sin_k)
        ctx.rest = (interleaved, seqlen_offsets, num_heads_q)
        if dirty:
            ctx.mark_dirty(qkv)
        return qkv

    @staticmethod
    def backward(ctx, dqkv):
        cos, sin, cos_k, sin_k = ctx.saved_tensors
        interleaved, seqlen_offsets, num_heads_q = ctx.rest
        # Upstream rotates dqkv in place; a copy is safer (autograd may hand the same buffer elsewhere).
        dqkv = dqkv.clone(memory_format=torch.contiguous_format)
        _rotate_qk_(dqkv, cos, sin, cos_k, sin_k, interleaved, seqlen_offsets, num_heads_q, conjugate=True)
        return dqkv, None, None, None, None, None, None, None


class ApplyRotaryEmbKV_(torch.autograd.Function):
    """Upstream's Function for :func:`apply_rotary_emb_kv_` (rotates K of a packed kv)."""

    @staticmethod
    def forward(ctx, kv, cos, sin, interleaved=False, seqlen_offsets=0):
        dirty = _may_mark_dirty(kv)
        k = kv[:, :, 0]
        k.copy_(_rotate(k, cos, sin, seqlen_offsets, None, interleaved))
        ctx.save_for_backward(cos, sin)
        ctx.rest = (interleaved, seqlen_offsets)
        if dirty:
            ctx.mark_dirty(kv)
        return kv

    @staticmethod
    def backward(ctx, dkv):
        cos, sin = ctx.saved_tensors
        interleaved, seqlen_offsets = ctx.rest
        dkv = dkv.clone(memory_format=torch.contiguous_format)
        dk = dkv[:, :, 0]
        dk.copy_(_rotate(dk, cos, sin, seqlen_offsets, None, interleaved, conjugate=True))
        return dkv, None, None, None, None


def apply_rotary_emb_qkv_(
    qkv: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    cos_k: torch.Tensor | None = None,
    sin_k: torch.Tensor | None = None,
    interleaved: bool = False,
    seqlen_offsets: int | torch.Tensor = 0,
    num_heads_q: int | None = None,
) -> torch.Tensor:
    """Rotate Q and K of qkv *in place*; returns qkv (with autograd: a tensor carrying the rotation).

    qkv: (batch, seqlen, 3, nheads, headdim), or (batch, seqlen, num_heads_q + 2 * num_heads_k, headdim)
    with ``num_heads_q`` given (MQA/GQA). As upstream, a leaf that requires grad is accepted; its data is
    rotated and the *returned* tensor carries the gradient (see :func:`_may_mark_dirty`).
    """
    if not (torch.is_grad_enabled() and qkv.requires_grad):
        return _rotate_qk_(qkv, cos, sin, cos_k, sin_k, interleaved, seqlen_offsets, num_heads_q)
    return ApplyRotaryEmbQKV_.apply(qkv, cos, sin, cos_k, sin_k, interleaved, seqlen_offsets, num_heads_q)


def apply_rotary_emb_kv_(
    kv: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    interleaved: bool = False,
    seqlen_offsets: int | torch.Tensor = 0,
) -> torch.Tensor:
    """kv: (batch, seqlen, 2, nheads, headdim); rotates K *in place* and returns kv (see above)."""
    if not (torch.is_grad_enabled() and kv.requires_grad):
        k = kv[:, :, 0]
        k.copy_(_rotate(k, cos, sin, seqlen_offsets, None, interleaved))
        return kv
    return ApplyRotaryEmbKV_.apply(kv, cos, sin, interleaved, seqlen_offsets)


class RotaryEmbedding(torch.nn.Module):
    """Rotary position embeddings (RoFormer), optionally XPos (``scale_base``), applied in place.

    Same constructor, buffers (``inv_freq``, ``scale``, non-persistent) and forward contract as upstream.
    """

    def __init__(self, dim: int, base: float = 10000.0, interleaved: bool = False,
                 scale_base: float | None = None, device: torch.device | None = None) -> None:
        super().__init__()
        self.dim = dim
        self.base = float(base)
        self.register_buffer("inv_freq", self._compute_inv_freq(device), persistent=False)
        self.interleaved = interleaved
        self.scale_base = scale_base
        scale = (
            (torch.arange(0, dim, 2, device=device, dtype=torch.float32) + 0.4 * dim) / (1.4 * dim)
            if scale_base is not None else None
        )
        self.register_buffer("scale", scale, persistent=False)
        self._seq_len_cached = 0
        self._cos_cached: torch.Tensor | None = None
        self._sin_cached: torch.Tensor | None = None
        self._cos_k_cached: torch.Tensor | None = None
        self._sin_k_cached: torch.Tensor | None = None

    def _compute_inv_freq(self, device: torch.device | None = None) -> torch.Tensor:
        return 1.0 / (self.base ** (torch.arange(0, self.dim, 2, device=device, dtype=torch.float32) / self.dim))

    def _update_cos_sin_cache(self, seqlen: int, device=None, dtype=None) -> None:
        cached = self._cos_cached
        fresh = (
            cached is not None and seqlen <= self._seq_len_cached and cached.device == device
            and cached.dtype == dtype and not (self.training and cached.is_inference())
        )
        if fresh:
            return
        self._seq_len_cached = seqlen
        # Angles in fp32 whatever the model dtype: bf16 positions/frequencies bend long-range angles.
        inv_freq = self.inv_freq if self.inv_freq.dtype == torch.float32 else self._compute_inv_freq(device)
        angles = torch.outer(torch.arange(seqlen, device=device, dtype=torch.float32), inv_freq.to(device))
        cos, sin = torch.cos(angles), torch.sin(angles)
        if self.scale is None:
            self._cos_cached, self._sin_cached = cos.to(dtype), sin.to(dtype)
            return
        # XPos: queries scaled by scale**power, keys by its inverse, power centred on the middle position
        power = (torch.arange(seqlen, dtype=self.scale.dtype, device=self.scale.device) - seqlen // 2) / self.scale_base
        xpos = self.scale.to(device=power.device)[None, :] ** power[:, None]
        self._cos_cached, self._sin_cached = (cos * xpos).to(dtype), (sin * xpos).to(dtype)
        self._cos_k_cached, self._sin_k_cached = (cos / xpos).to(dtype), (sin / xpos).to(dtype)

    def forward(self, qkv: torch.Tensor, kv: torch.Tensor | None = None,
                seqlen_offset: int | torch.Tensor = 0, max_seqlen: int | None = None,
                num_heads_q: int | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """qkv: (batch, seqlen, 3, nheads, headdim) (or q alone when kv is given); rotated in place."""
        seqlen = qkv.shape[1]
        if max_seqlen is not None:
            self._update_cos_sin_cache(max_seqlen, device=qkv.device, dtype=qkv.dtype)
        elif isinstance(seqlen_offset, int):
            self._update_cos_sin_cache(seqlen + seqlen_offset, device=qkv.device, dtype=qkv.dtype)
        if kv is None:
            return apply_rotary_emb_qkv_(
                qkv, self._cos_cached, self._sin_cached,
                self._cos_k_cached if self.scale is not None else None,
                self._sin_k_cached if self.scale is not None else None,
                interleaved=self.interleaved, seqlen_offsets=seqlen_offset, num_heads_q=num_heads_q,
            )
        q = apply_rotary_emb_func(qkv, self._cos_cached, self._sin_cached, interleaved=self.interleaved,
                                  inplace=True, seqlen_offsets=seqlen_offset)
        kv = apply_rotary_emb_kv_(
            kv,
            self._cos_cached if self.scale is None else self._cos_k_cached,
            self._sin_cached if self.scale is None else self._sin_k_cached,
            interleaved=self.interleaved, seqlen_offsets=seqlen_offset,
        )
        return q, kv


__all__ = [
    "ApplyRotaryEmb", "ApplyRotaryEmbKV_", "ApplyRotaryEmbQKV_", "RotaryEmbedding", "apply_rotary_emb",
    "apply_rotary_emb_func", "apply_rotary_emb_kv_", "apply_rotary_emb_qkv_", "apply_rotary_emb_torch", "rotate_half",
]  # fmt: skip
