"""``torch.npu`` for the simulated device: the part of torch_npu's device API that code uses.

``install()`` registers this very module as ``torch.npu`` (``torch._register_device_module``) and
as ``torch_npu.npu``. One device, ``npu:0``. Memory counters report real bytes of live simulated
tensors (:mod:`.memory`); the generator is a CPU generator reserved for the device (:mod:`.rng`);
events time on the host (:mod:`.streams`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from . import amp, memory, mstx, rng
from .graphs import Graph as NPUGraph
from .graphs import graph, graph_pool_handle, is_current_stream_capturing, make_graphed_callables
from .streams import Event, Stream, StreamContext, current_stream, default_stream, set_stream, stream

logger = logging.getLogger("ascend_patch.sim")

DEVICE_NAME = "Ascend910B (simulated)"
_DEFAULT_AMP_DTYPES = (torch.float16, torch.bfloat16)
# torch_npu up to the 2.9 line answers [float16, bfloat16]; later stacks add float32
# (torch-npu-facts.md). install(amp_supported_dtypes=...) chooses.
_amp_dtypes: list[torch.dtype] = list(_DEFAULT_AMP_DTYPES)


# Device indices this process accepts (install(devices=...)). Every one of them is served by the one
# device PyTorch lets a Python backend have: its DeviceGuard reports deviceCount() == 1 and autograd
# sizes its device queues from that (torch/csrc/acc/Module.cpp), so every npu tensor lives on npu:0.
_count = 1
_current = 0
_served: set[int] = set()


def _set_device_count(count: int) -> None:
    global _count, default_generators
    if count < 1:
        raise ValueError(f"the simulated NPU needs at least one device, got {count}")
    _count = count
    default_generators = (rng.generator,) * count  # every index is served by npu:0 and its generator


def _index(device: Any = None) -> int:
    """Validate a device argument (None, int, "npu", "npu:N", torch.device) and return its index."""
    if device is None:
        return _current
    if isinstance(device, int):
        index = device
    else:
        dev = torch.device(device)
        if dev.type != "npu":
            raise ValueError(f"Expected a npu device, but got: {dev}")
        index = _current if dev.index is None else dev.index
    if index == -1:
        return _current
    if not 0 <= index < _count:
        raise RuntimeError(
            f"Invalid device ordinal {index}: the simulated NPU has {_count} device(s) "
            f"(ascend_patch.sim.install(devices=N) or ASCEND_PATCH_SIM_DEVICES=N)"
        )
    if index and index not in _served:
        _served.add(index)
        logger.info("sim: npu:%d is served by the simulated npu:0 (one device per process)", index)
    return index


# --- device ----------------------------------------------------------------------------------


def is_available() -> bool:
    return True


def is_initialized() -> bool:
    return True


def init() -> None:
    pass


def _lazy_init() -> None:
    pass


def _is_in_bad_fork() -> bool:
    # torch.manual_seed seeds a custom backend only when this exists (torch/random.py).
    return False


def device_count() -> int:
    return _count


def current_device() -> int:
    return _current


def set_device(device: Any) -> None:
    global _current
    _current = _index(device)


class device:  # noqa: N801 - torch_npu's name; a class as there, so isinstance(x, torch.npu.device) works
    """``with torch.npu.device(i):`` - the current device index inside the block."""

    def __init__(self, device: Any) -> None:
        self.idx = _index(device)
        self.prev_idx = -1

    def __enter__(self) -> None:
        global _current
        self.prev_idx, _current = _current, self.idx

    def __exit__(self, *exc: object) -> None:
        global _current
        _current = self.prev_idx


class device_of(device):  # noqa: N801
    """``with torch.npu.device_of(tensor):`` - the tensor's device is current inside the block."""

    def __init__(self, obj: torch.Tensor) -> None:
        super().__init__(obj.get_device() if obj.device.type == "npu" else -1)


def can_device_access_peer(device: Any, peer_device: Any) -> bool:
    _index(device)
    _index(peer_device)
    return False  # every index is the same simulated device: there is no peer to reach


def current_blas_handle() -> int:
    return 0  # no BLAS library handle: matmuls are the host's


def ipc_collect() -> None:
    pass


def utilization(device: Any = None) -> int:
    """Percent of time the device was busy; the simulator's device is the host, whose work is not tracked."""
    _index(device)
    return 0


def set_sync_debug_mode(debug_mode: int | str) -> None:
    pass  # every simulated op is synchronous: there is nothing to warn about


def get_sync_debug_mode() -> int:
    return 0


def synchronize(device: Any = None) -> None:
    _index(device)  # every simulated op already ran to completion


def get_device_name(device: Any = None) -> str:
    _index(device)
    return DEVICE_NAME


@dataclass(frozen=True)
class _DeviceProperties:
    name: str
    total_memory: int
    major: int = 0
    minor: int = 0
    multi_processor_count: int = 24  # AI cores of a 910B, for code that reads it


def get_device_properties(device: Any = None) -> _DeviceProperties:
    _index(device)
    return _DeviceProperties(name=DEVICE_NAME, total_memory=memory.TOTAL_MEMORY)


def is_bf16_supported() -> bool:
    return True


def get_amp_supported_dtype() -> list[torch.dtype]:
    """The dtypes ``torch.autocast("npu", dtype=...)`` accepts; PyTorch disables autocast for others."""
    return list(_amp_dtypes)


def _set_amp_supported_dtypes(dtypes: list[torch.dtype] | tuple[torch.dtype, ...] | None) -> None:
    _amp_dtypes[:] = list(_DEFAULT_AMP_DTYPES if dtypes is None else dtypes)


