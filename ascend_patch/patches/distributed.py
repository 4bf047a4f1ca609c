"""distributed: NCCL requests use the target's collective backend (hccl on npu, gloo on cpu).

Before::

    dist.init_process_group(backend="nccl", device_id=torch.device("cuda", local_rank))
    model = DDP(model.cuda(), device_ids=[local_rank])      # on NPU/CPU: no NCCL, no CUDA ids

After ``apply("device", "distributed")`` the same lines run: the backend is ``"hccl"`` on an npu
target (torch_npu registers it) and ``"gloo"`` on a cpu target; ``"cpu:gloo,cuda:nccl"`` becomes
``"cpu:gloo,npu:hccl"`` / ``"cpu:gloo"``. ``device_id`` and DDP's ``device_ids`` /
``output_device`` and ``barrier(device_ids=)`` map like every CUDA device on npu; on cpu they are
dropped, because CPU process groups and CPU modules take no device ids (DDP rejects them).

``torch.distributed.is_nccl_available()`` answers True when the mapped backend is there (a
``backend="nccl"`` request will work), and the ``torch.cuda.nccl`` probes answer for the target:
``is_available(tensors)`` checks the tensors are dense, contiguous, on the target, one per device;
``version()`` reports :data:`REPORTED_NCCL_VERSION` so version gates written for NCCL (bf16
all-reduce needs >= 2.10, ...) take their modern path, which hccl and gloo both serve.

Use it together with "device" (tensors sent to ``.cuda()`` must land on the target too); it
works alone as well, mapping only the distributed arguments.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..engine import calls
from ..engine.patch import Patch, PatchContext, Replace
from .device.mapping import device_mapper, translate

# What torch.cuda.nccl.version() answers under the patch: the NCCL bundled with recent CUDA torch
# wheels. Only version gates read it; the collectives run on hccl / gloo.
REPORTED_NCCL_VERSION = (2, 21, 5)


def backend_for(ctx: PatchContext) -> str:
    return "hccl" if ctx.device == "npu" else "gloo"


def map_backend(backend: Any, ctx: PatchContext, api: str | None = None) -> Any:
    """``"nccl"`` -> the target's backend; ``"dev:backend,..."`` lists mapped entry by entry.

    ``api``: the call to name in the migration log when the backend changes (None: not logged)."""
    if not isinstance(backend, str) or not ctx.active:  # None: torch's own default
        return backend
    mapped = _map_backend(backend, ctx)
    if api is not None and mapped != backend and calls.STATE.enabled:
        calls.log_call("distributed", api, (f"{api}(backend={{}}) -> {api}(backend={{}})", backend, mapped))
    return mapped


def _map_backend(backend: str, ctx: PatchContext) -> str:
    target = backend_for(ctx)
    text = backend.strip().lower()
    if ":" not in text:
        return target if text == "nccl" else backend
    pairs: dict[str, str] = {}
    for item in text.split(","):
        device, _, name = (part.strip() for part in item.partition(":"))
        device = ctx.device if device == "cuda" else device
        name = target if name == "nccl" else name
        pairs.setdefault(device, name)  # on cpu "cuda:nccl" folds into an existing "cpu:gloo"
    return ",".join(f"{device}:{name}" for device, name in pairs.items())


def _drop_or_map(ctx: PatchContext, api: str) -> Callable[[Any], Any]:
    """A CUDA device id of ``api`` -> the npu id on npu, None on cpu (CPU groups/modules take no ids)."""
    map_device = device_mapper(ctx, api)
    dropped = f"{api}(..., {{}}) -> no device id (cpu process groups and modules take none)"

    def convert(device: Any) -> Any:
        if device is None or not ctx.active:
            return device
        if ctx.device == "cpu":
            if translate(device, "cpu") is None:
                return device
            if calls.STATE.enabled:
                calls.log_call("distributed", api, (dropped, device, None))
            return None
        return map_device(device)

    return convert


def _init_process_group(original: Callable[..., None], ctx: PatchContext) -> Callable[..., None]:
    api = "torch.distributed.init_process_group"
    convert = _drop_or_map(ctx, api)

    @functools.wraps(original)
    def init_process_group(*args: Any, **kwargs: Any) -> None:
        if args:
            args = (map_backend(args[0], ctx, api), *args[1:])
        if "backend" in kwargs:
            kwargs["backend"] = map_backend(kwargs["backend"], ctx, api)
        if "device_id" in kwargs:
            kwargs["device_id"] = convert(kwargs["device_id"])
        return original(*args, **kwargs)

    return init_process_group


def _new_group(original: Callable[..., Any], ctx: PatchContext) -> Callable[..., Any]:
    api = "torch.distributed.new_group"
    convert = _drop_or_map(ctx, api)

    @functools.wraps(original)
    def new_group(*args: Any, **kwargs: Any) -> Any:
        if len(args) > 2:  # new_group(ranks, timeout, backend, ...)
            args = (*args[:2], map_backend(args[2], ctx, api), *args[3:])
        if "backend" in kwargs:
            kwargs["backend"] = map_backend(kwargs["backend"], ctx, api)
        if "device_id" in kwargs:
            kwargs["device_id"] = convert(kwargs["device_id"])
        return original(*args, **kwargs)

    return new_group


def _barrier(original: Callable[..., Any], ctx: PatchContext) -> Callable[..., Any]:
    convert = _drop_or_map(ctx, "torch.distributed.barrier")

    def map_ids(device_ids: Any) -> Any:
        if device_ids is None or not ctx.active:
            return device_ids
        mapped = [convert(d) for d in device_ids]
        # barrier takes ints (indices on the current accelerator); on cpu the ids are dropped.
        return None if any(d is None for d in mapped) else [_index(d) for d in mapped]

    @functools.wraps(original)
    def barrier(*args: Any, **kwargs: Any) -> Any:
        if len(args) > 2:  # barrier(group, async_op, device_ids, ...)
            args = (*args[:2], map_ids(args[2]), *args[3:])
        if "device_ids" in kwargs:
            kwargs["device_ids"] = map_ids(kwargs["device_ids"])
        return original(*args, **kwargs)

    return barrier


def _index(device: Any) -> Any:
    return device.index if isinstance(device, torch.device) and device.index is not None else device


def _ddp_init(original: Callable[..., None], ctx: PatchContext) -> Callable[..., None]:
    convert = _drop_or_map(ctx, "DistributedDataParallel")

    @functools.wraps(original)
    def __init__(
        self: Any,
        module: torch.nn.Module,
        device_ids: Sequence[Any] | None = None,
        output_device: Any = None,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        if ctx.active:
            if device_ids is not None:
                mapped = [convert(d) for d in device_ids]
                device_ids = None if any(d is None for d in mapped) else mapped
            output_device = convert(output_device)
        original(self, module, device_ids, output_device, *args, **kwargs)

    return __init__


def _init_device_mesh(original: Callable[..., Any], ctx: PatchContext) -> Callable[..., Any]:
    @functools.wraps(original)
    def init_device_mesh(device_type: str, *args: Any, **kwargs: Any) -> Any:
        if ctx.active and device_type == "cuda":
            device_type = ctx.device
        return original(device_type, *args, **kwargs)

    return init_device_mesh


def _fsdp_init(original: Callable[..., None], ctx: PatchContext) -> Callable[..., None]:
    """FSDP(device_id=local_rank | "cuda:N"): the target device (dropped on cpu, where FSDP takes none)."""
    convert = _drop_or_map(ctx, "FullyShardedDataParallel")

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if "device_id" in kwargs:
            kwargs["device_id"] = convert(kwargs["device_id"])
        original(self, *args, **kwargs)

    return __init__


def _device_mesh_init(original: Callable[..., None], ctx: PatchContext) -> Callable[..., None]:
    @functools.wraps(original)
    def __init__(self: Any, device_type: str, *args: Any, **kwargs: Any) -> None:
        if ctx.active and device_type == "cuda":
            device_type = ctx.device
        original(self, device_type, *args, **kwargs)

    return __init__


def _backend_available(ctx: PatchContext) -> bool:
    import torch.distributed as dist

    if ctx.device == "npu":
        return "hccl" in dist.Backend.backend_list
    return dist.is_gloo_available()


def _is_nccl_available(original: Callable[[], bool], ctx: PatchContext) -> Callable[[], bool]:
    @functools.wraps(original)
    def is_nccl_available() -> bool:
        return _backend_available(ctx) if ctx.active else original()

    return is_nccl_available


def _nccl_version(original: Callable[[], Any], ctx: PatchContext) -> Callable[[], Any]:
    @functools.wraps(original)
    def version() -> tuple[int, ...]:
        return REPORTED_NCCL_VERSION if ctx.active else original()

    return version


def _nccl_is_available(original: Callable[..., bool], ctx: PatchContext) -> Callable[..., bool]:
    @functools.wraps(original)
    def is_available(tensors: Sequence[torch.Tensor]) -> bool:
        if not ctx.active:
            return original(tensors)
        devices = set()
        for tensor in tensors:
            if tensor.is_sparse or not tensor.is_contiguous() or tensor.device.type != ctx.device:
                return False
            if tensor.device in devices:
                return False
            devices.add(tensor.device)
        return True

    return is_available


def _skip(ctx: PatchContext) -> str | None:
    if ctx.device == "cuda":
        return "target is cuda: NCCL is the right backend there"
    if not torch.distributed.is_available():
        return "this torch build has no torch.distributed"
    return None


PATCH = Patch(
    name="distributed",
    summary="init_process_group('nccl') / DDP device_ids / torch.cuda.nccl probes use hccl (npu) or gloo (cpu)",
    replaces=(
        Replace("torch.distributed.distributed_c10d:init_process_group", _init_process_group, copies=True),
        Replace("torch.distributed.distributed_c10d:new_group", _new_group, copies=True),
        Replace("torch.distributed.distributed_c10d:barrier", _barrier, copies=True),
        Replace("torch.distributed.distributed_c10d:is_nccl_available", _is_nccl_available, copies=True),
        Replace("torch.nn.parallel.distributed:DistributedDataParallel.__init__", _ddp_init),
        Replace("torch.distributed.device_mesh:init_device_mesh", _init_device_mesh, copies=True, optional=True),
        Replace("torch.distributed.device_mesh:DeviceMesh.__init__", _device_mesh_init, optional=True),
        Replace("torch.distributed.fsdp.fully_sharded_data_parallel:FullyShardedDataParallel.__init__", _fsdp_init),
        Replace("torch.cuda.nccl:version", _nccl_version),
        Replace("torch.cuda.nccl:is_available", _nccl_is_available),
    ),
    skip_reason=_skip,
)
