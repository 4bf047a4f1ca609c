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
from typing import Any, Callable

import torch

from ..engine import calls
from ..engine.patch import Patch, PatchContext, Replace


def map_device_type(device_type: Any, ctx: PatchContext, api: str) -> Any:
    """``"cuda"`` / ``"cuda:N"`` -> the target device type (logged per call site); else unchanged."""
    if ctx.active and isinstance(device_type, str) and device_type.split(":", 1)[0] == "cuda":
        if calls.STATE.enabled:
            calls.log_call("autocast", f"{api}({device_type!r})", f"-> {api}({ctx.device!r})")
        return ctx.device
    return device_type


def _autocast_init(original: Callable[..., None], ctx: PatchContext) -> Callable[..., None]:
    @functools.wraps(original)
    def __init__(self: Any, device_type: str, *args: Any, **kwargs: Any) -> None:
        original(self, map_device_type(device_type, ctx, "torch.autocast"), *args, **kwargs)

    return __init__


def _cuda_autocast_new(original: Any, ctx: PatchContext) -> staticmethod:
    # The deprecated() wrapper lives in __new__; object.__new__ is what the base class uses.
    def __new__(cls: type, *args: Any, **kwargs: Any) -> Any:
        return object.__new__(cls)

    return staticmethod(__new__)


def _cuda_autocast_init(original: Callable[..., None], ctx: PatchContext) -> Callable[..., None]:
    def __init__(
        self: Any, enabled: bool = True, dtype: torch.dtype = torch.float16, cache_enabled: bool = True
    ) -> None:
        torch.amp.autocast_mode.autocast.__init__(
            self, "cuda", enabled=enabled, dtype=dtype, cache_enabled=cache_enabled
        )

    return __init__


def _grad_scaler_init(original: Callable[..., None], ctx: PatchContext) -> Callable[..., None]:
    @functools.wraps(original)
    def __init__(self: Any, device: str = "cuda", *args: Any, **kwargs: Any) -> None:
        original(self, map_device_type(device, ctx, "torch.amp.GradScaler"), *args, **kwargs)

    return __init__


def _cuda_grad_scaler_init(original: Callable[..., None], ctx: PatchContext) -> Callable[..., None]:
    def __init__(
        self: Any,
        init_scale: float = 2.0**16,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        growth_interval: int = 2000,
        enabled: bool = True,
    ) -> None:
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
    ),
)
