"""device: CUDA device requests land on the target device (npu, or cpu without an accelerator).

Before::

    model = Model().cuda()
    x = torch.randn(8, 16, device="cuda:0")
    torch.cuda.synchronize()                  # on NPU/CPU: "Torch not compiled with CUDA enabled"

After ``apply("device")`` the same lines run on the target: ``"cuda"`` -> ``"npu"``,
``"cuda:N"`` -> ``"npu:N"``, ``torch.device("cuda", N)`` -> ``torch.device("npu", N)`` and an int
device ``N`` -> ``npu:N``; on a cpu target every one of them is plain ``"cpu"``. Anything that is
not a CUDA spelling (``"cpu"``, ``"npu:0"``, dtypes, tensors) is passed through untouched.

What is wrapped, and why only these:

- torch factories and ``*_like`` functions (``zeros``, ``randn``, ``arange``, ``tensor``, ...),
  ``Tensor.new_*``, ``Tensor.to`` / ``Tensor.cuda`` / ``Tensor.pin_memory``, ``Module.cuda`` /
  ``Module.to`` (which parses an int device itself, before any ``Tensor.to``),
  ``torch.Generator``, ``torch.load(map_location=)`` and ``torch.device`` used as a context manager
  (``DeviceContext``, which also serves ``torch.set_default_device``). Only callables that take a
  device are wrapped, each as a plain Python function whose fast path (no CUDA spelling) is a
  ``kwargs`` truth test or one dict lookup: no global ``TorchFunctionMode``, which would tax every
  op of the model (benchmarks/bench_device_overhead.py, docs/patches-device.md).
- ``torch.cuda.*`` queries and handles forward to ``torch.npu`` (device arguments mapped) or, on a
  cpu target, to host implementations defined here: a wall-clock ``Event``, synchronous streams,
  memory counters that are 0 (there is no device memory), host memory for ``mem_get_info``.

``torch.cuda.is_available()`` answers according to the ``cuda_is_available`` option:

- ``"target"`` (default): True exactly when the target is an accelerator (npu). CUDA-only
  branches then run on the NPU, where their device requests are mapped; on a cpu target they stay
  off, as they do in plain CPU PyTorch, because they lead to code that needs a GPU (custom
  kernels, triton, torch internals that trust ``is_available()``).
- ``"true"``: always True, to exercise CUDA-only branches on a cpu target. Apply "attention" (and
  "autocast") with it: the branches then meet the flash_attn shim and the mapped autocast.
- ``"false"``: always False; upstream takes its non-CUDA path even on an NPU.

``device_count()`` answers 0 whenever ``is_available()`` answers False, so the two agree.

TorchScript: factory wrappers are registered in the JIT's builtin table (journaled like every other
write), so ``torch.jit.script`` still compiles code that calls ``torch.zeros``; inside scripted code
device strings are not mapped. Lazy modules: ``UninitializedTensorMixin`` keeps a list of the
``Tensor`` methods it allows, compared by identity, so our ``to``/``cuda`` are added to it.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import torch

from ..engine import calls
from ..engine.patch import Option, Patch, PatchContext, Replace
from ..engine.slots import ItemSlot

logger = logging.getLogger("ascend_patch")

CUDA_IS_AVAILABLE_CHOICES = ("target", "true", "false")

# Capability reported for torch.cuda.get_device_capability / properties.major.minor. Upstream gates
# bf16 and flash attention on ">= (8, 0)" (Ampere); on the targets both are served (bf16 natively,
# flash_attn through the "attention" shim), so the gate should open.
REPORTED_CAPABILITY = (8, 0)

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


def translate(device: Any, target: str) -> Any:
    """The target spelling of a CUDA device, or None when ``device`` is not a CUDA device.

    The result keeps the argument's kind: a string stays a string, a ``torch.device`` stays a
    device; an int (a CUDA ordinal) becomes a ``torch.device`` because an int alone means CUDA.
    """
    kind = type(device)
    if kind is str:
        head, sep, tail = device.strip().partition(":")
        if head != "cuda" or (sep and not tail.isdigit()):
            return None  # not CUDA, or not a valid device string: torch raises its own error
        if target == "cpu" or not sep:
            return target
        return f"{target}:{int(tail)}"
    if kind is torch.device:
        if device.type != "cuda":
            return None
        if target == "cpu" or device.index is None:
            return torch.device(target)
        return torch.device(target, device.index)
    if kind is int:
        return torch.device("cpu") if target == "cpu" else torch.device(target, device)
    return None


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
    target = ctx.device
    seen: dict[Any, Any] = {}
    counter = call_counter(api) if api is not None else [0]

    def map_device(device: Any) -> Any:
        if type(device) not in _DEVICE_TYPES:
            return device
        try:
            new = seen[device]
        except KeyError:
            new = translate(device, target)
            if len(seen) < _CACHE_LIMIT:
                seen[device] = new
        if new is None or not ctx.active:
            return device
        counter[0] += 1
        if calls.STATE.enabled and api is not None:
            calls.log_call("device", api, new)
        return new

    mapper = cast(DeviceMapper, map_device)
    mapper.seen = seen
    return mapper


# -- factories ----------------------------------------------------------------------------------

# torch functions with a ``device=`` keyword (torch_npu's transfer_to_npu list, less the private
# and quantized constructors, plus asarray / empty_permuted / window functions / fftfreq).
FACTORIES = (
    "zeros", "ones", "empty", "full", "rand", "randn", "randint", "randperm", "arange", "range", "linspace",
    "logspace", "eye", "tensor", "as_tensor", "asarray", "empty_strided", "empty_permuted", "scalar_tensor",
    "zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like", "randint_like",
    "tril_indices", "triu_indices", "sparse_coo_tensor", "sparse_csr_tensor", "normal",
    "bartlett_window", "blackman_window", "hamming_window", "hann_window", "kaiser_window",
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
                        calls.log_call("device", api, new)
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


# -- Tensor / Module transfers ------------------------------------------------------------------

# The unpatched Tensor.to, read from the C base class so stacked patches of torch.Tensor.to do not
# route .cuda() through themselves a second time.
_tensor_base_to = torch._C.TensorBase.to


def _tensor_to(original: Callable[..., Any], ctx: PatchContext) -> Callable[..., Any]:
    map_device = device_mapper(ctx, "Tensor.to")
    seen, counter, device_types = map_device.seen, call_counter("Tensor.to"), _DEVICE_TYPES

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
                        calls.log_call("device", "Tensor.to", new)
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
    bare = ctx.device  # a bare .cuda() means the current device: "npu" / "cpu"

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
                calls.log_call("device", "Tensor.cuda", bare)
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
            calls.log_call("device", "Tensor.pin_memory", "-> pinned for the target" if not on_cpu else "-> no-op on cpu")
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
    bare = ctx.device  # a bare .cuda() means the current device: "npu" / "cpu"

    @functools.wraps(original)
    def cuda(self: torch.nn.Module, device: Any = None) -> torch.nn.Module:
        if not ctx.active:
            return original(self, device)
        if device is None:
            counter[0] += 1
            if calls.STATE.enabled:
                calls.log_call("device", "Module.cuda", bare)
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


def _generator(original: type, ctx: PatchContext) -> type:
    """``torch.Generator(device="cuda")`` -> a generator on the target.

    The replacement is a stand-in class: calling it builds a real ``torch.Generator``, and
    ``isinstance`` / ``issubclass`` / attribute access defer to the real class, so type checks and
    annotations that name ``torch.Generator`` keep working.
    """
    map_device = device_mapper(ctx, "torch.Generator")

    class GeneratorMeta(type):
        def __call__(cls, device: Any = "cpu") -> Any:
            return original(device=map_device(device))

        def __instancecheck__(cls, instance: Any) -> bool:
            return isinstance(instance, original)

        def __subclasscheck__(cls, subclass: type) -> bool:
            return issubclass(subclass, original)

        def __getattr__(cls, name: str) -> Any:
            return getattr(original, name)

    return GeneratorMeta("Generator", (), {"__doc__": original.__doc__, "__module__": "torch", "__wrapped__": original})


def _load(original: Callable[..., Any], ctx: PatchContext) -> Callable[..., Any]:
    """``torch.load``: map_location "cuda"/device/dict values map; no map_location sends CUDA storages
    to the target (an unpatched load of a GPU checkpoint fails without CUDA)."""
    map_device = device_mapper(ctx, "torch.load")
    counter = call_counter("torch.load")
    target = ctx.device

    def restore_cuda_storages(storage: Any, location: str) -> Any:
        if not location.startswith("cuda"):
            return None  # torch's default restore for cpu/npu storages
        counter[0] += 1
        if calls.STATE.enabled:
            calls.log_call("device", "torch.load", target)
        if target == "cpu":
            return storage  # storages are read into host memory first
        from torch.serialization import default_restore_location

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


# -- torch.cuda on the target --------------------------------------------------------------------


def cuda_available_answer(ctx: PatchContext) -> bool:
    policy = ctx.options.get("cuda_is_available", "target")
    if policy == "true":
        return True
    if policy == "false":
        return False
    return ctx.device != "cpu"


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
        self.stack: list[HostStream] = []

    def current(self) -> HostStream:
        return self.stack[-1] if self.stack else self.default


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


def _host_api(ctx: PatchContext) -> dict[str, Any]:
    """torch.cuda's API on a cpu target."""
    available = cuda_available_answer(ctx)

    def memory_stats(device: Any = None) -> dict[str, int]:
        # The keys upstream code reads most; every counter is 0: there is no device memory.
        keys = (
            "allocated_bytes.all.current",
            "allocated_bytes.all.peak",
            "reserved_bytes.all.current",
            "reserved_bytes.all.peak",
            "active_bytes.all.current",
            "active_bytes.all.peak",
            "num_alloc_retries",
            "num_ooms",
        )
        return dict.fromkeys(keys, 0)

    return {
        "device_count": lambda: 1 if available else 0,
        "current_device": lambda: 0,
        "set_device": _nothing,
        "synchronize": _nothing,
        "get_device_name": lambda device=None: _host_name(),
        "get_device_properties": lambda device=None: HostDeviceProperties(_host_name(), _host_memory()[1]),
        "get_device_capability": lambda device=None: REPORTED_CAPABILITY,
        "memory_allocated": _zero,
        "max_memory_allocated": _zero,
        "memory_reserved": _zero,
        "max_memory_reserved": _zero,
        "reset_peak_memory_stats": _nothing,
        "reset_max_memory_allocated": _nothing,
        "empty_cache": lambda: None,
        "mem_get_info": lambda device=None: _host_memory(),
        "memory_stats": memory_stats,
        "is_bf16_supported": lambda including_emulation=True: True,
        "Event": WallClockEvent,
        "Stream": HostStream,
        "stream": HostStreamContext,
        "current_stream": lambda device=None: _host_streams.current(),
        "default_stream": lambda device=None: _host_streams.default,
        "device": HostDevice,
        "default_generators": (torch.default_generator,),
    }


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


