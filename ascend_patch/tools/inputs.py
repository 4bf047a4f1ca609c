"""Any model's example inputs and outputs, as verify and bench handle them.

An example input is what a user's code would pass: one tensor (``model(x)``), a tuple or list of
positional arguments (``model(*args)``), a mapping of keyword arguments (``model(**kwargs)``), or an
:class:`Inputs` with both. Containers nest. Outputs are flattened to named tensors: ``output`` for
a tensor, keys of a mapping (a ``ModelOutput`` too), ``[i]`` for sequence items, so that each one
gets its own row in the accuracy table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import InputError


def map_tensors(obj: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    """``obj`` with every tensor in its tuples, lists and dicts replaced by ``fn(tensor)``."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, (tuple, list)):
        mapped = [map_tensors(item, fn) for item in obj]
        return type(obj)(*mapped) if hasattr(obj, "_fields") else type(obj)(mapped)  # namedtuples too
    if isinstance(obj, Mapping):
        return {key: map_tensors(value, fn) for key, value in obj.items()}
    return obj


def tensors_of(obj: Any) -> list[torch.Tensor]:
    found: list[torch.Tensor] = []
    map_tensors(obj, found.append)
    return found


@dataclass(frozen=True)
class Inputs:
    """Positional and keyword arguments of one forward call."""

    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, example: Any) -> Inputs:
        if isinstance(example, Inputs):
            return example
        if isinstance(example, torch.Tensor):
            return cls((example,))
        if isinstance(example, (tuple, list)):
            return cls(tuple(example))
        if isinstance(example, Mapping):
            return cls((), dict(example))
        raise InputError(f"example inputs must be a tensor, a tuple/list of arguments or a dict of keyword "
                         f"arguments; got {type(example).__name__}")

    def call(self, model: Any) -> Any:
        return model(*self.args, **self.kwargs)

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> Inputs:
        """Every tensor moved to ``device``; floating-point ones also cast to ``dtype`` (token ids stay integers)."""

        def move(t: torch.Tensor) -> torch.Tensor:
            if dtype is not None and t.is_floating_point():
                return t.to(device=device, dtype=dtype)
            return t.to(device=device)

        return Inputs(map_tensors(self.args, move), map_tensors(dict(self.kwargs), move))

    @property
    def batch_size(self) -> int | None:
        """The first dimension of the first tensor that has one."""
        return next((t.shape[0] for t in tensors_of((self.args, self.kwargs)) if t.dim()), None)

    def with_batch(self, size: int) -> Inputs:
        """``size`` samples, taken cyclically from this batch along dimension 0 of every batched tensor.

        A tensor is batched when its first dimension equals the example's batch size; others (a
        shared mask, a scalar) are passed unchanged.
        """
        given = self.batch_size
        if given is None:
            raise InputError("the example inputs have no tensor with a batch dimension to resize")
        if size == given:
            return self

        def resample(t: torch.Tensor) -> torch.Tensor:
            if not t.dim() or t.shape[0] != given:
                return t
            return t[torch.arange(size, device=t.device) % given]

        return Inputs(map_tensors(self.args, resample), map_tensors(dict(self.kwargs), resample))

    def describe(self) -> str:
        """``"x: float32 (2, 3, 224, 224)"`` per tensor argument."""
        named = [(f"arg{i}", a) for i, a in enumerate(self.args)] + list(self.kwargs.items())
        parts = []
        for name, value in named:
            for i, t in enumerate(tensors_of(value)):
                label = name if isinstance(value, torch.Tensor) else f"{name}[{i}]"
                parts.append(f"{label}: {str(t.dtype).removeprefix('torch.')} {tuple(t.shape)}")
        return ", ".join(parts) or "no tensors"


@dataclass(frozen=True)
class Outputs:
    tensors: dict[str, torch.Tensor]  # name -> tensor, in the order the model returned them
    skipped: dict[str, str]  # name -> type, for values that are neither tensors nor containers (a KV cache)


def flatten_outputs(output: Any) -> Outputs:
    """A model's return value as named tensors; ``None`` entries (unset ``ModelOutput`` fields) are left out."""
    tensors: dict[str, torch.Tensor] = {}
    skipped: dict[str, str] = {}

    def walk(value: Any, name: str) -> None:
        if isinstance(value, torch.Tensor):
            tensors[name] = value
        elif isinstance(value, Mapping):
            for key, item in value.items():
                walk(item, f"{name}.{key}" if name else str(key))
        elif isinstance(value, (tuple, list)):
            for i, item in enumerate(value):
                walk(item, f"{name or 'output'}[{i}]")
        elif value is not None:
            skipped[name or "output"] = type(value).__name__

    walk(output, "" if isinstance(output, Mapping) else "output")
    if not tensors:
        raise InputError(f"the model returned no tensors to compare (got {type(output).__name__}); "
                         "pass run= (Python) to choose what is compared")
    return Outputs(tensors, skipped)
