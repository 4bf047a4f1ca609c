"""Reference implementations of the torch_npu custom ops the patches call.

Signatures are those of the op schemas in the torch_npu wheel
(``torch_npu/csrc/aten/npu_native_functions_by_codegen.yaml``; the lines used are kept in
``tests/data/npu_op_schemas.json`` and a test holds the two together). Semantics follow the
op documentation shipped in the wheel (``torch_npu/_op_plugin_docs.py``) and its meta kernels
(``torch_npu/op_plugin/meta/_meta_registrations.py``, for output shapes). Like the real ops they
accept npu tensors only. They are written with ordinary torch ops, so autograd works through them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .tensor import SimTensor

aten = torch.ops.aten

LAYOUTS = ("BSH", "SBH", "BSND", "BNSD", "TND")
_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_INT32_MAX = 2147483647


def _require_npu(op: str, **tensors: torch.Tensor | None) -> None:
    for name, t in tensors.items():
        if t is not None and not isinstance(t, SimTensor):
            raise RuntimeError(
                f"torch_npu.{op}: argument '{name}' is on {t.device}; it must be an npu tensor "
                f"(Could not run 'npu::{op}' with arguments from the '{t.device.type.upper()}' backend)"
            )


# --- npu_gelu -------------------------------------------------------------------------------


class _ExactGelu(torch.autograd.Function):
    """aten.gelu on the inner CPU tensor, bypassing the simulator's aclnnGelu (tanh) behaviour,
    which is what npu_gelu / npu_gelu_backward do on hardware (they honour ``approximate``)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, approximate: str) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.approximate = approximate
        return SimTensor(aten.gelu.default(x._inner, approximate=approximate))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        grad_inner = grad._inner if isinstance(grad, SimTensor) else grad
        return SimTensor(aten.gelu_backward.default(grad_inner, x._inner, approximate=ctx.approximate)), None


def npu_gelu(self: torch.Tensor, *, approximate: str = "none") -> torch.Tensor:
    """GELU as NPU custom op: ``approximate='none'`` is the exact erf form, ``'tanh'`` the tanh form."""
    _require_npu("npu_gelu", self=self)
    if approximate not in ("none", "tanh"):
        raise RuntimeError(f"npu_gelu: approximate argument must be either none or tanh, got {approximate!r}")
    return _ExactGelu.apply(self, approximate)


# --- npu_fusion_attention -------------------------------------------------------------------


