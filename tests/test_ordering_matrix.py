"""Every patch and recipe through every ordering of import / apply / copy-while-active / reload /
non-LIFO ``patched()`` / revert / re-apply, each scenario in a fresh interpreter (ddtrace-style).

tests/fixtures/ordering/scenario.py runs one scenario and checks, each time nothing is active, that
every target holds its original by identity, every copy taken while patched holds the original or is
named by a "left" record, no module outside ours holds a replacement or a shim object unreported, and
revert warned about nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ascend_patch.api import known_names

SCENARIO = Path(__file__).parent / "fixtures" / "ordering" / "scenario.py"
ORDERS = {
    # copies before and while active, a reload while active, blocks exiting out of order, re-apply
    "import-first": "import,copy,apply,copy,reload,holders,revert,apply,copy,revert",
    # targets imported while patched; blocks that switch the patches on and off themselves
    "apply-first": "apply,import,copy,reload,revert,holders,apply,copy,holders,revert",
}
CASES = [(name, "sim", order) for name in sorted(known_names()) for order in ORDERS]
CASES += [("device", "cpu", order) for order in ORDERS]


@pytest.fixture(scope="module")
def outcomes() -> dict[tuple[str, str, str], subprocess.CompletedProcess[str]]:
    env = {**os.environ, "ASCEND_PATCH_LOG": "summary"}

    def run(case: tuple[str, str, str]) -> subprocess.CompletedProcess[str]:
        name, device, order = case
        return subprocess.run([sys.executable, str(SCENARIO), name, device, ORDERS[order]],
                              check=False, capture_output=True, text=True, timeout=600, env=env)

    with ThreadPoolExecutor(max_workers=2) as pool:  # one interpreter per core
        return dict(zip(CASES, pool.map(run, CASES)))


@pytest.mark.parametrize("case", CASES, ids=["-".join(c) for c in CASES])
def test_scenario(case, outcomes):
    result = outcomes[case]
    assert result.returncode == 0, result.stderr[-3000:]
    checked = int(result.stdout.split("checked")[-1])
    assert checked > 0, "the scenario checked no target"
