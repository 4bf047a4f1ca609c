"""``torch.npu.mstx``: torch_npu's marker/range API for its profiler (the NPU's NVTX).

The simulator has no profiler to collect markers, so every call is accepted and dropped; range
ids are counted so ``range_start`` / ``range_end`` pairs match as on the device.
"""

from __future__ import annotations

import itertools
from typing import Any

_ids = itertools.count(1)
_depth = 0


def mark(message: str = "", stream: Any = None, domain: str = "default") -> None:
    pass


def range_push(message: str = "", domain: str = "default") -> int:
    global _depth
    _depth += 1
    return _depth - 1


def range_pop(domain: str = "default") -> int:
    global _depth
    if _depth == 0:
        return -1  # nothing pushed, as NVTX and mstx answer
    _depth -= 1
    return _depth


def range_start(message: str = "", stream: Any = None, domain: str = "default") -> int:
    return next(_ids)


def range_end(range_id: int, domain: str = "default") -> None:
    pass
