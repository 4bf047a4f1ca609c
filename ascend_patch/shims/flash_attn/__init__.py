"""Stand-in for the ``flash_attn`` package (flash-attention 2.x API) backed by
``torch.nn.functional.scaled_dot_product_attention``; see ``flash_attn_interface``.

``__version__`` is the newest 2.x release whose API this shim reproduces (signatures of all seven
functions, 5-value ``bert_padding.unpad_input``, ``softcap``/``window_size``/``alibi_slopes``/
``block_table``). transformers' ``is_flash_attn_greater_or_equal`` compares against it.
"""

from .flash_attn_interface import (
    flash_attn_func,
    flash_attn_kvpacked_func,
    flash_attn_qkvpacked_func,
    flash_attn_varlen_func,
    flash_attn_varlen_kvpacked_func,
    flash_attn_varlen_qkvpacked_func,
    flash_attn_with_kvcache,
)

__version__ = "2.8.3"
__ascend_patch_shim__ = True

__all__ = [
    "flash_attn_func", "flash_attn_kvpacked_func", "flash_attn_qkvpacked_func", "flash_attn_varlen_func",
    "flash_attn_varlen_kvpacked_func", "flash_attn_varlen_qkvpacked_func", "flash_attn_with_kvcache",
]  # fmt: skip
