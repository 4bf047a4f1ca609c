"""The patch engine: slots, the journal, post-import hooks, apply/revert of Patch objects and the report.

It knows how to patch, not which patches exist: names are resolved in :mod:`ascend_patch.api`.
"""

from .device import target_device
from .journal import JOURNAL
from .patch import Option, Patch, PatchContext, Replace
from .report import MigrationReport, Record
from .runtime import Planned, active, apply, is_active, report, revert

__all__ = [
    "JOURNAL", "MigrationReport", "Option", "Patch", "PatchContext", "Record", "Replace",
    "Planned", "active", "apply", "is_active", "report", "revert", "target_device",
]  # fmt: skip
