"""``torch.npu.amp`` of the simulated device: the device-bound autocast and GradScaler torch_npu offers.

Both are thin subclasses of PyTorch's generic ``torch.amp`` classes, so the dtype check and the
"Disabling autocast" warning are PyTorch's own (``torch/amp/autocast_mode.py``), driven by
``torch.npu.get_amp_supported_dtype()`` exactly as on a real NPU.
"""

from __future__ import annotations

import torch


class autocast(torch.amp.autocast):  # torch_npu's spelling
    """``torch.npu.amp.autocast(enabled=True, dtype=torch.float16, cache_enabled=True)``."""

    def __init__(self, enabled: bool = True, dtype: torch.dtype = torch.float16, cache_enabled: bool = True) -> None:
        super().__init__("npu", dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)


class GradScaler(torch.amp.GradScaler):
    """``torch.npu.amp.GradScaler``: PyTorch's scaler bound to the npu device."""

    def __init__(
        self,
        init_scale: float = 2.0**16,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        growth_interval: int = 2000,
        enabled: bool = True,
    ) -> None:
        super().__init__("npu", init_scale, growth_factor, backoff_factor, growth_interval, enabled)
