"""``torch.load`` onto the simulated device: ``map_location="npu"`` and checkpoints saved on an NPU.

``torch.load`` first restores every storage to its location, then builds tensors on them with
``torch.empty(0, device=storage.device).set_(storage, ...)`` (``torch/_utils.py: _rebuild_tensor``).
PyTorch's own restore for a PrivateUse1 location allocates the storage on the device, which the
simulator has no allocator for (it segfaults). So a deserializer registered ahead of PyTorch's
(``torch.serialization.register_package``) keeps the data in its CPU storage and hands back a
non-owning npu *placeholder* storage; when ``set_`` then reaches the wrapper tensor's dispatch, the
placeholder is swapped for the CPU storage behind it (:func:`host_storage`). Tensors that shared a
storage in the file share it after loading, as on the device.

A placeholder maps to its CPU storage only while ``torch.load`` holds it (a weakref callback drops
the entry, and with it the reference that kept the host memory alive until then), so loaded data
lives exactly as long as the tensors built on it.
"""

from __future__ import annotations

import weakref

import torch

# Ahead of PyTorch's PrivateUse1 deserializer (priority 23 in torch/serialization.py).
_PRIORITY = 15

_host: dict[int, torch.UntypedStorage] = {}  # placeholder StorageImpl address -> CPU storage
_watch: dict[int, weakref.ref] = {}


def _tag(storage: torch.UntypedStorage) -> None:
    # Saving never meets an npu storage: SimTensor.__reduce_ex__ pickles the data as a CPU tensor.
    return None


def _forget(key: int) -> None:
    _host.pop(key, None)
    _watch.pop(key, None)


def _deserialize(storage: torch.UntypedStorage, location: str) -> torch.UntypedStorage | None:
    if location != "npu" and not location.startswith("npu:"):
        return None
    torch.serialization._validate_device(location, "npu")  # PyTorch's errors for npu:1 and the like
    host = storage if storage.device.type == "cpu" else storage.cpu()
    # A storage on npu:0 that points at the host memory without owning it: torch.load reads its
    # size and its (non-zero) data pointer, by which it shares one storage between tensors.
    placeholder = torch._C._construct_storage_from_data_pointer(host.data_ptr(), torch.device("npu", 0), host.nbytes())
    key = placeholder._cdata
    _host[key] = host
    _watch[key] = weakref.ref(placeholder, lambda _ref, key=key: _forget(key))
    return placeholder


def host_storage(storage: torch.UntypedStorage) -> torch.UntypedStorage:
    """The CPU storage holding the data of an npu placeholder storage made by ``torch.load``."""
    host = _host.get(storage._cdata)
    if host is None:
        raise RuntimeError(
            "ascend_patch.sim: this npu storage holds no data. Storages of the simulated NPU exist only "
            "while torch.load builds tensors on them; create npu tensors from tensors instead."
        )
    return host


def register() -> None:
    torch.serialization.register_package(_PRIORITY, _tag, _deserialize)
