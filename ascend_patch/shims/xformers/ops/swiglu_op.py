"""Stand-in for ``xformers.ops.swiglu_op``: the ``SwiGLU`` module and ``swiglu`` function in plain PyTorch.

Same parameter names as upstream (``w12`` packed / ``w1``+``w2`` unpacked, ``w3``), so checkpoints
saved with xformers load unchanged (DINOv2 giant's SwiGLU FFN, for instance).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__ascend_patch_shim__ = True


def swiglu(
    x: torch.Tensor,
    w1: torch.Tensor,
    b1: torch.Tensor | None,
    w2: torch.Tensor,
    b2: torch.Tensor | None,
    w3: torch.Tensor,
    b3: torch.Tensor | None,
    *,
    op: Any = None,
) -> torch.Tensor:
    """``F.linear(F.silu(F.linear(x, w1, b1)) * F.linear(x, w2, b2), w3, b3)``; ``op`` is ignored."""
    return F.linear(F.silu(F.linear(x, w1, b1)) * F.linear(x, w2, b2), w3, b3)


def swiglu_packed(
    x: torch.Tensor,
    w1w2: torch.Tensor,
    b1b2: torch.Tensor | None,
    w3: torch.Tensor,
    b3: torch.Tensor | None,
    *,
    op: Any = None,
) -> torch.Tensor:
    """:func:`swiglu` with ``w1w2`` of shape ``[2, hidden, in]`` (and ``b1b2`` ``[2, hidden]``)."""
    b1, b2 = (None, None) if b1b2 is None else (b1b2[0], b1b2[1])
    return swiglu(x, w1w2[0], b1, w1w2[1], b2, w3, b3)


class SwiGLU(nn.Module):
    """Holds the three linear layers of a SwiGLU block; ``forward`` computes :func:`swiglu`."""

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        out_features: int | None = None,
        bias: bool = True,
        *,
        _pack_weights: bool = True,
    ) -> None:
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.w12: nn.Linear | None
        if _pack_weights:
            self.w12 = nn.Linear(in_features, 2 * hidden_features, bias=bias)
        else:
            self.w12 = None
            self.w1 = nn.Linear(in_features, hidden_features, bias=bias)
            self.w2 = nn.Linear(in_features, hidden_features, bias=bias)
        self.w3 = nn.Linear(hidden_features, out_features, bias=bias)
        self.hidden_features = hidden_features
        self.out_features = out_features
        self.in_features = in_features
        self.op = None

    def _ordered_params(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor,
                                       torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
        if self.w12 is not None:
            w1, w2 = self.w12.weight.chunk(2, dim=0)
            b1, b2 = self.w12.bias.chunk(2, dim=0) if self.w12.bias is not None else (None, None)
        else:
            w1, w2, b1, b2 = self.w1.weight, self.w2.weight, self.w1.bias, self.w2.bias
        return w1, b1, w2, b2, self.w3.weight, self.w3.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return swiglu(x, *self._ordered_params())


__all__ = ["SwiGLU", "swiglu", "swiglu_packed"]
