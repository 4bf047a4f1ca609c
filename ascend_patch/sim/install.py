"""Turning the simulated NPU on: ``install()``, once per process, for good.

What it does, in this order (later steps need the earlier ones):

1. refuses if a real torch_npu is importable or PrivateUse1 already belongs to another backend;
2. renames PrivateUse1 to "npu", generates ``Tensor.npu()`` / ``Module.npu()`` / ``Tensor.is_npu``,
   registers :mod:`.device_module` as ``torch.npu`` plus a device guard and hooks
   (``torch.utils.backend_registration._setup_privateuseone_for_python_backend``);
3. routes the PrivateUse1 key to the wrapper tensor's dispatch (:mod:`.tensor`), and lets
   ``torch.load(map_location="npu")`` (:mod:`.serialization`), ``pin_memory()``
   (:mod:`.pinned_memory`), ``torch.Generator(device="npu")`` (:mod:`.rng`), ``torch.Event("npu")``
   (:mod:`.streams`) and
   ``init_process_group("hccl")`` (:mod:`.distributed`) work with it, and makes device storages
   raise instead of crashing (:mod:`.unsupported`);
4. registers autocast kernels for AutocastPrivateUse1 (:mod:`.autocast`);
5. puts the simulated ``torch_npu`` in ``sys.modules`` and makes transformers look again.

None of it can be undone: PyTorch has no way to un-rename PrivateUse1 or unregister a device
module, so tests that need a process without the simulator run in a subprocess.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import threading

import torch

from ..engine.env import flag
from . import (
    autocast,
    device_module,
    distributed,
    pinned_memory,
    rng,
    serialization,
    streams,
    tensor,
    torch_npu_module,
    unsupported,
)  # fmt: skip

logger = logging.getLogger("ascend_patch.sim")

ENV_VAR = "ASCEND_PATCH_SIMULATE_NPU"
ENV_DEVICES = "ASCEND_PATCH_SIM_DEVICES"

_lock = threading.Lock()
_installed = False


class SimInstallError(RuntimeError):
    """The simulated NPU cannot be installed in this process."""


def is_installed() -> bool:
    """True once :func:`install` has run in this process."""
    return _installed


def set_amp_supported_dtypes(dtypes: list[torch.dtype] | tuple[torch.dtype, ...] | None) -> None:
    """Choose what ``torch.npu.get_amp_supported_dtype()`` answers; None restores [float16, bfloat16].

    Add ``torch.float32`` to behave like the torch_npu stacks that accept fp32 autocast (v26.1 on).
    """
    device_module._set_amp_supported_dtypes(dtypes)


def _refuse_if_conflicting() -> None:
    existing = sys.modules.get("torch_npu")
    if existing is not None and not torch_npu_module.is_simulated(existing):
        raise SimInstallError(
            "ascend_patch.sim.install(): a real torch_npu is already imported; the simulator cannot "
            "replace it. Use the real NPU (device='npu'), or simulate in an environment without torch_npu."
        )
    if existing is None and "torch_npu" not in sys.modules:  # sys.modules["torch_npu"] = None blocks it
        spec = importlib.util.find_spec("torch_npu")
        if spec is not None:
            raise SimInstallError(
                f"ascend_patch.sim.install(): a real torch_npu is importable ({spec.origin}); the simulator "
                "would shadow it. Use the real NPU (device='npu'), or simulate in an environment (venv) "
                "without torch_npu."
            )
    backend = torch._C._get_privateuse1_backend_name()
    if backend != "privateuseone" or hasattr(torch, "npu"):
        owner = f"renamed to {backend!r}" if backend != "privateuseone" else "free, but torch.npu already exists"
        raise SimInstallError(
            f"ascend_patch.sim.install(): PyTorch's PrivateUse1 backend is {owner}: another backend "
            "registered itself in this process, and a backend cannot be unregistered. Install the "
            f"simulator first, in a fresh process: set {ENV_VAR}=1 or call ascend_patch.sim.install() "
            "before anything else registers a device."
        )


def _refresh_transformers() -> None:
    """transformers caches whether torch_npu is there; make modules imported earlier look again."""
    import_utils = sys.modules.get("transformers.utils.import_utils")
    if import_utils is None:
        return
    check = getattr(import_utils, "is_torch_npu_available", None)
    if hasattr(check, "cache_clear"):
        check.cache_clear()
    # Module-level copies taken at import time: set them to what importing them now would give.
    sdpa = sys.modules.get("transformers.integrations.sdpa_attention")
    if sdpa is not None and hasattr(sdpa, "_is_torch_npu_available"):
        sdpa._is_torch_npu_available = True
    npu_fa = sys.modules.get("transformers.integrations.npu_flash_attention")
    if npu_fa is not None and not hasattr(npu_fa, "npu_fusion_attention"):
        npu_fa.npu_fusion_attention = sys.modules["torch_npu"].npu_fusion_attention
    logger.debug("transformers' is_torch_npu_available cache cleared")


def _device_count_from_env() -> int:
    """``ASCEND_PATCH_SIM_DEVICES``, else torchrun's ``LOCAL_WORLD_SIZE`` (one card per local rank), else 1."""
    for name in (ENV_DEVICES, "LOCAL_WORLD_SIZE"):
        value = os.environ.get(name, "").strip()
        if value:
            if not value.isdigit() or int(value) < 1:
                raise SimInstallError(f"{name}={value!r} is not a device count: set a whole number >= 1")
            return int(value)
    return 1


def install(
    amp_supported_dtypes: list[torch.dtype] | tuple[torch.dtype, ...] | None = None, devices: int | None = None
) -> None:
    """Install the CPU-backed simulated Ascend NPU in this process (irreversible).

    ``amp_supported_dtypes`` sets ``torch.npu.get_amp_supported_dtype()`` (default float16 and
    bfloat16, like torch_npu up to 2.9). ``devices``: how many device indices ``torch.npu``
    accepts (default: ``ASCEND_PATCH_SIM_DEVICES``, else ``LOCAL_WORLD_SIZE``, else 1); all of
    them are served by ``npu:0``. A second call is a no-op apart from applying
    ``amp_supported_dtypes`` when given. Raises :class:`SimInstallError` when a real torch_npu is
    importable or PrivateUse1 is already taken.
    """
    global _installed
    with _lock:
        if _installed:
            if amp_supported_dtypes is not None:
                set_amp_supported_dtypes(amp_supported_dtypes)
            return
        _refuse_if_conflicting()
        from torch.utils.backend_registration import _setup_privateuseone_for_python_backend

        set_amp_supported_dtypes(amp_supported_dtypes)
        device_module._set_device_count(devices if devices is not None else _device_count_from_env())
        _setup_privateuseone_for_python_backend(rename="npu", backend_module=device_module)
        sys.modules["torch.npu.amp"] = device_module.amp
        tensor.register_backend_kernels(torch.device("npu", 0))
        serialization.register()
        rng.install()
        streams.install()
        unsupported.install()
        distributed.register()
        pinned_memory.register()
        autocast.register()
        torch_npu_module.install_into_sys_modules()
        _installed = True
        _refresh_transformers()
    logger.info("simulated Ascend NPU installed (npu:0 backed by CPU memory, torch_npu %s)", torch_npu_module.VERSION)


def install_from_env() -> bool:
    """Install when ``ASCEND_PATCH_SIMULATE_NPU`` is on (1/true/yes/on); return whether it is installed."""
    if flag(ENV_VAR):
        install()
    return _installed
