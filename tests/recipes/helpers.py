"""What the recipe tests share."""

from __future__ import annotations

import sys

import torch

from ascend_patch.tools.compare import compare


def metrics(out: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """(cosine similarity, mean relative error) of ``out`` against the reference, in float64."""
    c = compare(ref, out)
    return c.cosine_similarity, c.mean_relative_error


def forget_package(package: str) -> None:
    """Drop ``package`` and its submodules from ``sys.modules``: the next import runs its code again."""
    for name in [n for n in sys.modules if n == package or n.startswith(package + ".")]:
        del sys.modules[name]
