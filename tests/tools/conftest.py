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


@pytest.fixture(scope="session")
def library_loggers_outside_capsys() -> None:
    """transformers binds its log handler to the ``sys.stderr`` it first sees. Configured inside a test's
    capsys, the handler keeps that test's stream, closed once the test ends, and every later warning of
    it is a "--- Logging error ---" traceback on stderr. Session-scoped: set up before any capsys."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.get_logger("transformers")


@pytest.fixture
def cli(library_loggers_outside_capsys, capsys) -> Callable[..., CliRun]:
    """``cli("verify", "dinov2", ...)`` -> exit code, stdout, stderr (in-process: imports are paid once)."""

    def run(*argv: str) -> CliRun:
        capsys.readouterr()  # drop whatever earlier steps printed
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return CliRun(code, captured.out, captured.err)

    return run
