"""Accuracy metrics every NPU port computes by hand: device output vs a CPU fp32 reference."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class Comparison:
    cosine_similarity: float
    max_abs_diff: float
    mean_abs_diff: float
    mean_relative_error: float  # mean|a - b| / mean|a|, a = reference

    def passed(self, threshold: float = 0.01) -> bool:
        return self.mean_relative_error <= threshold

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def compare(reference: torch.Tensor, candidate: torch.Tensor) -> Comparison:
    """Compare in float64 on the CPU, so the metric itself adds no error."""
    if reference.shape != candidate.shape:
        raise ValueError(f"shape mismatch: reference {tuple(reference.shape)} vs candidate {tuple(candidate.shape)}")
    a = reference.detach().cpu().double().flatten()
    b = candidate.detach().cpu().double().flatten()
    diff = (a - b).abs()
    scale, mean_diff = a.abs().mean().item(), diff.mean().item()
    if scale:
        relative = mean_diff / scale
    else:  # an all-zero reference: exact agreement is 0 error, anything else is unbounded
        relative = 0.0 if mean_diff == 0 else float("inf")
    return Comparison(
        cosine_similarity=torch.nn.functional.cosine_similarity(a, b, dim=0).item(),
        max_abs_diff=diff.max().item(),
        mean_abs_diff=mean_diff,
        mean_relative_error=relative,
    )
