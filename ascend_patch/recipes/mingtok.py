"""mingtok: MingTok-Vision (the ``mingtok`` package of inclusionAI/Ming-UniVision) on Ascend.

What the NPU port had to fix by hand, and how the recipe handles each:

- ``MingTok.maybe_autocast`` returns ``torch.cuda.amp.autocast(dtype=...)`` whenever the model is
  not on the CPU. On an NPU that deprecated API warns and disables itself, so ``forward`` and
  ``forward_feature_decoder`` silently run in fp32 instead of the model dtype (``model_dtype``,
  bf16 by default). The recipe replaces the method: on the CPU a null context as upstream,
  elsewhere ``torch.autocast(<the model's device type>, dtype=dtype)``.
- ``forward_pixel_decoder`` asks for ``autocast(dtype=torch.float32)``, which NPU autocast rejects.
  That region goes through the generic ``fp32_autocast`` policy, which the recipe sets to
  ``"auto"``: a bf16 downgrade on an NPU (what the port chose), fp32 on cpu/cuda;
  ``fp32_autocast="fp32"`` keeps fp32 semantics everywhere (the generic default).
- KV-cache decoding: without flash_attn and xFormers, ``MemEffCausalAttention`` falls back to
  ``CausalAttention.forward(x)`` and drops ``past_key_value`` / ``cache_position``, so
  ``forward_feature_decoder(h, past_key_values)`` never fills the cache and a token-by-token decode
  sees no earlier token; ``CausalAttention.forward`` itself builds an (N, N) mask that does not fit
  once the cache holds tokens. Both forwards are replaced by one SDPA causal attention that updates
  the cache and aligns the causal diagonal bottom-right (flash_attn's ``causal=True``, so new queries
  see every cached key), returning ``(x, past_key_value)`` as upstream.
- ``Attention`` / ``MemEffAttention`` compute ``softmax(q k^T) v`` by hand whenever flash_attn or
  xFormers is missing (and always in fp32 or under autocast, where the inputs are fp32): they go to
  SDPA, the fused attention kernel on Ascend. Nested tensors (an xFormers ``attn_bias``) keep the
  upstream path.
- ``XFORMERS_ENABLED``: upstream enables xFormers when the variable is merely present, so ``=0``
  turns it on; :func:`~ascend_patch.recipes.common.presence_flag_setup` unsets a value spelled
  "off" while the recipe is active (with a warning), or says it came too late.
- ``verify`` check ``kv_cache_decode``: the token-by-token decode through the cache vs the full
  sequence, which fails without the patches while every forward output still agrees.
- Generic: flash_attn / xFormers imports resolve to the SDPA shims (``attention``), ``nn.GELU``
  (the encoder's ``out_act`` and the pixel decoder's MLPs) runs as exact-erf ``npu_gelu``
  (``gelu``), CUDA seeds, autocast regions and device strings act on the NPU.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

import torch

from ..engine import calls
from ..engine.patch import Patch, PatchContext, Replace
from ..shims import sdpa
from . import Check, Recipe
from .common import presence_flag_setup

MODEL_MODULE = "mingtok.modeling_mingtok"
ATTENTION_MODULE = "mingtok.vision_transformer.layers.attention"
MAYBE_AUTOCAST_TARGET = f"{MODEL_MODULE}:MingTok.maybe_autocast"
CAUSAL_TARGET = f"{ATTENTION_MODULE}:CausalAttention.forward"
MEM_EFF_CAUSAL_TARGET = f"{ATTENTION_MODULE}:MemEffCausalAttention.forward"
ATTENTION_TARGET = f"{ATTENTION_MODULE}:Attention.forward"
MEM_EFF_TARGET = f"{ATTENTION_MODULE}:MemEffAttention.forward"
# The modules that read XFORMERS_ENABLED when they are imported.
XFORMERS_READERS = (
    ATTENTION_MODULE,
    "mingtok.vision_transformer.layers.block",
    "mingtok.vision_transformer.layers.swiglu_ffn",
)


# -- autocast -----------------------------------------------------------------------------------


def _maybe_autocast(original: Callable[..., Any], ctx: PatchContext) -> Callable[..., Any]:
    @functools.wraps(original)
    def maybe_autocast(self: Any, dtype: torch.dtype = torch.float16, enable: bool = True) -> Any:
        if not ctx.active:
            return original(self, dtype, enable)
        device = self.device
        # As upstream: no autocast on the CPU, or when the caller says so.
        if device is None or device.type == "cpu" or not enable:
            return contextlib.nullcontext()
        if calls.STATE.enabled:
            calls.log_call("mingtok", "MingTok.maybe_autocast",
                           f'MingTok.maybe_autocast() [torch.cuda.amp.autocast] -> torch.autocast("{device.type}")')
        # float32 goes on to the fp32_autocast policy where the device rejects it.
        return torch.autocast(device.type, dtype=dtype, enabled=enable)

    return maybe_autocast


# -- attention ----------------------------------------------------------------------------------


def _dropout(module: Any) -> float:
    return module.attn_drop.p if module.training else 0.0


def _qkv(module: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, N, C) -> q, k, v as (B, N, H, D), the layout of the SDPA core; SDPA scales by D**-0.5 as upstream."""
    batch, tokens, channels = x.shape
    qkv = module.qkv(x).reshape(batch, tokens, 3, module.num_heads, channels // module.num_heads)
    return qkv.unbind(2)


def _project(module: Any, out: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    return module.proj_drop(module.proj(out.reshape(shape)))


def sdpa_causal(module: Any, x: torch.Tensor, past_key_value: Any = None,
                cache_position: torch.Tensor | None = None) -> tuple[torch.Tensor, Any]:
    """Causal attention of ``module`` (a MingTok causal attention layer) on SDPA, filling the KV cache.

    The cache stores (B, H, S, D) as upstream's flash/xFormers branches do. The causal diagonal is
    aligned bottom-right, so the N new queries see every cached key and each other causally.
    """
    q, k, v = _qkv(module, x)
    if past_key_value is not None:
        k, v = past_key_value.update(k.transpose(1, 2), v.transpose(1, 2), module.layer_idx,
                                     {"cache_position": cache_position})
        k, v = k.transpose(1, 2), v.transpose(1, 2)
    out = sdpa.attention(q, k, v, causal=True, dropout_p=_dropout(module))
    return _project(module, out, x.shape), past_key_value


def sdpa_full(module: Any, x: torch.Tensor) -> torch.Tensor:
    """Bidirectional attention of ``module`` (``Attention`` / ``MemEffAttention``) on SDPA."""
    q, k, v = _qkv(module, x)
    return _project(module, sdpa.attention(q, k, v, dropout_p=_dropout(module)), x.shape)


def _log(api: str, change: str) -> None:
    if calls.STATE.enabled:
        calls.log_call("mingtok", api, change)


_CAUSAL_CHANGE = "-> SDPA causal (bottom-right), KV cache updated"


def _causal(original: Callable[..., Any], ctx: PatchContext) -> Callable[..., Any]:
    @functools.wraps(original)
    def forward(self: Any, x: torch.Tensor, past_key_value: Any = None,
                cache_position: torch.Tensor | None = None) -> tuple[torch.Tensor, Any]:
        if not ctx.active:
            return original(self, x, past_key_value, cache_position)
        _log("CausalAttention.forward", _CAUSAL_CHANGE)
        return sdpa_causal(self, x, past_key_value, cache_position)

    return forward


def _mem_eff_causal(original: Callable[..., Any], ctx: PatchContext) -> Callable[..., Any]:
    @functools.wraps(original)
    def forward(self: Any, x: torch.Tensor, attn_bias: Any = None, past_key_value: Any = None,
                cache_position: torch.Tensor | None = None) -> tuple[torch.Tensor, Any]:
        if not ctx.active or attn_bias is not None:  # nested tensors: only xFormers' path handles them
            return original(self, x, attn_bias, past_key_value, cache_position)
        _log("MemEffCausalAttention.forward", _CAUSAL_CHANGE)
        return sdpa_causal(self, x, past_key_value, cache_position)

    return forward


def _full(original: Callable[..., Any], ctx: PatchContext) -> Callable[..., Any]:
    @functools.wraps(original)
    def forward(self: Any, x: torch.Tensor) -> torch.Tensor:
        if not ctx.active:
            return original(self, x)
        _log("Attention.forward", "-> SDPA")
        return sdpa_full(self, x)

    return forward


def _mem_eff(original: Callable[..., Any], ctx: PatchContext) -> Callable[..., Any]:
    @functools.wraps(original)
    def forward(self: Any, x: torch.Tensor, attn_bias: Any = None) -> torch.Tensor:
        if not ctx.active or attn_bias is not None:
            return original(self, x, attn_bias)
        _log("MemEffAttention.forward", "-> SDPA")
        return sdpa_full(self, x)

    return forward


# -- verify check -------------------------------------------------------------------------------

DECODE_TOKENS = 16  # token-by-token steps of the check: enough to cover the cache, cheap at full size


def kv_cache_decode(model: Any, inputs: Any) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The semantic decoder on the image's latent: full sequence vs token by token through the KV cache.

    Causal attention makes the first n tokens of the full decode the answer for a cached decode of
    those n tokens; a cache that is never filled, or a causal diagonal in the wrong corner, is off.
    """
    with torch.no_grad():
        latent = model(*inputs.args, **inputs.kwargs)["latent"]
        tokens = min(latent.shape[1], DECODE_TOKENS)
        full = model.forward_feature_decoder(latent)
        full = full["x_norm"] if full.get("x_norm") is not None else full["x_norm_patchtokens"]
        cache, steps = None, []
        for t in range(tokens):
            step = model.forward_feature_decoder(latent[:, t:t + 1], cache)
            cache = step["past_key_values"]
            steps.append(step["x_norm_patchtokens"])
    return {"kv_cache_decode": full[:, :tokens]}, {"kv_cache_decode": torch.cat(steps, dim=1)}


RECIPE = Recipe(
    name="mingtok",
    summary="MingTok-Vision (Ming-UniVision mingtok): autocast on the model's device, fp32 pixel-decoder policy, "
            "SDPA attention with a working KV cache, XFORMERS_ENABLED=0, exact GELU, seeds",
    patches=("autocast", "fp32_autocast", "attention", "gelu", "seed", "device"),
    patch=Patch(
        name="mingtok",
        summary="MingTok: maybe_autocast on the model's device; causal SDPA that fills the KV cache "
                "(bottom-right); SDPA for the bidirectional layers; XFORMERS_ENABLED presence flag",
        setup=presence_flag_setup("XFORMERS_ENABLED", "enables xFormers", read_by=XFORMERS_READERS),
        replaces=(
            Replace(MAYBE_AUTOCAST_TARGET, _maybe_autocast),
            Replace(CAUSAL_TARGET, _causal),
            Replace(MEM_EFF_CAUSAL_TARGET, _mem_eff_causal),
            Replace(ATTENTION_TARGET, _full),
            Replace(MEM_EFF_TARGET, _mem_eff),
        ),
        requires={"transformers": ">=4.45"},
    ),
    options={"fp32_autocast": "auto"},
    checks=(Check("kv_cache_decode", "semantic decoder token by token through the KV cache vs the full sequence",
                  kv_cache_decode, applies=lambda model: hasattr(model, "forward_feature_decoder")),),
)
