"""The one record of every replacement made, and the only code that undoes them.

Modelled on gevent's ``saved`` dictionary: the first original of a slot is kept and wins
(``original()`` always hands back the object upstream defined, however many patches are
stacked on it). Undo is derived from this record, never from a hand-written list that could
drift from what ``apply`` did (the OpenTelemetry slip).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from .slots import MISSING, Slot
from .warn import warn_user

logger = logging.getLogger("ascend_patch")


@dataclass(eq=False, slots=True)
class Entry:
    patch: str
    slot: Slot
    original: Any  # what the slot held just before this entry (MISSING: nothing of its own)
    replacement: Any
    kind: str  # "target", "copy", "module", "finder", "support"
    note: str = ""
    seq: int = field(default=0)


class EngineLock:
    """The engine's re-entrant lock (a post-import hook can fire while apply() holds it and imports).

    Work handed over with :meth:`defer` runs in the thread holding the lock, before its outermost
    release, or at once when nobody holds it. A post-import hook that cannot get the lock in time
    hands its module over this way: the holder may be waiting for that very import (a builder
    importing the module this thread is importing), and neither thread would go on.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._depth = 0  # changed only by the thread holding the lock
        self._deferred: deque[Callable[[], None]] = deque()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if not self._lock.acquire(blocking, timeout):
            return False
        self._depth += 1
        return True

    def release(self) -> None:
        if self._depth == 1:
            while self._deferred:
                self._deferred.popleft()()
        self._depth -= 1
        self._lock.release()
        if self._deferred and self.acquire(blocking=False):  # handed over after the drain above
            self.release()

    def defer(self, work: Callable[[], None]) -> None:
        self._deferred.append(work)
        if self.acquire(blocking=False):  # the holder released meanwhile: run it here
            self.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class Journal:
    def __init__(self) -> None:
        self.lock = EngineLock()
        self._entries: list[Entry] = []
        self._first_original: dict[tuple[int, str], Any] = {}
        self._owned: Counter[tuple[int, str]] = Counter()  # slot key -> entries on it (``owns`` is on a hot path)
        self._seq = 0
        # Told of every write (the engine's report); set by the runtime, which imports this module.
        self.on_write: Callable[[Entry], None] | None = None

    def replace(self, patch: str, slot: Slot, replacement: Any, *, kind: str = "target", note: str = "") -> Entry:
        """Write ``replacement`` into ``slot`` and remember what it held."""
        with self.lock:
            original = slot.read_own()
            key = slot.key()
            if key not in self._first_original:
                self._first_original[key] = slot.read()
            if replacement is MISSING:  # a removal (e.g. hiding a sys.modules entry)
                slot.erase()
            else:
                slot.write(replacement)
            self._seq += 1
            entry = Entry(patch, slot, original, replacement, kind, note, self._seq)
            self._entries.append(entry)
            self._owned[key] += 1
            if self.on_write is not None:
                self.on_write(entry)
            return entry

    def entries(self, patches: Iterable[str] | None = None) -> list[Entry]:
        with self.lock:
            if patches is None:
                return list(self._entries)
            wanted = set(patches)
            return [e for e in self._entries if e.patch in wanted]

    @property
    def seq(self) -> int:
        """The sequence number of the newest entry written."""
        return self._seq

    def written_since(self, seq: int) -> list[Entry]:
        """The entries written after ``seq`` and not yet undone, oldest first."""
        with self.lock:
            newer = []
            for entry in reversed(self._entries):
                if entry.seq <= seq:
                    break
                newer.append(entry)
            return newer[::-1]

    def original(self, slot: Slot) -> Any:
        """The object the slot held before any patch touched it (gevent's ``get_original``)."""
        with self.lock:
            return self._first_original.get(slot.key(), slot.read())

    def owns(self, slot: Slot) -> bool:
        with self.lock:
            return self._owned[slot.key()] > 0

    def forget(self, entries: Iterable[Entry]) -> None:
        """Drop entries without restoring anything: their slot was rebound by its own module (a reload)."""
        with self.lock:
            gone = set(map(id, entries))
            if gone:
                kept = [e for e in self._entries if id(e) not in gone]
                for entry in self._entries:
                    if id(entry) in gone:
                        self._owned[entry.slot.key()] -= 1
                self._entries = kept
                self._drop_unowned()

    def undo(self, patches: Iterable[str]) -> list[Entry]:
        """Undo the entries of ``patches`` newest first; returns the entries left in place.

        A slot is restored only while it still holds our replacement: if someone wrote over it
        after us (user code, another tool, a later patch not being reverted), restoring would
        destroy their change, so we warn and leave it.
        """
        wanted = set(patches)
        left: list[Entry] = []
        with self.lock:
            undone = [e for e in self._entries if e.patch in wanted]
            self._entries = [e for e in self._entries if e.patch not in wanted]
            for entry in reversed(undone):  # newest first
                self._owned[entry.slot.key()] -= 1
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
            self._drop_unowned()
        return left

    def _drop_unowned(self) -> None:
        for key in [k for k, n in self._owned.items() if n <= 0]:
            del self._owned[key]
            self._first_original.pop(key, None)

    def __len__(self) -> int:
        with self.lock:
            return len(self._entries)


JOURNAL = Journal()
