"""Stand-ins for PyTorch classes whose npu instances need C++ a Python backend cannot register.

``torch.Generator(device="npu")`` needs ``PrivateUse1HooksInterface::getNewGenerator`` and a timed
``torch.Event("npu")`` needs event support in the device guard; PyTorch's Python backend API offers
neither (torch/csrc/acc/Module.cpp). ``install()`` puts a stand-in at ``torch.Generator`` /
``torch.Event``: a subclass of the original whose constructor builds the simulator's own object for
an npu device and the original's for every other device. ``isinstance(x, torch.Generator)`` still
holds for every generator, and user subclasses construct themselves as before; on the device a
``torch.Generator`` subclass is built as a subclass of it that is also the simulator's generator
(:func:`.rng.new_npu_subclass`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .unsupported import unsupported


def _is_npu(device: Any) -> bool:
    import torch

    if isinstance(device, torch.device):
        return device.type == "npu"
    return isinstance(device, str) and device.strip().split(":", 1)[0] == "npu"


def device_class(original: type, on_npu: Callable[..., Any], on_npu_subclass: Callable[..., Any] | None = None) -> type:
    """A stand-in for ``original`` whose npu instances are ``on_npu(*args, **kwargs)``.

    A user subclass builds itself through the stand-in's ``__new__``, so that a ``__new__`` in
    between (the user's own, or the "device" patch's, which maps "cuda" to "npu") has run before the
    device is looked at: on the device ``on_npu_subclass(cls, *args, **kwargs)`` builds it (None:
    refused with SimUnsupportedError), elsewhere the original's constructor does.
    """

    class StandInMeta(type(original)):  # type: ignore[misc]
        def __call__(cls, *args: Any, **kwargs: Any) -> Any:
            if cls is not stand_in:
                return super().__call__(*args, **kwargs)  # a user subclass builds itself: __new__ below
            npu = _is_npu(args[0] if args else kwargs.get("device"))
            return on_npu(*args, **kwargs) if npu else original(*args, **kwargs)

        def __instancecheck__(cls, instance: Any) -> bool:
            return isinstance(instance, original) if cls is stand_in else type.__instancecheck__(cls, instance)

        def __subclasscheck__(cls, subclass: type) -> bool:
            return issubclass(subclass, original) if cls is stand_in else type.__subclasscheck__(cls, subclass)

    def __new__(cls: type, *args: Any, **kwargs: Any) -> Any:
        if _is_npu(args[0] if args else kwargs.get("device")):
            if on_npu_subclass is None:
                raise unsupported(f"subclasses of torch.{original.__name__} on the device ({cls.__qualname__})")
            return on_npu_subclass(cls, *args, **kwargs)
        return original.__new__(cls, *args, **kwargs)  # type: ignore[call-overload]

    stand_in = StandInMeta(
        original.__name__,
        (original,),
        {"__doc__": original.__doc__, "__module__": "torch", "__new__": staticmethod(__new__)},
    )
    return stand_in
