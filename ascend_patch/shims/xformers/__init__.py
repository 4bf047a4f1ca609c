"""Stand-in for the ``xformers`` package: ``xformers.ops`` attention on SDPA (no CUDA/C++ extension).

``__version__`` is the release whose ``xformers.ops.fmha`` API the shim mirrors.
"""

__version__ = "0.0.35"
__ascend_patch_shim__ = True

# Upstream flags probed by some callers: there is no compiled extension and no Triton kernel here.
_has_cpp_library: bool = False
_is_opensource: bool = True


def _is_triton_available() -> bool:
    return False