# torch.cuda functions whose first positional argument is a device (mapped on the way to torch.npu).
_TAKES_DEVICE = frozenset(
    [
        "set_device",
        "synchronize",
        "get_device_name",
        "get_device_properties",
        "get_device_capability",
        "memory_allocated",
        "max_memory_allocated",
        "memory_reserved",
        "max_memory_reserved",
        "reset_peak_memory_stats",
        "reset_max_memory_allocated",
        "mem_get_info",
        "memory_stats",
        "current_stream",
        "default_stream",
        "Stream",
        "device",
    ]
)


class _ForwardingClassMeta(type):
    """Metaclass of stand-ins for torch.npu classes whose constructor takes a CUDA device."""

    _target: type
    _map: Callable[[Any], Any]

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if args:
            args = (cls._map(args[0]), *args[1:])
        if "device" in kwargs:
            kwargs["device"] = cls._map(kwargs["device"])
        return cls._target(*args, **kwargs)

    def __instancecheck__(cls, instance: Any) -> bool:
        return isinstance(instance, cls._target)

    def __subclasscheck__(cls, subclass: type) -> bool:
        return issubclass(subclass, cls._target)

    def __getattr__(cls, name: str) -> Any:
        return getattr(cls._target, name)


def _npu_api(ctx: PatchContext, name: str) -> Any:
    """torch.cuda.<name> on an npu target: torch.npu.<name>, CUDA device arguments mapped."""
    npu = torch.npu  # type: ignore[attr-defined]
    available = cuda_available_answer(ctx)
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
    target = getattr(npu, name, None)
    if target is None:

        def missing(*args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError(f"ascend_patch: torch.cuda.{name} has no torch.npu counterpart in this torch_npu")

        return missing
    if name not in _TAKES_DEVICE:
        return target
    map_device = device_mapper(ctx, None)  # counted once by _passthrough_when_inactive
    if isinstance(target, type):
        return _ForwardingClassMeta(
            name,
            (),
            {"_target": target, "_map": staticmethod(map_device), "__doc__": target.__doc__, "__wrapped__": target},
        )

    @functools.wraps(target)
    def forward(*args: Any, **kwargs: Any) -> Any:
        if args:
            args = (map_device(args[0]), *args[1:])
        if "device" in kwargs:
            kwargs["device"] = map_device(kwargs["device"])
        return target(*args, **kwargs)

    return forward


CUDA_API = (
    "device_count", "current_device", "set_device", "synchronize", "get_device_name", "get_device_properties",
    "get_device_capability", "memory_allocated", "max_memory_allocated", "memory_reserved", "max_memory_reserved",
    "reset_peak_memory_stats", "reset_max_memory_allocated", "empty_cache", "mem_get_info", "memory_stats",
    "is_bf16_supported", "Event", "Stream", "stream", "current_stream", "default_stream", "device",
    "default_generators",
)  # fmt: skip
# Not scanned for ``from torch.cuda import x`` copies: on CPU builds ``default_generators`` is the
# interpreter's shared empty tuple, so a copy search would "find" it in unrelated modules.
_NO_COPIES = frozenset({"default_generators"})


def _cuda_api(name: str) -> Callable[[Any, PatchContext], Any]:
    def build(original: Any, ctx: PatchContext) -> Any:
        replacement = _host_api(ctx)[name] if ctx.device == "cpu" else _npu_api(ctx, name)
        if callable(replacement) and not isinstance(replacement, type):
            replacement = _passthrough_when_inactive(replacement, original, ctx, name)
        return replacement

    return build


def _passthrough_when_inactive(
    replacement: Callable[..., Any], original: Callable[..., Any], ctx: PatchContext, name: str
) -> Callable[..., Any]:
    counter = call_counter(f"torch.cuda.{name}")

    @functools.wraps(original)
    def call(*args: Any, **kwargs: Any) -> Any:
        if not ctx.active:
            return original(*args, **kwargs)
        counter[0] += 1
        return replacement(*args, **kwargs)

    return call


def _is_available(original: Callable[[], bool], ctx: PatchContext) -> Callable[[], bool]:
    answer = cuda_available_answer(ctx)

    @functools.wraps(original)
    def is_available() -> bool:
        return answer if ctx.active else original()

    return is_available


# -- the patch ------------------------------------------------------------------------------------


def _setup(ctx: PatchContext) -> None:
    # DeviceContext (``with torch.device(...)``, set_default_device) tests ``func in
    # _device_constructors()``, an lru_cache over torch.<factory> objects. Filled while our
    # wrappers are installed, it would hold them forever and miss the originals after revert.
    from torch.utils._device import _device_constructors

    _device_constructors()
    _mapped_calls.clear()
    logger.info(
        "ascend_patch: device: CUDA device requests -> %s; torch.cuda.is_available() -> %s (cuda_is_available=%r)",
        ctx.device,
        cuda_available_answer(ctx),
        ctx.options["cuda_is_available"],
    )


def _skip(ctx: PatchContext) -> str | None:
    return "target is cuda: CUDA device requests already land on it" if ctx.device == "cuda" else None


def _stats() -> Mapping[str, int]:
    return {api: counter[0] for api, counter in _mapped_calls.items() if counter[0]}


def _replaces() -> tuple[Replace, ...]:
    reps: list[Replace] = [Replace(f"torch:{name}", _factory(name), copies=True) for name in FACTORIES]
    for spec in OPTIONAL_FACTORIES:
        sub, name = spec.split(":")
        reps.append(Replace(f"torch.{sub}:{name}", _factory(name, owner=f"torch.{sub}"), optional=True))
    reps += [Replace(f"torch:Tensor.{name}", _tensor_new(name)) for name in TENSOR_NEW]
    reps += [
        Replace("torch:Tensor.to", _tensor_to),
        Replace("torch:Tensor.cuda", _tensor_cuda),
        Replace("torch:Tensor.pin_memory", _tensor_pin_memory),
        Replace("torch.nn.modules.module:Module.cuda", _module_cuda),
        Replace("torch.nn.modules.module:Module.to", _module_to),
        # After Tensor.to/cuda: reads the wrappers just installed.
        Replace("torch.nn.parameter:UninitializedTensorMixin._allowed_methods", _allowed_methods),
        Replace("torch.utils._device:DeviceContext.__init__", _device_context_init),
        Replace("torch:Generator", _generator),
        Replace("torch:load", _load, copies=True),
        Replace("torch.cuda:is_available", _is_available, copies=True),
    ]
    reps += [Replace(f"torch.cuda:{name}", _cuda_api(name), copies=name not in _NO_COPIES) for name in CUDA_API]
    return tuple(reps)


PATCH = Patch(
    name="device",
    summary="'cuda' devices (.cuda(), .to('cuda:N'), device='cuda', torch.cuda.*) land on the target device",
    replaces=_replaces(),
    options={
        "cuda_is_available": Option(
            default="target",
            choices=CUDA_IS_AVAILABLE_CHOICES,
            doc="torch.cuda.is_available(): 'target' = True only on an accelerator target (npu); "
            "'true' = always (exercise CUDA-only branches on cpu, with the attention patch); 'false' = never",
        ),
    },
    skip_reason=_skip,
    setup=_setup,
    stats=_stats,
)
