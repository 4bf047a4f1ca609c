"""Regenerate the docs tables that the patches declare, so the docs never keep a second list.

A table lives between ``<!-- begin: NAME -->`` and ``<!-- end: NAME -->`` in a docs page; this
script renders it from the declaring data and writes it in place. ``--check`` only compares and
exits 1 when a page is stale (tests/test_docs_tables.py runs that).

    python tools/refresh_docs.py            # rewrite the tables
    python tools/refresh_docs.py --check    # fail if any table is stale
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"


def device_cuda_api() -> str:
    from ascend_patch.patches.device.cuda_api import CUDA_API

    rows = ["| `torch.cuda.` | on an npu target |", "|---|---|"]
    for name, api in CUDA_API.items():
        if api.npu is None:
            npu = "the host meaning (torch_npu has none)"
        else:
            npu = f"`torch.npu.{api.npu or name}`" + (" (device mapped)" if api.device_at is not None else "")
        rows.append(f"| `{name}` | {npu} |")
    return "\n".join(rows)


def unmapped() -> str:
    from ascend_patch.patches.device import UNMAPPED

    rows = ["| spelling | why it is left alone |", "|---|---|"]
    rows += [f"| `{spelling}` | {reason} |" for spelling, reason in UNMAPPED.items()]
    return "\n".join(rows)


TABLES: dict[str, tuple[str, Callable[[], str]]] = {
    "device-cuda-api": ("patches.md", device_cuda_api),
    "unmapped": ("compatibility.md", unmapped),
}


def refreshed(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- begin: {re.escape(name)} -->\n).*?(<!-- end: {re.escape(name)} -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"docs: no '<!-- begin: {name} -->' ... '<!-- end: {name} -->' block to refresh")
    return pattern.sub(lambda m: f"{m.group(1)}{body}\n{m.group(2)}", text)


def stale_pages(write: bool) -> list[str]:
    stale = []
    for name, (page, render) in TABLES.items():
        path = DOCS / page
        text = path.read_text()
        new = refreshed(text, name, render())
        if new != text:
            stale.append(f"{page} ({name})")
            if write:
                path.write_text(new)
    return stale


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale tables (exit 1 if any)")
    args = parser.parse_args()
    stale = stale_pages(write=not args.check)
    for page in stale:
        print(("stale: " if args.check else "refreshed: ") + page)
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
