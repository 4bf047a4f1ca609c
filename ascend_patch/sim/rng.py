"""The simulated device's random number generators.

A real NPU has its own generator, seeded by ``torch.manual_seed`` (through
``torch.npu.manual_seed_all``) and independent of the CPU one. The simulator keeps a dedicated
CPU generator for the same role, so ``torch.randn(..., device="npu")`` is deterministic after
``torch.manual_seed`` and does not advance the CPU stream.

``torch.Generator(device="npu")`` builds an :class:`NpuGenerator` (a CPU generator that reports
``npu:0``) through the stand-in of :mod:`.standins`.
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

    def __init__(self, *args: Any) -> None:
        # Ops receive a fresh Python object around the same C++ generator: tell ours by address.
        _npu_generators[self._cdata] = self

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


def check_device_generator(gen: Any) -> None:
    """The error torch_npu raises when an npu op is given a generator of another device."""
    if gen is not None and gen._cdata not in _npu_generators:
        raise RuntimeError(f"Expected a 'npu' device type for generator but found '{gen.device.type}'")


generator = NpuGenerator()
generator.manual_seed(DEFAULT_SEED)


def install() -> None:
    from .standins import device_class

    torch.Generator = device_class(_CGenerator, _new_npu_generator)  # type: ignore[misc]


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
