"""vtp: VTP visual tokenizers (MiniMax-AI/VTP, ``vtp.models.vtp_hf.VTPModel``, ``MiniMaxAI/VTP-*``) on Ascend.

What the NPU port had to fix, and where it is handled:

- Seeds: ``vtp/models/utils/utils.py`` ``fix_random_seeds`` seeds "the GPU" with
  ``torch.cuda.manual_seed_all``, a call that without CUDA is queued and never runs. The generic
  ``seed`` patch redirects that call while it is active; the recipe also wraps the function itself
  (:func:`~ascend_patch.recipes.common.seed_function`) so that it seeds the target device's
  generator on its own. ``vtp.models.utils`` star-exports the function: applied after the import,
  that second module global is a copy of the original, replaced and journaled (``copy`` record);
  applied before, the hook patches the submodule before the package's ``from .utils import *``
  runs, so the package copies the wrapper, and revert puts the original back there too
  (``reverted`` record). Either way both import paths call the wrapper while the recipe is on.
- Garbage causal mask: transformers >= 5 builds ``from_pretrained`` models on the meta device and
  materialises what the checkpoint does not hold - the non-persistent ``attn_mask`` buffer of the
  text tower among it - as uninitialised memory (reproduced on transformers 5.24), so CLIP text
  features come out wrong or NaN. The recipe wraps ``VTPModel.from_pretrained`` (inherited from
  ``PreTrainedModel``: written on the class, deleted again on revert) and rebuilds the mask after
  loading: -inf above the diagonal, the buffer's own size, dtype and device, written in place.
- bf16 RoPE on the device: ``RopePositionEmbedding.forward`` builds its (sin, cos) tables in
  bfloat16 (``pos_embed_rope_dtype="bf16"``) on the device of its ``periods`` buffer, and the
  encoder calls it again for every block of every forward. On the CPU, bf16 elementwise ops compute
  in fp32 and round once per op, as CUDA's do; Ascend's handling of low-precision ``arange`` and
  scalar operands differs. When no coordinate augmentation applies (eval mode, or shift / jitter /
  rescale all None) the recipe runs the upstream function on a CPU view of the module (same dtype,
  same periods), caches the result per (module, H, W, device, periods version) and moves the small
  tables to the device: one computation per image size instead of one per block. Training with
  augmentation (random coordinates every call) takes the original path.
- ``vtp.models.layers.block`` sets ``torch._dynamo.config.automatic_dynamic_shapes = False`` and
  ``accumulated_cache_size_limit = 1024`` in its module body: a process-wide change made at import,
  before any patch can act. The recipe keeps it and says so in the report ("kept").
- Generic: the text tower's ``nn.GELU`` runs aclnnGelu's tanh form on Ascend (``gelu`` routes it
  to ``npu_gelu``, exact erf; the vision encoder and decoder use SwiGLU), ``torch.autocast("cuda")``
  regions as in the upstream README (``autocast``), ``"cuda"`` device strings (``device``).

Attention is PyTorch SDPA upstream (and ``nn.MultiheadAttention`` in the text tower): no flash-attn
or xFormers path to handle.
"""

from __future__ import annotations

import copy
import functools
import logging
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ..engine import calls
from ..engine.patch import Patch, PatchContext, Replace
from . import Recipe
from .common import bound_caller, seed_function

logger = logging.getLogger("ascend_patch")

SEED_TARGET = "vtp.models.utils.utils:fix_random_seeds"
FROM_PRETRAINED_TARGET = "vtp.models.vtp_hf.modeling_vtp:VTPModel.from_pretrained"
ROPE_TARGET = "vtp.models.layers.embeddings:RopePositionEmbedding.forward"
DYNAMO_MODULE = "vtp.models.layers.block"

# Image sizes remembered per RoPE module; a model sees one or two in practice.
ROPE_CACHE_SIZE = 8


# -- runtime counters (report stats) -------------------------------------------------------------

