"""The migration log: which call sites in user/upstream code went through a patch.

Levels (``apply(..., log=...)`` or ``ASCEND_PATCH_LOG``):

- ``off``: nothing recorded; a wrapper pays one attribute check (``STATE.enabled``).
- ``summary`` (default): one record per call site (file:line in user or upstream code, never ours,
  torch's or a third-party recipe's) with the API, the call as written -> what runs instead, its class
  (:data:`MAPPED` / :data:`CHANGED` / :data:`UNSUPPORTED`) and a call count.
- ``detail``: as summary, each new call site is also logged at INFO on logger "ascend_patch" (printed
  on stderr when the program has configured no logging), and ``report()`` shows the internal view.

The caller lookup walks up past our frames and torch's; whether a code object is "internal" is
cached per code object and the formatted site per (code, line), so a call site pays the path
checks once and every later call a few dict lookups. Paths are relative to :data:`ROOT` (the working
directory when ascend_patch was imported: the project root), absolute outside it.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any

logger = logging.getLogger("ascend_patch")

LEVELS = ("off", "summary", "detail")
ENV_LOG = "ASCEND_PATCH_LOG"

# The class of a call record (after Intel Gaudi's GPU migration log).
MAPPED = "mapped"  # the target does what the CUDA call means
CHANGED = "changed meaning"  # it runs, but means something else (a policy answer, a no-op, a bf16 downgrade)
UNSUPPORTED = "unsupported"  # the target cannot do it: the call raises or is served by a fallback
CATEGORIES = (MAPPED, CHANGED, UNSUPPORTED)

ROOT = os.path.join(os.getcwd(), "")


class _State:
    enabled = True
    detail = False


STATE = _State()

_lock = threading.Lock()
# Keyed by id(code): hashing a code object hashes its bytecode and constants (~1 us). The values
# hold the code object, so its id cannot be reused while the entry exists.
_internal_code: dict[int, tuple[CodeType, bool]] = {}
_sites: dict[tuple[int, int], tuple[CodeType, str]] = {}
# (patch, api, change, site) -> calls seen; the class of each key, set when it is first seen
_counts: dict[tuple[str, str, object, str], int] = {}
_categories: dict[tuple[str, str, object, str], str] = {}
# Files and folders of third-party recipes (entry point ``ascend_patch.recipes``): their frames are ours.
_plugin_paths: list[str] = []


def _internal_roots() -> tuple[str, ...]:
    import contextlib
    import functools

    import torch
    import wrapt

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    roots = [here, os.path.dirname(torch.__file__), os.path.dirname(wrapt.__file__)]
    return (
        tuple(os.path.join(r, "") for r in roots)
        + (contextlib.__file__, functools.__file__, "<frozen")
        + tuple(_plugin_paths)
    )


_ROOTS: tuple[str, ...] | None = None


def _is_internal(code: CodeType) -> bool:
    cached = _internal_code.get(id(code))
    if cached is None:
        global _ROOTS
        roots = _ROOTS  # read once: skip_frames_of may reset it from another thread
        if roots is None:
            roots = _ROOTS = _internal_roots()
        cached = _internal_code[id(code)] = (code, code.co_filename.startswith(roots))
    return cached[1]


def skip_frames_of(module: Any) -> None:
    """Treat ``module``'s code (its folder, for a package) as ours: call sites are looked for above it.

    Called for each third-party recipe loaded through the ``ascend_patch.recipes`` entry point, so a
    call through the recipe's own wrappers is attributed to the user's code that made it.
    """
    filename = getattr(module, "__file__", None)
    if not filename:
        return
    filename = os.path.abspath(filename)
    path = os.path.join(os.path.dirname(filename), "") if getattr(module, "__path__", None) else filename
    if path in _plugin_paths:
        return
    global _ROOTS, _TORCH_ROOTS
    with _lock:
        _plugin_paths.append(path)
        _ROOTS = _TORCH_ROOTS = None
        _internal_code.clear()
        _code_kind.clear()
        _sites.clear()


# torch.cuda's own functions and our wrappers around them act for their caller: look through them.
_USER, _TORCH, _SEE_THROUGH = 0, 1, 2
_code_kind: dict[int, tuple[CodeType, int]] = {}
# (torch's folder, folders and files looked through: torch.cuda's, ours, third-party recipes')
_TORCH_ROOTS: tuple[str, tuple[str, ...]] | None = None


def _kind(code: CodeType) -> int:
    cached = _code_kind.get(id(code))
    if cached is None:
        global _TORCH_ROOTS
        roots = _TORCH_ROOTS  # read once: skip_frames_of may reset it from another thread
        if roots is None:
            import torch

            root = os.path.join(os.path.dirname(torch.__file__), "")
            ours = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "")
            roots = _TORCH_ROOTS = (root, (os.path.join(root, "cuda", ""), ours, *_plugin_paths))
        filename = code.co_filename
        if filename.startswith(roots[1]):
            kind = _SEE_THROUGH
        else:
            kind = _TORCH if filename.startswith(roots[0]) else _USER
        cached = _code_kind[id(code)] = (code, kind)
    return cached[1]


def called_by_torch(frame: FrameType | None) -> bool:
    """Whether ``frame`` is PyTorch's own code, looking through ``torch.cuda``'s functions and ours to their caller.

    Patches that change what ``torch.cuda`` answers give PyTorch's internals (dynamo, inductor,
    DataParallel) the true answer: they would otherwise take CUDA-only paths of their own. A
    ``torch.cuda`` function calling another one (``memory_cached`` -> ``memory_reserved``,
    ``current_device`` -> ``is_initialized``) answers for whoever called it. Kinds are cached per code object.
    The same test keeps PyTorch's own calls out of the migration log (``torch.manual_seed`` calls
    ``torch.cuda.manual_seed_all``: the user wrote the former).
    """
    while frame is not None:
        kind = _kind(frame.f_code)
        if kind != _SEE_THROUGH:
            return kind == _TORCH
        frame = frame.f_back
    return False


def _relative(filename: str) -> str:
    """``filename`` relative to :data:`ROOT` when under it, else absolute (``<string>`` & co as they are)."""
    if filename.startswith("<"):
        return filename
    full = os.path.abspath(filename)
    return os.path.relpath(full, ROOT) if full.startswith(ROOT) else full


def user_site(frame: FrameType | None) -> str:
    """``file:line`` of the first frame, from ``frame`` up, that is neither ours, torch's nor a recipe plugin's."""
    internal = _internal_code
    while frame is not None:
        code = frame.f_code
        cached = internal.get(id(code))
        if not (cached[1] if cached is not None else _is_internal(code)):
            break
        frame = frame.f_back
    if frame is None:
        return "<unknown>"
    # f_lasti (the instruction offset) is free; f_lineno decodes the line table on every read.
    key = (id(frame.f_code), frame.f_lasti)
    cached_site = _sites.get(key)
    if cached_site is None:
        cached_site = _sites[key] = (frame.f_code, f"{_relative(frame.f_code.co_filename)}:{frame.f_lineno}")
    return cached_site[1]


_is_compiling: Callable[[], bool] | None = None


def log_call(
    patch: str, api: str, change: object, category: str = MAPPED, *, frame: FrameType | None = None
) -> None:
    """Record that the caller's call site went through ``patch``. Check ``STATE.enabled`` first.

    ``change`` says what the call became, in one of three forms (made cheap for hot wrappers: the
    text is composed when the report is made, not on every call):

    - a string ``"old -> new"``: the call as written and what runs instead, in full
      (``"torch.cuda.synchronize() -> torch.npu.synchronize()"``);
    - a string starting with ``"->"``: the new side only; the report puts ``api`` before it;
    - a tuple ``(template, old, new)``: ``template.format(old, new)`` with both values spelled as
      code (``'x.to({}) -> x.to({})'``, ``"cuda:0"``, ``"npu:0"`` -> ``x.to("cuda:0") -> x.to("npu:0")``).

    ``category``: :data:`MAPPED`, :data:`CHANGED` or :data:`UNSUPPORTED`. ``frame``: the frame to
    start the call-site walk from, when the caller already has it (default: the caller's).
    """
    global _is_compiling
    if _is_compiling is None:
        import torch.compiler

        _is_compiling = torch.compiler.is_compiling
    if _is_compiling():  # dynamo cannot trace frame inspection: compiled calls go unlogged
        return
    key = (patch, api, change, user_site(sys._getframe(1) if frame is None else frame))
    # No lock: under the GIL a lost increment between two threads only makes a count low by one.
    seen = _counts.get(key, 0)
    _counts[key] = seen + 1
    if not seen:
        _categories[key] = category
        if STATE.detail:
            logger.info("%s: %s [%s] at %s", patch, render(api, change)[1], category, key[3])


def spell(value: object) -> str:
    """A device argument as code: ``"cuda:0"``, ``torch.device("npu:0")``, ``1``."""
    if isinstance(value, str):
        return f'"{value}"'
    if type(value).__name__ == "device" and type(value).__module__ == "torch":
        return f'torch.device("{value}")'
    return repr(value)


def render(api: str, change: object) -> tuple[str, str]:
    """(detail, change) of a logged call: the change as logged (``-> x`` for a value) and in full (``old -> new``)."""
    if isinstance(change, str):
        return change, (f"{api} {change}" if change.startswith("->") else change)
    if isinstance(change, tuple) and len(change) == 3 and isinstance(change[0], str):
        template, old, new = change
        return f"-> {new}", template.format(spell(old), spell(new))
    return f"-> {change}", f"{api} -> {change}"


# -- our log lines on stderr while the program configured no logging -----------------------------


class LineFormat(logging.Formatter):
    """One prefix on every line: ``ascend_patch: message``, ``ascend_patch: warning: message``."""

    def __init__(self) -> None:
        super().__init__("%(message)s")

    def format(self, record: logging.LogRecord) -> str:
        level = f"{record.levelname.lower()}: " if record.levelno >= logging.WARNING else ""
        return f"{record.name.partition('.')[0]}: {level}{super().format(record)}"


class _FallbackHandler(logging.Handler):
    """Prints our warnings (and, at the detail level, our INFO lines) on stderr while the program has
    configured no logging of its own - what Python's last-resort handler does for a library without
    a handler, which a NullHandler would silence.

    Once the root logger gets a handler (``logging.basicConfig`` after ``apply``), records reach the
    user's handlers and this one stays quiet, so no line is printed twice.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.setFormatter(LineFormat())

    def emit(self, record: logging.LogRecord) -> None:
        if _configured():
            return
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # a closed stderr must not break the user's program
            self.handleError(record)


def _configured() -> bool:
    """Whether the program has a logging handler of its own for our records (on the root or our logger)."""
    return bool(logging.getLogger().handlers) or any(
        not isinstance(h, (logging.NullHandler, _FallbackHandler)) for h in logger.handlers
    )


_fallback = _FallbackHandler()
logger.addHandler(_fallback)
_level_set_by_us = False


def _print_detail(on: bool) -> None:
    global _level_set_by_us
    _fallback.setLevel(logging.INFO if on else logging.WARNING)
    if on and logger.level == logging.NOTSET:  # a level the user chose for our logger stays
        logger.setLevel(logging.INFO)
        _level_set_by_us = True
    elif not on and _level_set_by_us:
        logger.setLevel(logging.NOTSET)
        _level_set_by_us = False


def level() -> str:
    """The logging level in force: "off", "summary" or "detail"."""
    return "off" if not STATE.enabled else "detail" if STATE.detail else "summary"


def set_level(level: str | None) -> None:
    named = "log" if level else ENV_LOG
    level = (level or os.environ.get(ENV_LOG) or "summary").strip().lower()
    if level not in LEVELS:
        raise ValueError(f"{named}={level!r} is not a log level: choose one of {', '.join(LEVELS)}")
    STATE.enabled = level != "off"
    STATE.detail = level == "detail"
    _print_detail(STATE.detail)


def snapshot(clear: bool = False) -> list[tuple[str, str, str, str, str, str, int]]:
    """(patch, api, detail, change, site, category, count) per call site, in the order first seen;
    logged forms that render alike are merged."""
    with _lock:
        counts = dict(_counts)
        categories = dict(_categories)
        if clear:
            _counts.clear()
            _categories.clear()
    merged: dict[tuple[str, str, str, str], list[Any]] = {}
    for key, n in counts.items():
        patch, api, change, site = key
        detail, full = render(api, change)
        row = merged.setdefault((patch, api, full, site), [detail, categories.get(key, MAPPED), 0])
        row[2] += n
    return [(patch, api, detail, full, site, category, n)
            for (patch, api, full, site), (detail, category, n) in merged.items()]
