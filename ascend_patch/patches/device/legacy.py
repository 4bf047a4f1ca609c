"""How older CUDA code names CUDA tensors: ``x.is_cuda``, ``torch.cuda.FloatTensor``, ``x.type(...)``.

- ``Tensor.is_cuda`` / ``TypedStorage.is_cuda`` / ``UntypedStorage.is_cuda`` answer True for data on
  the target exactly when ``torch.cuda.is_available()`` answers True (the ``cuda_is_available``
  policy), so ``assert q.is_cuda`` guards in flash_attn call sites pass on an NPU. PyTorch's own
  code keeps the true answer (``nn.LSTM.flatten_parameters`` would otherwise reach for cuDNN).
- ``torch.cuda.<T>Tensor`` (Float, Double, Half, BFloat16, Long, Int, Short, Char, Byte, Bool) build
  the CPU legacy type's tensor and move it to the target; ``isinstance(x, torch.cuda.FloatTensor)``
  is "float32 on the target". DoubleTensor stays float64 (torch_npu's transfer_to_npu silently makes
  it float32; we change no dtype the code asked for).
- ``Tensor.type("torch.cuda.HalfTensor")`` and ``Tensor.type(torch.cuda.HalfTensor)`` convert the
  dtype and move to the target.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import torch

from ...engine import calls
from ...engine.patch import PatchContext
from ...engine.slots import AttrSlot
from .mapping import call_counter, placement
from .policy import cuda_available_answer

LEGACY_TENSOR_TYPES: dict[str, torch.dtype] = {
    "FloatTensor": torch.float32, "DoubleTensor": torch.float64, "HalfTensor": torch.float16,
    "BFloat16Tensor": torch.bfloat16, "LongTensor": torch.int64, "IntTensor": torch.int32,
    "ShortTensor": torch.int16, "CharTensor": torch.int8, "ByteTensor": torch.uint8, "BoolTensor": torch.bool,
}  # fmt: skip
_LEGACY_NAMES = {dtype: name for name, dtype in LEGACY_TENSOR_TYPES.items()}
LEGACY_STORAGE_KINDS = ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool")


def _is_cuda(original: Any, ctx: PatchContext, device_of: Callable[[Any], torch.device]) -> property:
    """A property answering ``is_cuda`` for data on the target per the ``cuda_is_available`` policy."""
    answer = cuda_available_answer(ctx)
    target = ctx.device
    read = original.__get__

    def is_cuda(self: Any) -> bool:
        if not answer or not ctx.active or calls.called_by_torch(sys._getframe(1)):
            return read(self, type(self))
        return device_of(self).type == target or read(self, type(self))

    return property(is_cuda, doc=f"ascend_patch: True for data on the target ({target}) as well as on CUDA")


def tensor_is_cuda(original: Any, ctx: PatchContext) -> property:
    return _is_cuda(original, ctx, lambda t: t.device)


def storage_is_cuda(original: Any, ctx: PatchContext) -> property:
    return _is_cuda(original, ctx, lambda s: s.device)


def legacy_tensor_type(name: str) -> Callable[[Any, PatchContext], type]:
    """``torch.cuda.<name>``: a class whose instances are tensors of its dtype on the target."""
    dtype = LEGACY_TENSOR_TYPES[name]
    api = f"torch.cuda.{name}"

    def build(original: Any, ctx: PatchContext) -> type:
        host_type = getattr(torch, name)  # torch.FloatTensor & co: the CPU legacy constructors
        counter = call_counter(api)
        target, place = ctx.device, placement(ctx)
        change = f'{api}(...) -> torch.{name}(...).to("{place}")'

        class LegacyTypeMeta(type):
            def __call__(cls, *args: Any, **kwargs: Any) -> torch.Tensor:
                if not ctx.active:
                    return original(*args, **kwargs)
                counter[0] += 1
                if calls.STATE.enabled:
                    calls.log_call("device", api, change)
                return host_type(*args, **kwargs).to(place)

            def __instancecheck__(cls, instance: Any) -> bool:
                return isinstance(instance, torch.Tensor) and instance.dtype == dtype and instance.device.type == target

        return LegacyTypeMeta(name, (), {"__module__": "torch.cuda", "dtype": dtype, "__wrapped__": original})

    return build


def _legacy_dtype(spec: Any) -> torch.dtype | None:
    """The dtype of ``"torch.cuda.HalfTensor"`` / a ``torch.cuda.HalfTensor`` stand-in; None for anything else."""
    if isinstance(spec, str):
        module, _, name = spec.rpartition(".")
        return LEGACY_TENSOR_TYPES.get(name) if module == "torch.cuda" else None
    if isinstance(spec, type) and getattr(spec, "__module__", "") == "torch.cuda":
        return LEGACY_TENSOR_TYPES.get(spec.__name__)
    return None


def tensor_type(original: Callable[..., Any], ctx: PatchContext) -> Callable[..., Any]:
    """``Tensor.type(cuda_type)`` -> the dtype on the target; every other call is PyTorch's."""
    counter = call_counter("Tensor.type")
    target = placement(ctx)

    @functools.wraps(original)
    def type_(self: torch.Tensor, dtype: Any = None, non_blocking: bool = False, **kwargs: Any) -> Any:
        wanted = _legacy_dtype(dtype) if dtype is not None and ctx.active else None
        if wanted is None:
            return original(self, dtype, non_blocking, **kwargs) if dtype is not None else original(self)
        counter[0] += 1
        if calls.STATE.enabled:
            change = f'x.type(torch.cuda.{_LEGACY_NAMES[wanted]}) -> x.to("{target}", {wanted})'
            calls.log_call("device", "Tensor.type", change)
        return self.to(target, wanted, non_blocking=non_blocking)

    return type_


