"""Running code in a fresh interpreter, for what cannot be tested in a process that has the simulator."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_python(code: str, *, env: dict[str, str] | None = None, extra_path: list[str] | None = None,
               timeout: float = 120) -> subprocess.CompletedProcess:  # fmt: skip
    """Run ``code`` in a fresh interpreter with the repository importable; returns the finished process."""
    environ = {
        k: v for k, v in os.environ.items() if k not in ("ASCEND_PATCH_SIMULATE_NPU", "TORCH_NPU_USE_COMPATIBLE_IMPL")
    }
    environ["PYTHONPATH"] = os.pathsep.join([*(extra_path or []), str(REPO), environ.get("PYTHONPATH", "")])
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO, env=environ, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
