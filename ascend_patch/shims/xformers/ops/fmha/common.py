"""Stand-in for ``xformers.ops.fmha.common``: the operator base classes and ``Inputs``.

The shim has a single implementation (SDPA), so the operator classes only exist so that upstream code
naming them (``op=MemoryEfficientAttentionFlashAttentionOp``, ``fmha.cutlass.FwOp``...) keeps working;
``memory_efficient_attention`` logs that ``op`` is ignored. ``supports()`` answers True for inputs the
shim can run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

__ascend_patch_shim__ = True


@dataclass
class Inputs:
    """The arguments of ``memory_efficient_attention`` bundled together (upstream's container)."""

    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    attn_bias: Any | None = None
    p: float = 0.0
    scale: float | None = None
    output_dtype: torch.dtype | None = None
    is_partial: bool = False

    @property
    def device(self) -> torch.device:
        return self.query.device

    @property
    def scale_float(self) -> float:
        return self.query.shape[-1] ** (-0.5) if self.scale is None else self.scale


class AttentionOpBase:
    """Base of the (placeholder) attention operators; every one of them runs the SDPA shim."""

    OPERATOR: Any = None
    SUPPORTED_DEVICES: ClassVar[set[str]] = {"cpu", "cuda", "npu"}
    SUPPORTED_DTYPES: ClassVar[set[torch.dtype]] = {torch.float32, torch.float16, torch.bfloat16}
    SUPPORTED_MAX_K: float = float("inf")
    SUPPORTED_MIN_K: int = 0
    SUPPORTS_DROPOUT: bool = True
    SUPPORTS_CUSTOM_SCALE: bool = True
    SUPPORTS_DIFFERENT_VALUE_EMBED: bool = True
    SUPPORTS_OUTPUT_DTYPE: bool = True
    SUPPORTS_PARTIAL: bool = True
    SUPPORTS_BMGHK: bool = True
    IS_DETERMINISTIC: bool = True
    VARLEN_LSE_PACKED: bool = True
    NAME: str = "ascend_patch_sdpa"
    OPERATOR_CATEGORY = "memory_efficient_attention"

    @classmethod
    def not_supported_reasons(cls, d: Inputs) -> list:
        return []

    @classmethod
    def supports(cls, d: Inputs) -> bool:
        return not cls.not_supported_reasons(d)

    @classmethod
    def info(cls) -> str:
        return "available (ascend_patch SDPA shim)"


class AttentionFwOpBase(AttentionOpBase):
    pass


class AttentionBwOpBase(AttentionOpBase):
    pass


AttentionOp = tuple[type[AttentionFwOpBase] | None, type[AttentionBwOpBase] | None]


def _make_ops(module: str, label: str) -> tuple[type[AttentionFwOpBase], type[AttentionBwOpBase]]:
    """The FwOp/BwOp placeholder pair of an upstream backend module (flash, cutlass, ck...)."""
    fw = type("FwOp", (AttentionFwOpBase,), {"NAME": f"{label}F", "__module__": module})
    bw = type("BwOp", (AttentionBwOpBase,), {"NAME": f"{label}B", "__module__": module})
    return fw, bw


def bmk2bmhk(tensor: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[B * H, M, K] -> [B, M, H, K] (upstream helper)."""
    if tensor.ndim == 4:
        return tensor
    return tensor.reshape([-1, num_heads, tensor.shape[1], tensor.shape[2]]).permute((0, 2, 1, 3))


__all__ = ["AttentionBwOpBase", "AttentionFwOpBase", "AttentionOp", "AttentionOpBase", "Inputs", "bmk2bmhk"]
