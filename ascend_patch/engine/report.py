"""The migration report: the call sites that went through a patch (the migration log), and, in the
internal view, what each patch did to its targets.

Two views of the same records:

- the default view (``report()``): ``call`` records only, one per call site in user or upstream code,
  each with its ``file:line``, the call as written -> what runs instead, and its class (``mapped``,
  ``changed meaning``, ``unsupported``): what a user porting a script acts on;
- the internal view (``report(internal=True)``, or ``ASCEND_PATCH_LOG=detail``): the call sites, then
  the patches' own bookkeeping (targets ``patched``, ``copy``, ``waiting``, ``nothing``, ...) and counters.

``filter()`` and ``to_jsonl()`` see every record whatever the view.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

from .calls import CATEGORIES, CHANGED, MAPPED, UNSUPPORTED
from .table import table

# Actions a record can carry, in the order the internal table shows them.
ACTIONS = (
    "patched",  # a target replaced
    "copy",  # a copy of a target (`from x import f`) replaced in another module
    "waiting",  # target module not imported yet: patched by a post-import hook when it is
    "nothing",  # the patch found nothing to patch (target absent in this version, ...)
    "skipped",  # not needed on this device, or a target it cannot patch (with the reason)
    "kept",  # something deliberately left alone (e.g. a real flash_attn on CUDA)
    "call",  # a call site that went through a patch (caller file:line): the migration log
    "reloaded",  # importlib.reload ran a target module again: its new objects were patched
    "reverted",
    "left",  # revert left it: replaced again by someone else, or imported while patched with nothing to restore
)
USER_ACTIONS = ("call",)  # what the default view shows; every other action is internal

__all__ = ["ACTIONS", "CATEGORIES", "CHANGED", "MAPPED", "MigrationReport", "Record", "UNSUPPORTED", "USER_ACTIONS"]


@dataclass(frozen=True)
class Record:
    patch: str
    action: str
    target: str  # "call": the API called (``Tensor.cuda``); else the patched target
    detail: str = ""  # "call": what the patch logged (``-> cpu``); else the note or reason
    count: int = 1
    where: str = ""  # file:line of a call site in user/upstream code ("call" records), relative to the cwd
    category: str = ""  # "call": mapped | changed meaning | unsupported
    change: str = ""  # "call": the call as written -> what runs instead (``x.cuda() -> x.to("npu")``)

    @property
    def internal(self) -> bool:
        """Bookkeeping of a patch rather than a call site in user code."""
        return self.action not in USER_ACTIONS


def _site_order(record: Record) -> tuple[int, str, int, str, str]:
    path, _, line = record.where.rpartition(":")
    if not record.where or not line.isdigit():
        return (1, record.where, 0, record.patch, record.change)
    return (0, path, int(line), record.patch, record.change)


class MigrationReport:
    """Structured records; ``str()`` renders a table; ``to_jsonl()`` writes one JSON object a line.

    ``records`` (and iterating, ``len``, ``str``) is the view: with ``internal=False`` only the call
    sites, with ``internal=True`` every record. ``all_records`` holds every record whatever the view;
    ``filter()`` and ``to_jsonl()`` use it, so ``report().filter(action="patched")`` still answers.
    A report built from a list of records (``MigrationReport(records)``) shows all of them.
    """

    def __init__(
        self, records: list[Record], stats: dict[str, dict[str, int]] | None = None, *, internal: bool = True
    ) -> None:
        self.all_records = list(records)
        self.internal = internal
        self.records = self.all_records if internal else [r for r in self.all_records if not r.internal]
        self.stats = stats or {}

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def calls(self) -> list[Record]:
        """The migration log: one record per call site, in ``file:line`` order."""
        return sorted((r for r in self.all_records if not r.internal), key=_site_order)

    def filter(
        self, *, patch: str | None = None, action: str | None = None, category: str | None = None
    ) -> list[Record]:
        """Records (internal ones included, whatever the view) of ``patch``, ``action`` and ``category``."""
        return [
            r
            for r in self.all_records
            if (patch is None or r.patch == patch)
            and (action is None or r.action == action)
            and (category is None or r.category == category)
        ]

    def to_jsonl(self, path: str | Path) -> Path:
        """Every record (internal ones included) as a JSON object a line, then one ``stats`` line per patch.

        Keys: patch, action, target, detail, count, where, category, change (see :class:`Record`).
        """
        path = Path(path)
        with path.open("w", encoding="utf-8") as out:
            for record in self.all_records:
                out.write(json.dumps(asdict(record)) + "\n")
            for patch, counters in self.stats.items():
                out.write(json.dumps({"patch": patch, "action": "stats", **counters}) + "\n")
        return path

    def __str__(self) -> str:
        if not self.all_records and not self.stats:
            return "ascend_patch: nothing applied"
        calls = self.calls
        if calls:
            lines = [f"ascend_patch migration log: {len(calls)} call site(s) went through a patch"]
            rows = [(r.where or "-", r.category or MAPPED, r.patch,
                     (r.change or f"{r.target} {r.detail}") + (f" (x{r.count})" if r.count > 1 else ""))
                    for r in calls]  # fmt: skip
            lines += table(("where", "class", "patch", "old -> new"), rows, widest=60)
        else:
            lines = ["ascend_patch migration log: no call site went through a patch"]
        internal = [r for r in self.all_records if r.internal]
        if not self.internal:
            if internal or self.stats:
                lines.append(
                    f"({len(internal)} patch record(s) and counters not shown: ascend_patch.report(internal=True) "
                    "or ASCEND_PATCH_LOG=detail)"
                )
            return "\n".join(lines)
        order = {a: i for i, a in enumerate(ACTIONS)}
        rows = [(r.patch, r.action, r.target, r.detail + (f" (x{r.count})" if r.count > 1 else ""))
                for r in sorted(internal, key=lambda r: (r.patch, order.get(r.action, 99)))]
        rows += [(patch, "stats", ", ".join(f"{k}={v}" for k, v in counters.items()), "")
                 for patch, counters in sorted(self.stats.items())]
        if rows:
            lines += ["", "patch records:", *table(("patch", "action", "target", "detail"), rows, widest=60)]
        return "\n".join(lines)

    __repr__ = __str__
