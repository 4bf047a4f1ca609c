"""SDPA-backed stand-ins for packages with no NPU (or CPU) build: ``flash_attn`` and ``xformers``.

The modules under ``ascend_patch.shims.flash_attn`` and ``ascend_patch.shims.xformers`` mirror the
upstream module layout and are put into ``sys.modules`` under the upstream names by the
``attention`` patch. All of them compute through :func:`ascend_patch.shims.sdpa.attention`.
Every shim module carries ``__ascend_patch_shim__ = True``.
"""

__ascend_patch_shim__ = True
