"""``Tensor.pin_memory()`` with the simulated NPU as the accelerator.

Once PrivateUse1 is a registered backend, PyTorch asks it for the pinned-memory allocator
(``PrivateUse1HooksInterface::getPinnedMemoryAllocator``), which a Python backend cannot provide, so
``pin_memory()`` raises - and ``DataLoader(pin_memory=True)`` with it. Host memory needs no pinning
here (copies to the simulated device are plain CPU copies), so a CPU kernel for ``aten::_pin_memory``
returns an ordinary copy. Not covered: ``is_pinned()`` stays False, and factories called with
``pin_memory=True`` (``torch.empty(..., pin_memory=True)``) still raise.
"""

from __future__ import annotations

import torch

_libraries: list[torch.library.Library] = []  # kept alive: dropping a Library unregisters it


def _pin_memory(self: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
    return self.clone(memory_format=torch.preserve_format)


def register() -> None:
    library = torch.library.Library("aten", "IMPL")
    # A CPU kernel wins over the CompositeExplicitAutograd one that asks the backend hooks.
    library.impl("_pin_memory", _pin_memory, "CPU")
    _libraries.append(library)