_LEGACY_TYPE_CLASS = type(torch.FloatTensor)  # torch.tensortype: what set_default_tensor_type accepts


class _DefaultType:
    """The dtype of a CUDA default tensor type set through ``set_default_tensor_type`` (None: not set)."""

    dtype: torch.dtype | None = None


_default_type = _DefaultType()


def set_default_tensor_type(original: Callable[..., None], ctx: PatchContext) -> Callable[..., None]:
    """``torch.set_default_tensor_type(torch.cuda.HalfTensor)`` (Llama 2's generation.py) on the target.

    A cpu target takes the CPU legacy type, an NPU torch_npu's own (``torch.npu.HalfTensor``): factories
    and the legacy constructor ``torch.Tensor(rows, cols)`` (fairscale's layers) follow it. Without
    legacy types (the simulated NPU) the dtype and the target become the defaults, and ``torch.Tensor``
    gets a constructor that follows them, installed through the journal only then: dynamo refuses a
    patched ``Tensor.__new__``, so it must not be there for code that never asks for a CUDA type.
    Like any default the code sets, the dtype and device outlive revert.
    """
    target, place = ctx.device, placement(ctx)

    @functools.wraps(original)
    def set_default_tensor_type_(t: Any) -> None:
        wanted = _legacy_dtype(t) if ctx.active else None
        if wanted is None:
            if _default_type.dtype is not None:  # back from a CUDA type: factories follow it to the CPU again
                torch.set_default_device(None)
                _default_type.dtype = None
            original(t)
            return
        name = next(n for n, d in LEGACY_TENSOR_TYPES.items() if d == wanted)
        own_type = getattr(torch if target == "cpu" else getattr(torch, target, None), name, None)
        if calls.STATE.enabled:
            calls.log_call("device", "torch.set_default_tensor_type",
                           f'torch.set_default_tensor_type(torch.cuda.{name}) -> {wanted} on "{place}" by default')
        if isinstance(own_type, _LEGACY_TYPE_CLASS):
            original(own_type)
            return
        torch.set_default_dtype(wanted)
        torch.set_default_device(place)
        if _default_type.dtype is None and not isinstance(vars(torch.Tensor).get("__new__"), staticmethod):
            ctx.replace(AttrSlot(torch.Tensor, "__new__"), _legacy_constructor(ctx), note="CUDA default tensor type")
        _default_type.dtype = wanted

    return set_default_tensor_type_


def _legacy_constructor(ctx: PatchContext) -> staticmethod:
    """``torch.Tensor(*sizes | data)`` under a CUDA default tensor type: on the target, in its dtype."""
    new = torch._C.TensorBase.__new__
    target = placement(ctx)

    def __new__(cls: type, *args: Any, **kwargs: Any) -> Any:
        tensor = new(cls, *args, **kwargs)
        dtype = _default_type.dtype
        if dtype is None or cls is not torch.Tensor or not ctx.active:
            return tensor
        return tensor.to(device=target, dtype=dtype)

    return staticmethod(__new__)
