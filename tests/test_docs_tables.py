"""The docs tables rendered from what the patches declare are up to date (tools/refresh_docs.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

TOOL = Path(__file__).resolve().parents[1] / "tools" / "refresh_docs.py"


def test_docs_tables_match_the_declarations():
    spec = importlib.util.spec_from_file_location("refresh_docs", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.stale_pages(write=False) == [], "run: python tools/refresh_docs.py"
