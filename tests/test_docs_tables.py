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


def test_cli_page_shows_every_example_run_with_options_the_cli_accepts():
    """docs/cli.md's sessions come from tools/refresh_cli_docs.py; their commands must still parse."""
    import re
    import shlex

    from ascend_patch.tools.cli import build_parser

    spec = importlib.util.spec_from_file_location("refresh_cli_docs", TOOL.with_name("refresh_cli_docs.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    page = module.PAGE.read_text()
    for name, command in module.RUNS.items():
        block = re.search(rf"<!-- begin: run {name} -->\n(.*?)<!-- end: run {name} -->", page, re.S)
        assert block, f"docs/cli.md has no block for {name}"
        assert f"$ {command}\n" in block.group(1), f"{name} is stale: run python tools/refresh_cli_docs.py {name}"
        build_parser().parse_args(shlex.split(command)[1:])
