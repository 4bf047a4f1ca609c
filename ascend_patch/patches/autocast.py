"""autocast: CUDA autocast / GradScaler / custom_fwd act on the target device.

Before::

    with torch.cuda.amp.autocast(dtype=torch.bfloat16):   # on NPU: warns, runs in fp32
        y = model(x)

After ``apply("autocast")`` the same line is ``torch.autocast(<target>, dtype=torch.bfloat16)``.

We patch the classes' ``__init__`` rather than the module attributes: the class object is what
``from torch.cuda.amp import autocast`` copies, so every copy is covered without a search.
``torch.cuda.amp.autocast`` is deprecated upstream: its ``__new__`` warns, so ours skips that
and calls the base ``__init__`` directly (looked up at call time, so stacked patches compose).
"""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable

import torch

from ..engine import calls
from ..engine.patch import Patch, PatchContext, Replace


def map_device_type(device_type: Any, ctx: PatchContext, api: str, log: bool = True) -> Any:
    """``"cuda"`` / ``"cuda:N"`` -> the target device type (logged per call site); else unchanged."""
    if ctx.active and isinstance(device_type, str) and device_type.split(":", 1)[0] == "cuda":
        if calls.STATE.enabled and log:
            calls.log_call("autocast", f"{api}({device_type!r})", f'{api}("{device_type}") -> {api}("{ctx.device}")')
        return ctx.device
    return device_type


def _autocast_init(original: Callable[..., None], ctx: PatchContext) -> Callable[..., None]:
    @functools.wraps(original)
    def __init__(self: Any, device_type: str, *args: Any, **kwargs: Any) -> None:
        # torch.cuda.amp.autocast logs itself, as the user wrote it
        log = not isinstance(self, torch.cuda.amp.autocast)
        original(self, map_device_type(device_type, ctx, "torch.autocast", log), *args, **kwargs)

    return __init__


def _cuda_autocast_new(original: Any, ctx: PatchContext) -> staticmethod:
    # The deprecated() wrapper lives in __new__; object.__new__ is what the base class uses.
    def __new__(cls: type, *args: Any, **kwargs: Any) -> Any:
        return object.__new__(cls)

    return staticmethod(__new__)


def _cuda_autocast_init(original: Callable[..., None], ctx: PatchContext) -> Callable[..., None]:
    change = f'torch.cuda.amp.autocast(...) -> torch.autocast("{ctx.device}", ...)'

    def __init__(
        self: Any, enabled: bool = True, dtype: torch.dtype = torch.float16, cache_enabled: bool = True
    ) -> None:
        # Logged here (the user wrote torch.cuda.amp.autocast); the base __init__ maps "cuda" unlogged.
        if ctx.active and calls.STATE.enabled:
            calls.log_call("autocast", "torch.cuda.amp.autocast", change)
        torch.amp.autocast_mode.autocast.__init__(
            self, "cuda", enabled=enabled, dtype=dtype, cache_enabled=cache_enabled
        )

    return __init__


def _grad_scaler_init(original: Callable[..., None], ctx: PatchContext) -> Callable[..., None]:
    @functools.wraps(original)
    def __init__(self: Any, device: str = "cuda", *args: Any, **kwargs: Any) -> None:
        log = not isinstance(self, torch.cuda.amp.GradScaler)  # logs itself, as the user wrote it
        original(self, map_device_type(device, ctx, "torch.amp.GradScaler", log), *args, **kwargs)

    return __init__


def _cuda_grad_scaler_init(original: Callable[..., None], ctx: PatchContext) -> Callable[..., None]:
    change = f'torch.cuda.amp.GradScaler(...) -> torch.amp.GradScaler("{ctx.device}", ...)'

    def __init__(
        self: Any,
        init_scale: float = 2.0**16,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        growth_interval: int = 2000,
        enabled: bool = True,
    ) -> None:
        if ctx.active and calls.STATE.enabled:
            calls.log_call("autocast", "torch.cuda.amp.GradScaler", change)
        torch.amp.grad_scaler.GradScaler.__init__(
            self,
            "cuda",
            init_scale=init_scale,
            growth_factor=growth_factor,
            backoff_factor=backoff_factor,
            growth_interval=growth_interval,
            enabled=enabled,
        )

    return __init__


