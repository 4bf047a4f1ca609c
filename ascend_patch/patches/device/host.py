"""``torch.cuda`` on a cpu target: host timestamps, synchronous streams, zero device memory."""

from __future__ import annotations

import os
import pickle
import platform
import threading
import time
from dataclasses import dataclass
from typing import Any

import torch

from ...engine.patch import PatchContext
from .legacy import LEGACY_STORAGE_KINDS
from .policy import REPORTED_CAPABILITY, cuda_available_answer


class WallClockEvent:
    """``torch.cuda.Event`` on a cpu target: host timestamps.

    CPU ops run synchronously, so the host clock at ``record()`` is the moment the preceding work
    finished: ``elapsed_time`` is the real time between two records, in milliseconds, as on CUDA.
    """

    def __init__(self, enable_timing: bool = False, blocking: bool = False, interprocess: bool = False) -> None:
        self.enable_timing = enable_timing
        self.blocking = blocking
        self.interprocess = interprocess
        self._ns: int | None = None

    def record(self, stream: Any = None) -> None:
        self._ns = time.perf_counter_ns()

    def wait(self, stream: Any = None) -> None:
        pass

    def query(self) -> bool:
        return True

    def synchronize(self) -> None:
        pass

    def elapsed_time(self, end_event: WallClockEvent) -> float:
        # Same conditions, same messages as CUDA's Event.elapsed_time.
        if not (self.enable_timing and end_event.enable_timing):
            raise RuntimeError("Both events must be created with argument 'enable_timing=True'.")
        if self._ns is None or end_event._ns is None:
            raise RuntimeError("Both events must be recorded before calculating elapsed time.")
        return (end_event._ns - self._ns) / 1e6

    def __repr__(self) -> str:
        return f"<ascend_patch WallClockEvent recorded={self._ns is not None}>"


class HostStream:
    """``torch.cuda.Stream`` on a cpu target: work is synchronous, so every wait is already done."""

    def __init__(self, device: Any = None, priority: int = 0, **kwargs: Any) -> None:
        self.device = torch.device("cpu")
        self.priority = priority

    def query(self) -> bool:
        return True

    def synchronize(self) -> None:
        pass

    def wait_event(self, event: Any) -> None:
        pass

    def wait_stream(self, stream: Any) -> None:
        pass

    def record_event(self, event: WallClockEvent | None = None) -> WallClockEvent:
        event = event or WallClockEvent()
        event.record(self)
        return event

    @property
    def cuda_stream(self) -> int:
        return 0

    def __repr__(self) -> str:
        return f"<ascend_patch HostStream priority={self.priority}>"


class _HostStreams(threading.local):
    """Per-thread current stream (``torch.cuda.stream(s)`` is per thread on CUDA too)."""

    def __init__(self) -> None:
        self.default = HostStream()
        self.selected: HostStream | None = None  # torch.cuda.set_stream
        self.stack: list[HostStream] = []

    def current(self) -> HostStream:
        return self.stack[-1] if self.stack else self.selected or self.default


class HostStreamContext:
    def __init__(self, stream: HostStream | None) -> None:
        self.stream = stream

    def __enter__(self) -> HostStream | None:
        if self.stream is not None:
            _host_streams.stack.append(self.stream)
        return self.stream

    def __exit__(self, *exc: object) -> None:
        if self.stream is not None and _host_streams.stack:
            _host_streams.stack.pop()


_host_streams = _HostStreams()


class HostDevice:
    """``torch.cuda.device(i)`` on a cpu target: a context manager with nothing to switch."""

    def __init__(self, device: Any) -> None:
        self.idx = device if isinstance(device, int) else 0

    def __enter__(self) -> None:
        pass

    def __exit__(self, *exc: object) -> None:
        pass


@dataclass(frozen=True)
class HostDeviceProperties:
    """What ``torch.cuda.get_device_properties`` reports on a cpu target."""

    name: str
    total_memory: int
    major: int = REPORTED_CAPABILITY[0]
    minor: int = REPORTED_CAPABILITY[1]
    multi_processor_count: int = os.cpu_count() or 1
    is_integrated: bool = True


def _host_memory() -> tuple[int, int]:
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        return os.sysconf("SC_AVPHYS_PAGES") * page, os.sysconf("SC_PHYS_PAGES") * page
    except (ValueError, OSError, AttributeError):  # not a POSIX system
        return 0, 0


def _host_name() -> str:
    return f"cpu ({platform.processor() or platform.machine() or 'unknown'})"


def _zero(device: Any = None) -> int:
    return 0


def _nothing(device: Any = None) -> None:
    return None


