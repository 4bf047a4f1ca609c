"""ascend-patch: run CUDA-written PyTorch models on Ascend NPUs without editing upstream code.

    import ascend_patch
    ascend_patch.apply("mingtok")           # before the upstream code is imported
    with ascend_patch.patched("dinov2"):    # or scoped, fully undone on exit
        ...

Importing this package imports neither torch_npu nor transformers.
"""

from __future__ import annotations

from typing import Any

from .api import apply, patched, revert
from .engine import MigrationReport, active, report, target_device
from .engine.env import flag
from .recipes import list_recipes

__version__ = "0.1.0"

if flag("ASCEND_PATCH_SIMULATE_NPU"):
    # The user asked for the simulated NPU: make "npu" tensors work from here on (imports torch).
    from .sim import install_from_env

    install_from_env()


def list_patches() -> dict[str, str]:
    """Generic patch names with a one-line summary each."""
    from .patches import get_patch, patch_names

    return {name: get_patch(name).summary for name in patch_names()}


def seed_everything(seed: int) -> int:
    """Seed Python's ``random``, NumPy (if installed), torch and the accelerator generators."""
    from .patches.seed import seed_everything as _seed_everything

    return _seed_everything(seed)


def verify(target: Any = None, inputs: Any = None, **kwargs: Any) -> Any:
    """CPU fp32 reference vs the patched model on the device, for a recipe, a Hugging Face folder, a
    factory returning ``(model, inputs)``, or a model and its inputs; see :func:`ascend_patch.tools.verify.verify`."""
    from .tools.verify import verify as _verify

    return _verify(target, inputs, **kwargs)


def bench(target: Any = None, inputs: Any = None, **kwargs: Any) -> Any:
    """Latency, throughput and memory per batch size of the same targets as :func:`verify`; see
    :func:`ascend_patch.tools.bench.bench`."""
    from .tools.bench import bench as _bench

    return _bench(target, inputs, **kwargs)


__all__ = [
    "MigrationReport", "active", "apply", "bench", "list_patches", "list_recipes", "patched", "report", "revert",
    "seed_everything", "target_device", "verify",
]  # fmt: skip
