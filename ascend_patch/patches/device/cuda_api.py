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
from .mapping import call_counter, device_index, device_mapper
from .policy import REPORTED_CAPABILITY, cuda_available_answer


class _NpuDefaultGenerators(Sequence[Any]):
    """``torch.npu.default_generators``, read when used: torch_npu fills it at lazy init.

    ``index``: the target's device index; the CUDA process then has one device, whose generator is
    ``torch.npu.default_generators[index]``.
    """

    def __init__(self, index: int | None = None) -> None:
        self.index = index

    def _get(self) -> Sequence[Any]:
        npu = torch.npu  # type: ignore[attr-defined]
        if not npu.default_generators and hasattr(npu, "_lazy_init"):
            npu._lazy_init()
        return npu.default_generators if self.index is None else (npu.default_generators[self.index],)

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
    """Metaclass of a stand-in without bases, for a class that cannot be subclassed: calling the
    stand-in builds the target's instance (``_construct``), type checks defer to the target."""

    _target: type
    _construct: Callable[[tuple[Any, ...], dict[str, Any]], Any]

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return cls._construct(args, kwargs)

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
    index = device_index(ctx)
    if name == "default_generators":
        return _NpuDefaultGenerators(index)
    if name == "device_count":
        if index is not None:  # one visible device (mapping.py): loops over range(device_count()) stay in it
            return lambda: 1 if available else 0
        return lambda: npu.device_count() if available else 0
    if name == "current_device" and index is not None:
        return lambda: 0  # the CUDA ordinal of npu:<index>, which "cuda:0" and 0 map back to
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
    if spec.device_at is None or isinstance(target, type):
        return target  # a class: _class_for_user_code maps its device argument
    map_device = device_mapper(ctx, None)  # counted once by _for_user_code

    @functools.wraps(target)
    def forward(*args: Any, **kwargs: Any) -> Any:
        args, kwargs = _map_device_args(map_device, spec.device_at, args, kwargs)
        return target(*args, **kwargs)

    return forward


# What torch.cuda's names do on a cpu target (host.py), for the migration log: the new side of
# "old -> new" and the class. Names not listed mean what they mean on CUDA (MAPPED).
_ZERO = "0 (a cpu target has no device memory)"
_NO_OP = "no-op (a cpu target has no device memory)"
HOST_MEANING: dict[str, tuple[str, str]] = {
    "synchronize": ("no-op (cpu work is synchronous)", calls.MAPPED),
    "current_device": ("0", calls.MAPPED),
    "is_initialized": ("True", calls.MAPPED),
    "init": ("no-op", calls.MAPPED),
    "ipc_collect": ("no-op", calls.MAPPED),
    "set_sync_debug_mode": ("no-op (cpu work is synchronous)", calls.MAPPED),
    "get_sync_debug_mode": ("0", calls.MAPPED),
    "graph_pool_handle": ("a host pool handle", calls.MAPPED),
    "is_current_stream_capturing": ("whether an ascend_patch graph is capturing", calls.MAPPED),
    "set_device": ("no-op (one host device)", calls.MAPPED),
    "device": ("a host device context (nothing to switch)", calls.MAPPED),
    "device_of": ("a host device context (nothing to switch)", calls.MAPPED),
    "empty_cache": ("no-op (no device cache)", calls.MAPPED),
    "Event": ("ascend_patch WallClockEvent (host clock)", calls.MAPPED),
    "Stream": ("ascend_patch HostStream (synchronous)", calls.MAPPED),
    "stream": ("a host stream context", calls.MAPPED),
    "StreamContext": ("a host stream context", calls.MAPPED),
    "set_stream": ("the host stream", calls.MAPPED),
    "current_stream": ("the host stream", calls.MAPPED),
    "default_stream": ("the host stream", calls.MAPPED),
    "CUDAGraph": ("ascend_patch graph replaying recorded ops", calls.MAPPED),
    "graph": ("ascend_patch graph capture of recorded ops", calls.MAPPED),
    "make_graphed_callables": ("callables replaying recorded ops", calls.MAPPED),
    **{f"{kind}Storage": (f"torch.{kind}Storage (host memory)", calls.MAPPED) for kind in LEGACY_STORAGE_KINDS},
    "get_device_name": ("the cpu's name", calls.CHANGED),
    "get_device_properties": ("host properties (cpu name, host memory, capability 8.0)", calls.CHANGED),
    "get_device_capability": (f"{REPORTED_CAPABILITY} (reported so capability gates open)", calls.CHANGED),
    "is_bf16_supported": ("True (cpu bf16)", calls.CHANGED),
    "utilization": ("0", calls.CHANGED),
    "can_device_access_peer": ("False (one host device)", calls.CHANGED),
    "current_blas_handle": ("0", calls.CHANGED),
    "get_arch_list": ("[] (no CUDA architectures)", calls.CHANGED),
    "get_gencode_flags": ('"" (no CUDA architectures)', calls.CHANGED),
    "mem_get_info": ("host memory (free, total)", calls.CHANGED),
    "memory_stats": ("counters that are all 0 (a cpu target has no device memory)", calls.CHANGED),
    "memory_stats_as_nested_dict": ("counters that are all 0 (a cpu target has no device memory)", calls.CHANGED),
    "memory_summary": ("a note that a cpu target has no device memory", calls.CHANGED),
    "memory_snapshot": ("[] (a cpu target has no device memory)", calls.CHANGED),
    "memory._snapshot": ("an empty snapshot (a cpu target has no device memory)", calls.CHANGED),
    "memory._dump_snapshot": ("an empty snapshot (a cpu target has no device memory)", calls.CHANGED),
    "memory._record_memory_history": ("no-op (a cpu target has no device memory)", calls.CHANGED),
    "set_per_process_memory_fraction": ("checked, limits nothing (a cpu target has no device memory)", calls.CHANGED),
    "get_per_process_memory_fraction": ("1.0 (a cpu target has no device memory)", calls.CHANGED),
    "get_allocator_backend": ('"native"', calls.CHANGED),
    **{name: (_ZERO, calls.CHANGED) for name in (
        "memory_allocated", "max_memory_allocated", "memory_reserved", "max_memory_reserved")},
    **{name: (_NO_OP, calls.CHANGED) for name in (
        "reset_peak_memory_stats", "reset_max_memory_allocated", "reset_accumulated_memory_stats",
        "reset_peak_host_memory_stats", "reset_accumulated_host_memory_stats")},
    **{name: ("{} (host memory is not tracked)", calls.CHANGED) for name in (
        "host_memory_stats", "host_memory_stats_as_nested_dict")},
}  # fmt: skip