# The counters upstream code reads from memory_stats(); every one is 0: there is no device memory.
_MEMORY_STAT_KEYS = tuple(
    f"{stat}.{pool}.{kind}"
    for stat in ("allocated_bytes", "reserved_bytes", "active_bytes", "inactive_split_bytes", "requested_bytes")
    for pool in ("all", "large_pool", "small_pool")
    for kind in ("current", "peak", "allocated", "freed")
) + ("num_alloc_retries", "num_ooms", "num_sync_all_streams", "num_device_alloc", "num_device_free")


def _memory_stats(device: Any = None) -> dict[str, int]:
    return dict.fromkeys(_MEMORY_STAT_KEYS, 0)


def _memory_stats_nested(device: Any = None) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key in _MEMORY_STAT_KEYS:
        *path, leaf = key.split(".")
        node = nested
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = 0
    return nested


def _memory_summary(device: Any = None, abbreviated: bool = False) -> str:
    return "ascend_patch: cpu target: no device memory, every CUDA memory counter is 0 (use host memory tools)\n"


def _memory_snapshot(device: Any = None) -> dict[str, list[Any]]:
    """``torch.cuda.memory._snapshot()``: the allocator's segments and traces; a host has none."""
    return {"segments": [], "device_traces": []}


def _dump_memory_snapshot(filename: str = "dump_snapshot.pickle") -> None:
    with open(filename, "wb") as f:
        pickle.dump(_memory_snapshot(), f)


def _set_memory_fraction(fraction: float, device: Any = None) -> None:
    if not 0 <= fraction <= 1:  # CUDA's own check; the fraction itself limits nothing on the host
        raise ValueError(f"Invalid fraction value: {fraction}. Allowed range: 0~1")


def _set_stream(stream: HostStream) -> None:
    _host_streams.selected = stream


def _host_api(ctx: PatchContext) -> dict[str, Any]:
    """torch.cuda's API on a cpu target (and, for names torch_npu lacks, on an npu target)."""
    from ...sim import graphs  # replay of recorded ops: works on host tensors, needs no simulator

    available = cuda_available_answer(ctx)
    return {
        "device_count": lambda: 1 if available else 0,
        "current_device": lambda: 0,
        "set_device": _nothing,
        "synchronize": _nothing,
        "get_device_name": lambda device=None: _host_name(),
        "get_device_properties": lambda device=None: HostDeviceProperties(_host_name(), _host_memory()[1]),
        "get_device_capability": lambda device=None: REPORTED_CAPABILITY,
        "is_bf16_supported": lambda including_emulation=True: True,
        "is_initialized": lambda: True,
        "init": lambda: None,
        "ipc_collect": lambda: None,
        "utilization": _zero,
        "device": HostDevice,
        "device_of": HostDevice,
        "can_device_access_peer": lambda device, peer_device: False,  # one host "device": no peers
        "current_blas_handle": _zero,
        "get_arch_list": lambda: [],  # no CUDA architectures: code that needs sm_XX kernels must not build them
        "get_gencode_flags": lambda: "",
        "default_generators": (torch.default_generator,),
        "memory_allocated": _zero,
        "max_memory_allocated": _zero,
        "memory_reserved": _zero,
        "max_memory_reserved": _zero,
        "reset_peak_memory_stats": _nothing,
        "reset_max_memory_allocated": _nothing,
        "reset_accumulated_memory_stats": _nothing,
        "empty_cache": lambda: None,
        "mem_get_info": lambda device=None: _host_memory(),
        "memory_stats": _memory_stats,
        "memory_stats_as_nested_dict": _memory_stats_nested,
        "memory_summary": _memory_summary,
        "memory_snapshot": lambda *args, **kwargs: [],
        "set_per_process_memory_fraction": _set_memory_fraction,
        "get_per_process_memory_fraction": lambda device=None: 1.0,
        "host_memory_stats": lambda: {},
        "host_memory_stats_as_nested_dict": lambda: {},
        "reset_peak_host_memory_stats": lambda: None,
        "reset_accumulated_host_memory_stats": lambda: None,
        "get_allocator_backend": lambda: "native",
        "memory._record_memory_history": lambda *args, **kwargs: None,
        "memory._snapshot": _memory_snapshot,
        "memory._dump_snapshot": _dump_memory_snapshot,
        "Event": WallClockEvent,
        "Stream": HostStream,
        "stream": HostStreamContext,
        "StreamContext": HostStreamContext,
        "set_stream": _set_stream,
        "current_stream": lambda device=None: _host_streams.current(),
        "default_stream": lambda device=None: _host_streams.default,
        "set_sync_debug_mode": lambda debug_mode: None,
        "get_sync_debug_mode": lambda: 0,
        **{f"{kind}Storage": getattr(torch, f"{kind}Storage") for kind in LEGACY_STORAGE_KINDS},
        "CUDAGraph": graphs.Graph,
        "graph": graphs.graph,
        "make_graphed_callables": graphs.make_graphed_callables,
        "graph_pool_handle": graphs.graph_pool_handle,
        "is_current_stream_capturing": graphs.is_current_stream_capturing,
    }
