"""``verify --without all`` in a fresh interpreter: the model code imported with no patch at all.

In the verify process the model code was imported under the patches, and what it decided at import
stays: ``from flash_attn import flash_attn_func`` is bound to the shim, a flag read from the
environment keeps its value. Reverting the patches does not undo that, so an in-process "without
all patches" run would still take the patched code paths. Here a child process builds the same
subject with nothing applied, loads the parent's weights and inputs, and runs the forward (twice,
for determinism) and the recipe's checks - what the user's unpatched script would get.

Subjects that cannot be rebuilt by name (a model object, a factory function) run in-process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from .inputs import Inputs

ENV_DROPPED = ("ASCEND_PATCH_APPLY",)  # the launcher's start-up hook would patch the child


def run_fresh(request: dict[str, Any], device: str, dtype: torch.dtype, state: dict[str, torch.Tensor],
              inputs: Inputs) -> dict[str, Any]:
    """The child's result: ``{"outputs": [dict, dict], "checks": [(name, expected, actual), ...],
    "check_errors": [...]}`` or ``{"error"}``."""
    with tempfile.TemporaryDirectory(prefix="ascend_patch_unpatched_") as tmp:
        given, answer = Path(tmp) / "in.pt", Path(tmp) / "out.pt"
        torch.save({"request": request, "device": device, "dtype": dtype, "state": state, "inputs": inputs}, given)
        env = {k: v for k, v in os.environ.items() if k not in ENV_DROPPED}
        flags = ["-B"] if sys.dont_write_bytecode else []  # as this process: the user's clone stays unwritten
        proc = subprocess.run([sys.executable, *flags, "-m", __name__, str(given), str(answer)], capture_output=True,
                              text=True, env=env, check=False)  # fmt: skip
        if not answer.is_file():
            last = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
            return {"error": f"fresh interpreter failed: {last}"}
        return torch.load(answer, weights_only=False)


def _child(given: Path, answer: Path) -> None:
    from .errors import one_line
    from .models import resolve_device
    from .subjects import resolve
    from .verify import checks_for, cpu_outputs, run_checks

    data = torch.load(given, weights_only=False)
    try:
        subject = resolve(**data["request"])
        _, kind = resolve_device(data["device"])
        built = subject.build()  # nothing applied: the imports are the unpatched ones
        built.model.load_state_dict(data["state"])
        model = built.prepare(built.model, kind, data["dtype"])
        inputs = data["inputs"].to(kind, data["dtype"])
        outputs = [cpu_outputs(built, model, inputs)[0] for _ in range(2)]
        checks, check_errors = run_checks(checks_for(subject, model)[0], model, inputs)
        result: dict[str, Any] = {"outputs": outputs, "checks": checks, "check_errors": check_errors}
    except Exception as exc:  # noqa: BLE001 - what the unpatched model does is the answer, a crash too
        result = {"error": one_line(exc)}
    torch.save(result, answer)


if __name__ == "__main__":
    _child(Path(sys.argv[1]), Path(sys.argv[2]))
