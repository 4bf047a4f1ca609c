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

Target: ``MobileViTPreTrainedModel._check_and_adjust_attn_implementation`` (transformers >= 4.54;
inherited from ``PreTrainedModel``, so the engine writes it on the MobileViT class only and
deletes it again on revert). It is optional: older transformers spell the check differently
and the recipe then reports "nothing" for it.

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

TARGET = (
    "transformers.models.mobilevit.modeling_mobilevit:MobileViTPreTrainedModel._check_and_adjust_attn_implementation"
)


def _eager_only(original: Callable[..., str], ctx: PatchContext) -> Callable[..., str]:
    @functools.wraps(original)
    def check(self: Any, attn_implementation: str | None = None, *args: Any, **kwargs: Any) -> str:
        if ctx.active and attn_implementation not in (None, "eager"):
            if calls.STATE.enabled:
                calls.log_call("mobilevit", f"attn_implementation={attn_implementation!r}", "-> 'eager'")
            attn_implementation = "eager"
        return original(self, attn_implementation, *args, **kwargs)

    return check


RECIPE = Recipe(
    name="mobilevit",
    summary="MobileViT (transformers): cuda -> npu in its scripts, seeds, autocast, and eager attention "
            "whatever attn_implementation asks",
    patches=("device", "seed", "autocast"),
    patch=Patch(
        name="mobilevit",
        summary="MobileViT: any attn_implementation request falls back to eager (the only one it has)",
        replaces=(Replace(TARGET, _eager_only, optional=True),),
        requires={"transformers": ">=4.45"},
    ),
)
