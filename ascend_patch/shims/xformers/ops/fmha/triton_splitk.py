"""Stand-in for ``xformers.ops.fmha.triton_splitk``: placeholder ``FwOp``/``BwOp`` (the shim always runs SDPA)."""

from .common import _make_ops

__ascend_patch_shim__ = True

FwOp, BwOp = _make_ops(__name__, "triton_splitK")
