"""Mapping one device argument: a CUDA spelling -> the target's, cached per spelling, counted per API."""

from __future__ import annotations

from typing import Any, Protocol, cast

import torch

from ...engine import calls
from ...engine.patch import PatchContext

# Mapped calls per API (only the mapping path counts, never the fast path); shown as the patch's
# stats in ascend_patch.report() and reset at every apply. Each wrapper holds its API's one-item
# list and bumps ``counter[0]``: ~40 ns, where a Counter update costs ~200 ns (measured).
_mapped_calls: dict[str, list[int]] = {}


def call_counter(api: str) -> list[int]:
    return _mapped_calls.setdefault(api, [0])


# A device argument is looked at only when its type is one of these (bool is excluded by the exact
# type test: ``t.to(True)`` is not a device).
_DEVICE_TYPES = frozenset({str, torch.device, int})
_CACHE_LIMIT = 256  # distinct device spellings remembered per wrapper; more are translated each time
_UNSEEN: Any = object()  # a spelling not in a mapper's cache yet


# -- translation ---------------------------------------------------------------------------------
#
# apply(device="npu:3") makes npu:3 this process's one CUDA device, as CUDA_VISIBLE_DEVICES=3 does on
# a GPU machine: "cuda", "cuda:0", torch.device("cuda", 0) and the ordinal 0 are npu:3, and cuda:N for
# any other N raises (CUDA: "invalid device ordinal") instead of landing on some npu:N the user did not
# choose. torch.cuda.current_device() is 0 and device_count() 1 (cuda_api.py), so code that builds
# "cuda:{current_device()}" or loops over the devices stays inside that set. Without an index
# ("npu"), cuda:N is npu:N and a bare "cuda" is the npu current device, as before.


def device_index(ctx: PatchContext) -> int | None:
    """The device index the target was given with (``apply(device="npu:3")`` -> 3); None without one."""
    return ctx.device_index


def placement(ctx: PatchContext) -> str:
    """Where a bare ``"cuda"`` (``.cuda()``, ``device="cuda"``) lands: ``"npu"``, ``"npu:3"``, ``"cpu"``."""
    index = device_index(ctx)
    return ctx.device if index is None else f"{ctx.device}:{index}"


def _only_visible(ordinal: int, target: str, index: int) -> None:
    if ordinal != 0:
        raise RuntimeError(
            f"ascend_patch: CUDA device {ordinal} is not visible: apply(device='{target}:{index}') makes "
            f"{target}:{index} this process's only CUDA device, cuda:0 (as CUDA_VISIBLE_DEVICES={index} "
            f"would); use cuda / cuda:0, or apply(device='{target}') to map each cuda:N to {target}:N"
        )


def translate(device: Any, target: str, index: int | None = None) -> Any:
    """The target spelling of a CUDA device, or None when ``device`` is not a CUDA device.

    The result keeps the argument's kind: a string stays a string, a ``torch.device`` stays a
    device; an int (a CUDA ordinal) becomes a ``torch.device`` because an int alone means CUDA.
    ``index``: the target's device index (see above): every visible CUDA spelling becomes
    ``target:index``, an invisible one raises RuntimeError.
    """
    kind = type(device)
    if kind is str:
        head, sep, tail = device.strip().partition(":")
        if head != "cuda" or (sep and not tail.isdigit()):
            return None  # not CUDA, or not a valid device string: torch raises its own error
        if target == "cpu":
            return target
        if index is not None:
            if sep:
                _only_visible(int(tail), target, index)
            return f"{target}:{index}"
        return f"{target}:{int(tail)}" if sep else target
    if kind is torch.device:
        if device.type != "cuda":
            return None
        if target == "cpu":
            return torch.device(target)
        if index is not None:
            if device.index is not None:
                _only_visible(device.index, target, index)
            return torch.device(target, index)
        return torch.device(target) if device.index is None else torch.device(target, device.index)
    if kind is int:
        if target == "cpu":
            return torch.device("cpu")
        if index is not None:
            _only_visible(device, target, index)
            return torch.device(target, index)
        return torch.device(target, device)
    return None


