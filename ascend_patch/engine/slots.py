"""Places a patch can write to, read and restored exactly.

A *slot* is one location: an attribute of a module or class, an item of a mapping
(``sys.modules``), or membership in a list (``sys.meta_path``). The journal only talks to
slots, so every kind of change is undone by the same code.

Attributes are read raw from ``__dict__`` along the MRO (as wrapt's ``resolve_path`` does):
``getattr`` would hand back a bound method or the function inside a ``staticmethod``, and
restoring that would not restore the original object.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from typing import Any, MutableMapping

MISSING: Any = type("MISSING", (), {"__repr__": lambda self: "<missing>"})()


class TargetNotFound(LookupError):
    """A dotted target does not exist in the imported module (renamed upstream, wrong version)."""


@dataclass(frozen=True, eq=False)
class AttrSlot:
    owner: Any
    name: str

    def key(self) -> tuple[int, str]:
        return (id(self.owner), self.name)

    def read(self) -> Any:
        """The raw object ``owner.name`` resolves to, looked up through the MRO for classes."""
        if isinstance(self.owner, type):
            for klass in self.owner.__mro__:
                if self.name in klass.__dict__:
                    return klass.__dict__[self.name]
            return MISSING
        return vars(self.owner).get(self.name, MISSING)

    def read_own(self) -> Any:
        """The raw object stored on the owner itself (not inherited)."""
        return vars(self.owner).get(self.name, MISSING)

    def write(self, value: Any) -> None:
        setattr(self.owner, self.name, value)

    def erase(self) -> None:
        delattr(self.owner, self.name)

    def describe(self) -> str:
        owner = getattr(self.owner, "__qualname__", None) or getattr(self.owner, "__name__", repr(self.owner))
        module = getattr(self.owner, "__module__", None)
        if isinstance(self.owner, type) and module:
            owner = f"{module}.{owner}"
        return f"{owner}.{self.name}"


@dataclass(frozen=True, eq=False)
class ItemSlot:
    mapping: MutableMapping[str, Any]
    name: str

    def key(self) -> tuple[int, str]:
        return (id(self.mapping), self.name)

    def read(self) -> Any:
        return self.mapping.get(self.name, MISSING)

    read_own = read

    def write(self, value: Any) -> None:
        self.mapping[self.name] = value

    def erase(self) -> None:
        del self.mapping[self.name]

    def describe(self) -> str:
        names = {id(sys.modules): "sys.modules", id(os.environ): "os.environ"}
        where = names.get(id(self.mapping), "mapping")
        return f"{where}[{self.name!r}]"


@dataclass(frozen=True, eq=False)
class ListSlot:
    """Membership of ``name``'s object at the front of a list (an import finder in sys.meta_path)."""

    items: list[Any]
    name: str

    def key(self) -> tuple[int, str]:
        return (id(self.items), self.name)

    def read(self) -> Any:
        return next((x for x in self.items if getattr(x, "slot_name", None) == self.name), MISSING)

    read_own = read

    def write(self, value: Any) -> None:
        current = self.read()
        if current is not MISSING:
            self.items.remove(current)
        self.items.insert(0, value)

    def erase(self) -> None:
        self.items.remove(self.read())

    def describe(self) -> str:
        return f"sys.meta_path[{self.name}]" if self.items is sys.meta_path else f"list[{self.name}]"


Slot = AttrSlot | ItemSlot | ListSlot


def split_target(target: str) -> tuple[str, str]:
    """``"pkg.mod:Class.attr"`` -> ``("pkg.mod", "Class.attr")``; the colon marks where the import ends."""
    module, sep, path = target.partition(":")
    if not sep or not module or not path:
        raise ValueError(f"target {target!r} must look like 'package.module:attribute.path'")
    return module, path


def resolve(target: str, *, import_module: bool = False) -> AttrSlot:
    """The slot a ``module:attr.path`` target names; the module must already be imported."""
    module_name, path = split_target(target)
    module = sys.modules.get(module_name)
    if module is None:
        if not import_module:
            raise TargetNotFound(f"{module_name} is not imported")
        module = importlib.import_module(module_name)
    owner: Any = module
    *parents, name = path.split(".")
    for part in parents:
        try:
            owner = getattr(owner, part)
        except AttributeError:
            raise TargetNotFound(f"{module_name} has no attribute {path!r} (stopped at {part!r})") from None
    slot = AttrSlot(owner, name)
    if slot.read() is MISSING:
        raise TargetNotFound(f"{module_name} has no attribute {path!r}")
    return slot