def _amp_custom(original: Callable[..., Any], ctx: PatchContext) -> Callable[..., Any]:
    """torch.amp.custom_fwd/custom_bwd(device_type="cuda") -> the target."""

    @functools.wraps(original)
    def custom(*args: Any, device_type: str, **kwargs: Any) -> Any:
        api = f"torch.amp.{original.__name__}"
        return original(*args, device_type=map_device_type(device_type, ctx, api), **kwargs)

    return custom


def _cuda_custom_fwd(original: Callable[..., Any], ctx: PatchContext) -> Callable[..., Any]:
    def custom_fwd(fwd: Callable[..., Any] | None = None, *, cast_inputs: torch.dtype | None = None) -> Any:
        return torch.amp.custom_fwd(fwd, device_type="cuda", cast_inputs=cast_inputs)

    return custom_fwd


def _cuda_custom_bwd(original: Callable[..., Any], ctx: PatchContext) -> Callable[..., Any]:
    def custom_bwd(bwd: Callable[..., Any]) -> Any:
        return torch.amp.custom_bwd(bwd, device_type="cuda")

    return custom_bwd


def _state(name: str) -> Callable[[Callable[..., Any], PatchContext], Callable[..., Any]]:
    """``torch.is_autocast_enabled()`` & co: no device (CUDA's "GPU" default) and ``"cuda"`` mean the target.

    Inside a mapped ``torch.cuda.amp.autocast`` region, code that asks whether autocast is on (apex,
    custom kernels choosing their dtype) must hear about the region it is in. PyTorch's own callers
    always name their device and keep the original.
    """

    def build(original: Callable[..., Any], ctx: PatchContext) -> Callable[..., Any]:
        from .device.factories import _register_jit_builtin

        target = ctx.device
        api = f"torch.{name}"

        def gpu_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...] | None:
            """The call's arguments for the target, or None when it names another device."""
            device = kwargs.pop("device_type", args[0] if args and isinstance(args[0], str) else None)
            rest = args[1:] if args and isinstance(args[0], str) else args
            if device is not None and device.split(":", 1)[0] != "cuda":
                return None
            return (target, *rest, *kwargs.values())

        @functools.wraps(original)
        def state(*args: Any, **kwargs: Any) -> Any:
            if not ctx.active or calls.called_by_torch(sys._getframe(1)):
                return original(*args, **kwargs)
            if name.endswith("_gpu_dtype"):  # the deprecated GPU-only spellings
                mapped: tuple[Any, ...] | None = (target, *args)
                function = getattr(torch._C, name.replace("_gpu_dtype", "_dtype"))
            else:
                mapped, function = gpu_args(args, dict(kwargs)), original
            if mapped is None:
                return original(*args, **kwargs)
            if calls.STATE.enabled:
                calls.log_call("autocast", api, f'{api}(...) -> torch.{function.__name__}("{target}", ...)')
            return function(*mapped)

        _register_jit_builtin(original, state, api, ctx)
        return state

    return build


AUTOCAST_STATE = (
    "is_autocast_enabled", "set_autocast_enabled", "get_autocast_dtype", "set_autocast_dtype",
    "get_autocast_gpu_dtype", "set_autocast_gpu_dtype",
)  # fmt: skip

PATCH = Patch(
    name="autocast",
    summary="torch.cuda.amp.autocast / torch.autocast('cuda') / GradScaler / custom_fwd act on the target device",
    replaces=(
        Replace("torch.amp.autocast_mode:autocast.__init__", _autocast_init),
        Replace("torch.cuda.amp.autocast_mode:autocast.__new__", _cuda_autocast_new),
        Replace("torch.cuda.amp.autocast_mode:autocast.__init__", _cuda_autocast_init),
        Replace("torch.amp.grad_scaler:GradScaler.__init__", _grad_scaler_init),
        Replace("torch.cuda.amp.grad_scaler:GradScaler.__init__", _cuda_grad_scaler_init),
        Replace("torch.amp.autocast_mode:custom_fwd", _amp_custom, copies=True),
        Replace("torch.amp.autocast_mode:custom_bwd", _amp_custom, copies=True),
        Replace("torch.cuda.amp.autocast_mode:custom_fwd", _cuda_custom_fwd, copies=True),
        Replace("torch.cuda.amp.autocast_mode:custom_bwd", _cuda_custom_bwd, copies=True),
        *(Replace(f"torch:{name}", _state(name), copies=True) for name in AUTOCAST_STATE),
    ),
)
