"""``torch.cuda.*`` on the target: forwarded to ``torch.npu`` (device arguments mapped) or to :mod:`.host`."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ...engine import calls
from ...engine.patch import PatchContext
from .host import _host_api
from .legacy import LEGACY_STORAGE_KINDS
from .mapping import call_counter, device_mapper
from .policy import REPORTED_CAPABILITY, cuda_available_answer


class _NpuDefaultGenerators(Sequence[Any]):
    """``torch.npu.default_generators``, read when used: torch_npu fills it at lazy init."""

    def _get(self) -> Sequence[Any]:
        npu = torch.npu  # type: ignore[attr-defined]
        if not npu.default_generators and hasattr(npu, "_lazy_init"):
            npu._lazy_init()
        return npu.default_generators

    def __getitem__(self, index: Any) -> Any:
        return self._get()[index]

    def __len__(self) -> int:
        return len(self._get())

    def __iter__(self) -> Iterator[Any]:
        return iter(self._get())

    def __repr__(self) -> str:
        return repr(tuple(self._get()))


@dataclass(frozen=True)
class CudaApi:
    """How one ``torch.cuda`` name (an attribute path: ``memory._snapshot``) is served on the target.

    ``npu``: its ``torch.npu`` counterpart ("" = the same name; None = torch_npu has none, and the
    host meaning of :mod:`.host` serves the npu target too). ``device_at``: position of a device
    argument (also taken as ``device=``), mapped on the way to ``torch.npu``.
    """

    npu: str | None = ""
    device_at: int | None = None
    copies: bool = True


CUDA_API: dict[str, CudaApi] = {
    # devices
    "device_count": CudaApi(), "current_device": CudaApi(), "set_device": CudaApi(device_at=0),
    "synchronize": CudaApi(device_at=0), "get_device_name": CudaApi(device_at=0),
    "get_device_properties": CudaApi(device_at=0), "get_device_capability": CudaApi(device_at=0),
    "is_bf16_supported": CudaApi(), "is_initialized": CudaApi(), "init": CudaApi(), "ipc_collect": CudaApi(),
    "utilization": CudaApi(device_at=0), "device": CudaApi(device_at=0), "device_of": CudaApi(),
    "can_device_access_peer": CudaApi(device_at=0), "current_blas_handle": CudaApi(),
    "get_arch_list": CudaApi(npu=None), "get_gencode_flags": CudaApi(npu=None),
    # on CPU builds ``default_generators`` is the interpreter's shared empty tuple: a copy search would
    # "find" it in unrelated modules
    "default_generators": CudaApi(copies=False),
    # memory
    "memory_allocated": CudaApi(device_at=0), "max_memory_allocated": CudaApi(device_at=0),
    "memory_reserved": CudaApi(device_at=0), "max_memory_reserved": CudaApi(device_at=0),
    "reset_peak_memory_stats": CudaApi(device_at=0), "reset_max_memory_allocated": CudaApi(device_at=0),
    "reset_accumulated_memory_stats": CudaApi(device_at=0), "empty_cache": CudaApi(),
    "mem_get_info": CudaApi(device_at=0), "memory_stats": CudaApi(device_at=0),
    "memory_stats_as_nested_dict": CudaApi(device_at=0), "memory_summary": CudaApi(device_at=0),
    "memory_snapshot": CudaApi(), "set_per_process_memory_fraction": CudaApi(device_at=1),
    "get_per_process_memory_fraction": CudaApi(device_at=0), "host_memory_stats": CudaApi(),
    "host_memory_stats_as_nested_dict": CudaApi(), "reset_peak_host_memory_stats": CudaApi(),
    "reset_accumulated_host_memory_stats": CudaApi(), "get_allocator_backend": CudaApi(),
    "memory._record_memory_history": CudaApi(), "memory._snapshot": CudaApi(device_at=0),
    "memory._dump_snapshot": CudaApi(),
    # streams and events
    "Event": CudaApi(), "Stream": CudaApi(device_at=0), "stream": CudaApi(), "StreamContext": CudaApi(),
    "set_stream": CudaApi(), "current_stream": CudaApi(device_at=0), "default_stream": CudaApi(device_at=0),
    "set_sync_debug_mode": CudaApi(), "get_sync_debug_mode": CudaApi(),
    # legacy storage types: torch_npu's own on an NPU, the CPU ones on a cpu target
    **{f"{kind}Storage": CudaApi() for kind in LEGACY_STORAGE_KINDS},
    # graphs: NPUGraph on an NPU, recorded-op replay on a cpu target (ascend_patch.sim.graphs)
    "CUDAGraph": CudaApi(npu="NPUGraph"), "graph": CudaApi(), "make_graphed_callables": CudaApi(),
    "graph_pool_handle": CudaApi(), "is_current_stream_capturing": CudaApi(),
}  # fmt: skip


class _ForwardingClassMeta(type):
    """Metaclass of stand-ins for torch.npu classes whose constructor takes a CUDA device."""

    _target: type
    _map: Callable[[Any], Any]
    _device_at: int

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        args, kwargs = _map_device_args(cls._map, cls._device_at, args, kwargs)
        return cls._target(*args, **kwargs)

    def __instancecheck__(cls, instance: Any) -> bool:
        return isinstance(instance, cls._target)

    def __subclasscheck__(cls, subclass: type) -> bool:
        return issubclass(subclass, cls._target)

    def __getattr__(cls, name: str) -> Any:
        return getattr(cls._target, name)


def _map_device_args(
    map_device: Callable[[Any], Any], at: int, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``args, kwargs`` with the device argument at position ``at`` (or ``device=``) mapped."""
    if len(args) > at:
        args = (*args[:at], map_device(args[at]), *args[at + 1 :])
    if "device" in kwargs:
        kwargs = {**kwargs, "device": map_device(kwargs["device"])}
    return args, kwargs


