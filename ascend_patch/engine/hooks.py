"""Post-import and post-reload hooks: patch a target the moment its module body has run.

wrapt's hooks run after the module body, fire once, and cannot be unregistered, so we keep at
most one dispatcher waiting per module name and keep what is waiting in our own table: after a
revert the table is empty and the hook does nothing. An exception inside a wrapt hook would fail the
user's import; the dispatcher logs it with the fix instead.

``importlib.reload`` runs the body again and rebinds every name: wrapt does not see it. From the first
apply on, a finder near the front of ``sys.meta_path`` (it stays, as wrapt's own finder does) sees
each reload (``find_spec`` with a ``target``): it tells the index of module globals to re-read the
module, and while a patch is on answers with the real spec, its loader wrapped to call the reload
handler after the body.
"""

from __future__ import annotations

import logging
import sys
from types import ModuleType
from typing import Any, Callable

import wrapt

from .copies import INDEX
from .journal import JOURNAL

logger = logging.getLogger("ascend_patch")

_registered: set[str] = set()
_handler: Callable[[ModuleType], None] | None = None
_reload_handler: Callable[[ModuleType], None] | None = None


def set_handler(handler: Callable[[ModuleType], None], on_reload: Callable[[ModuleType], None]) -> None:
    global _handler, _reload_handler
    _handler, _reload_handler = handler, on_reload


def _dispatch(module: ModuleType) -> None:
    _registered.discard(module.__name__)  # wrapt hooks fire once; a later import needs a new one
    _run(_handler, module, "import")


# How long a hook waits for the engine lock before handing its module to the holder (an apply takes
# milliseconds; a holder that waits for this very import never releases it).
HOOK_WAIT_S = 2.0


def _run(handler: Callable[[ModuleType], None] | None, module: ModuleType, what: str) -> None:
    if handler is None:
        return
    if not JOURNAL.lock.acquire(timeout=HOOK_WAIT_S):
        logger.debug("%s of %s: the engine lock is held; its holder patches the module", what, module.__name__)
        JOURNAL.lock.defer(lambda: _run(handler, module, what))
        return
    try:
        handler(module)
    except Exception:
        logger.exception(
            "patching %s after its %s failed; the %s itself went on unpatched. "
            "Call ascend_patch.apply() after importing it, or report this with ascend_patch.report()",
            module.__name__, what, what,
        )
    finally:
        JOURNAL.lock.release()


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
        _run(_reload_handler, module, "reload")


class ReloadFinder:
    """Answers only reloads (``target`` given), with the spec the finders after it would give."""

    def find_spec(self, fullname: str, path: Any = None, target: ModuleType | None = None) -> Any:
        if target is None:
            return None
        INDEX.forget(fullname)  # the body is about to rebind its names in place
        if not _patching or _reload_handler is None:
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
_patching = False


def watch_reloads(patching: bool) -> None:
    """Have the reload finder in ``sys.meta_path``; ``patching``: a patch is on (reloads get re-patched)."""
    global _patching
    with JOURNAL.lock:
        _patching = patching
        if _reload_finder not in sys.meta_path:
            sys.meta_path.insert(0, _reload_finder)
