"""aimv2: AIMv2 vision encoder (transformers ``Aimv2VisionModel``, ``apple/aimv2-*``) on Ascend.

What the NPU port had to fix, and where it is handled:

- float64 position embeddings: the "native" checkpoints (``is_native=True``, sincos positions)
  call ``build_2d_sinusoidal_position_embedding``, which does its frequency arithmetic in float64
  on the activations' device (only ``mps`` is exempted upstream). Ascend has no float64 kernels
  for these ops. The patch wraps that module-level function: for a device that is not cpu/cuda
  it computes on the CPU (float64, exactly the upstream numbers), casts to the requested dtype,
  then moves the small (H*W, D) table to the device. Bit-identical to the CPU result.
- ``use_head``: ``Aimv2VisionConfig.use_head`` defaults to True, so loading a head-less
  checkpoint (the plain ``aimv2-*-patch14-*`` encoders) with a config that does not say
  ``use_head: false`` leaves ``head`` randomly initialised and ``pooler_output`` is noise. The
  patch wraps ``Aimv2VisionModel.from_pretrained``: when *every* ``head.*`` weight was missing
  from the checkpoint it drops the head (``use_head=False``, ``pooler_output=None``) and warns,
  naming the fix; if the caller asked for ``use_head=True`` explicitly the head is kept, with a
  warning that it is random.
- Original ml-aim (timm-style) checkpoints: :mod:`ascend_patch.recipes.aimv2_checkpoint`
  converts the keys (and splits / merges q/k/v) in both directions.
- Generic: seeds, CUDA autocast regions, ``"cuda"`` device strings in user scripts.

transformers' AIMv2 uses SDPA/eager attention: no flash-attn / xformers path to handle.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import torch

from ..engine import calls
from ..engine.patch import Patch, PatchContext, Replace
from . import Recipe
from .common import bound_caller

logger = logging.getLogger("ascend_patch")

MODULE = "transformers.models.aimv2.modeling_aimv2"
POS_EMBED_TARGET = f"{MODULE}:build_2d_sinusoidal_position_embedding"
FROM_PRETRAINED_TARGET = f"{MODULE}:Aimv2VisionModel.from_pretrained"

# Devices with float64 kernels: the upstream code is left alone there.
_FLOAT64_OK = ("cpu", "cuda")


def _positions_off_device(original: Callable[..., torch.Tensor], ctx: PatchContext) -> Callable[..., torch.Tensor]:
    @functools.wraps(original)
    def build(*args: Any, device: torch.device | str | None = None, **kwargs: Any) -> torch.Tensor:
        dev = torch.device(device) if device is not None else None
        if not ctx.active or dev is None or dev.type in _FLOAT64_OK:
            return original(*args, device=device, **kwargs)
        if calls.STATE.enabled:
            calls.log_call("aimv2", "build_2d_sinusoidal_position_embedding",
                           f'build_2d_sinusoidal_position_embedding(..., device="{dev}") -> '
                           f'float64 on cpu, then .to("{dev}")')
        # Upstream numbers exactly (float64 on CPU), then only the small result goes to the NPU.
        return original(*args, device=None, **kwargs).to(dev)

    return build


def _head_missing(loading_info: dict[str, Any]) -> bool:
    missing = [k for k in loading_info.get("missing_keys", ()) if k.startswith("head.")]
    return bool(missing)


def _head_guard(original: Any, ctx: PatchContext) -> classmethod:
    func = bound_caller(original)  # through any other library's wrapper of from_pretrained

    @functools.wraps(func)
    def from_pretrained(cls: type, *args: Any, **kwargs: Any) -> Any:
        if not ctx.active:
            return func(cls, *args, **kwargs)
        want_info = kwargs.pop("output_loading_info", False)
        explicit = kwargs.get("use_head")
        model, info = func(cls, *args, output_loading_info=True, **kwargs)
        if getattr(model, "use_head", False) and _head_missing(info):
            source = args[0] if args else kwargs.get("pretrained_model_name_or_path")
            if explicit is True:
                logger.warning(
                    "aimv2: %r has no head weights but use_head=True was passed: the attention-pool "
                    "head is RANDOMLY initialised (pooler_output is noise). Pass use_head=False to drop it.", source)
            else:
                # Drop the random head rather than return noise as pooler_output.
                del model.head
                model.use_head = False
                model.config.use_head = False
                kept = [k for k in info["missing_keys"] if not k.startswith("head.")]
                info["missing_keys"] = type(info["missing_keys"])(kept)
                logger.warning(
                    "aimv2: %r has no head weights: loaded with use_head=False (pooler_output is None) "
                    "instead of a randomly initialised head. Set \"use_head\": false in its config.json to make "
                    "this explicit.", source)
                if calls.STATE.enabled:
                    calls.log_call("aimv2", "Aimv2VisionModel.from_pretrained",
                                   f"Aimv2VisionModel.from_pretrained({source!r}) -> use_head=False (no head weights)",
                                   calls.CHANGED)
        return (model, info) if want_info else model

    return classmethod(from_pretrained)


RECIPE = Recipe(
    name="aimv2",
    summary="AIMv2 (transformers Aimv2VisionModel): float64 positions off the NPU, no silently random head, "
            "ml-aim checkpoint keys, seeds, autocast",
    patches=("seed", "autocast", "fp32_autocast", "device"),
    patch=Patch(
        name="aimv2",
        summary="AIMv2: sincos positions computed in float64 on the CPU; head-less checkpoints load with use_head=False",
        replaces=(
            # optional: the float64 helper exists only in newer transformers (older ones inline it).
            Replace(POS_EMBED_TARGET, _positions_off_device, optional=True),
            Replace(FROM_PRETRAINED_TARGET, _head_guard),
        ),
        requires={"transformers": ">=4.54"},
    ),
)
