"""The simulated device's random number generator.

A real NPU has its own generator, seeded by ``torch.manual_seed`` (through
``torch.npu.manual_seed_all``) and independent of the CPU one. The simulator keeps a dedicated
CPU ``torch.Generator`` for the same role, so ``torch.randn(..., device="npu")`` is
deterministic after ``torch.manual_seed`` and does not advance the CPU stream.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

DEFAULT_SEED = 67280421310721  # PyTorch's default_rng_seed_val, also what torch_npu starts from

generator = torch.Generator()
generator.manual_seed(DEFAULT_SEED)


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
