"""Byte counts of the simulated device's memory: what ``torch.npu.memory_allocated()`` reports.

Every simulated tensor holds a CPU tensor (its *inner* tensor). Several inner tensors can share
one storage (views), so bytes are counted once per storage: an entry per storage, keyed by the
address of its StorageImpl, with the number of live inner tensors that use it. A weakref
callback on each inner tensor drops its reference; the storage's bytes leave the count when the
last one goes. The callback sits on the inner tensor, not on the wrapper, because
``torch.utils.swap_tensors`` (used by ``Module.to``) moves inner tensors between wrappers.

The model of the caching allocator is deliberately simple: ``reserved`` is the high-water mark of
``allocated`` since the last ``empty_cache()`` (a caching allocator keeps freed blocks), and no
rounding to allocator block sizes is done, so counts are exact tensor bytes.
"""

from __future__ import annotations

import threading
import weakref

import torch
from torch._subclasses.fake_tensor import is_fake

# Total memory the simulated card reports (Ascend 910B: 64 GB HBM). Nothing enforces it: the
# simulator never raises out-of-memory.
TOTAL_MEMORY = 64 * 1024**3

# Re-entrant: a release can run inside track() when an allocation there triggers garbage collection.
_lock = threading.RLock()
_storages: dict[int, list[int]] = {}  # StorageImpl address -> [nbytes, live inner tensors]
_tracked: dict[int, weakref.ref] = {}  # id(inner tensor) -> weak reference whose callback releases it
_allocated = 0
_peak = 0
_reserved = 0


def _storage_key(inner: torch.Tensor) -> tuple[int, int]:
    storage = inner.untyped_storage()
    return storage._cdata, storage.nbytes()


def track(inner: torch.Tensor) -> None:
    """Count ``inner``'s storage as device memory for as long as ``inner`` lives."""
    global _allocated, _peak, _reserved
    ident = id(inner)
    if ident in _tracked:
        return
    if type(inner) is not torch.Tensor and is_fake(inner):
        return  # made while torch.compile traces: holds no memory, and its size may be symbolic
    key, nbytes = _storage_key(inner)
    with _lock:
        entry = _storages.get(key)
        if entry is None:
            _storages[key] = [nbytes, 1]
            _allocated += nbytes
            _peak = max(_peak, _allocated)
            _reserved = max(_reserved, _allocated)
        else:
            entry[1] += 1
        # weakref.ref with a callback costs a tenth of weakref.finalize, and this runs for every op.
        _tracked[ident] = weakref.ref(inner, lambda _ref, ident=ident, key=key: _release(ident, key))


def _release(ident: int, key: int) -> None:
    global _allocated
    with _lock:
        _tracked.pop(ident, None)
        entry = _storages.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            _allocated -= entry[0]
            del _storages[key]


def storage_resized(inner: torch.Tensor) -> None:
    """Re-read the size of ``inner``'s storage after an in-place ``resize_``."""
    global _allocated, _peak, _reserved
    key, nbytes = _storage_key(inner)
    with _lock:
        entry = _storages.get(key)
        if entry is None or entry[0] == nbytes:
            return
        _allocated += nbytes - entry[0]
        entry[0] = nbytes
        _peak = max(_peak, _allocated)
        _reserved = max(_reserved, _allocated)


def allocated() -> int:
    return _allocated


def peak() -> int:
    return _peak


def reserved() -> int:
    return _reserved


def reset_peak() -> None:
    global _peak
    with _lock:
        _peak = _allocated


def empty_cache() -> None:
    global _reserved
    with _lock:
        _reserved = _allocated


# --- torch.npu.memory's snapshot API: what the caching allocator holds (here: no allocator) -------


def _record_memory_history(*args: object, **kwargs: object) -> None:
    pass  # no allocator events to record


def _snapshot(device: object = None) -> dict[str, list[object]]:
    return {"segments": [], "device_traces": []}


def _dump_snapshot(filename: str = "dump_snapshot.pickle") -> None:
    import pickle

    with open(filename, "wb") as f:
        pickle.dump(_snapshot(), f)
