"""The patch engine: slots, the journal, post-import hooks, apply/revert and the report."""

from .device import target_device
from .journal import JOURNAL
from .patch import Option, Patch, PatchContext, Replace
from .report import MigrationReport, Record
from .runtime import active, apply, is_active, patched, report, revert

__all__ = [
    "JOURNAL", "MigrationReport", "Option", "Patch", "PatchContext", "Record", "Replace",
    "active", "apply", "is_active", "patched", "report", "revert", "target_device",
]  # fmt: skip
