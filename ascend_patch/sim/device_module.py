"""``torch.npu`` for the simulated device: the part of torch_npu's device API that code uses.

``install()`` registers this very module as ``torch.npu`` (``torch._register_device_module``) and
as ``torch_npu.npu``. One device, ``npu:0``. Memory counters report real bytes of live simulated
tensors (:mod:`.memory`); the generator is a CPU generator reserved for the device (:mod:`.rng`);
events time on the host (:mod:`.streams`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from . import amp, memory, rng
from .streams import Event, Stream, current_stream, default_stream, set_stream, stream

DEVICE_NAME = "Ascend910B (simulated)"
_DEFAULT_AMP_DTYPES = (torch.float16, torch.bfloat16)
# torch_npu up to the 2.9 line answers [float16, bfloat16]; later stacks add float32
# (torch-npu-facts.md). install(amp_supported_dtypes=...) chooses.
_amp_dtypes: list[torch.dtype] = list(_DEFAULT_AMP_DTYPES)


def _index(device: Any = None) -> int:
    """Validate a device argument (None, int, "npu", "npu:0", torch.device) and return its index."""
    if device is None:
        return 0
    if isinstance(device, int):
        index = device
    else:
        dev = torch.device(device)
        if dev.type != "npu":
            raise ValueError(f"Expected a npu device, but got: {dev}")
        index = 0 if dev.index is None else dev.index
    if index not in (-1, 0):
        raise RuntimeError(f"Invalid device ordinal {index}: the simulated NPU has one device, npu:0")
    return 0


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
    return 1


def current_device() -> int:
    return 0


def set_device(device: Any) -> None:
    _index(device)


@contextlib.contextmanager
def device(device: Any) -> Iterator[None]:
    """``with torch.npu.device(0):`` - validates the index; there is only one device."""
    _index(device)
    yield


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
    }


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
    return [get_rng_state()]


def set_rng_state_all(new_states: list[torch.Tensor]) -> None:
    for state in new_states:
        set_rng_state(state)


__all__ = [
    "Event", "Stream", "amp", "current_device", "current_stream", "default_generators", "default_stream",
    "device", "device_count", "empty_cache", "get_amp_supported_dtype", "get_device_name",
    "get_device_properties", "get_rng_state", "get_rng_state_all", "init", "initial_seed", "is_available",
    "is_bf16_supported", "is_initialized", "manual_seed", "manual_seed_all", "max_memory_allocated",
    "max_memory_reserved", "mem_get_info", "memory_allocated", "memory_reserved", "memory_stats",
    "reset_max_memory_allocated", "reset_peak_memory_stats", "seed", "seed_all", "set_device", "set_rng_state",
    "set_rng_state_all", "set_stream", "stream", "synchronize",
]  # fmt: skip
