"""What every patch that replaces torch callables adds, so ``torch.compile`` keeps working under it.

Dynamo decides how to treat a torch function by identity, through a table it builds once, lazily, by
resolving names such as ``"torch.zeros_like"`` (``torch._dynamo.trace_rules.get_torch_obj_rule_map``).
Built while a patch is active, the table would name our wrapper instead of the builtin: after the
patch is reverted and applied again, the new wrapper is traced into and its call to the original
builtin, missing from the table, is refused ("Attempted to call function marked as skipped").
:data:`SEES_ORIGINALS` makes the names resolve to the originals (``JOURNAL.unpatched``), so the
table is right whenever it is built; our wrappers are then ordinary Python that dynamo traces into.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from ..engine.journal import JOURNAL
from ..engine.patch import PatchContext, Replace


def _load_originals(original: Callable[[str], Any], ctx: PatchContext) -> Callable[[str], Any]:
    @functools.wraps(original)
    def load_object(name: str) -> Any:
        return JOURNAL.unpatched(original(name))

    return load_object


SEES_ORIGINALS = Replace("torch._dynamo.trace_rules:load_object", _load_originals)
