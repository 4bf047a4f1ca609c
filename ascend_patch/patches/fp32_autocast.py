"""fp32_autocast: what ``autocast(dtype=torch.float32)`` means on a device that rejects it.

On CUDA, ``autocast(dtype=torch.float32)`` is a legal way to say "run this region in fp32"
(MingTok's pixel decoder does it). torch_npu <= 2.9 and the CPU autocast support fp16/bf16 only:
PyTorch warns "target dtype is not supported. Disabling autocast" and the region runs in
whatever dtype its inputs have. The ``fp32_autocast`` option chooses:

- ``"fp32"`` (default): CUDA's meaning: autocast off and the inputs of the ops CUDA autocast
  casts (matmul/conv/linear/SDPA and the fp32 list: norms, softmax, losses, ...) upcast to fp32.
  Code that asserts ``x.dtype == torch.float32`` inside such a region keeps working, and no number
  changes that the user did not ask to change.
- ``"bf16"``: downgrade the region to bf16 autocast (faster, less precise).
- ``"auto"``: ``"bf16"`` on npu, ``"fp32"`` on cpu/cuda targets: what the MingTok NPU port chose,
  and the ``mingtok`` recipe's default.
- ``"off"``: leave PyTorch's behaviour.

Before::

    with torch.autocast("npu", dtype=torch.float32):   # warning, autocast silently off
        img = pixel_decoder(h)                         # runs in the model's bf16

After ``apply("fp32_autocast", fp32_autocast="fp32")`` the region computes in fp32.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import torch
from torch.overrides import TorchFunctionMode

from ..engine import calls, runtime
from ..engine.patch import Option, Patch, PatchContext, Replace

POLICIES = ("fp32", "bf16", "auto", "off")

# Ops CUDA autocast casts to its dtype (the lower-precision list) or to fp32 (the fp32 list):
# under autocast(dtype=float32) both run in fp32. Names as seen by __torch_function__.
_UPCAST_OPS = frozenset(
    """linear matmul __matmul__ __rmatmul__ mm bmm baddbmm addmm addbmm addmv addr mv dot vdot chain_matmul
    multi_dot einsum conv1d conv2d conv3d conv_transpose1d conv_transpose2d conv_transpose3d conv_tbc prelu
    scaled_dot_product_attention lstm_cell gru_cell rnn_tanh_cell rnn_relu_cell
    layer_norm group_norm rms_norm batch_norm instance_norm norm softmax log_softmax logsumexp cumsum cumprod
    sum prod exp expm1 log log10 log2 log1p pow reciprocal rsqrt acos asin cosh sinh tan erfinv softplus
    cosine_similarity dist pdist cdist renorm interpolate cross_entropy nll_loss mse_loss l1_loss
    smooth_l1_loss huber_loss kl_div binary_cross_entropy_with_logits""".split()
)
_LOW = (torch.float16, torch.bfloat16)


def _upcast(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.dtype in _LOW:
        return value.float()
    if isinstance(value, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in value):
        return type(value)(_upcast(v) for v in value)
    return value


class UpcastToFloat32(TorchFunctionMode):
    """Inside an fp32 region: fp16/bf16 inputs of autocast-listed ops are computed in fp32."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") in _UPCAST_OPS and "out" not in kwargs:
            args = tuple(_upcast(a) for a in args)
            kwargs = {k: _upcast(v) for k, v in kwargs.items()}
        return func(*args, **kwargs)


def supports_fp32_autocast(device_type: str) -> bool:
    if device_type == "cuda":
        return True
    if device_type == torch._C._get_privateuse1_backend_name():
        module = getattr(torch, device_type, None)
        return module is not None and torch.float32 in module.get_amp_supported_dtype()
    return False  # cpu, xpu, mps, ...: PyTorch's autocast accepts bf16/fp16 only


def effective_device(device_type: str) -> str:
    """Where a region really runs: a "cuda" region goes to the target when autocast is active."""
    autocast_ctx = runtime.context_of("autocast")
    if autocast_ctx is not None and device_type.split(":", 1)[0] == "cuda":
        return autocast_ctx.device
    return device_type


def policy_for(ctx: PatchContext, device_type: str) -> str:
    policy = ctx.options["fp32_autocast"]
    if policy == "auto":
        return "bf16" if device_type == "npu" else "fp32"
    return policy


def _init(original: Callable[..., None], ctx: PatchContext) -> Callable[..., None]:
    @functools.wraps(original)
    def __init__(
        self: Any,
        device_type: str,
        dtype: torch.dtype | None = None,
        enabled: bool = True,
        cache_enabled: bool | None = None,
    ) -> None:
        self._ascend_patch_upcast = False
        if ctx.active and enabled and dtype is torch.float32 and isinstance(device_type, str):
            device = effective_device(device_type)
            if not supports_fp32_autocast(device):
                policy = policy_for(ctx, device)
                if policy == "bf16":
                    dtype = torch.bfloat16
                    change = f"-> torch.autocast({device!r}, dtype=bfloat16) [fp32_autocast=bf16]"
                    category = calls.CHANGED  # bf16 where the code asked for fp32
                elif policy == "fp32":
                    enabled = False
                    self._ascend_patch_upcast = True
                    change = "-> autocast off, inputs upcast to float32 [fp32_autocast=fp32]"
                    category = calls.MAPPED  # fp32, as on CUDA
                else:
                    change = "-> unchanged: PyTorch disables the region [fp32_autocast=off]"
                    category = calls.CHANGED  # the enclosing autocast dtype applies inside
                if calls.STATE.enabled:
                    calls.log_call("fp32_autocast", f"autocast({device_type!r}, dtype=float32)", change, category)
        original(self, device_type, dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)

    return __init__


def _enter(original: Callable[..., Any], ctx: PatchContext) -> Callable[..., Any]:
    @functools.wraps(original)
    def __enter__(self: Any) -> Any:
        result = original(self)
        if getattr(self, "_ascend_patch_upcast", False):
            mode = UpcastToFloat32()
            mode.__enter__()
            self.__dict__.setdefault("_ascend_patch_modes", []).append(mode)
        return result

    return __enter__


def _exit(original: Callable[..., Any], ctx: PatchContext) -> Callable[..., Any]:
    @functools.wraps(original)
    def __exit__(self: Any, *exc: Any) -> Any:
        modes = self.__dict__.get("_ascend_patch_modes")
        if modes:
            modes.pop().__exit__(*exc)
        return original(self, *exc)

    return __exit__


PATCH = Patch(
    name="fp32_autocast",
    summary="autocast(dtype=float32) regions follow a policy (bf16 downgrade / fp32 semantics) where unsupported",
    replaces=(
        Replace("torch.amp.autocast_mode:autocast.__init__", _init),
        Replace("torch.amp.autocast_mode:autocast.__enter__", _enter),
        Replace("torch.amp.autocast_mode:autocast.__exit__", _exit),
    ),
    options={
        "fp32_autocast": Option(
            "fp32",
            POLICIES,
            "fp32: CUDA semantics (no autocast, inputs upcast); bf16: downgrade; auto: bf16 on npu only; "
            "off: PyTorch's",
        )
    },
)
