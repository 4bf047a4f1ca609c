"""Which device the patches send CUDA work to."""

from __future__ import annotations

import importlib.util
import logging
import os
import sys

from .env import flag

logger = logging.getLogger("ascend_patch")

DEVICE_CHOICES = ("auto", "npu", "cuda", "cpu", "sim")
ENV_DEVICE = "ASCEND_PATCH_DEVICE"
ENV_SIMULATE = "ASCEND_PATCH_SIMULATE_NPU"


class DeviceNotAvailable(RuntimeError):
    pass


def npu_available() -> bool:
    """True when torch_npu (real or simulated) is importable and reports an NPU.

    torch_npu is imported only here and only when installed: importing it pulls in the CANN
    runtime, and a wheel installed without CANN fails, which must not break ``import ascend_patch``.
    """
    import torch

    if "torch_npu" not in sys.modules and not hasattr(torch, "npu"):
        if importlib.util.find_spec("torch_npu") is None:
            return False
        try:
            importlib.import_module("torch_npu")
        except Exception as exc:  # ImportError, OSError for missing CANN libraries, ...
            logger.error(
                "torch_npu is installed but failed to import (%s); source the CANN environment "
                "(set_env.sh) or pass device='cpu'/'sim'",
                exc,
            )
            return False
    npu = getattr(torch, "npu", None)
    return bool(npu is not None and npu.is_available())


def target_device(device: str | None = None) -> str:
    """``"npu"`` when torch_npu and an NPU are there, else ``"cuda"``, else ``"cpu"``.

    ``device`` (or the env var ``ASCEND_PATCH_DEVICE``) overrides the detection; ``"sim"``
    installs the simulated NPU (:mod:`ascend_patch.sim`) and answers ``"npu"``.
    """
    import torch

    if isinstance(device, torch.device):
        device = str(device)
    if device is not None and not isinstance(device, str):  # 0 or 1 would otherwise mean "auto" or fail later
        raise ValueError(f"device={device!r}: give a device name ({', '.join(DEVICE_CHOICES)}), e.g. device='npu'")
    from_env = not device
    choice = (device or os.environ.get(ENV_DEVICE) or "auto").strip().lower()
    kind = choice.split(":", 1)[0]
    if kind not in DEVICE_CHOICES:
        named = f"{ENV_DEVICE}={choice!r}" if from_env else repr(device)
        raise ValueError(f"unknown device {named}: choose one of {', '.join(DEVICE_CHOICES)}")
    if kind == "sim" or (kind == "auto" and flag(ENV_SIMULATE)):
        from .. import sim

        sim.install()
        return "npu"
    if kind == "auto":
        if npu_available():
            return "npu"
        return "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "npu" and not npu_available():
        raise DeviceNotAvailable(
            "device 'npu' requested but no NPU is available: install torch_npu with the CANN toolkit "
            "(pip install 'ascend-patch[npu]'), or use device='sim' for the simulated NPU"
        )
    if kind == "cuda" and not torch.cuda.is_available():
        raise DeviceNotAvailable("device 'cuda' requested but torch.cuda.is_available() is False; use 'cpu' or 'sim'")
    return kind
