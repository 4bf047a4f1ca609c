"""dinov2: DINOv2 (transformers ``Dinov2Model``, ``facebook/dinov2-*``) on Ascend.

What the NPU port had to fix, and where it is handled:

- GELU: ``hidden_act="gelu"`` builds transformers' ``GELUActivation``; on Ascend plain GELU runs
  aclnnGelu's tanh form (1.33 % relative error on the CLS token of dinov2-large). The generic
  ``gelu`` patch routes it to ``torch_npu.npu_gelu(approximate="none")`` *by type*, which covers
  both MLP attribute names (``mlp.activation`` before transformers 5.18, ``mlp.activation_fn``
  after) and models built before ``apply``. Nothing here assigns by attribute name on purpose.
- The original torch.hub repository (facebookresearch/dinov2): ``xformers.ops`` imports go to
  the SDPA shim through the generic ``attention`` patch, ``torch.cuda.manual_seed_all`` in
  ``dinov2/utils/utils.py`` through ``seed`` (its ``from``-copies included), and CUDA autocast
  regions through ``autocast`` / ``fp32_autocast``.

So the model-specific patch has no targets of its own for transformers 4.45 ... 5.x: transformers'
DINOv2 uses SDPA/eager attention and has no CUDA-only code path. It only writes ``kept``
records saying so, so the report explains the empty patch instead of just "nothing".
Out of scope for this minimal recipe: the hub repo's ``XFORMERS_DISABLED`` opt-out env flag (it
only decides whether xformers is imported, and the ``attention`` patch serves either branch).
"""

from __future__ import annotations

from ..engine.patch import Patch, PatchContext
from . import Recipe


def _explain(ctx: PatchContext) -> None:
    # Records, not journal writes: nothing is replaced, so revert has nothing to undo.
    ctx.note("kept", "transformers.activations:GELUActivation", "routed by type by the gelu patch (both MLP names)")
    ctx.note("kept", "transformers.models.dinov2", "no CUDA-only code path: attention is SDPA/eager")


RECIPE = Recipe(
    name="dinov2",
    summary="DINOv2 (transformers Dinov2Model / torch.hub repo): exact-erf GELU by type, seeds, autocast, xformers",
    patches=("gelu", "seed", "autocast", "fp32_autocast", "attention"),
    patch=Patch(
        name="dinov2",
        summary="DINOv2 model-specific targets: none needed on transformers (see ascend_patch.recipes.dinov2)",
        replaces=(),
        setup=_explain,
        requires={"transformers": ">=4.45"},
    ),
)