# How the migration log writes a mapped device argument of an API: "old -> new", each {} a device
# spelled as code (calls.spell). APIs not listed: a callable with a ``device=`` keyword.
_TEMPLATES = {
    "Tensor.to": "x.to({}) -> x.to({})",
    "Tensor.cuda": "x.cuda({}) -> x.to({})",
    "Module.cuda": "module.cuda({}) -> module.to({})",
    "Module.to": "module.to({}) -> module.to({})",
    "torch.load": "torch.load(..., map_location={}) -> torch.load(..., map_location={})",
    "torch.device context / set_default_device":
        "torch.set_default_device({0}) (or with torch.device({0})) -> torch.set_default_device({1})",
    "torch.Generator": "torch.Generator({}) -> torch.Generator({})",
    "torch.Event": "torch.Event({}) -> torch.Event({})",
    "torch.Stream": "torch.Stream({}) -> torch.Stream({})",
    "torch.get_device_module": "torch.get_device_module({}) -> torch.get_device_module({})",
    # distributed: a device id among the call's arguments
    "torch.distributed.init_process_group": "torch.distributed.init_process_group(..., device_id={}) -> "
                                            "torch.distributed.init_process_group(..., device_id={})",
    "torch.distributed.new_group": "torch.distributed.new_group(..., device_id={}) -> "
                                   "torch.distributed.new_group(..., device_id={})",
    "torch.distributed.barrier": "torch.distributed.barrier(device_ids=[{}, ...]) -> "
                                 "torch.distributed.barrier(device_ids=[{}, ...])",
    "DistributedDataParallel": "DistributedDataParallel(..., device id {}) -> DistributedDataParallel(..., {})",
    "FullyShardedDataParallel": "FullyShardedDataParallel(..., device_id={}) -> "
                                "FullyShardedDataParallel(..., device_id={})",
}  # fmt: skip


def change_template(api: str) -> str:
    """The migration log's ``(template, old, new)`` template for a device argument of ``api``."""
    if api in _TEMPLATES:
        return _TEMPLATES[api]
    call = f"x.{api[len('Tensor.'):]}" if api.startswith("Tensor.") else api
    return f"{call}(..., device={{}}) -> {call}(..., device={{}})"


class DeviceMapper(Protocol):
    """Maps one device argument. ``seen`` is its cache: spelling -> target spelling, None = not CUDA."""

    seen: dict[Any, Any]

    def __call__(self, device: Any) -> Any: ...


def device_mapper(ctx: PatchContext, api: str | None) -> DeviceMapper:
    """A function mapping one device argument of ``api``; results are cached per spelling.

    Mapped calls are counted under ``api`` (None: the caller counts). ``ctx.active`` is checked
    only on the mapping path: after revert, a wrapper that could not be removed passes through.

    The hottest wrappers (factories, ``Tensor.to``) read ``seen`` themselves and call the mapper
    only for a spelling not seen yet: a known one costs one dict lookup instead of a call.
    """
    target, index = ctx.device, device_index(ctx)
    seen: dict[Any, Any] = {}
    counter = call_counter(api) if api is not None else [0]
    template = change_template(api) if api is not None else ""

    def map_device(device: Any) -> Any:
        if type(device) not in _DEVICE_TYPES:
            return device
        try:
            new = seen[device]
        except KeyError:
            if not ctx.active:
                return device  # after revert: not even an invisible cuda:N raises
            new = translate(device, target, index)  # raises for a CUDA device outside the visible one
            if len(seen) < _CACHE_LIMIT:
                seen[device] = new
        if new is None or not ctx.active:
            return device
        counter[0] += 1
        if calls.STATE.enabled and api is not None:
            calls.log_call("device", api, (template, device, new))
        return new

    mapper = cast(DeviceMapper, map_device)
    mapper.seen = seen
    return mapper

