"""``init_process_group("hccl")`` on the simulated NPU: gloo's collectives on the CPU data of npu tensors.

torch_npu registers an "hccl" c10d backend; the simulator registers one of the same name for the
"npu" device. :class:`SimHcclGroup` is a Python ``ProcessGroup`` (the kind PyTorch's own
``multi_threaded_pg`` test backend is) that owns a gloo group on the same store and hands it the
CPU tensors behind the npu tensors it is given. Those share memory with the npu tensors, so
in-place results (all_reduce, broadcast, all_gather outputs) land on the device tensors, and
everything built on process groups runs: DDP's reducer, ``_broadcast_coalesced``, barriers,
object collectives. Work is gloo's own, so ``async_op=True`` and ``wait()`` behave as on gloo.
"""

from __future__ import annotations

import datetime
import functools
import logging
from typing import Any

import torch
import torch.distributed as dist

logger = logging.getLogger("ascend_patch.sim")

BACKEND = "hccl"

# ProcessGroup methods a Python process group serves (the names PyTorch's trampoline forwards).
_COLLECTIVES = (
    "allreduce", "allreduce_coalesced", "allgather", "allgather_coalesced", "allgather_into_tensor_coalesced",
    "_allgather_base", "broadcast", "reduce", "reduce_scatter", "reduce_scatter_tensor_coalesced",
    "_reduce_scatter_base", "alltoall", "alltoall_base", "gather", "scatter", "send", "recv", "recv_anysource",
    "barrier", "monitored_barrier",
)  # fmt: skip


def _host(value: Any) -> Any:
    """npu tensors -> the CPU tensors behind them (same memory), through lists and tuples."""
    from .tensor import SimTensor

    if isinstance(value, SimTensor):
        return value._inner
    if isinstance(value, (list, tuple)):
        return type(value)(_host(item) for item in value)
    return value


def _forward(name: str) -> Any:
    def collective(self: SimHcclGroup, *args: Any, **kwargs: Any) -> Any:
        return getattr(self._gloo, name)(*_host(args), **{key: _host(value) for key, value in kwargs.items()})

    collective.__name__ = name
    return collective


class SimHcclGroup(dist.ProcessGroup):
    """The simulated "hccl" backend: gloo over the host memory of npu tensors."""

    def __init__(self, store: Any, rank: int, world_size: int, timeout: datetime.timedelta) -> None:
        super().__init__(rank, world_size)
        self._gloo = dist.ProcessGroupGloo(store, rank, world_size, timeout)

    def getBackendName(self) -> str:  # noqa: N802 - the name PyTorch calls
        return BACKEND

    @property
    def _device_types(self) -> list[torch.device]:
        return [torch.device("cpu"), torch.device("npu")]

    def _get_backend(self, device: torch.device) -> Any:
        # init_process_group(device_id=...) asks the backend of the device whether it can connect
        # eagerly; a Python group has no per-device backends registered, gloo answers for both.
        return self._gloo


for _name in _COLLECTIVES:
    setattr(SimHcclGroup, _name, _forward(_name))


def _create(store: Any, rank: int, world_size: int, timeout: datetime.timedelta) -> SimHcclGroup:
    return SimHcclGroup(store, rank, world_size, timeout)


def register() -> None:
    """Make ``backend="hccl"`` (and the npu entry of the device -> backend map) the simulated one."""
    if not dist.is_available() or not dist.is_gloo_available():
        logger.info("torch.distributed/gloo unavailable: no simulated hccl backend")
        return
    dist.Backend.register_backend(BACKEND, functools.partial(_create), devices=["npu"])
