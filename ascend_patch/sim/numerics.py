"""Numerical behaviour of real NPU kernels that differs from CPU/CUDA, reproduced on the simulator.

GELU: torch_npu's ``gelu`` kernel ignores ``approximate`` and calls aclnnGelu, whose formula is
the tanh approximation (op-plugin ``op_plugin/ops/opapi/GeluKernelNpuOpApi.cpp``); ``gelu_backward``
likewise runs aclnnGeluBackward unless the compatible implementation is switched on
(``GeluBackwardKernelNpuOpApi.cpp``: ``static auto gelu_sc = CheckCompatibleImpl()``, i.e.
``TORCH_NPU_USE_COMPATIBLE_IMPL=1`` read once, at the first call). That is the DINOv2 precision
problem: 1.33 % relative error against GPU with the default GELU. ``torch_npu.npu_gelu(x,
approximate='none')`` is exact and is not affected (see :mod:`.ops`).
"""

from __future__ import annotations

import os

import torch

aten = torch.ops.aten

GELU_OPS = frozenset({
    aten.gelu.default, aten.gelu.out, aten.gelu_.default,
    aten.gelu_backward.default, aten.gelu_backward.grad_input,
})  # fmt: skip

COMPATIBLE_IMPL_ENV = "TORCH_NPU_USE_COMPATIBLE_IMPL"
_compatible_impl: bool | None = None


def compatible_impl() -> bool:
    """Whether ``TORCH_NPU_USE_COMPATIBLE_IMPL=1`` was set; read once, at the first GELU, as torch_npu does."""
    global _compatible_impl
    if _compatible_impl is None:
        _compatible_impl = os.environ.get(COMPATIBLE_IMPL_ENV) == "1"
    return _compatible_impl


def npu_gelu_kwargs(kwargs: dict) -> dict:
    """The keyword arguments aten.gelu / gelu_backward really run with on an NPU."""
    if compatible_impl():
        return kwargs
    return dict(kwargs, approximate="tanh")
