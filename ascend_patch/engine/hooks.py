"""Post-import hooks: patch a target the moment its module has been imported.

wrapt's hooks run after the module body, fire once, and cannot be unregistered, so we keep at
most one dispatcher waiting per module name and keep what is waiting in our own table: after a
revert the table is empty and the hook does nothing. An exception inside a wrapt hook would fail the
user's import; the dispatcher logs it with the fix instead.
"""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Callable

import wrapt

from .journal import JOURNAL

logger = logging.getLogger("ascend_patch")

_registered: set[str] = set()
_handler: Callable[[ModuleType], None] | None = None


def set_handler(handler: Callable[[ModuleType], None]) -> None:
    global _handler
    _handler = handler


def _dispatch(module: ModuleType) -> None:
    _registered.discard(module.__name__)  # wrapt hooks fire once; a later import needs a new one
    if _handler is None:
        return
    try:
        with JOURNAL.lock:
            _handler(module)
    except Exception:
        logger.exception(
            "patching %s after its import failed; the import itself went on unpatched. "
            "Call ascend_patch.apply() after importing it, or report this with ascend_patch.report()",
            module.__name__,
        )


def when_imported(module_name: str) -> None:
    """Run the dispatcher when ``module_name`` is imported (at once if it already is)."""
    if module_name not in _registered:
        _registered.add(module_name)
        wrapt.register_post_import_hook(_dispatch, module_name)