# --- memory ----------------------------------------------------------------------------------


def memory_allocated(device: Any = None) -> int:
    """Bytes held by live simulated tensors (each storage counted once)."""
    _index(device)
    return memory.allocated()


def max_memory_allocated(device: Any = None) -> int:
    _index(device)
    return memory.peak()


def memory_reserved(device: Any = None) -> int:
    """High-water mark of allocated bytes since the last ``empty_cache()`` (a caching allocator keeps blocks)."""
    _index(device)
    return memory.reserved()


def max_memory_reserved(device: Any = None) -> int:
    _index(device)
    return max(memory.reserved(), memory.peak())


def reset_peak_memory_stats(device: Any = None) -> None:
    _index(device)
    memory.reset_peak()


def reset_max_memory_allocated(device: Any = None) -> None:
    reset_peak_memory_stats(device)


def empty_cache() -> None:
    memory.empty_cache()


def mem_get_info(device: Any = None) -> tuple[int, int]:
    """``(free, total)`` bytes; total is a 910B's 64 GiB and is never enforced."""
    _index(device)
    return memory.TOTAL_MEMORY - memory.reserved(), memory.TOTAL_MEMORY


def memory_stats(device: Any = None) -> dict[str, int]:
    _index(device)
    return {
        "allocated_bytes.all.current": memory.allocated(),
        "allocated_bytes.all.peak": memory.peak(),
        "reserved_bytes.all.current": memory.reserved(),
        "reserved_bytes.all.peak": max(memory.reserved(), memory.peak()),
    }


def memory_stats_as_nested_dict(device: Any = None) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in memory_stats(device).items():
        *path, leaf = key.split(".")
        node = nested
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def reset_accumulated_memory_stats(device: Any = None) -> None:
    _index(device)  # the simulator accumulates no counters beyond the peak


def memory_summary(device: Any = None, abbreviated: bool = False) -> str:
    stats = memory_stats(device)
    rows = "\n".join(f"  {key:<32} {value / 2**20:12.2f} MiB" for key, value in stats.items())
    return f"{DEVICE_NAME} memory summary (simulated: exact tensor bytes, no allocator blocks)\n{rows}\n"


def memory_snapshot(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """Allocator segments; the simulator has no allocator, so there are none."""
    return []


_memory_fraction = 1.0


def set_per_process_memory_fraction(fraction: float, device: Any = None) -> None:
    global _memory_fraction
    _index(device)
    if not 0 <= fraction <= 1:
        raise ValueError(f"Invalid fraction value: {fraction}. Allowed range: 0~1")
    _memory_fraction = float(fraction)  # recorded, not enforced: the simulator has no memory limit


def get_per_process_memory_fraction(device: Any = None) -> float:
    _index(device)
    return _memory_fraction


def host_memory_stats() -> dict[str, int]:
    return {}  # host memory is not pinned through the simulator, so there is nothing to count


def host_memory_stats_as_nested_dict() -> dict[str, Any]:
    return {}


def reset_peak_host_memory_stats() -> None:
    pass


def reset_accumulated_host_memory_stats() -> None:
    pass


def get_allocator_backend() -> str:
    return "native"


# --- random numbers --------------------------------------------------------------------------

default_generators: tuple[torch.Generator, ...] = (rng.generator,)


def manual_seed(seed: int) -> None:
    rng.generator.manual_seed(int(seed))


def manual_seed_all(seed: int) -> None:
    rng.generator.manual_seed(int(seed))


def seed() -> None:
    rng.generator.seed()


def seed_all() -> None:
    rng.generator.seed()


def initial_seed() -> int:
    return rng.generator.initial_seed()


def get_rng_state(device: Any = "npu") -> torch.Tensor:
    _index(device)
    return rng.generator.get_state()


def set_rng_state(new_state: torch.Tensor, device: Any = "npu") -> None:
    _index(device)
    rng.generator.set_state(new_state.cpu() if new_state.device.type != "cpu" else new_state)


def get_rng_state_all() -> list[torch.Tensor]:
    return [get_rng_state()] * _count


def set_rng_state_all(new_states: list[torch.Tensor]) -> None:
    for state in new_states:
        set_rng_state(state)


__all__ = [
    "Event", "NPUGraph", "Stream", "StreamContext", "amp", "can_device_access_peer", "current_blas_handle",
    "current_device", "current_stream", "default_generators", "default_stream", "device", "device_count",
    "device_of", "empty_cache", "get_allocator_backend", "get_amp_supported_dtype", "get_device_name",
    "get_device_properties", "get_per_process_memory_fraction", "get_rng_state", "get_rng_state_all",
    "get_sync_debug_mode", "graph", "graph_pool_handle", "host_memory_stats", "host_memory_stats_as_nested_dict",
    "init", "initial_seed", "ipc_collect", "is_available", "is_bf16_supported", "is_current_stream_capturing",
    "is_initialized", "make_graphed_callables", "manual_seed", "manual_seed_all", "max_memory_allocated",
    "max_memory_reserved", "mem_get_info", "memory_allocated", "memory_reserved", "memory_snapshot", "memory_stats",
    "memory_stats_as_nested_dict", "memory_summary", "mstx", "reset_accumulated_host_memory_stats",
    "reset_accumulated_memory_stats", "reset_max_memory_allocated", "reset_peak_host_memory_stats",
    "reset_peak_memory_stats", "seed", "seed_all", "set_device", "set_per_process_memory_fraction", "set_rng_state",
    "set_rng_state_all", "set_stream", "set_sync_debug_mode", "stream", "synchronize", "utilization",
]  # fmt: skip
