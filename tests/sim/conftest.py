"""Fixtures for the simulated NPU's tests.

The simulator cannot be uninstalled, so it is installed once per test process (``sim_npu``); what
needs a process without it, or with an environment set before import, runs in a subprocess
(``helpers.run_python``).
"""

from __future__ import annotations

from types import ModuleType

import pytest


@pytest.fixture(scope="session")
def sim_npu() -> ModuleType:
    """Install the simulated NPU in this process; returns ``torch.npu``."""
    import torch

    from ascend_patch import sim

    sim.install()
    return torch.npu


@pytest.fixture
def restore_amp_dtypes(sim_npu):
    """Restore the default amp dtypes (fp16, bf16) after a test that changes them."""
    from ascend_patch import sim

    yield
    sim.set_amp_supported_dtypes(None)
