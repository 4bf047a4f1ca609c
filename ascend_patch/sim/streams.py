"""Streams and events of the simulated device: enough for timing code, nothing asynchronous.

Every simulated op runs synchronously on the host, so an event is a host timestamp taken when it is
recorded, ``synchronize`` returns at once, and ``elapsed_time`` is wall-clock time between two
records. Timings measure the simulator (CPU kernels plus dispatch overhead), not an NPU.
"""

from __future__ import annotations

import time
from typing import Any, Self

import torch


class Stream(torch.Stream):
    """A stream of the simulated device. A real ``torch.Stream`` (so ``Tensor.record_stream`` takes
    it), but there is no concurrency: every stream is the same in-order host queue, always idle."""

    def __new__(cls, device: Any = None, priority: int = 0, **kwargs: Any) -> Self:
        return super().__new__(cls, device="npu:0", priority=priority)

    def __init__(self, device: Any = None, priority: int = 0, **kwargs: Any) -> None:
        self.priority = priority

    def synchronize(self) -> None:
        pass

    def query(self) -> bool:
        return True

    def wait_event(self, event: Event) -> None:
        pass

    def wait_stream(self, stream: torch.Stream) -> None:
        pass

    def record_event(self, event: Event | None = None) -> Event:
        event = event if event is not None else Event()
        event.record(self)
        return event

    # torch.Stream compares stream ids, and all simulated streams have id 0; distinct objects are
    # distinct streams.
    def __eq__(self, other: object) -> bool:
        return other is self

    def __ne__(self, other: object) -> bool:
        return other is not self

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        return f"<ascend_patch.sim Stream device=npu:0 priority={self.priority}>"


_default_stream: Stream | None = None
_current: Stream | None = None


def default_stream(device: Any = None) -> Stream:
    global _default_stream
    if _default_stream is None:
        _default_stream = Stream()
    return _default_stream


def current_stream(device: Any = None) -> Stream:
    return _current if _current is not None else default_stream()


def set_stream(stream: Stream | None) -> None:
    global _current
    _current = stream


class StreamContext:
    """``with torch.npu.StreamContext(s):`` (and ``torch.npu.stream(s)``) makes ``s`` current for the block."""

    def __init__(self, stream: Stream | None) -> None:
        self.stream = stream
        self._previous: Stream | None = None

    def __enter__(self) -> Stream | None:
        global _current
        self._previous = _current
        if self.stream is not None:
            _current = self.stream
        return self.stream

    def __exit__(self, *exc: object) -> None:
        global _current
        _current = self._previous


def stream(s: Stream | None) -> StreamContext:
    return StreamContext(s)


class Event:
    """Host-timestamp event: ``record`` stamps, ``elapsed_time`` subtracts (milliseconds)."""

    def __init__(self, enable_timing: bool = False, blocking: bool = False, interprocess: bool = False) -> None:
        self.enable_timing = enable_timing
        self.blocking = blocking
        self.interprocess = interprocess
        self._time: float | None = None

    def record(self, stream: Stream | None = None) -> None:
        self._time = time.perf_counter()

    def wait(self, stream: Stream | None = None) -> None:
        pass

    def query(self) -> bool:
        return True

    def synchronize(self) -> None:
        pass

    def elapsed_time(self, end_event: Event) -> float:
        # Same failures as torch.npu.Event / torch.cuda.Event.
        if not (self.enable_timing and end_event.enable_timing):
            raise RuntimeError("Both events must be created with argument 'enable_timing=True'.")
        if self._time is None or end_event._time is None:
            raise RuntimeError("Both events must be recorded before calculating elapsed time.")
        return (end_event._time - self._time) * 1000.0

    def __repr__(self) -> str:
        state = "recorded" if self._time is not None else "unrecorded"
        return f"<ascend_patch.sim Event {state}>"


def _new_npu_event(device: Any = "npu", **kwargs: Any) -> Event:
    return Event(**kwargs)


def install() -> None:
    """``torch.Event("npu")``: this module's host-timed event (see :mod:`.standins`)."""
    from .standins import device_class

    torch.Event = device_class(torch.Event, _new_npu_event)  # type: ignore[misc]
