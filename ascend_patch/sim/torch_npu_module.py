"""The ``torch_npu`` module the simulator puts in ``sys.modules``.

It carries a ``__spec__`` so ``importlib.util.find_spec("torch_npu")`` (how transformers and
accelerate probe for torch_npu) finds it, a ``__version__`` that says it is simulated, the device
module as ``torch_npu.npu`` and the reference ops of :mod:`.ops`. Nothing else of torch_npu exists
here: code that needs more (``torch_npu.contrib.transfer_to_npu``, other custom ops) fails with an
AttributeError or ImportError, which is the honest answer.
"""

from __future__ import annotations

import importlib.machinery
import sys
import types

from . import amp, device_module, ops

# The torch_npu release whose op schemas the reference ops follow (tests/data/npu_op_schemas.json).
SCHEMA_VERSION = "2.13.0"
VERSION = f"{SCHEMA_VERSION}.sim"
ORIGIN = "ascend_patch.sim (simulated torch_npu)"


def is_simulated(module: object) -> bool:
    return getattr(module, "__ascend_patch_sim__", False) is True


def build() -> types.ModuleType:
    module = types.ModuleType("torch_npu", "Simulated torch_npu (ascend_patch.sim): CPU-backed, for testing only.")
    module.__spec__ = importlib.machinery.ModuleSpec("torch_npu", loader=None, origin=ORIGIN)
    module.__version__ = VERSION
    module.__ascend_patch_sim__ = True
    module.npu = device_module
    module.npu_gelu = ops.npu_gelu
    module.npu_fusion_attention = ops.npu_fusion_attention
    return module


def install_into_sys_modules() -> types.ModuleType:
    module = build()
    sys.modules["torch_npu"] = module
    sys.modules["torch_npu.npu"] = device_module
    sys.modules["torch_npu.npu.amp"] = amp
    return module