_counts = {"rope_tables_computed": 0, "rope_tables_reused": 0, "attn_masks_rebuilt": 0}
_counts_lock = threading.Lock()


def _count(name: str) -> None:
    with _counts_lock:
        _counts[name] += 1


def _stats() -> Mapping[str, int]:
    return dict(_counts)


# -- bf16 RoPE: computed once per shape, on the CPU -----------------------------------------------


class _CachedTables:
    """(sin, cos) on the device, valid while ``periods`` is the same tensor with the same stamp."""

    __slots__ = ("periods", "stamp", "tables")

    def __init__(self, periods: torch.Tensor, stamp: tuple[int, int],
                 tables: tuple[torch.Tensor, torch.Tensor]) -> None:
        self.periods = weakref.ref(periods)
        self.stamp = stamp
        self.tables = tables


# module -> {(H, W, device, periods dtype, table dtype, normalize_coords): _CachedTables}
_rope_cache: "weakref.WeakKeyDictionary[torch.nn.Module, OrderedDict[tuple, _CachedTables]]" = (
    weakref.WeakKeyDictionary()
)
_rope_lock = threading.Lock()


def _augments(module: Any) -> bool:
    """True when upstream draws random coordinate augmentations in this call (training only)."""
    return bool(module.training) and any(
        getattr(module, name, None) is not None for name in ("shift_coords", "jitter_coords", "rescale_coords")
    )


def _stamp(tensor: torch.Tensor) -> tuple[int, int] | None:
    """What changes when the values of ``tensor`` may have: its version counter (bumped by in-place
    writes such as ``load_state_dict``'s ``copy_``) and its data pointer (``t.data = ...`` swaps
    the storage without a bump). None: cannot tell, do not cache."""
    try:
        return int(tensor._version), int(tensor.data_ptr())
    except RuntimeError:  # inference tensors have no version counter; some tensors have no storage
        return None


