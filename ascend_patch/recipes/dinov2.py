"""dinov2: DINOv2 on Ascend, from transformers (``Dinov2Model``, ``facebook/dinov2-*``) or the torch.hub
repository (facebookresearch/dinov2, ``torch.hub.load("facebookresearch/dinov2", "dinov2_vitl14")``).

What the NPU port fixed by hand, and where each is handled:

- GELU (both sources): transformers builds ``GELUActivation`` from ``hidden_act="gelu"``, the hub repo
  ``nn.GELU`` in its ``Mlp``. On Ascend plain GELU runs aclnnGelu's tanh form (1.33 % relative error on
  the CLS token of dinov2-large). The port assigned ``layer.mlp.activation = <exact GELU>`` per layer;
  transformers 5.18 renamed that attribute to ``mlp.activation_fn``, so the same line now adds an unused
  module and changes nothing. Handled by the generic ``gelu`` patch *by type* (``nn.GELU.forward``,
  ``GELUActivation.forward``): ``torch_npu.npu_gelu(approximate="none")`` on npu tensors, whatever the
  attribute is called and whether the model was built before or after ``apply``; the report counts the
  modules routed. Nothing here assigns by attribute name, on purpose.
- xFormers (hub repo): ``dinov2/layers/attention.py``, ``block.py`` and ``swiglu_ffn.py`` import
  ``memory_efficient_attention, unbind`` / ``fmha, scaled_index_add, index_select_cat`` / ``SwiGLU`` from
  ``xformers.ops``, which has no NPU build. The generic ``attention`` patch serves them from the
  SDPA-backed shim (the fused attention kernel on NPU), indexing ops included, so the nested-tensor
  (list of crops) training path with stochastic depth keeps working.
- ``XFORMERS_DISABLED`` (hub repo, read at import of those three modules): opt-out by *presence*, so
  ``XFORMERS_DISABLED=0`` disables xFormers too. :func:`~.common.presence_flag_setup` unsets a value spelled
  "off" while the recipe is active (UserWarning, restored on revert) and reports when it was read before
  ``apply``. A real value is kept and reported: the repo then runs its math attention (no list input).
- ``fix_random_seeds`` (hub repo, ``dinov2/utils/utils.py``) seeds "the GPU" with
  ``torch.cuda.manual_seed_all``. The generic ``seed`` patch redirects that call; this recipe also wraps the
  function (:func:`~.common.seed_function`), with its ``from``-copies, so it seeds the target device on its
  own. With transformers only, the hub repo is never imported and this target stays "waiting": expected.
- CUDA autocast regions in user scripts: ``autocast`` / ``fp32_autocast``.

transformers' DINOv2 has no CUDA-only code path (attention is SDPA/eager), so the recipe has no
transformers targets of its own: ``kept`` records say so, naming the MLP attribute of the installed
version. No ``requires`` on transformers: the hub-repo targets do not depend on it.
"""

from __future__ import annotations

import os
import sys
from importlib import metadata

from packaging.version import InvalidVersion, Version

from ..engine.patch import Patch, PatchContext, Replace
from ..engine.warn import warn_user
from . import Recipe
from .common import FALSY_SPELLINGS, presence_flag_setup, seed_function

SEED_TARGET = "dinov2.utils.utils:fix_random_seeds"
FLAG = "XFORMERS_DISABLED"
# The hub repo modules that read FLAG and try xformers.ops when imported.
XFORMERS_READERS = ("dinov2.layers.attention", "dinov2.layers.block", "dinov2.layers.swiglu_ffn")
MLP_RENAMED_IN = (5, 18)  # transformers: Dinov2MLP.activation -> activation_fn
OLDEST_CHECKED = (4, 45)

_xformers_flag = presence_flag_setup(FLAG, "disables xFormers", read_by=XFORMERS_READERS)


def mlp_activation_name(transformers_version: str) -> str:
    """The attribute of transformers' ``Dinov2MLP`` that holds the GELU in that version."""
    return "activation_fn" if Version(transformers_version).release >= MLP_RENAMED_IN else "activation"


def _transformers_notes(ctx: PatchContext) -> None:
    # Records, not journal writes: nothing is replaced, so revert has nothing to undo.
    try:
        have = metadata.version("transformers")
        name = mlp_activation_name(have)
    except (metadata.PackageNotFoundError, InvalidVersion):
        ctx.note("kept", "transformers.models.dinov2", "transformers not installed (or unparsable version): only "
                                                       "the torch.hub repo targets apply")
        return
    other = "activation" if name == "activation_fn" else "activation_fn"
    ctx.note("kept", "transformers.activations:GELUActivation",
             f"routed by type by the gelu patch: transformers {have} keeps the MLP's GELU in mlp.{name} "
             f"(a port assigning mlp.{other} changes nothing here)")
    ctx.note("kept", "transformers.models.dinov2", "no CUDA-only code path: attention is SDPA/eager")
    if Version(have).release < OLDEST_CHECKED:
        ctx.note("kept", "transformers.models.dinov2", f"transformers {have} is older than "
                 f"{'.'.join(map(str, OLDEST_CHECKED))}, the oldest checked; GELU is still routed by type")


def _hub_notes(ctx: PatchContext) -> None:
    value = os.environ.get(FLAG)  # after _xformers_flag: a value spelled "off" is gone unless read too late
    if value is not None and value.strip().lower() not in FALSY_SPELLINGS:
        ctx.note("kept", "dinov2.layers.attention:MemEffAttention",
                 f"{FLAG}={value!r}: the hub repo runs its math attention (no nested-tensor list input); unset it "
                 "to use the SDPA-backed xformers shim (the fused attention kernel on NPU)")
    elif value is None:
        # Imported before apply with no xformers importable: the math path is baked in.
        late = [n for n in XFORMERS_READERS if getattr(sys.modules.get(n), "XFORMERS_AVAILABLE", True) is False]
        if late:
            ctx.note("nothing", f"{late[0]}:XFORMERS_AVAILABLE",
                     "imported before apply, when xformers could not be imported: it keeps its math attention "
                     f"(no list input). Apply the {ctx.patch!r} recipe before importing dinov2")
            warn_user(f"{late[0]} was imported before ascend_patch.apply({ctx.patch!r}), when xformers was "
                      "not importable: it runs its math attention and rejects nested (list) input. Apply the "
                      "recipe before importing the dinov2 code")
    if SEED_TARGET.partition(":")[0] not in sys.modules:
        ctx.note("kept", SEED_TARGET, "torch.hub repo target, patched when that repo is imported; a transformers-only "
                                      "run never imports it, so its 'waiting' record is expected there")


def _setup(ctx: PatchContext) -> None:
    _transformers_notes(ctx)
    _xformers_flag(ctx)
    _hub_notes(ctx)


RECIPE = Recipe(
    name="dinov2",
    summary="DINOv2 (transformers Dinov2Model / torch.hub repo): exact-erf GELU by type, xformers (indexing "
            "ops included) on SDPA, XFORMERS_DISABLED presence pitfall, fix_random_seeds on the target",
    patches=("gelu", "seed", "autocast", "fp32_autocast", "attention"),
    patch=Patch(
        name="dinov2",
        summary="DINOv2 hub repo: fix_random_seeds also seeds the target device; XFORMERS_DISABLED=0 unset while "
                "active (transformers needs no targets of its own: see ascend_patch.recipes.dinov2)",
        replaces=(Replace(SEED_TARGET, seed_function("dinov2"), copies=True),),
        setup=_setup,
    ),
)
