"""A simulated Ascend NPU: an ``npu`` device backed by CPU memory, so every NPU code path runs anywhere.

    import ascend_patch.sim
    ascend_patch.sim.install()              # or ASCEND_PATCH_SIMULATE_NPU=1, or --device sim
    x = torch.randn(4, 4, device="npu")     # x.device == npu:0
    import torch_npu                        # the simulated one: npu_gelu, npu_fusion_attention

What it reproduces and what it does not is in docs/simulator.md. ``install()`` cannot be undone
in-process.
"""

from __future__ import annotations

from .install import ENV_VAR, SimInstallError, install, install_from_env, is_installed, set_amp_supported_dtypes
from .tensor import SimTensor
from .torch_npu_module import VERSION as TORCH_NPU_VERSION
from .unsupported import SimUnsupportedError

__all__ = [
    "ENV_VAR",
    "TORCH_NPU_VERSION",
    "SimInstallError",
    "SimTensor",
    "SimUnsupportedError",
    "install",
    "install_from_env",
    "is_installed",
    "set_amp_supported_dtypes",
]  # fmt: skip