def _rope_tables_on_cpu(original: Callable[..., Any], ctx: PatchContext) -> Callable[..., Any]:
    @functools.wraps(original)
    def forward(self: torch.nn.Module, *, H: int, W: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not ctx.active or _augments(self):
            return original(self, H=H, W=W)
        periods = self.periods
        stamp = _stamp(periods)
        key = (int(H), int(W), periods.device, periods.dtype, getattr(self, "dtype", None),
               getattr(self, "normalize_coords", None))
        with _rope_lock:
            entries = _rope_cache.setdefault(self, OrderedDict())
            hit = entries.get(key)
            if hit is not None and stamp is not None and hit.periods() is periods and hit.stamp == stamp:
                entries.move_to_end(key)
                _count("rope_tables_reused")
                return hit.tables
        tables = _compute_on_cpu(original, self, periods, H, W)
        _count("rope_tables_computed")
        if calls.STATE.enabled:
            calls.log_call("vtp", "RopePositionEmbedding.forward",
                           f"RopePositionEmbedding.forward -> tables computed on cpu once per shape, "
                           f"then .to({periods.device})")
        if stamp is not None:
            with _rope_lock:
                entries = _rope_cache.setdefault(self, OrderedDict())
                entries[key] = _CachedTables(periods, stamp, tables)
                while len(entries) > ROPE_CACHE_SIZE:
                    entries.popitem(last=False)
        return tables

    return forward


def _compute_on_cpu(original: Callable[..., Any], module: torch.nn.Module, periods: torch.Tensor, H: int,
                    W: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The upstream function on a shallow copy of ``module`` whose ``periods`` is on the CPU."""
    if periods.device.type == "cpu":
        view = module
    else:
        view = copy.copy(module)  # shares everything but the buffer dict, which we replace
        view.__dict__["_buffers"] = {**module._buffers, "periods": periods.detach().cpu()}
    # Plain tensors, no graph: the tables are shared by every block and every later call, also
    # outside an inference_mode block they might first be computed in.
    with torch.inference_mode(False), torch.no_grad():
        sin, cos = original(view, H=H, W=W)
        return sin.to(periods.device), cos.to(periods.device)


def clear_rope_cache() -> None:
    """Forget every cached RoPE table (the cache also empties itself when a module is freed)."""
    with _rope_lock:
        _rope_cache.clear()


# -- from_pretrained: rebuild the causal mask ----------------------------------------------------


def rebuild_causal_mask(model: Any) -> str | None:
    """Rewrite ``model.attn_mask`` (the CLIP text tower's causal mask) in place: -inf above the
    diagonal, 0 elsewhere, in the buffer's own size, dtype and device.

    Returns None when there is nothing to rebuild (no text tower, ``text_no_causal_mask``), else what
    the buffer held: "was uninitialised" or "was already causal".
    """
    mask = getattr(model, "attn_mask", None)
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2 or mask.shape[0] != mask.shape[1]:
        return None
    causal = torch.full(mask.shape, float("-inf"), dtype=mask.dtype, device=mask.device).triu_(1)
    was_garbage = mask.device.type != "meta" and not torch.equal(mask, causal)
    with torch.no_grad():
        mask.copy_(causal)  # in place: the buffer object stays the one the model registered
    return "was uninitialised" if was_garbage else "was already causal"


def _rebuild_and_note(model: Any, source: object) -> None:
    state = rebuild_causal_mask(model)
    if state is None:
        return
    _count("attn_masks_rebuilt")
    n = model.attn_mask.shape[0]
    if calls.STATE.enabled:
        calls.log_call("vtp", "VTPModel.from_pretrained", f"VTPModel.from_pretrained({source!r}) -> attn_mask rebuilt "
                       f"as causal {n}x{n} (the loaded buffer {state})")
    logger.info("vtp: %r: text attn_mask rebuilt after loading (the loaded buffer %s)", source, state)


def _mask_guard(original: Any, ctx: PatchContext) -> classmethod:
    func = bound_caller(original)  # through any other library's wrapper of from_pretrained

    @functools.wraps(func)
    def from_pretrained(cls: type, *args: Any, **kwargs: Any) -> Any:
        result = func(cls, *args, **kwargs)
        if ctx.active:
            model = result[0] if isinstance(result, tuple) else result
            source = args[0] if args else kwargs.get("pretrained_model_name_or_path")
            _rebuild_and_note(model, source)
        return result

    return classmethod(from_pretrained)


# -- setup ---------------------------------------------------------------------------------------


def _setup(ctx: PatchContext) -> None:
    for name in _counts:
        _counts[name] = 0
    clear_rope_cache()
    # A record, not a journal write: the assignments ran in the module body at import time.
    ctx.note("kept", "torch._dynamo.config",
             f"{DYNAMO_MODULE} sets automatic_dynamic_shapes=False and accumulated_cache_size_limit=1024 when it "
             "is imported (process-wide, at import, before any patch can act); left as upstream sets them")


RECIPE = Recipe(
    name="vtp",
    summary="VTP (MiniMax-AI/VTP VTPModel): seeds, causal text mask rebuilt after from_pretrained, bf16 RoPE "
            "tables computed once on the CPU, exact-erf GELU, autocast, device strings",
    patches=("seed", "gelu", "autocast", "fp32_autocast", "device"),
    patch=Patch(
        name="vtp",
        summary="VTP: fix_random_seeds seeds the target; attn_mask rebuilt after loading; RoPE tables on the CPU, "
                "cached per shape",
        replaces=(
            Replace(SEED_TARGET, seed_function("vtp"), copies=True),
            Replace(FROM_PRETRAINED_TARGET, _mask_guard),
            Replace(ROPE_TARGET, _rope_tables_on_cpu),
        ),
        setup=_setup,
        requires={"transformers": ">=4.45"},
        stats=_stats,
    ),
)
