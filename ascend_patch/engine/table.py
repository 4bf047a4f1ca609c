"""The one table renderer of the report, verify, bench and doctor: text with a dashed rule, or Markdown."""

from __future__ import annotations

from collections.abc import Collection, Sequence


def table(header: Sequence[str], rows: Sequence[Sequence[str]], *, right: Collection[int] = (),
          widest: int | None = None, markdown: bool = False) -> list[str]:
    """Lines of a table. ``right``: indexes of right-aligned (numeric) columns. ``widest``: the most a
    column but the last is padded to (a long cell then overflows its row rather than widening all)."""
    if markdown:
        rule = "|" + "|".join("---:" if i in right else "---" for i in range(len(header))) + "|"
        return ["| " + " | ".join(header) + " |", rule, *("| " + " | ".join(row) + " |" for row in rows)]
    everything = [header, *rows]
    widths = [max(len(row[i]) for row in everything) for i in range(len(header))]
    if widest is not None:
        widths[:-1] = [min(w, widest) for w in widths[:-1]]
    lines = []
    for n, row in enumerate(everything):
        cells = [c.rjust(w) if i in right and n else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines
