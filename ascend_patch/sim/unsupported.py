"""What the simulated NPU cannot do says so: one error that names it, never a crash or a quiet difference.

Storages on the device need a PrivateUse1 allocator, which PyTorch's Python backend API cannot
provide: ``torch.UntypedStorage(n, device="npu")`` would dereference a null allocator and kill
the process. ``install()`` guards the constructors that reach it.
"""

from __future__ import annotations

from typing import Any

import torch


class SimUnsupportedError(NotImplementedError):
    """A torch_npu feature the simulated NPU lacks (a real NPU has it)."""


def unsupported(what: str) -> SimUnsupportedError:
    return SimUnsupportedError(
        f"the simulated NPU (ascend_patch.sim) does not support {what}; a real torch_npu does: "
        "run this part on an Ascend NPU, or keep it on the CPU under the simulator"
    )


def _on_npu(device: Any) -> bool:
    if isinstance(device, torch.device):
        return device.type == "npu"
    if isinstance(device, str):
        return device.strip().split(":", 1)[0] == "npu"
    return False


def _guard_storage_new(storage_class: type) -> None:
    original = storage_class.__new__  # torch._C.StorageBase's, inherited

    def __new__(cls: type, *args: Any, **kwargs: Any) -> Any:
        if _on_npu(kwargs.get("device")):
            raise unsupported("storages allocated on the device (torch.UntypedStorage(..., device='npu'))")
        return original(cls, *args, **kwargs)

    storage_class.__new__ = __new__  # type: ignore[method-assign]


def install() -> None:
    _guard_storage_new(torch.UntypedStorage)
