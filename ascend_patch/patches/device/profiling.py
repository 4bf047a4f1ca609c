"""Profiling CUDA code on the target: ``torch.cuda.nvtx`` markers and ``ProfilerActivity.CUDA``.

On an NPU the NVTX verbs go to torch_npu's own marker API, ``torch.npu.mstx`` (same verbs:
``mark``, ``range_push``, ``range_pop``, ``range_start``, ``range_end``); on a cpu target, or a
torch_npu without mstx, there is no device profiler and they do nothing (``range_push`` /
``range_pop`` still answer nesting depths as NVTX does). ``torch.cuda.nvtx.range`` is built on
``range_push`` / ``range_pop`` and follows them.

``torch.profiler.profile(activities=[..., ProfilerActivity.CUDA])`` (or ``use_cuda=True``) profiles
the accelerator: on an npu target the CUDA activity becomes ``ProfilerActivity.PrivateUse1``, the
one torch_npu's kernels report to; on a cpu target it stays, and (as on any CPU build) records nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from ...engine import calls
from ...engine.patch import PatchContext

NVTX_VERBS = ("mark", "range_push", "range_pop", "range_start", "range_end")


class _HostMarkers:
    """Markers with nowhere to go: accepted, depth-counted."""

    def __init__(self) -> None:
        self.depth = 0
        self.next_id = 0

    def mark(self, msg: str = "", *args: Any, **kwargs: Any) -> None:
        return None

    def range_push(self, msg: str = "", *args: Any, **kwargs: Any) -> int:
        self.depth += 1
        return self.depth - 1

    def range_pop(self, *args: Any, **kwargs: Any) -> int:
        if self.depth == 0:
            return -1
        self.depth -= 1
        return self.depth

    def range_start(self, msg: str = "", *args: Any, **kwargs: Any) -> int:
        self.next_id += 1
        return self.next_id

    def range_end(self, range_id: int, *args: Any, **kwargs: Any) -> None:
        return None


_host = _HostMarkers()


def nvtx_verb(name: str) -> Callable[[Any, PatchContext], Callable[..., Any]]:
    api = f"torch.cuda.nvtx.{name}"

    def build(original: Callable[..., Any], ctx: PatchContext) -> Callable[..., Any]:
        mstx = getattr(getattr(torch, "npu", None), "mstx", None) if ctx.device == "npu" else None
        replacement = getattr(mstx, name, None) or getattr(_host, name)
        if replacement is not getattr(_host, name):
            change, category = f"{api}() -> torch.npu.mstx.{name}()", calls.MAPPED
        else:
            change, category = f"{api}() -> no-op (no device profiler on this target)", calls.CHANGED

        def verb(*args: Any, **kwargs: Any) -> Any:
            if not ctx.active:
                return original(*args, **kwargs)
            if calls.STATE.enabled:
                calls.log_call("device", api, change, category)
            return replacement(*args, **kwargs)

        verb.__name__ = verb.__qualname__ = name
        verb.__doc__ = original.__doc__
        return verb

    return build


def profile_init(original: Callable[..., None], ctx: PatchContext) -> Callable[..., None]:
    from torch.profiler import ProfilerActivity

    cuda, device = ProfilerActivity.CUDA, ProfilerActivity.PrivateUse1

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if ctx.active and ctx.device == "npu":
            activities = kwargs.get("activities")
            if kwargs.pop("use_cuda", None):
                activities = [*(activities or [ProfilerActivity.CPU]), cuda]
            if activities is not None and cuda in activities:
                kwargs["activities"] = [device if a == cuda else a for a in activities]
                if calls.STATE.enabled:
                    calls.log_call("device", "torch.profiler.profile(ProfilerActivity.CUDA)",
                                   "torch.profiler.profile(activities=[..., ProfilerActivity.CUDA]) -> "
                                   "[..., ProfilerActivity.PrivateUse1] (npu)")
        original(self, *args, **kwargs)

    return __init__
