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
# Keyed by id(code): hashing a code object hashes its bytecode and constants (~1 us). The values
# hold the code object, so its id cannot be reused while the entry exists.
_internal_code: dict[int, tuple[CodeType, bool]] = {}
_sites: dict[tuple[int, int], tuple[CodeType, str]] = {}
# (patch, api, change, site) -> calls seen
_counts: dict[tuple[str, str, object, str], int] = {}


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
    cached = _internal_code.get(id(code))
    if cached is None:
        global _ROOTS
        if _ROOTS is None:
            _ROOTS = _internal_roots()
        cached = _internal_code[id(code)] = (code, code.co_filename.startswith(_ROOTS))
    return cached[1]


# torch.cuda's own functions and our wrappers around them act for their caller: look through them.
_USER, _TORCH, _SEE_THROUGH = 0, 1, 2
_code_kind: dict[int, tuple[CodeType, int]] = {}
_TORCH_ROOTS: tuple[str, str, str] | None = None


def _kind(code: CodeType) -> int:
    cached = _code_kind.get(id(code))
    if cached is None:
        global _TORCH_ROOTS
        if _TORCH_ROOTS is None:
            import torch

            root = os.path.join(os.path.dirname(torch.__file__), "")
            ours = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "")
            _TORCH_ROOTS = (root, os.path.join(root, "cuda", ""), ours)
        filename = code.co_filename
        if filename.startswith(_TORCH_ROOTS[1]) or filename.startswith(_TORCH_ROOTS[2]):
            kind = _SEE_THROUGH
        else:
            kind = _TORCH if filename.startswith(_TORCH_ROOTS[0]) else _USER
        cached = _code_kind[id(code)] = (code, kind)
    return cached[1]


def called_by_torch(frame: FrameType | None) -> bool:
    """Whether ``frame`` is PyTorch's own code, looking through ``torch.cuda``'s functions and ours to their caller.

    Patches that change what ``torch.cuda`` answers give PyTorch's internals (dynamo, inductor,
    DataParallel) the true answer: they would otherwise take CUDA-only paths of their own. A
    ``torch.cuda`` function calling another one (``memory_cached`` -> ``memory_reserved``,
    ``current_device`` -> ``is_initialized``) answers for whoever called it. Kinds are cached per code object.
    """
    while frame is not None:
        kind = _kind(frame.f_code)
        if kind != _SEE_THROUGH:
            return kind == _TORCH
        frame = frame.f_back
    return False


def user_site(frame: FrameType | None) -> str:
    """``file:line`` of the first frame, from ``frame`` up, that is neither ours nor torch's."""
    while frame is not None and _is_internal(frame.f_code):
        frame = frame.f_back
    if frame is None:
        return "<unknown>"
    # f_lasti (the instruction offset) is free; f_lineno decodes the line table on every read.
    key = (id(frame.f_code), frame.f_lasti)
    cached = _sites.get(key)
    if cached is None:
        cached = _sites[key] = (frame.f_code, f"{os.path.relpath(frame.f_code.co_filename)}:{frame.f_lineno}")
    return cached[1]


def log_call(patch: str, api: str, change: object) -> None:
    """Record that the caller's call site went through ``patch``. Check ``STATE.enabled`` first.

    ``change`` is a string ("-> SDPA shim"), or any hashable (a device) rendered as ``-> {change}``
    when the report is made: formatting it on every call would cost more than the lookup.
    """
    import torch.compiler  # already imported by whoever makes a patched call: a dict lookup here

    if torch.compiler.is_compiling():  # dynamo cannot trace frame inspection: compiled calls go unlogged
        return
    key = (patch, api, change, user_site(sys._getframe(1)))
    # No lock: under the GIL a lost increment between two threads only makes a count low by one.
    seen = _counts.get(key, 0)
    _counts[key] = seen + 1
    if not seen and STATE.detail:
        logger.info("ascend_patch: %s: %s %s at %s", patch, api, _render(change), key[3])


def _render(change: object) -> str:
    return change if isinstance(change, str) else f"-> {change}"


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
    merged: dict[tuple[str, str, str, str], int] = {}
    for (patch, api, change, site), n in counts.items():
        key = (patch, api, _render(change), site)
        merged[key] = merged.get(key, 0) + n
    return merged
