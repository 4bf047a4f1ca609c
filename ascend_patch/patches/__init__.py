"""The generic patches, as data: name -> module defining ``PATCH``.

Modules are imported only when a patch is used (ddtrace's lazy table), so importing
ascend_patch stays cheap and never pulls in transformers or torch_npu.
"""

from __future__ import annotations

import importlib

from ..engine.patch import Patch

PATCH_MODULES: dict[str, str] = {
    "autocast": "ascend_patch.patches.autocast",
    "fp32_autocast": "ascend_patch.patches.fp32_autocast",
    "attention": "ascend_patch.patches.attention",
    "gelu": "ascend_patch.patches.gelu",
    "seed": "ascend_patch.patches.seed",
    "device": "ascend_patch.patches.device",
    "distributed": "ascend_patch.patches.distributed",
}

# What ``apply()`` with no names switches on, in this order. fp32_autocast before autocast is
# not required (each maps "cuda" itself) but keeps the wrapper stack the same in every run.
DEFAULT_PATCHES: tuple[str, ...] = (
    "fp32_autocast", "autocast", "attention", "gelu", "seed", "device", "distributed",
)  # fmt: skip


def patch_names() -> list[str]:
    return list(PATCH_MODULES)


def get_patch(name: str) -> Patch:
    patch = importlib.import_module(PATCH_MODULES[name]).PATCH
    assert isinstance(patch, Patch) and patch.name == name, f"{PATCH_MODULES[name]}.PATCH must be Patch({name!r})"
    return patch