def _meaning(ctx: PatchContext, name: str, replacement: Any) -> tuple[str, str]:
    """(what ``torch.cuda.<name>`` becomes, its class) for the migration log; the new side has no arguments."""
    spec = CUDA_API[name]
    if name == "device_count" and ctx.device == "cpu":
        available = cuda_available_answer(ctx)
        return f"{int(available)} (cuda_is_available answers {available})", calls.CHANGED
    if ctx.device == "cpu" or spec.npu is None:
        new, category = HOST_MEANING.get(name, ("a host implementation", calls.MAPPED))
        return (f"{new} [no torch.npu.{name}]" if ctx.device != "cpu" else new), category
    npu_name = spec.npu or name
    if getattr(replacement, "__name__", "") == "missing":
        return f"NotImplementedError (this torch_npu has no torch.npu.{npu_name})", calls.UNSUPPORTED
    if name == "device_count" and not cuda_available_answer(ctx):
        return "0 (cuda_is_available answers False)", calls.CHANGED
    index = device_index(ctx)
    if index is not None and name in ("device_count", "current_device", "default_generators"):
        only = f"npu:{index} is the only CUDA device"
        return {
            "device_count": f"1 ({only})",
            "current_device": f"0 ({only}, cuda:0)",
            "default_generators": f"(torch.npu.default_generators[{index}],) ({only})",
        }[name], calls.MAPPED
    if name == "get_device_capability":
        return f"torch.npu.get_device_capability(...), or {REPORTED_CAPABILITY} where CANN reports none", calls.CHANGED
    return f"torch.npu.{npu_name}", calls.MAPPED


def _cuda_api(name: str) -> Callable[[Any, PatchContext], Any]:
    def build(original: Any, ctx: PatchContext) -> Any:
        replacement = _host_api(ctx)[name] if ctx.device == "cpu" else _npu_api(ctx, name)
        if isinstance(replacement, type):
            replacement = _class_for_user_code(replacement, original, ctx, name)
        elif callable(replacement):
            replacement = _for_user_code(replacement, original, ctx, name)
        return replacement

    return build


