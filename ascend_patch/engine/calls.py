"""The migration log: which call sites in user/upstream code went through a patch.

Levels (``apply(..., log=...)`` or ``ASCEND_PATCH_LOG``):

- ``off``: nothing recorded; a wrapper pays one attribute check (``STATE.enabled``).
- ``summary`` (default): one record per call site (file:line in user or upstream code, never ours
  or torch's) with the API, old -> new, and a call count.
- ``detail``: as summary, and each new call site is also logged at INFO on logger "ascend_patch".

The caller lookup walks up past our frames and torch's; whether a code object is "internal" is
cached per code object and the formatted site per (code, line), so a call site pays the path
checks once and every later call a few dict lookups.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from types import CodeType, FrameType

logger = logging.getLogger("ascend_patch")

LEVELS = ("off", "summary", "detail")
ENV_LOG = "ASCEND_PATCH_LOG"


class _State:
    enabled = True
    detail = False


STATE = _State()

_lock = threading.Lock()
_internal_code: dict[CodeType, bool] = {}
_sites: dict[tuple[CodeType, int], str] = {}
# (patch, api, change, site) -> calls seen
_counts: dict[tuple[str, str, str, str], int] = {}


def _internal_roots() -> tuple[str, ...]:
    import contextlib
    import functools

    import torch
    import wrapt

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    roots = [here, os.path.dirname(torch.__file__), os.path.dirname(wrapt.__file__)]
    return tuple(os.path.join(r, "") for r in roots) + (contextlib.__file__, functools.__file__, "<frozen")


_ROOTS: tuple[str, ...] | None = None


def _is_internal(code: CodeType) -> bool:
    internal = _internal_code.get(code)
    if internal is None:
        global _ROOTS
        if _ROOTS is None:
            _ROOTS = _internal_roots()
        internal = _internal_code[code] = code.co_filename.startswith(_ROOTS)
    return internal


def user_site(frame: FrameType | None) -> str:
    """``file:line`` of the first frame, from ``frame`` up, that is neither ours nor torch's."""
    while frame is not None and _is_internal(frame.f_code):
        frame = frame.f_back
    if frame is None:
        return "<unknown>"
    key = (frame.f_code, frame.f_lineno)
    site = _sites.get(key)
    if site is None:
        site = _sites[key] = f"{os.path.relpath(frame.f_code.co_filename)}:{frame.f_lineno}"
    return site


def log_call(patch: str, api: str, change: str) -> None:
    """Record that the caller's call site went through ``patch``. Check ``STATE.enabled`` first."""
    site = user_site(sys._getframe(1))
    key = (patch, api, change, site)
    with _lock:
        seen = _counts.get(key, 0)
        _counts[key] = seen + 1
    if not seen and STATE.detail:
        logger.info("ascend_patch: %s: %s %s at %s", patch, api, change, site)


def set_level(level: str | None) -> None:
    level = (level or os.environ.get(ENV_LOG) or "summary").strip().lower()
    if level not in LEVELS:
        raise ValueError(f"log={level!r} is not a log level: choose one of {', '.join(LEVELS)}")
    STATE.enabled = level != "off"
    STATE.detail = level == "detail"


def snapshot(clear: bool = False) -> dict[tuple[str, str, str, str], int]:
    with _lock:
        counts = dict(_counts)
        if clear:
            _counts.clear()
        return counts
