"""The simulated device's random number generators.

A real NPU has its own generator, seeded by ``torch.manual_seed`` (through
``torch.npu.manual_seed_all``) and independent of the CPU one. The simulator keeps a dedicated
CPU generator for the same role, so ``torch.randn(..., device="npu")`` is deterministic after
``torch.manual_seed`` and does not advance the CPU stream.

``torch.Generator(device="npu")`` builds an :class:`NpuGenerator` (a CPU generator that reports
``npu:0``) through the stand-in of :mod:`.standins`; a user's subclass on the device builds a
subclass of it that is also an :class:`NpuGenerator` (:func:`new_npu_subclass`).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import Any

import torch

DEFAULT_SEED = 67280421310721  # PyTorch's default_rng_seed_val, also what torch_npu starts from

_CGenerator = torch._C.Generator


def _npu_device() -> torch.device:
    from .tensor import device

    return device()


class NpuGenerator(_CGenerator):
    """A generator of the simulated ``npu:0``: CPU draws, an npu device."""

    def __new__(cls, *args: Any, **kwargs: Any) -> NpuGenerator:  # noqa: PYI034 - subclasses too
        # The C++ object is a CPU generator whatever device was asked (checked by the caller).
        gen = _CGenerator.__new__(cls)
        # Ops receive a fresh Python object around the same C++ generator: tell ours by address.
        _npu_generators[gen._cdata] = gen
        return gen

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass  # registered in __new__, which a user subclass's __init__ cannot skip

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return _npu_device()

    def __reduce__(self) -> tuple[Any, ...]:
        # The C class pickles (device, seed, offset, state) and would rebuild on "npu" through it.
        return _rebuild, (self.get_state(),)

    def __repr__(self) -> str:
        return f"<torch.Generator object on {self.device} (simulated)>"


def _rebuild(state: torch.Tensor) -> NpuGenerator:
    gen = NpuGenerator()
    gen.set_state(state)
    return gen


def _new_npu_generator(device: Any = "npu") -> NpuGenerator:
    from .device_module import _index

    _index(device)  # the errors torch_npu gives for a bad index
    return NpuGenerator()


_npu_generators: weakref.WeakValueDictionary[int, NpuGenerator] = weakref.WeakValueDictionary()
_npu_variants: dict[type, type] = {}


def _npu_variant(cls: type) -> type:
    """``cls`` (a user's torch.Generator subclass) made an npu generator: a subclass of both, same name.

    PyTorch's Python backend API cannot create a PrivateUse1 generator, so an instance of ``cls``
    itself could only report the CPU; this class reports npu:0, is accepted by npu ops, and has
    ``cls``'s methods and ``isinstance(g, cls)``. ``type(g) is cls`` is the one thing that differs.
    """
    variant = _npu_variants.get(cls)
    if variant is None:
        namespace = {
            "__module__": cls.__module__, "__qualname__": cls.__qualname__, "__doc__": cls.__doc__,
            # type(g)() and copies build on the device again, skipping the constructors already run.
            "__new__": staticmethod(lambda klass, *args, **kwargs: NpuGenerator.__new__(klass)),
        }  # fmt: skip
        variant = _npu_variants[cls] = type(cls)(cls.__name__, (cls, NpuGenerator), namespace)
    return variant


def new_npu_subclass(cls: type, *args: Any, **kwargs: Any) -> NpuGenerator:
    """``MyGen(device="npu")`` for ``class MyGen(torch.Generator)``: see :func:`_npu_variant`."""
    from .device_module import _index

    _index(args[0] if args else kwargs.get("device"))  # the errors torch_npu gives for a bad index
    return NpuGenerator.__new__(_npu_variant(cls))


def check_device_generator(gen: Any) -> None:
    """The error torch_npu raises when an npu op is given a generator of another device."""
    if gen is not None and gen._cdata not in _npu_generators:
        raise RuntimeError(f"Expected a 'npu' device type for generator but found '{gen.device.type}'")


generator = NpuGenerator()
generator.manual_seed(DEFAULT_SEED)


def install() -> None:
    from .standins import device_class

    torch.Generator = device_class(_CGenerator, _new_npu_generator, new_npu_subclass)  # type: ignore[misc]


@contextlib.contextmanager
def as_default() -> Iterator[None]:
    """Run a random op that takes no ``generator`` argument (``native_dropout``) on our generator.

    Such ops draw from the CPU default generator; swap our state in and out around the call.
    """
    cpu = torch.default_generator
    saved = cpu.get_state()
    cpu.set_state(generator.get_state())
    try:
        yield
    finally:
        generator.set_state(cpu.get_state())
        cpu.set_state(saved)
