"""Which module globals hold a given object: ``from torch import Generator`` made a copy.

Apply replaces the copies of ``copies=True`` originals taken before it; revert puts back every copy
of a replacement taken while a patch was on. Scanning every module's globals costs tens of ms once
torch is imported, so the index is built once and afterwards re-reads only the modules that are new,
were replaced, whose globals changed size (a from-import adds a name), or whose ``None`` globals were
bound since (the lazy import: ``_f = None`` ... ``global _f; from x import f as _f``).
``importlib.reload``, which rebinds names in place, is reported by the reload hook
(:meth:`GlobalsIndex.forget`). What this cannot see: a global rebound from one object to another
after its module's import, outside a reload. Each hit is checked by identity when asked for, so a
stale entry is never handed out.
"""

from __future__ import annotations

import operator
import sys
from types import ModuleType
from typing import Any, Iterable

# Globals of these types are never patch originals or replacements; skipping them halves the index.
_PLAIN = (int, float, str, bytes, bool, type(None))
_GLOBALS = operator.attrgetter("__dict__")


def _scanned(module: Any) -> bool:
    # Our own modules (shims too, whatever name they are installed under) hold replacements, and
    # torch._C holds the definitions, not copies.
    name = getattr(module, "__name__", None)
    return (isinstance(module, ModuleType) and isinstance(name, str) and name.split(".")[0] != "ascend_patch"
            and not name.startswith("torch._C"))


class GlobalsIndex:
    def __init__(self) -> None:
        self._seen: dict[str, tuple[Any, int, list[int]]] = {}  # module name -> (module, globals size, ids held)
        self._holders: dict[int, dict[tuple[str, str], None]] = {}  # id(value) -> {(module name, global name)}
        self._modules_seen = -1  # len(sys.modules) at the last refresh
        # sys.modules at the last refresh: names, modules, sizes of their globals (for a bulk compare)
        self._snapshot: tuple[list[str], list[Any], list[int]] = ([], [], [])
        # module name -> (its globals, names bound to None there): a few hundred with torch imported
        self._lazy: dict[str, tuple[dict[str, Any], list[str]]] = {}
        self._stale: set[str] = set()  # reloaded: re-read at the next look, whatever their size

    def refresh(self) -> None:
        """Re-read the modules that are new, replaced or resized since the last refresh."""
        self._reread_stale()
        modules = sys.modules
        names, values = list(modules), list(modules.values())
        try:  # in C: sizes of every module's globals
            sizes = list(map(len, map(_GLOBALS, values)))
        except (AttributeError, TypeError):  # a placeholder without globals in sys.modules
            sizes = None
        if sizes is not None and names == self._snapshot[0] and all(map(operator.is_, values, self._snapshot[1])):
            # The usual case: the same modules as last time; only those whose globals changed size.
            if sizes != self._snapshot[2]:
                for i in [i for i, (now, then) in enumerate(zip(sizes, self._snapshot[2])) if now != then]:
                    self._index(names[i], values[i])
        else:
            self._refresh_each()
        for name, (globals_, keys) in list(self._lazy.items()):
            if any(globals_.get(key) is not None for key in keys):
                self._index(name, modules.get(name))
        self._snapshot = (names, values, sizes if sizes is not None else [])
        self._modules_seen = len(modules)

    def _refresh_each(self) -> None:
        modules, known = sys.modules, self._seen
        for name, module in list(modules.items()):
            seen = known.get(name)
            try:
                if seen is not None and seen[0] is module and len(module.__dict__) == seen[1]:
                    continue
            except AttributeError:  # not a module (a placeholder some packages put in sys.modules)
                pass
            self._index(name, module)
        for name in known.keys() - modules.keys():
            self._drop(name)

    def _sync_names(self) -> None:
        """Only the modules added to or removed from sys.modules (cheaper than :meth:`refresh`)."""
        modules = sys.modules
        for name in modules.keys() - self._seen.keys():
            if name in modules:
                self._index(name, modules[name])
        for name in self._seen.keys() - modules.keys():
            self._drop(name)
        self._modules_seen = len(modules)

    def forget(self, name: str) -> None:
        """Re-read ``name`` at the next look (its globals were rebound in place). Only marks it: the reload
        finder calls this without the engine lock, which guards every other use of the index."""
        self._stale.add(name)

    def _reread_stale(self) -> None:
        while self._stale:
            name = self._stale.pop()
            self._index(name, sys.modules.get(name))

    def holders(self, objects: Iterable[Any]) -> list[tuple[ModuleType, str, Any]]:
        """(module, name, object) for every module global that is one of ``objects`` (by identity)."""
        self._reread_stale()
        if len(sys.modules) != self._modules_seen:
            self._sync_names()
        found = {}  # keyed by place: one module can be in sys.modules twice (``__main__``, ``__mp_main__``)
        for obj in {id(o): o for o in objects}.values():
            for name, key in list(self._holders.get(id(obj), ())):
                module = self._seen[name][0]
                if vars(module).get(key, None) is obj:
                    found[(id(module), key)] = (module, key, obj)
        return list(found.values())

    def _index(self, name: str, module: Any) -> None:
        self._drop(name)
        if not _scanned(module):
            self._seen[name] = (module, len(getattr(module, "__dict__", ())), [])
            return
        try:
            items = list(vars(module).items())
        except RuntimeError:  # a lazy module filled itself in meanwhile: read it next time
            return
        ids, unbound = [], []
        for key, value in items:
            if type(value) not in _PLAIN:
                self._holders.setdefault(id(value), {})[(name, key)] = None
                ids.append(id(value))
            elif value is None and not key.startswith("__"):
                unbound.append(key)
        self._seen[name] = (module, len(items), ids)
        if unbound:
            self._lazy[name] = (vars(module), unbound)

    def _drop(self, name: str) -> None:
        self._lazy.pop(name, None)
        seen = self._seen.pop(name, None)
        if seen is None:
            return
        for ident in seen[2]:
            holders = self._holders.get(ident)
            if holders is not None:
                for key in [k for k in holders if k[0] == name]:
                    del holders[key]
                if not holders:
                    del self._holders[ident]


INDEX = GlobalsIndex()


def is_plain(value: Any) -> bool:
    """A value held by countless globals (a number, a string, None): never treated as a copy."""
    return type(value) in _PLAIN