def _to_bnsd(x: torch.Tensor, layout: str, head_dim: int) -> torch.Tensor:
    if layout == "BNSD":
        return x
    if layout == "BSND":
        return x.transpose(1, 2)
    if layout == "BSH":
        b, s, h = x.shape
        return x.reshape(b, s, h // head_dim, head_dim).transpose(1, 2)
    # SBH
    s, b, h = x.shape
    return x.reshape(s, b, h // head_dim, head_dim).permute(1, 2, 0, 3)


def _from_bnsd(x: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "BNSD":
        return x
    if layout == "BSND":
        return x.transpose(1, 2)
    b, n, s, d = x.shape
    if layout == "BSH":
        return x.transpose(1, 2).reshape(b, s, n * d)
    return x.permute(2, 0, 1, 3).reshape(s, b, n * d)  # SBH


def _masked_positions(
    atten_mask: torch.Tensor | None, sparse_mode: int, sq: int, skv: int, device: torch.device
) -> torch.Tensor | None:
    """Boolean tensor, True where a score is masked out, broadcastable to [B, N, Sq, Skv]."""
    if atten_mask is None:
        # _op_plugin_docs.py: with atten_mask=None, sparse_mode / pre_tockens / next_tockens take
        # no effect and the full score matrix is computed - even for the causal modes.
        return None
    if sparse_mode in (0, 1):  # defaultMask / allMask: the mask as given (SS, 11SS, B1SS, BNSS)
        return atten_mask.to(torch.bool)
    if sparse_mode in (2, 3):
        # The caller passes the compressed 2048x2048 triu(1) mask; what it means is causal,
        # aligned top-left (2) or bottom-right (3).
        diagonal = 1 if sparse_mode == 2 else skv - sq + 1
        return torch.ones(sq, skv, dtype=torch.bool, device=device).triu(diagonal)
    raise NotImplementedError(
        f"npu_fusion_attention: sparse_mode={sparse_mode} is not simulated (only 0, 1, 2 and 3 are)"
    )


def _attention_bnsd(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pse: torch.Tensor | None, masked: torch.Tensor | None,
    scale: float, keep_prob: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """out [B,N,Sq,Dv] in q's dtype, and the softmax row max and row sum [B,N,Sq] in float32."""
    n, n_kv = q.shape[1], k.shape[1]
    if n % n_kv:
        raise RuntimeError(f"npu_fusion_attention: query heads ({n}) must be a multiple of key/value heads ({n_kv})")
    if n_kv != n:  # GQA: query head h reads key/value head h // (n / n_kv)
        k = k.repeat_interleave(n // n_kv, dim=1)
        v = v.repeat_interleave(n // n_kv, dim=1)
    scores = q.float() @ k.float().transpose(-2, -1)
    if pse is not None:
        scores = scores + pse.float()
    scores = scores * scale  # _op_plugin_docs.py: Softmax(Mask(scale * (pse + Q K^T)))
    if masked is not None:
        scores = scores.masked_fill(masked, float("-inf"))
    row_max = scores.amax(dim=-1, keepdim=True)
    # A fully masked row has max -inf; the kernel outputs zeros there rather than NaN.
    row_max = torch.where(torch.isinf(row_max), torch.zeros_like(row_max), row_max)
    exp = torch.exp(scores - row_max)
    row_sum = exp.sum(dim=-1, keepdim=True)
    probs = exp / torch.where(row_sum == 0, torch.ones_like(row_sum), row_sum)
    if keep_prob < 1.0:
        keep = torch.rand(probs.shape, device=probs.device) < keep_prob
        probs = probs * keep / keep_prob
    out = (probs @ v.float()).to(q.dtype)
    return out, row_max.squeeze(-1), row_sum.squeeze(-1)


def npu_fusion_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    head_num: int,
    input_layout: str,
    pse: torch.Tensor | None = None,
    padding_mask: torch.Tensor | None = None,
    atten_mask: torch.Tensor | None = None,
    scale: float = 1.0,
    keep_prob: float = 1.0,
    pre_tockens: int = _INT32_MAX,
    next_tockens: int = _INT32_MAX,
    inner_precise: int = 0,
    prefix: Sequence[int] | None = None,
    actual_seq_qlen: Sequence[int] | None = None,
    actual_seq_kvlen: Sequence[int] | None = None,
    sparse_mode: int = 0,
    gen_mask_parallel: bool = True,
    sync: bool = False,
    softmax_layout: str = "",
    sink: torch.Tensor | None = None,
    dropout_mask: torch.Tensor | None = None,
    seed: int = 0,
    offset: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int, int, int]:
    """Reference FlashAttentionScore: ``softmax(mask(scale * (pse + Q K^T))) V`` with dropout ``1 - keep_prob``.

    Returns ``(attention_out, softmax_max, softmax_sum, softmax_out, seed, offset, numels)`` like
    the real op; ``attention_out`` has the input layout. ``atten_mask`` True means masked out.
    ``sparse_mode`` 0/1 apply the mask as given, 2 is top-left causal and 3 bottom-right causal
    (the passed mask is the compressed 2048x2048 one and only signals "causal"). Not simulated:
    sparse modes 4-8, band limits through pre/next_tockens, prefix, sink, a given dropout_mask.
    """
    _require_npu("npu_fusion_attention", query=query, key=key, value=value, pse=pse, atten_mask=atten_mask)
    if input_layout not in LAYOUTS:
        raise RuntimeError(
            f"npu_fusion_attention: input_layout must be one of {', '.join(LAYOUTS)}, got {input_layout!r}"
        )
    if not 0.0 < keep_prob <= 1.0:
        raise RuntimeError(f"npu_fusion_attention: keep_prob must be in (0, 1], got {keep_prob}")
    if not (query.dtype == key.dtype == value.dtype) or query.dtype not in _DTYPES:
        raise RuntimeError(
            "npu_fusion_attention: query, key and value must share one dtype among float16, bfloat16, float32; "
            f"got {query.dtype}, {key.dtype}, {value.dtype}"
        )
    for name, unsupported in (("prefix", prefix), ("sink", sink), ("dropout_mask", dropout_mask)):
        if unsupported is not None:
            raise NotImplementedError(f"npu_fusion_attention: {name} is not simulated")

    if input_layout == "TND":
        return _fusion_attention_tnd(
            query, key, value, head_num, pse, atten_mask, scale, keep_prob, actual_seq_qlen, actual_seq_kvlen,
            sparse_mode,
        )  # fmt: skip

    if input_layout in ("BSH", "SBH"):
        if query.shape[-1] % head_num:
            raise RuntimeError(f"npu_fusion_attention: H={query.shape[-1]} is not divisible by head_num={head_num}")
        head_dim = query.shape[-1] // head_num
    else:
        head_dim = query.shape[-1]
    q, k, v = (_to_bnsd(t, input_layout, head_dim) for t in (query, key, value))
    if q.shape[1] != head_num:
        raise RuntimeError(f"npu_fusion_attention: head_num={head_num} but query has {q.shape[1]} heads")
    masked = _masked_positions(atten_mask, sparse_mode, q.shape[2], k.shape[2], query.device)
    out, row_max, row_sum = _attention_bnsd(q, k, v, pse, masked, scale, keep_prob)
    numels = q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2] if keep_prob < 1.0 else 0
    return (
        _from_bnsd(out, input_layout),
        row_max.unsqueeze(-1).expand(*row_max.shape, 8).contiguous(),  # [B, N, Sq, 8] like the kernel
        row_sum.unsqueeze(-1).expand(*row_sum.shape, 8).contiguous(),
        query.new_empty(0),
        0,  # seed and offset of the kernel's Philox generator; the simulator draws from torch.npu's
        0,
        numels,
    )


def _fusion_attention_tnd(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, head_num: int, pse: torch.Tensor | None,
    atten_mask: torch.Tensor | None, scale: float, keep_prob: float, actual_seq_qlen: Sequence[int] | None,
    actual_seq_kvlen: Sequence[int] | None, sparse_mode: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int, int, int]:  # fmt: skip
    """Varlen layout: [T, N, D] with cumulative sequence ends per batch (e.g. [2, 4, 6])."""
    if actual_seq_qlen is None or actual_seq_kvlen is None:
        raise RuntimeError("npu_fusion_attention: input_layout 'TND' needs actual_seq_qlen and actual_seq_kvlen")
    if len(actual_seq_qlen) != len(actual_seq_kvlen):
        raise RuntimeError("npu_fusion_attention: actual_seq_qlen and actual_seq_kvlen differ in length")
    if query.shape[1] != head_num:
        raise RuntimeError(f"npu_fusion_attention: head_num={head_num} but query has {query.shape[1]} heads")
    outs, maxes, sums = [], [], []
    q_start = kv_start = 0
    numels = 0
    for q_end, kv_end in zip(actual_seq_qlen, actual_seq_kvlen):
        q_end, kv_end = int(q_end), int(kv_end)
        if q_end == 0 and kv_end == 0:  # trailing batches excluded from the computation
            break
        sq, skv = q_end - q_start, kv_end - kv_start
        q = query[q_start:q_end].transpose(0, 1).unsqueeze(0)  # [1, N, Sq, D]
        k = key[kv_start:kv_end].transpose(0, 1).unsqueeze(0)
        v = value[kv_start:kv_end].transpose(0, 1).unsqueeze(0)
        masked = _masked_positions(atten_mask, sparse_mode, sq, skv, query.device)
        if masked is not None and sparse_mode in (0, 1):
            masked = masked[..., :sq, :skv]  # varlen masks are [maxSq, maxSkv]
        out, row_max, row_sum = _attention_bnsd(q, k, v, pse, masked, scale, keep_prob)
        outs.append(out[0].transpose(0, 1))  # [Sq, N, Dv]
        maxes.append(row_max[0].transpose(0, 1))
        sums.append(row_sum[0].transpose(0, 1))
        numels += head_num * sq * skv if keep_prob < 1.0 else 0
        q_start, kv_start = q_end, kv_end
    out = torch.cat(outs) if outs else value.new_zeros(0, head_num, value.shape[-1])
    row_max = torch.cat(maxes) if maxes else query.new_zeros(0, head_num, dtype=torch.float32)
    row_sum = torch.cat(sums) if sums else query.new_zeros(0, head_num, dtype=torch.float32)
    if out.shape[0] < query.shape[0]:  # rows of excluded trailing batches
        out = torch.cat([out, out.new_zeros(query.shape[0] - out.shape[0], *out.shape[1:])])
        pad = query.shape[0] - row_max.shape[0]
        row_max = torch.cat([row_max, row_max.new_zeros(pad, head_num)])
        row_sum = torch.cat([row_sum, row_sum.new_zeros(pad, head_num)])
    return (
        out,
        row_max.unsqueeze(-1).expand(*row_max.shape, 8).contiguous(),  # [T, N, 8] (meta kernel shape)
        row_sum.unsqueeze(-1).expand(*row_sum.shape, 8).contiguous(),
        query.new_empty(0),
        0,
        0,
        numels,
    )


__all__ = ["npu_fusion_attention", "npu_gelu"]
