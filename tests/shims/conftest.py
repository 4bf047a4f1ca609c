"""Independent float64 references for the attention shims.

Written from the upstream *documentation* (flash_attn docstrings, xformers attn_bias docstrings), one
query row at a time with explicit loops: which keys a row may see is a plain Python predicate, then
``softmax(q . k * scale [capped] + bias) @ v`` over those keys. Nothing here calls the shim or SDPA.
Exposed as fixtures so the helpers work under any pytest import mode.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from types import SimpleNamespace

import pytest
import torch


def visible(i: int, j: int, sq: int, sk: int, *, causal: bool = False, window: tuple[int, int] = (-1, -1),
            align: str = "bottom_right") -> bool:
    """May query i see key j? flash_attn: diagonal at i + sk - sq; xformers top-left: at i."""
    diag = i + (sk - sq if align == "bottom_right" else 0)
    left, right = window
    if causal:
        right = 0
    if right >= 0 and j > diag + right:
        return False
    return not (left >= 0 and j < diag - left)


def ref_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    window: tuple[int, int] = (-1, -1),
    scale: float | None = None,
    alibi: torch.Tensor | None = None,
    softcap: float = 0.0,
    bias: torch.Tensor | None = None,
    align: str = "bottom_right",
    allowed: Callable[[int, int, int], bool] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """q (B, Sq, Hq, D), k/v (B, Sk, Hk, D[v]) -> out (B, Sq, Hq, Dv) float64, lse (B, Hq, Sq) (+inf: no key).

    ``alibi``: (Hq,) or (B, Hq) slopes, bias -slope * |i + sk - sq - j|. ``bias``: additive, broadcastable
    to (B, Hq, Sq, Sk). ``allowed(b, i, j)`` overrides the causal/window predicate.
    Differentiable (autograd flows through the float64 ops).
    """
    bsz, sq, hq, dim = q.shape
    sk, hk = k.shape[1], k.shape[2]
    scale = dim ** -0.5 if scale is None else scale
    q64, k64, v64 = q.double(), k.double(), v.double()
    if bias is not None:
        bias = bias.double().expand(bsz, hq, sq, sk)
    rows, lses = [], []
    for b in range(bsz):
        out_b, lse_b = [], []
        for h in range(hq):
            kh = h // (hq // hk)  # flash_attn: heads 0..g-1 of q share kv head 0, ...
            out_h, lse_h = [], []
            for i in range(sq):
                if allowed is not None:
                    keys = [j for j in range(sk) if allowed(b, i, j)]
                else:
                    keys = [j for j in range(sk) if visible(i, j, sq, sk, causal=causal, window=window, align=align)]
                if not keys:
                    out_h.append(torch.zeros(v.shape[-1], dtype=torch.float64))
                    lse_h.append(torch.tensor(math.inf, dtype=torch.float64))
                    continue
                idx = torch.tensor(keys)
                s = (k64[b, idx, kh] @ q64[b, i, h]) * scale
                if softcap > 0:
                    s = softcap * torch.tanh(s / softcap)
                if alibi is not None:
                    slope = alibi[h] if alibi.dim() == 1 else alibi[b, h]
                    s = s - slope.double() * (i + sk - sq - idx).abs().double()
                if bias is not None:
                    s = s + bias[b, h, i, idx]
                p = torch.softmax(s, dim=0)
                out_h.append(p @ v64[b, idx, kh])
                lse_h.append(torch.logsumexp(s, dim=0))
            out_b.append(torch.stack(out_h))
            lse_b.append(torch.stack(lse_h))
        rows.append(torch.stack(out_b, dim=1))  # (Sq, Hq, Dv)
        lses.append(torch.stack(lse_b))  # (Hq, Sq)
    return torch.stack(rows), torch.stack(lses)


def ref_varlen(q, k, v, q_lens: Sequence[int], k_lens: Sequence[int], **kw) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed sequences one by one through :func:`ref_attention`; lse in flash_attn's (H, total_q) layout."""
    outs, lses = [], []
    qs = ks = 0
    for lq, lk in zip(q_lens, k_lens):
        kw_b = dict(kw)
        if kw_b.get("alibi") is not None and kw_b["alibi"].dim() == 2:
            kw_b["alibi"] = kw_b["alibi"][len(outs)]
        o, l = ref_attention(q[None, qs:qs + lq], k[None, ks:ks + lk], v[None, ks:ks + lk], **kw_b)
        outs.append(o[0])
        lses.append(l[0])
        qs += lq
        ks += lk
    return torch.cat(outs), torch.cat(lses, dim=1)


def rotate_ref(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, positions: torch.Tensor,
               interleaved: bool) -> torch.Tensor:
    """x (..., S, H, D) rotated pairwise at integer positions (..., S); float64; unrotated past len(cos)."""
    out = x.double().clone()
    half = cos.shape[1]
    flat_x = out.reshape(-1, x.shape[-2], x.shape[-1])
    flat_p = positions.reshape(-1)
    for t in range(flat_x.shape[0]):
        p = int(flat_p[t])
        if p >= cos.shape[0]:
            continue
        for c in range(half):
            a_idx, b_idx = (2 * c, 2 * c + 1) if interleaved else (c, c + half)
            a, bb = flat_x[t, :, a_idx].clone(), flat_x[t, :, b_idx].clone()
            co, si = float(cos[p, c]), float(sin[p, c])
            flat_x[t, :, a_idx] = a * co - bb * si
            flat_x[t, :, b_idx] = a * si + bb * co
    return flat_x.reshape(out.shape)


@pytest.fixture
def ref() -> SimpleNamespace:
    return SimpleNamespace(attention=ref_attention, varlen=ref_varlen, visible=visible, rotate=rotate_ref)


@pytest.fixture
def sdpa_calls(monkeypatch):
    """Record every call the shim makes to F.scaled_dot_product_attention (and still run it)."""
    import torch.nn.functional as F

    calls = []
    real = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    return calls
