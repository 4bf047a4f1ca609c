"""Reference implementations of the torch_npu custom ops the patches call.

Signatures are those of the op schemas in the torch_npu wheel
(``torch_npu/csrc/aten/npu_native_functions_by_codegen.yaml``; the lines used are kept in
``tests/data/npu_op_schemas.json`` and a test holds the two together). Semantics follow the
op documentation shipped in the wheel (``torch_npu/_op_plugin_docs.py``) and its meta kernels
(``torch_npu/op_plugin/meta/_meta_registrations.py``, for output shapes). Like the real ops they
accept npu tensors only. They are written with ordinary torch ops, so autograd works through them.
npu_fusion_attention's argument checks and numerics live in :mod:`.fusion_attention`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from . import fusion_attention
from .fusion_attention import INT32_MAX, LAYOUTS, fusion_attention_supported
from .tensor import SimTensor

aten = torch.ops.aten


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
    pre_tockens: int = INT32_MAX,
    next_tockens: int = INT32_MAX,
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
    Arguments are checked as the real op checks them (RuntimeError with the NPU's message; what
    :func:`.fusion_attention.fusion_attention_supported` reports); sparse modes 0-8 follow the op
    docs (:mod:`.fusion_attention`). ``inner_precise``, ``gen_mask_parallel``, ``sync``, ``seed``
    and ``offset`` change nothing here; a given ``dropout_mask`` is not simulated.
    """
    _require_npu(
        "npu_fusion_attention", query=query, key=key, value=value, pse=pse, padding_mask=padding_mask,
        atten_mask=atten_mask, sink=sink, dropout_mask=dropout_mask,
    )  # fmt: skip
    return fusion_attention.run(
        query, key, value, head_num, input_layout, pse, padding_mask, atten_mask, scale, keep_prob, pre_tockens,
        next_tockens, prefix, actual_seq_qlen, actual_seq_kvlen, sparse_mode, softmax_layout, sink, dropout_mask,
    )  # fmt: skip


__all__ = ["LAYOUTS", "fusion_attention_supported", "npu_fusion_attention", "npu_gelu"]
