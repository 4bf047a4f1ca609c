"""Every test leaves no patch behind: originals restored by identity and the journal empty."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

import ascend_patch
from ascend_patch.engine import JOURNAL
from ascend_patch.engine.slots import TargetNotFound, resolve, split_target
from ascend_patch.patches import get_patch, patch_names

FIXTURES = Path(__file__).parent / "fixtures"
if str(FIXTURES) not in sys.path:
    sys.path.insert(0, str(FIXTURES))

WATCHED_PACKAGES = ("flash_attn", "xformers")


def snapshot_targets() -> dict[str, Any]:
    """The raw object at every generic patch target whose module is imported."""
    seen: dict[str, Any] = {}
    for name in patch_names():
        for rep in get_patch(name).replaces:
            if split_target(rep.target)[0] in sys.modules:
                try:
                    seen[rep.target] = resolve(rep.target).read_own()
                except TargetNotFound:
                    pass
    return seen


def shim_modules() -> dict[str, Any]:
    return {n: m for n, m in sys.modules.items() if n.partition(".")[0] in WATCHED_PACKAGES}


@pytest.fixture(autouse=True)
def no_patch_left_behind():
    targets = snapshot_targets()
    modules = shim_modules()
    ascend_patch.report(clear=True)  # each test reads only its own records
    yield
    leftover = ascend_patch.active()
    if leftover:
        ascend_patch.revert()
    assert not leftover, f"test left patches active: {leftover}"
    assert len(JOURNAL) == 0, "journal not empty after the test"
    after = snapshot_targets()
    for target, original in targets.items():
        assert after.get(target) is original, f"{target} not restored to its original object"
    assert not [f for f in sys.meta_path if getattr(f, "slot_name", "").startswith("ascend_patch")]
    assert shim_modules().keys() == modules.keys()


# The patches are tested on every target this machine can offer: the CPU, and the simulated NPU.
# The simulator cannot be uninstalled in-process and leaves CPU behaviour untouched. It is
# installed before any test runs: autograd sizes its per-device queues at the first backward
# pass, so a device registered after that cannot run backward in this process.
TARGETS = ["cpu", "sim"]
from ascend_patch import sim  # noqa: E402

sim.install()


@pytest.fixture(params=TARGETS)
def target(request) -> str:
    """The device the patches send CUDA work to, as apply(device=...) takes it."""
    return request.param


def device_of(target: str) -> str:
    """Where tensors live for a target ("sim" puts them on the simulated "npu")."""
    return "npu" if target == "sim" else target
