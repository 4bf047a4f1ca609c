"""torch factories, ``Tensor.new_*`` and ``torch.Generator``: the callables that create on a device.

Each is wrapped as a plain Python function whose fast path (no CUDA spelling) is a ``kwargs``
truth test or one dict lookup: no global ``TorchFunctionMode``, which would tax every op of the
model (benchmarks/bench_device_overhead.py). TorchScript: the wrappers are registered in the JIT's
builtin table (journaled like every other write), so ``torch.jit.script`` still compiles code that
calls ``torch.zeros``; inside scripted code device strings are not mapped.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ...engine import calls
from ...engine.patch import PatchContext
from ...engine.slots import AttrSlot, ItemSlot
from .host import HostStream, WallClockEvent
from .mapping import _DEVICE_TYPES, _UNSEEN, call_counter, change_template, device_mapper, translate

# -- factories ----------------------------------------------------------------------------------

# torch functions with a ``device=`` keyword (torch_npu's transfer_to_npu list, less the private
# and quantized constructors, plus asarray / empty_permuted / window functions / fftfreq).
FACTORIES = (
    "zeros", "ones", "empty", "full", "rand", "randn", "randint", "randperm", "arange", "range", "linspace",
    "logspace", "eye", "tensor", "as_tensor", "asarray", "empty_strided", "empty_permuted", "scalar_tensor",
    "zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like", "randint_like",
    "tril_indices", "triu_indices", "sparse_coo_tensor", "sparse_csr_tensor", "normal",
    "bartlett_window", "blackman_window", "hamming_window", "hann_window", "kaiser_window", "from_file",
    "sparse_compressed_tensor", "empty_quantized", "_empty_affine_quantized", "_empty_per_channel_affine_quantized",
)  # fmt: skip
# Optional: present only in some torch versions / not every build.
OPTIONAL_FACTORIES = ("fft:fftfreq", "fft:rfftfreq")
TENSOR_NEW = ("new_zeros", "new_ones", "new_empty", "new_full", "new_tensor", "new_empty_strided")


@dataclass(frozen=True, eq=False)
class JitBuiltinSlot(ItemSlot):
    """An entry of TorchScript's builtin table (id of a Python callable -> ``"aten::op"``).

    ``torch.jit.script`` resolves ``torch.zeros`` by looking up the callable's id in this table; a
    Python wrapper is not in it, and scripting would try (and fail) to compile the wrapper.
    """

    label: str = ""

    def describe(self) -> str:
        return f"torch.jit builtin table[{self.label}]"


def _register_jit_builtin(original: Any, wrapper: Any, api: str, ctx: PatchContext) -> None:
    from torch.jit import _builtins

    table = _builtins._get_builtin_table()
    op = table.get(id(original))
    if op is not None:
        slot = JitBuiltinSlot(table, id(wrapper), f"{api} wrapper")  # type: ignore[arg-type]
        ctx.replace(slot, op, kind="support", note="so torch.jit.script compiles the wrappers as their aten ops")


def _factory(name: str, *, owner: str = "torch") -> Callable[[Any, PatchContext], Any]:
    api = f"{owner}.{name}"

    def build(original: Callable[..., Any], ctx: PatchContext) -> Callable[..., Any]:
        map_device = device_mapper(ctx, api)
        seen, counter, device_types = map_device.seen, call_counter(api), _DEVICE_TYPES
        template = change_template(api)
        # pin_memory=True needs an accelerator's pinned allocator; on a cpu target it means nothing.
        drop_pin = ctx.device == "cpu"

        @functools.wraps(original)
        def factory(*args: Any, **kwargs: Any) -> Any:
            if not kwargs:
                # The device is keyword-only: nothing to map. Passing no ``**{}`` at all keeps
                # torch's argument parser on its fast path (~200 ns less, measured).
                return original(*args)
            device = kwargs.get("device")
            if device is not None and type(device) in device_types:
                new = seen.get(device, _UNSEEN)  # inlined map_device for known spellings
                if new is _UNSEEN or (new is not None and not ctx.active):
                    kwargs["device"] = map_device(device)
                elif new is not None:
                    counter[0] += 1
                    if calls.STATE.enabled:
                        calls.log_call("device", api, (template, device, new))
                    kwargs["device"] = new
            if drop_pin and kwargs.get("pin_memory") and ctx.active:
                kwargs["pin_memory"] = False
            return original(*args, **kwargs)

        if owner == "torch":
            _register_jit_builtin(original, factory, api, ctx)
        return factory

    return build


def _tensor_new(name: str) -> Callable[[Any, PatchContext], Any]:
    api = f"Tensor.{name}"

    def build(original: Callable[..., Any], ctx: PatchContext) -> Callable[..., Any]:
        map_device = device_mapper(ctx, api)
        seen, device_types = map_device.seen, _DEVICE_TYPES
        drop_pin = ctx.device == "cpu"

        @functools.wraps(original)
        def new(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if not kwargs:
                return original(self, *args)
            device = kwargs.get("device")
            # seen.get(d, d) is None only for a spelling known not to be CUDA: skip the call then.
            if device is not None and type(device) in device_types and seen.get(device, device) is not None:
                kwargs["device"] = map_device(device)
            if drop_pin and kwargs.get("pin_memory") and ctx.active:
                kwargs["pin_memory"] = False
            return original(self, *args, **kwargs)

        return new

    return build


@dataclass(frozen=True)
class _ClassRoute:
    """How the device patch now applied builds the objects of one class API (``torch.Generator`` & co.)."""

    ctx: PatchContext
    convert: Callable[[tuple[Any, ...], dict[str, Any]], tuple[tuple[Any, ...], dict[str, Any]]]
    host: Callable[[tuple[Any, ...], dict[str, Any]], Any]  # a host object for a CUDA device, else None

    def route(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
        """(a host object or None, args, kwargs with the device argument mapped)."""
        host = self.host(args, kwargs)
        return (host, args, kwargs) if host is not None else (None, *self.convert(args, kwargs))


# The classes that take a device: name in torch -> the host class serving a CUDA device on a cpu target.
DEVICE_CLASSES: dict[str, type | None] = {"Generator": None, "Event": WallClockEvent, "Stream": HostStream}

# "torch.Generator" & co. -> the route of the device patch applied now, written at each apply (setup)
# through the journal, so revert removes it. The stand-ins and the hooks put on subclasses read it at
# each call instead of keeping a patch context: a user's class made under one apply keeps that apply's
# stand-in in its MRO for good, and must map under the next apply and pass straight through after revert.
_class_routes: dict[str, _ClassRoute] = {}
_stand_ins: weakref.WeakSet[type] = weakref.WeakSet()
# Subclasses left as they are: ours route already (the simulator's), and a library's own (a torch_npu
# stream class) must keep hearing its arguments unmapped, as PyTorch's internals do (calls.called_by_torch).
_NOT_USER_CODE = frozenset({"ascend_patch", "torch", "torch_npu"})


@dataclass(frozen=True, eq=False)
class ClassRouteSlot(ItemSlot):
    """The entry of ``_class_routes`` for one class API."""

    def describe(self) -> str:
        return f"device argument of {self.name} and its subclasses"


def _active_route(api: str) -> _ClassRoute | None:
    route = _class_routes.get(api)
    return route if route is not None and route.ctx.active else None


def _mapping_new(api: str, owner: type, own_new: Callable[..., Any] | None) -> Callable[..., Any]:
    """A ``__new__`` for ``owner`` (a stand-in, or a user's subclass made before apply) that maps the
    device argument by the active route, then builds as ``owner`` did: its own ``__new__``, else the
    next one in the MRO (PyTorch's C constructor, or the simulator's), which builds ``cls`` itself."""

    def __new__(cls: type, *args: Any, **kwargs: Any) -> Any:
        route = _active_route(api)
        if route is not None:
            host, args, kwargs = route.route(args, kwargs)
            if host is not None:
                return host  # not a cls instance: type.__call__ then skips __init__
        if own_new is not None:
            return own_new(cls, *args, **kwargs)
        return super(owner, cls).__new__(cls, *args, **kwargs)  # type: ignore[misc]

    __new__.__qualname__ = f"{owner.__qualname__}.__new__"
    return __new__


def route_device_classes(ctx: PatchContext) -> None:
    """At each apply (the patch's setup, before the stand-ins go in): journal this apply's route for
    each class API, and give each direct subclass a user defined before apply a mapping ``__new__``
    (its subclasses inherit it; earlier stand-ins route already)."""
    for name, host in DEVICE_CLASSES.items():
        original = getattr(torch, name, None)
        if not isinstance(original, type):
            continue
        api = f"torch.{name}"
        map_device = device_mapper(ctx, api)
        host_class = host if ctx.device == "cpu" else None
        host_change = f"{api}({{}}) -> {host.__name__}() (host implementation)" if host is not None else ""

        def convert(args: tuple[Any, ...], kwargs: dict[str, Any], map_device: Any = map_device) -> Any:
            if args:
                return (map_device(args[0]), *args[1:]), kwargs
            if "device" in kwargs:
                return args, {**kwargs, "device": map_device(kwargs["device"])}
            return args, kwargs

        def host_object(
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
            host_class: Any = host_class,
            host_change: str = host_change,
            api: str = api,
        ) -> Any:
            if host_class is None:
                return None
            device = args[0] if args else kwargs.get("device")
            if translate(device, "cpu") is None:
                return None
            if calls.STATE.enabled:
                calls.log_call("device", api, (host_change, device, host_class.__name__))
            return host_class(*args[1:], **{k: v for k, v in kwargs.items() if k != "device"})

        ctx.replace(
            ClassRouteSlot(_class_routes, api),
            _ClassRoute(ctx, convert, host_object),
            kind="support",
            note="read by the stand-in and by subclasses' __new__",
        )
        for sub in original.__subclasses__():
            if sub in _stand_ins or sub.__module__.partition(".")[0] in _NOT_USER_CODE:
                continue
            own = vars(sub).get("__new__")
            own_new = own.__func__ if isinstance(own, staticmethod) else own
            ctx.replace(
                AttrSlot(sub, "__new__"),
                staticmethod(_mapping_new(api, sub, own_new)),
                kind="support",
                note=f"a {api} subclass defined before apply: its device argument is mapped",
            )


def device_class(api: str) -> Callable[[type, PatchContext], type]:
    """``torch.Generator`` / ``torch.Event`` / ``torch.Stream``: the device argument (first positional
    or ``device=``) lands on the target, by the route :func:`route_device_classes` wrote.

    Calling the stand-in builds the original's own instance (``type(torch.Generator("cuda")) is
    torch._C.Generator``; on a cpu target an event is a host ``WallClockEvent``), and ``isinstance`` /
    ``issubclass`` defer to the original (its metaclass), so ``isinstance(torch.default_generator,
    torch.Generator)`` and annotations keep working. A user's subclass builds instances of its own
    class whenever it was defined, through a mapping ``__new__`` (``_mapping_new``): the stand-in has
    one, which classes defined under the patch inherit; a class defined before apply gets its own.
    """

    def build(original: type, ctx: PatchContext) -> type:
        class DeviceClassMeta(type(original)):  # type: ignore[misc]
            def __call__(cls, *args: Any, **kwargs: Any) -> Any:
                if cls is not stand_in:
                    return super().__call__(*args, **kwargs)  # a subclass: its __new__ maps (_mapping_new)
                route = _active_route(api)
                if route is not None:
                    made, args, kwargs = route.route(args, kwargs)
                    if made is not None:
                        return made
                return original(*args, **kwargs)

            def __instancecheck__(cls, instance: Any) -> bool:
                return isinstance(instance, original) if cls is stand_in else type.__instancecheck__(cls, instance)

            def __subclasscheck__(cls, subclass: type) -> bool:
                return issubclass(subclass, original) if cls is stand_in else type.__subclasscheck__(cls, subclass)

        stand_in = DeviceClassMeta(
            original.__name__,
            (original,),
            {"__doc__": original.__doc__, "__module__": original.__module__, "__wrapped__": original},
        )
        stand_in.__new__ = _mapping_new(api, stand_in, None)  # type: ignore[method-assign]
        _stand_ins.add(stand_in)
        return stand_in

    return build


CPU_DEVICE_MODULE = "torch.get_device_module({}) -> torch.cuda, served on the {} target by this patch"


def device_module(original: Callable[..., Any], ctx: PatchContext) -> Callable[..., Any]:
    """``torch.get_device_module("cuda")``: ``torch.npu`` on an npu target; on a cpu target
    ``torch.cuda`` itself, whose API the patch serves with host implementations."""
    map_device = device_mapper(ctx, "torch.get_device_module")

    @functools.wraps(original)
    def get_device_module(device: Any = None) -> Any:
        if device is not None and ctx.active and translate(device, ctx.device) is not None:
            if ctx.device != "cpu":
                return original(map_device(device))
            if calls.STATE.enabled:
                calls.log_call("device", "torch.get_device_module", (CPU_DEVICE_MODULE, device, "cpu"))
            return torch.cuda
        return original(device)

    return get_device_module


def storage_new(original: Any, ctx: PatchContext) -> staticmethod:
    """``torch.UntypedStorage(n, device="cuda")`` (and ``TypedStorage``, built on it): on the target."""
    map_device = device_mapper(ctx, "torch.UntypedStorage")
    new = original.__func__ if isinstance(original, staticmethod) else original

    def __new__(cls: type, *args: Any, **kwargs: Any) -> Any:
        if "device" in kwargs:
            kwargs["device"] = map_device(kwargs["device"])
        return new(cls, *args, **kwargs)

    return staticmethod(__new__)
