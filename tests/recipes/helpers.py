"""What the recipe tests share."""

from __future__ import annotations

import torch

from ascend_patch.tools.compare import compare


def metrics(out: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """(cosine similarity, mean relative error) of ``out`` against the reference, in float64."""
    c = compare(ref, out)
    return c.cosine_similarity, c.mean_relative_error
