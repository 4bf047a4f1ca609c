"""Stand-in for ``flash_attn.layers`` (only ``rotary`` is provided)."""

__ascend_patch_shim__ = True
