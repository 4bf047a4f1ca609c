"""What the simulated NPU cannot do says so: one error that names it, never a crash or a quiet difference.

- Storages on the device need a PrivateUse1 allocator, which PyTorch's Python backend API cannot
  provide: ``torch.UntypedStorage(n, device="npu")`` would dereference a null allocator and kill
  the process. ``install()`` guards the constructors that reach it.
- Lazy modules moved to the device before their first forward: ``Module.to`` swaps wrapper
  tensors into their parameters (``torch.utils.swap_tensors``), and the swap drops the
  ``UninitializedParameter`` class, so the module would later fail with an unrelated assertion.
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


def _guard_lazy_parameters() -> None:
    from torch.nn.parameter import UninitializedTensorMixin

    original = UninitializedTensorMixin.__dict__["__torch_function__"].__func__

    def __torch_function__(cls: type, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        result = original(cls, func, types, args, kwargs)
        if isinstance(result, torch.Tensor) and result.device.type == "npu":
            raise unsupported(
                "lazy modules moved to the device before their first forward (UninitializedParameter on npu): "
                "run one forward on the CPU first, then move the module"
            )
        return result

    UninitializedTensorMixin.__torch_function__ = classmethod(__torch_function__)  # type: ignore[assignment]


def install() -> None:
    _guard_storage_new(torch.UntypedStorage)
    _guard_lazy_parameters()
