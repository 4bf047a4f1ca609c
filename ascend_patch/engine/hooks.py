"""Post-import and post-reload hooks: patch a target the moment its module body has run.

wrapt's hooks run after the module body, fire once, and cannot be unregistered, so we keep at
most one dispatcher waiting per module name and keep what is waiting in our own table: after a
revert the table is empty and the hook does nothing. An exception inside a wrapt hook would fail the
user's import; the dispatcher logs it with the fix instead.

``importlib.reload`` runs the body again and rebinds every name: wrapt does not see it, so while a
patch is on a finder first in ``sys.meta_path`` answers reloads (``find_spec`` with a ``target``)
with the real spec, its loader wrapped to call the reload handler after the body.
"""

from __future__ import annotations

import logging
import sys
from types import ModuleType
from typing import Any, Callable

import wrapt

from .journal import JOURNAL

logger = logging.getLogger("ascend_patch")

_registered: set[str] = set()
_handler: Callable[[ModuleType], None] | None = None
_reload_handler: Callable[[ModuleType], None] | None = None


def set_handler(handler: Callable[[ModuleType], None], on_reload: Callable[[ModuleType], None]) -> None:
    global _handler, _reload_handler
    _handler, _reload_handler = handler, on_reload


def _dispatch(module: ModuleType, handler: Callable[[ModuleType], None] | None = None, what: str = "import") -> None:
    if handler is None:
        _registered.discard(module.__name__)  # wrapt hooks fire once; a later import needs a new one
        handler = _handler
    if handler is None:
        return
    try:
        with JOURNAL.lock:
            handler(module)
    except Exception:
        logger.exception(
            "patching %s after its %s failed; the %s itself went on unpatched. "
            "Call ascend_patch.apply() after importing it, or report this with ascend_patch.report()",
            module.__name__, what, what,
        )


def when_imported(module_name: str) -> None:
    """Run the dispatcher when ``module_name`` is imported (at once if it already is)."""
    if module_name not in _registered:
        _registered.add(module_name)
        wrapt.register_post_import_hook(_dispatch, module_name)


class _ReloadLoader(wrapt.ObjectProxy):  # type: ignore[misc]
    """The real loader; after the body ran again, the module's own loader is put back and the handler runs."""

    def exec_module(self, module: ModuleType) -> None:
        loader = self.__wrapped__
        try:
            loader.exec_module(module)
        finally:
            module.__loader__ = loader
            if getattr(module, "__spec__", None) is not None:
                module.__spec__.loader = loader
        _dispatch(module, _reload_handler, "reload")


class ReloadFinder:
    """Answers only reloads (``target`` given), with the spec the finders after it would give."""

    def find_spec(self, fullname: str, path: Any = None, target: ModuleType | None = None) -> Any:
        if target is None or _reload_handler is None:
            return None
        finders = sys.meta_path
        for finder in finders[finders.index(self) + 1:] if self in finders else ():
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find is not None else None
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _ReloadLoader(spec.loader)
                return spec
        return None


_reload_finder = ReloadFinder()


def watch_reloads(on: bool) -> None:
    """Put the reload finder first in ``sys.meta_path`` (on) or take it out (off)."""
    with JOURNAL.lock:
        present = _reload_finder in sys.meta_path
        if on and not present:
            sys.meta_path.insert(0, _reload_finder)
        elif not on and present:
            sys.meta_path.remove(_reload_finder)
