"""Autocast for the simulated npu: casting kernels on the AutocastPrivateUse1 dispatch key.

PyTorch registers autocast kernels for CUDA, CPU, XPU, MPS... but none for PrivateUse1; torch_npu
brings its own in C++ (Ascend/pytorch ``torch_npu/csrc/aten/AutoCastOps.cpp``): a fallthrough for
every op plus casting kernels for the lists below, which follow that file (they match CUDA's lists
in ``aten/src/ATen/autocast_mode.cpp``). The policies mean what they mean there:

* lower_precision_fp: cast floating npu tensors to ``torch.get_autocast_dtype("npu")``;
* fp32: cast them to float32;
* fp32_set_opt_dtype: if the first argument is a floating npu tensor and ``dtype`` is unset, run with
  ``dtype=float32``;
* fp32_append_dtype: ``norm`` runs as its ``dtype=float32`` overload;
* promote: cast them all to the widest floating type among them.

float64 tensors and tensors on other devices are never cast, as in PyTorch. Whether autocast is on
and its dtype are PyTorch's own thread-local state (``torch.is_autocast_enabled("npu")``), and
PyTorch's ``torch.autocast`` already rejects a dtype missing from ``torch.npu.get_amp_supported_dtype()``
with "In npu autocast, but the target dtype is not supported. Disabling autocast.".
Not reproduced: the weight cast cache (a speed optimisation only).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

logger = logging.getLogger("ascend_patch.sim")

_KEY = "AutocastPrivateUse1"
_EXCLUDE = torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastPrivateUse1)

LOWER_PRECISION_FP = (
    "_convolution.deprecated", "_convolution", "conv1d", "conv2d", "conv3d", "conv_tbc", "conv_transpose1d",
    "conv_transpose2d.input", "conv_transpose3d.input", "convolution", "cudnn_convolution",
    "cudnn_convolution_transpose", "prelu", "addmm", "addmv", "addr", "matmul", "einsum", "mm", "mv", "linear",
    "addbmm", "baddbmm", "bmm", "chain_matmul", "linalg_multi_dot", "_thnn_fused_lstm_cell",
    "_thnn_fused_gru_cell", "lstm_cell", "gru_cell", "rnn_tanh_cell", "rnn_relu_cell",
    "_scaled_dot_product_flash_attention", "scaled_dot_product_attention",
)  # fmt: skip
FP32 = (
    "acos", "asin", "cosh", "erfinv", "exp", "expm1", "log", "log10", "log2", "log1p", "reciprocal", "rsqrt",
    "sinh", "tan", "pow.Tensor_Scalar", "pow.Tensor_Tensor", "pow.Scalar", "softplus", "layer_norm",
    "native_layer_norm", "group_norm", "frobenius_norm.dim", "nuclear_norm", "nuclear_norm.dim",
    "cosine_similarity", "poisson_nll_loss", "cosine_embedding_loss", "nll_loss", "nll_loss2d",
    "hinge_embedding_loss", "kl_div", "l1_loss", "smooth_l1_loss", "huber_loss", "mse_loss",
    "margin_ranking_loss", "multilabel_margin_loss", "soft_margin_loss", "triplet_margin_loss",
    "multi_margin_loss", "binary_cross_entropy_with_logits", "dist", "pdist", "cdist", "renorm", "logsumexp",
)  # fmt: skip
FP32_SET_OPT_DTYPE = (
    "prod", "prod.dim_int", "softmax.int", "log_softmax.int", "cumprod", "cumsum", "linalg_vector_norm",
    "linalg_matrix_norm", "linalg_matrix_norm.str_ord", "sum", "sum.dim_IntList",
)  # fmt: skip
FP32_APPEND_DTYPE = {"norm.Scalar": "norm.ScalarOpt_dtype", "norm.ScalarOpt_dim": "norm.ScalarOpt_dim_dtype"}
PROMOTE = (
    "addcdiv", "addcmul", "atan2", "bilinear", "cross", "dot", "grid_sampler", "index_put", "tensordot",
    "scatter_add",
)  # fmt: skip

_BCE_BANNED = (
    "torch.nn.functional.binary_cross_entropy and torch.nn.BCELoss are unsafe to autocast.\n"
    "Many models use a sigmoid layer right before the binary cross entropy layer.\n"
    "In this case, combine the two layers using torch.nn.functional.binary_cross_entropy_with_logits\n"
    "or torch.nn.BCEWithLogitsLoss.  binary_cross_entropy_with_logits and BCEWithLogits are\n"
    "safe to autocast."
)


def _eligible(x: Any) -> bool:
    return (
        isinstance(x, torch.Tensor)
        and x.is_floating_point()
        and x.device.type == "npu"
        and x.dtype is not torch.float64
    )


def _cast(value: Any, dtype: torch.dtype) -> Any:
    if _eligible(value):
        return value if value.dtype is dtype else value.to(dtype)
    if isinstance(value, (list, tuple)) and any(_eligible(v) for v in value):
        return type(value)(_cast(v, dtype) for v in value)
    return value


def _cast_all(args: tuple, kwargs: dict, dtype: torch.dtype) -> tuple[tuple, dict]:
    return tuple(_cast(a, dtype) for a in args), {k: _cast(v, dtype) for k, v in kwargs.items()}


def _op(name: str) -> torch._ops.OpOverload | None:
    packet, _, overload = name.partition(".")
    try:
        return getattr(getattr(torch.ops.aten, packet), overload or "default")
    except AttributeError:
        return None


def _lower_precision(op) -> Callable[..., Any]:  # type: ignore[no-untyped-def]
    def kernel(*args: Any, **kwargs: Any) -> Any:
        with torch._C._ExcludeDispatchKeyGuard(_EXCLUDE):
            args, kwargs = _cast_all(args, kwargs, torch.get_autocast_dtype("npu"))
            return op(*args, **kwargs)

    return kernel


def _fp32(op) -> Callable[..., Any]:  # type: ignore[no-untyped-def]
    def kernel(*args: Any, **kwargs: Any) -> Any:
        with torch._C._ExcludeDispatchKeyGuard(_EXCLUDE):
            args, kwargs = _cast_all(args, kwargs, torch.float32)
            return op(*args, **kwargs)

    return kernel


def _fp32_set_opt_dtype(op) -> Callable[..., Any]:  # type: ignore[no-untyped-def]
    at = next(i for i, arg in enumerate(op._schema.arguments) if arg.name == "dtype")

    def kernel(*args: Any, **kwargs: Any) -> Any:
        with torch._C._ExcludeDispatchKeyGuard(_EXCLUDE):
            if args and _eligible(args[0]):
                if len(args) > at:  # passed positionally (F.cross_entropy's log_softmax(x, dim, None))
                    if args[at] is None:
                        args = (*args[:at], torch.float32, *args[at + 1 :])
                elif kwargs.get("dtype") is None:
                    kwargs = dict(kwargs, dtype=torch.float32)
            return op(*args, **kwargs)

    return kernel


def _fp32_append_dtype(op, with_dtype) -> Callable[..., Any]:  # type: ignore[no-untyped-def]
    def kernel(*args: Any, **kwargs: Any) -> Any:
        with torch._C._ExcludeDispatchKeyGuard(_EXCLUDE):
            if not (args and _eligible(args[0])):
                return op(*args, **kwargs)
            # Python kernels receive arguments left at their default omitted (norm.Scalar's p=2),
            # and the dtype overloads have no defaults: spell them all out.
            full = list(args)
            for arg in op._schema.arguments[len(args) :]:
                full.append(kwargs.pop(arg.name) if arg.name in kwargs else arg.default_value)
            return with_dtype(*full, dtype=torch.float32)

    return kernel


def _promote(op) -> Callable[..., Any]:  # type: ignore[no-untyped-def]
    def kernel(*args: Any, **kwargs: Any) -> Any:
        with torch._C._ExcludeDispatchKeyGuard(_EXCLUDE):
            widest = torch.get_autocast_dtype("npu")
            for value in (*args, *kwargs.values()):
                for item in value if isinstance(value, (list, tuple)) else (value,):
                    if _eligible(item):
                        widest = torch.promote_types(widest, item.dtype)
            args, kwargs = _cast_all(args, kwargs, widest)
            return op(*args, **kwargs)

    return kernel


def _binary_cross_entropy_banned(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError(_BCE_BANNED)


_libraries: list[torch.library.Library] = []  # kept alive: dropping a Library unregisters it


def register() -> None:
    """Register the AutocastPrivateUse1 fallthrough and the casting kernels (once per process)."""
    fallthrough = torch.library.Library("_", "IMPL")
    fallthrough.fallback(torch.library.fallthrough_kernel, _KEY)
    kernels = torch.library.Library("aten", "IMPL")
    _libraries.extend([fallthrough, kernels])

    table: list[tuple[str, Callable[..., Any]]] = []
    for policy, names in ((_lower_precision, LOWER_PRECISION_FP), (_fp32, FP32), (_fp32_set_opt_dtype, FP32_SET_OPT_DTYPE),
                          (_promote, PROMOTE)):  # fmt: skip
        for name in names:
            op = _op(name)
            if op is None:
                logger.debug("autocast: aten::%s does not exist in this torch; skipped", name)
                continue
            table.append((name, policy(op)))
    for name, dtype_name in FP32_APPEND_DTYPE.items():
        op, with_dtype = _op(name), _op(dtype_name)
        if op is not None and with_dtype is not None:
            table.append((name, _fp32_append_dtype(op, with_dtype)))
    table.append(("binary_cross_entropy", _binary_cross_entropy_banned))

    for name, kernel in table:
        kernels.impl(name, kernel, _KEY)
    logger.debug("autocast: registered %d AutocastPrivateUse1 kernels", len(table))
