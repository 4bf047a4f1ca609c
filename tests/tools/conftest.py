"""Helpers for the CLI tests: run ``ascend-patch`` in-process and capture what it printed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from ascend_patch.tools.cli import main


@dataclass
class CliRun:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys) -> Callable[..., CliRun]:
    """``cli("verify", "dinov2", ...)`` -> exit code, stdout, stderr (in-process: imports are paid once)."""

    def run(*argv: str) -> CliRun:
        capsys.readouterr()  # drop whatever earlier steps printed
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return CliRun(code, captured.out, captured.err)

    return run