def _npu_api(ctx: PatchContext, name: str) -> Any:
    """torch.cuda.<name> on an npu target: its torch.npu counterpart, CUDA device arguments mapped."""
    npu = torch.npu  # type: ignore[attr-defined]
    spec = CUDA_API[name]
    available = cuda_available_answer(ctx)
    if spec.npu is None:
        return _host_api(ctx)[name]
    if name == "default_generators":
        return _NpuDefaultGenerators()
    if name == "device_count":
        return lambda: npu.device_count() if available else 0
    if name == "get_device_capability":
        own = getattr(npu, "get_device_capability", None)
        map_device = device_mapper(ctx, None)

        def get_device_capability(device: Any = None) -> tuple[int, int]:
            # torch_npu answers None ("CANN has no such concept"); upstream unpacks a tuple.
            answer = own(map_device(device)) if own is not None else None
            return tuple(answer) if answer else REPORTED_CAPABILITY  # type: ignore[return-value]

        return get_device_capability
    npu_name = spec.npu or name
    target = npu
    for part in npu_name.split("."):
        target = getattr(target, part, None)
    if target is None:

        def missing(*args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError(
                f"ascend_patch: torch.cuda.{name} has no counterpart (torch.npu.{npu_name}) in this torch_npu"
            )

        return missing
    if spec.device_at is None:
        return target
    map_device = device_mapper(ctx, None)  # counted once by _for_user_code
    if isinstance(target, type):
        return _ForwardingClassMeta(
            name,
            (),
            {
                "_target": target, "_map": staticmethod(map_device), "_device_at": spec.device_at,
                "__doc__": target.__doc__, "__wrapped__": target,
            },
        )  # fmt: skip

    @functools.wraps(target)
    def forward(*args: Any, **kwargs: Any) -> Any:
        args, kwargs = _map_device_args(map_device, spec.device_at, args, kwargs)
        return target(*args, **kwargs)

    return forward


def _cuda_api(name: str) -> Callable[[Any, PatchContext], Any]:
    def build(original: Any, ctx: PatchContext) -> Any:
        replacement = _host_api(ctx)[name] if ctx.device == "cpu" else _npu_api(ctx, name)
        if callable(replacement) and not isinstance(replacement, type):
            replacement = _for_user_code(replacement, original, ctx, name)
        return replacement

    return build


def _for_user_code(
    replacement: Callable[..., Any], original: Callable[..., Any], ctx: PatchContext, name: str
) -> Callable[..., Any]:
    """The replacement for user and upstream code; the original for PyTorch's own internals and after revert.

    Inductor, dynamo and DataParallel query ``torch.cuda`` to decide whether to take CUDA-only paths
    (triton, CUDA RNG state, CUDA device properties): they must keep seeing the real answer.
    ``torch.cuda``'s own functions calling each other (``memory_cached`` -> ``memory_reserved``)
    count as user code, so a mapped function stays mapped inside the CUDA API.
    """
    counter = call_counter(f"torch.cuda.{name}")
    api = f"torch.cuda.{name}"
    change = f"-> torch.npu.{name}" if ctx.device == "npu" else "-> host implementation (cpu target)"

    @functools.wraps(original)
    def call(*args: Any, **kwargs: Any) -> Any:
        if not ctx.active or calls.called_by_torch(sys._getframe(1)):
            return original(*args, **kwargs)
        counter[0] += 1
        if calls.STATE.enabled:
            calls.log_call("device", api, change)
        return replacement(*args, **kwargs)

    return call


def _is_available(original: Callable[[], bool], ctx: PatchContext) -> Callable[[], bool]:
    answer = cuda_available_answer(ctx)

    @functools.wraps(original)
    def is_available() -> bool:
        if not ctx.active or calls.called_by_torch(sys._getframe(1)):
            return original()
        return answer

    return is_available



def cuda_target(name: str) -> str:
    """The engine target of a ``CUDA_API`` name: ``memory._snapshot`` -> ``torch.cuda.memory:_snapshot``."""
    parent, _, leaf = name.rpartition(".")
    return f"torch.cuda{'.' + parent if parent else ''}:{leaf}"