def _changes(ctx: PatchContext, name: str, replacement: Any) -> tuple[str, str, str]:
    """("old() -> new()", "old(...) -> new(...)", class): the log's text for a call without and with arguments."""
    new, category = _meaning(ctx, name, replacement)
    api = f"torch.cuda.{name}"
    if new.startswith("torch.npu.") and " " not in new:  # a counterpart: called as the code called torch.cuda
        return f"{api}() -> {new}()", f"{api}(...) -> {new}(...)", category
    return f"{api}() -> {new}", f"{api}(...) -> {new}", category


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
    bare, with_args, category = _changes(ctx, name, replacement)

    @functools.wraps(original)
    def call(*args: Any, **kwargs: Any) -> Any:
        frame = sys._getframe(1)
        if not ctx.active or calls.called_by_torch(frame):
            return original(*args, **kwargs)
        counter[0] += 1
        if calls.STATE.enabled:
            calls.log_call("device", api, with_args if args or kwargs else bare, category, frame=frame)
        return replacement(*args, **kwargs)

    return call


def _class_for_user_code(target: type, original: Any, ctx: PatchContext, name: str) -> type:
    """``torch.cuda.<name>`` served by the class ``target`` (``torch.npu.Event``, a host ``WallClockEvent``):
    a stand-in that logs each construction, maps a CUDA device argument on an npu target, and builds
    ``target``'s own instances.

    The stand-in subclasses ``target``: ``isinstance`` / ``issubclass`` defer to it, and a user's
    ``class Timer(torch.cuda.Event)`` builds itself as before. A class that cannot be subclassed
    gets a stand-in without bases (``_ForwardingClassMeta``), which forwards the same way.
    """
    api = f"torch.cuda.{name}"
    counter = call_counter(api)
    bare, with_args, category = _changes(ctx, name, target)
    device_at = CUDA_API[name].device_at if ctx.device != "cpu" and CUDA_API[name].npu is not None else None
    map_device = device_mapper(ctx, None) if device_at is not None else None

    def arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if map_device is None or not ctx.active:
            return args, kwargs
        return _map_device_args(map_device, device_at, args, kwargs)  # type: ignore[arg-type]

    def log(args: tuple[Any, ...], kwargs: dict[str, Any], frame: Any) -> None:
        if calls.STATE.enabled and not calls.called_by_torch(frame):
            calls.log_call("device", api, with_args if args or kwargs else bare, category, frame=frame)

    def construct(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not ctx.active:
            return original(*args, **kwargs)
        counter[0] += 1
        log(args, kwargs, sys._getframe(2))
        args, kwargs = arguments(args, kwargs)
        return target(*args, **kwargs)

    try:

        class ClassMeta(type(target)):  # type: ignore[misc]
            def __call__(cls, *args: Any, **kwargs: Any) -> Any:
                if cls is stand_in:
                    return construct(args, kwargs)
                if ctx.active:
                    log(args, kwargs, sys._getframe(1))
                args, kwargs = arguments(args, kwargs)
                return super().__call__(*args, **kwargs)  # a user subclass builds itself

            def __instancecheck__(cls, instance: Any) -> bool:
                return isinstance(instance, target) if cls is stand_in else type.__instancecheck__(cls, instance)

            def __subclasscheck__(cls, subclass: type) -> bool:
                return issubclass(subclass, target) if cls is stand_in else type.__subclasscheck__(cls, subclass)

        leaf = name.rpartition(".")[2]
        stand_in: type = ClassMeta(
            leaf,
            (target,),
            {"__doc__": target.__doc__, "__module__": "torch.cuda", "__qualname__": leaf, "__wrapped__": target},
        )
    except TypeError:  # not subclassable (a final C type), or a metaclass that cannot be derived
        stand_in = _ForwardingClassMeta(
            name, (), {"_construct": staticmethod(construct), "_target": target, "__doc__": target.__doc__,
                       "__wrapped__": target},
        )  # fmt: skip
    return stand_in


def _is_available(original: Callable[[], bool], ctx: PatchContext) -> Callable[[], bool]:
    answer = cuda_available_answer(ctx)
    change = (
        f"torch.cuda.is_available() -> {answer} "
        f"({ctx.device} target, cuda_is_available={ctx.options.get('cuda_is_available', 'target')!r})"
    )

    @functools.wraps(original)
    def is_available() -> bool:
        frame = sys._getframe(1)
        if not ctx.active or calls.called_by_torch(frame):
            return original()
        if calls.STATE.enabled:
            calls.log_call("device", "torch.cuda.is_available", change, calls.CHANGED, frame=frame)
        return answer

    return is_available


def cuda_target(name: str) -> str:
    """The engine target of a ``CUDA_API`` name: ``memory._snapshot`` -> ``torch.cuda.memory:_snapshot``."""
    parent, _, leaf = name.rpartition(".")
    return f"torch.cuda{'.' + parent if parent else ''}:{leaf}"
