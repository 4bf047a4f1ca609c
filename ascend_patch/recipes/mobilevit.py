"""mobilevit: MobileViT (transformers ``MobileViTForImageClassification``, ``apple/mobilevit-*``) on Ascend.

MobileViT has no CUDA code; the NPU port only mapped device strings in its scripts (torch_npu's
``transfer_to_npu``, all or nothing; here the generic ``device`` patch: ``.cuda()``,
``.to("cuda")``, ``device="cuda"`` factories, ``torch.cuda.*`` queries, reversible and logged per
call site) and seeded "the GPU" (``seed``). Its one model-specific trap is attention:
transformers implements MobileViT attention in eager mode only, and
``from_pretrained(..., attn_implementation="sdpa")`` - a line CUDA ports often pass to every model -
raises ``ValueError: ... does not support ... scaled_dot_product_attention``. The patch makes
MobileViT's attention-implementation check answer "eager" for any request, and records the call
site, so such scripts run unchanged.

transformers moved that check in 4.54, so there are two targets, each optional (a version has
exactly one of them; the other is reported as "nothing"), both inherited from ``PreTrainedModel``:
the engine writes them on the MobileViT class only and deletes them again on revert.

- ``_check_and_adjust_attn_implementation(self, attn_implementation, is_init_check=False)``
  (transformers >= 4.54): an instance method given the request; the wrapper passes "eager" on.
- ``_autoset_attn_implementation(cls, config, ...)`` (transformers 4.45 - 4.53): a classmethod that
  reads the request from ``config._attn_implementation_internal`` and raises for "sdpa" (and for
  "flash_attention_2", or the deprecated ``use_flash_attention_2=True`` of <= 4.52); the wrapper
  sets the config's request to "eager" (and that flag to False) before the check runs. The config
  it is given is the copy ``from_pretrained`` / ``_from_config`` makes, or, for ``Model(config)``,
  the caller's own, which then says "eager": what runs.

The range each was measured on, version by version, is in docs/compatibility.md
(``benchmarks/mobilevit_transformers_versions.py``).

Note for inputs: MobileViT checkpoints expect BGR pixels in [0, 1] (its image processor flips
the channel order); ``ascend_patch.tools.models`` preprocesses that way.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from ..engine import calls
from ..engine.patch import Patch, PatchContext, Replace
from . import Recipe
from .common import bound_caller

MODULE = "transformers.models.mobilevit.modeling_mobilevit"
TARGET = f"{MODULE}:MobileViTPreTrainedModel._check_and_adjust_attn_implementation"  # transformers >= 4.54
TARGET_BEFORE_4_54 = f"{MODULE}:MobileViTPreTrainedModel._autoset_attn_implementation"  # 4.45 - 4.53

# transformers versions the recipe is declared for; measured per minor in docs/compatibility.md.
REQUIRES = {"transformers": ">=4.45"}


def _to_eager(requested: object) -> None:
    if calls.STATE.enabled:
        calls.log_call("mobilevit", f"attn_implementation={requested!r}", "-> 'eager'")


def _eager_only(original: Callable[..., str], ctx: PatchContext) -> Callable[..., str]:
    """transformers >= 4.54: the request is an argument; pass "eager" on instead."""

    @functools.wraps(original)
    def check(self: Any, attn_implementation: str | None = None, *args: Any, **kwargs: Any) -> str:
        if ctx.active and attn_implementation not in (None, "eager"):
            _to_eager(attn_implementation)
            attn_implementation = "eager"
        return original(self, attn_implementation, *args, **kwargs)

    return check


def _eager_only_config(original: Any, ctx: PatchContext) -> classmethod:
    """transformers 4.45 - 4.53: the request is in the config; make it "eager" before the check reads it."""
    func = bound_caller(original)  # through any other library's wrapper of the classmethod

    @functools.wraps(func)
    def autoset(cls: type, config: Any, *args: Any, **kwargs: Any) -> Any:
        if ctx.active:
            requested = getattr(config, "_attn_implementation_internal", None)
            if requested not in (None, "eager"):
                _to_eager(requested)
                config._attn_implementation = "eager"
            # 4.52 and older only; transformers passes it by keyword.
            if kwargs.get("use_flash_attention_2"):
                _to_eager("flash_attention_2")
                kwargs["use_flash_attention_2"] = False
        return func(cls, config, *args, **kwargs)

    return classmethod(autoset)


RECIPE = Recipe(
    name="mobilevit",
    summary="MobileViT (transformers): cuda -> npu in its scripts, seeds, autocast, and eager attention "
            "whatever attn_implementation asks",
    patches=("device", "seed", "autocast"),
    patch=Patch(
        name="mobilevit",
        summary="MobileViT: any attn_implementation request falls back to eager (the only one it has)",
        replaces=(
            Replace(TARGET, _eager_only, optional=True),
            Replace(TARGET_BEFORE_4_54, _eager_only_config, optional=True),
        ),
        requires=REQUIRES,
    ),
)
