"""Moving tensors and modules: ``Tensor.to/cuda/pin_memory``, ``Module.to/cuda``, ``torch.load``, device contexts."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from ...engine import calls
from ...engine.patch import PatchContext
from .mapping import (
    _DEVICE_TYPES,
    _UNSEEN,
    call_counter,
    change_template,
    device_index,
    device_mapper,
    placement,
    translate,
)

# The unpatched Tensor.to, read from the C base class so stacked patches of torch.Tensor.to do not
# route .cuda() through themselves a second time.
_tensor_base_to = torch._C.TensorBase.to


def _tensor_to(original: Callable[..., Any], ctx: PatchContext) -> Callable[..., Any]:
    map_device = device_mapper(ctx, "Tensor.to")
    seen, counter, device_types = map_device.seen, call_counter("Tensor.to"), _DEVICE_TYPES
    template = change_template("Tensor.to")

    @functools.wraps(original)
    def to(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        # Hot path: t.to(dtype) / t.to(other) cost a type test, t.to("cpu") one dict lookup more.
        if args:
            first = args[0]
            if type(first) in device_types:
                new = seen.get(first, _UNSEEN)  # inlined map_device for known spellings
                if new is _UNSEEN or (new is not None and not ctx.active):
                    first = map_device(first)
                    args = (first, *args[1:])
                elif new is not None:
                    counter[0] += 1
                    if calls.STATE.enabled:
                        calls.log_call("device", "Tensor.to", (template, first, new))
                    first = new
                    args = (first, *args[1:])
            if not kwargs and len(args) == 1:
                # The common one-argument call, made positionally: unpacking ``*args`` into the C
                # method costs ~200 ns more (measured).
                return original(self, first)
        if kwargs:
            device = kwargs.get("device")
            if device is not None and type(device) in device_types and seen.get(device, device) is not None:
                kwargs["device"] = map_device(device)
        return original(self, *args, **kwargs)

    return to


def _tensor_cuda(original: Callable[..., Any], ctx: PatchContext) -> Callable[..., Any]:
    map_device = device_mapper(ctx, "Tensor.cuda")
    counter = call_counter("Tensor.cuda")  # the mapper's counter: .cuda() and .cuda(N) count alike
    bare = placement(ctx)  # a bare .cuda() means the current device: "npu" / "npu:3" / "cpu"
    bare_change = f'x.cuda() -> x.to("{bare}")'

    @functools.wraps(original)
    def cuda(
        self: torch.Tensor,
        device: Any = None,
        non_blocking: bool = False,
        memory_format: torch.memory_format = torch.preserve_format,
    ) -> torch.Tensor:
        if not ctx.active:
            return original(self, device, non_blocking, memory_format=memory_format)
        if device is None:
            counter[0] += 1
            if calls.STATE.enabled:
                calls.log_call("device", "Tensor.cuda", bare_change)
            device = bare
        else:
            device = map_device(device)
        if non_blocking is False and memory_format is torch.preserve_format:
            return _tensor_base_to(self, device)  # positional call: the cheap path (see Tensor.to)
        return _tensor_base_to(self, device, non_blocking=non_blocking, memory_format=memory_format)

    return cuda


def _tensor_pin_memory(original: Callable[..., Any], ctx: PatchContext) -> Callable[..., Any]:
    on_cpu = ctx.device == "cpu"
    counter = call_counter("Tensor.pin_memory")

    @functools.wraps(original)
    def pin_memory(self: torch.Tensor, device: Any = None) -> torch.Tensor:
        if not ctx.active:
            return original(self) if device is None else original(self, device)
        counter[0] += 1
        if calls.STATE.enabled:
            if on_cpu:
                calls.log_call("device", "Tensor.pin_memory",
                               "x.pin_memory() -> x (no-op: a cpu target has no pinned memory)", calls.CHANGED)
            else:
                calls.log_call("device", "Tensor.pin_memory", "x.pin_memory() -> x.pin_memory() (pinned for the npu)")
        if on_cpu:
            # No accelerator, no pinned allocator: pinning is a no-op (plain CPU torch raises).
            return self
        # The device argument is deprecated upstream and "cuda" would be rejected: pin for the
        # current accelerator, which is the npu.
        return original(self)

    return pin_memory


def _module_cuda(original: Callable[..., Any], ctx: PatchContext) -> Callable[..., Any]:
    map_device = device_mapper(ctx, "Module.cuda")
    counter = call_counter("Module.cuda")
    bare = placement(ctx)  # a bare .cuda() means the current device: "npu" / "npu:3" / "cpu"
    bare_change = f'module.cuda() -> module.to("{bare}")'

    @functools.wraps(original)
    def cuda(self: torch.nn.Module, device: Any = None) -> torch.nn.Module:
        if not ctx.active:
            return original(self, device)
        if device is None:
            counter[0] += 1
            if calls.STATE.enabled:
                calls.log_call("device", "Module.cuda", bare_change)
            target = bare
        else:
            target = map_device(device)
        # Same traversal as upstream Module.cuda (parameters, buffers, their grads).
        return self._apply(lambda t: _tensor_base_to(t, target))

    return cuda


def _module_to(original: Callable[..., Any], ctx: PatchContext) -> Callable[..., Any]:
    # Module.to parses its arguments itself (torch._C._nn._parse_to), and an int device fails there
    # before any Tensor.to runs: ``model.to(local_rank)`` has to be mapped here.
    map_device = device_mapper(ctx, "Module.to")
    device_types = _DEVICE_TYPES  # Module.to is not hot (once per model), so no fast-path lookup

    @functools.wraps(original)
    def to(self: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        if args and type(args[0]) in device_types:
            args = (map_device(args[0]), *args[1:])
        if kwargs:
            device = kwargs.get("device")
            if device is not None:
                kwargs["device"] = map_device(device)
        return original(self, *args, **kwargs)

    return to


def _allowed_methods(original: list[Any], ctx: PatchContext) -> list[Any]:
    # UninitializedParameter.__torch_function__ allows methods by identity and receives the
    # *current* torch.Tensor.to (ours) as ``func``: add our wrappers next to the originals.
    ours = [vars(torch.Tensor)[name] for name in ("to", "cuda") if name in vars(torch.Tensor)]
    return [*original, *(m for m in ours if m not in original)]


def _device_context_init(original: Callable[..., None], ctx: PatchContext) -> Callable[..., None]:
    map_device = device_mapper(ctx, "torch.device context / set_default_device")

    @functools.wraps(original)
    def __init__(self: Any, device: Any) -> None:
        original(self, map_device(device))

    return __init__


def _load(original: Callable[..., Any], ctx: PatchContext) -> Callable[..., Any]:
    """``torch.load``: map_location "cuda"/device/dict values map; no map_location sends CUDA storages
    to the target (an unpatched load of a GPU checkpoint fails without CUDA)."""
    map_device = device_mapper(ctx, "torch.load")
    counter = call_counter("torch.load")
    target, index, one_device = ctx.device, device_index(ctx), placement(ctx)
    restore_change = f'torch.load(<CUDA checkpoint>) -> torch.load(..., map_location="{one_device}")'

    def restore_cuda_storages(storage: Any, location: str) -> Any:
        if not location.startswith("cuda"):
            return None  # torch's default restore for cpu/npu storages
        counter[0] += 1
        if calls.STATE.enabled:
            calls.log_call("device", "torch.load", restore_change)
        if target == "cpu":
            return storage  # storages are read into host memory first
        from torch.serialization import default_restore_location

        if index is not None:
            # One CUDA device in this process (apply(device="npu:3")): a checkpoint's storages, saved
            # from whichever GPU, all go to it; the code never chose their location.
            return default_restore_location(storage, one_device)
        return default_restore_location(storage, str(translate(location, target) or target))

    def map_location(location: Any) -> Any:
        if location is None:
            return restore_cuda_storages
        if isinstance(location, dict):
            return {key: map_device(value) for key, value in location.items()}
        return map_device(location)

    @functools.wraps(original)
    def load(*args: Any, **kwargs: Any) -> Any:
        if ctx.active:
            if len(args) > 1:
                args = (args[0], map_location(args[1]), *args[2:])
            else:
                kwargs["map_location"] = map_location(kwargs.get("map_location"))
        return original(*args, **kwargs)

    return load

