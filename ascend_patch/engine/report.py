"""The migration report: what was patched, what found nothing to patch, and why."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

# Actions a record can carry, in the order the table shows them.
ACTIONS = (
    "patched",  # a target replaced
    "copy",  # a copy of a target (`from x import f`) replaced in another module
    "waiting",  # target module not imported yet: patched by a post-import hook when it is
    "nothing",  # the patch found nothing to patch (target absent in this version, ...)
    "skipped",  # the patch is not needed on this device
    "kept",  # something deliberately left alone (e.g. a real flash_attn on CUDA)
    "call",  # a call site that went through a patch (caller file:line)
    "reverted",
    "left",  # revert found the slot replaced again by someone else and left it
)


@dataclass(frozen=True)
class Record:
    patch: str
    action: str
    target: str
    detail: str = ""
    count: int = 1
    where: str = ""  # file:line of a call site in user/upstream code ("call" records)


class MigrationReport:
    """Structured records; ``str()`` renders a table; ``to_jsonl()`` writes one JSON object a line."""

    def __init__(self, records: list[Record], stats: dict[str, dict[str, int]] | None = None) -> None:
        self.records = records
        self.stats = stats or {}

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def filter(self, *, patch: str | None = None, action: str | None = None) -> list[Record]:
        return [r for r in self.records if (patch is None or r.patch == patch) and (action is None or r.action == action)]

    def to_jsonl(self, path: str | Path) -> Path:
        path = Path(path)
        with path.open("w", encoding="utf-8") as out:
            for record in self.records:
                out.write(json.dumps(asdict(record)) + "\n")
            for patch, counters in self.stats.items():
                out.write(json.dumps({"patch": patch, "action": "stats", **counters}) + "\n")
        return path

    def __str__(self) -> str:
        if not self.records and not self.stats:
            return "ascend_patch: nothing applied"
        rows = [("patch", "action", "target", "detail")]
        order = {a: i for i, a in enumerate(ACTIONS)}
        for r in sorted(self.records, key=lambda r: (r.patch, order.get(r.action, 99))):
            detail = r.detail + (f" at {r.where}" if r.where else "") + (f" (x{r.count})" if r.count > 1 else "")
            rows.append((r.patch, r.action, r.target, detail))
        for patch, counters in sorted(self.stats.items()):
            rows.append((patch, "stats", ", ".join(f"{k}={v}" for k, v in counters.items()), ""))
        widths = [min(max(len(row[i]) for row in rows), 60) for i in range(3)]
        lines = []
        for n, row in enumerate(rows):
            lines.append("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths)) + "  " + row[3])
            if n == 0:
                lines.append("  ".join("-" * w for w in widths) + "  ------")
        return "\n".join(line.rstrip() for line in lines)

    __repr__ = __str__
