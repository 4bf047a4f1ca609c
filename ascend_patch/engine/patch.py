"""What a patch is: data the engine reads, not code that patches by itself.

A :class:`Patch` names its targets (``"module:attr.path"``) and, for each, a builder that
turns the original object into its replacement. The engine decides when (now, or when the
module is imported), records every write in the journal and derives undo from it. Work that
is not "replace one attribute" (an import finder, ``sys.modules`` entries) goes through
``PatchContext.replace`` so it is journaled and undone the same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .journal import JOURNAL, Entry
from .slots import Slot

logger = logging.getLogger("ascend_patch")


@dataclass(frozen=True)
class Option:
    """An ``apply(..., name=value)`` option a patch understands."""

    default: Any
    choices: tuple[Any, ...] | None = None
    doc: str = ""


@dataclass(frozen=True)
class Replace:
    """Replace the object at ``target`` with ``build(original, ctx)``.

    ``copies``: also replace copies of the original that other modules took with
    ``from x import f`` before the patch was applied (gevent's "patch came too late" case).
    ``optional``: the target exists only in some upstream versions; its absence is reported
    but is not a problem.
    """

    target: str
    build: Callable[[Any, "PatchContext"], Any]
    copies: bool = False
    optional: bool = False


@dataclass(frozen=True)
class Patch:
    name: str
    summary: str
    replaces: tuple[Replace, ...] = ()
    options: Mapping[str, Option] = field(default_factory=dict)
    # Returns why the patch is not needed on this device (None: apply it).
    skip_reason: Callable[["PatchContext"], str | None] | None = None
    # Extra journaled work done at apply time, before the replacements.
    setup: Callable[["PatchContext"], None] | None = None
    # Distribution -> version specifier the targets were written against (checked at apply).
    requires: Mapping[str, str] = field(default_factory=dict)
    # Runtime counters shown in the report (e.g. how many GELU modules were routed).
    stats: Callable[[], Mapping[str, int]] | None = None


@dataclass
class PatchContext:
    """Everything a builder may use: the target device, the options, and journaled writes."""

    patch: str
    device: str  # the device type: "npu", "cuda", "cpu"
    options: dict[str, Any]
    # apply(device="npu:3") -> 3: the "device" patch makes it the process's CUDA device; None without one.
    device_index: int | None = None
    # Cleared on revert: a wrapper that could not be removed (someone replaced it again) checks
    # this and passes straight through to the original.
    active: bool = True
    # (target, id(original)) -> (original, replacement, journal entries the build wrote besides the target,
    # whether the replacement is the patch's own object): reused when this context patches that original again.
    built: dict[tuple[str, int], tuple[Any, Any, list[Entry], bool]] = field(default_factory=dict, repr=False)

    def replace(self, slot: Slot, value: Any, *, kind: str = "target", note: str = "") -> Entry:
        return JOURNAL.replace(self.patch, slot, value, kind=kind, note=note)

    def note(self, action: str, target: str, detail: str = "") -> None:
        from . import runtime

        runtime.record(self.patch, action, target, detail)
