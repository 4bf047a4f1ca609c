"""The one record of every replacement made, and the only code that undoes them.

Modelled on gevent's ``saved`` dictionary: the first original of a slot is kept and wins
(``original()`` always hands back the object upstream defined, however many patches are
stacked on it). Undo is derived from this record, never from a hand-written list that could
drift from what ``apply`` did (the OpenTelemetry slip).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Iterable

from .slots import MISSING, Slot
from .warn import warn_user

logger = logging.getLogger("ascend_patch")


@dataclass(eq=False)
class Entry:
    patch: str
    slot: Slot
    original: Any  # what the slot held just before this entry (MISSING: nothing of its own)
    replacement: Any
    kind: str  # "target", "copy", "module", "finder", "support"
    note: str = ""
    seq: int = field(default=0)


class Journal:
    def __init__(self) -> None:
        # Re-entrant: a post-import hook can fire while apply() holds the lock and imports.
        self.lock = threading.RLock()
        self._entries: list[Entry] = []
        self._first_original: dict[tuple[int, str], Any] = {}
        self._seq = 0

    def replace(self, patch: str, slot: Slot, replacement: Any, *, kind: str = "target", note: str = "") -> Entry:
        """Write ``replacement`` into ``slot`` and remember what it held."""
        with self.lock:
            original = slot.read_own()
            self._first_original.setdefault(slot.key(), slot.read())
            if replacement is MISSING:  # a removal (e.g. hiding a sys.modules entry)
                slot.erase()
            else:
                slot.write(replacement)
            self._seq += 1
            entry = Entry(patch, slot, original, replacement, kind, note, self._seq)
            self._entries.append(entry)
            return entry

    def entries(self, patches: Iterable[str] | None = None) -> list[Entry]:
        with self.lock:
            if patches is None:
                return list(self._entries)
            wanted = set(patches)
            return [e for e in self._entries if e.patch in wanted]

    def original(self, slot: Slot) -> Any:
        """The object the slot held before any patch touched it (gevent's ``get_original``)."""
        with self.lock:
            return self._first_original.get(slot.key(), slot.read())

    def owns(self, slot: Slot) -> bool:
        with self.lock:
            return any(e.slot.key() == slot.key() for e in self._entries)

    def undo(self, patches: Iterable[str]) -> list[Entry]:
        """Undo the entries of ``patches`` newest first; returns the entries left in place.

        A slot is restored only while it still holds our replacement: if someone wrote over it
        after us (user code, another tool, a later patch not being reverted), restoring would
        destroy their change, so we warn and leave it.
        """
        wanted = set(patches)
        left: list[Entry] = []
        with self.lock:
            for entry in sorted((e for e in self._entries if e.patch in wanted), key=lambda e: -e.seq):
                self._entries.remove(entry)
                if entry.slot.read_own() is entry.replacement:
                    if entry.original is MISSING:
                        entry.slot.erase()
                    else:
                        entry.slot.write(entry.original)
                else:
                    left.append(entry)
                    current = entry.slot.read_own()
                    later = next((e.patch for e in self._entries if e.replacement is current), None)
                    fix = f"revert patch {later!r} first" if later else "restore it yourself or revert before replacing it"
                    warn_user(
                        f"ascend_patch: not restoring {entry.slot.describe()} for patch {entry.patch!r}: it was "
                        f"replaced again after the patch was applied; {fix}",
                        RuntimeWarning,
                    )
            live = {e.slot.key() for e in self._entries}
            for key in [k for k in self._first_original if k not in live]:
                del self._first_original[key]
        return left

    def __len__(self) -> int:
        with self.lock:
            return len(self._entries)


JOURNAL = Journal()
