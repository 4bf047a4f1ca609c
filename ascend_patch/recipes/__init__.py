"""Per-model recipes: which generic patches a model needs, plus its own targets.

Built-in recipes live in this package; third-party ones register through the entry-point
group ``ascend_patch.recipes`` (each entry point names a :class:`Recipe` object; see
docs/writing-a-recipe.md). A built-in name wins over an entry point of the same name.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata
from typing import Any

from ..engine.patch import Patch

logger = logging.getLogger("ascend_patch")

ENTRY_POINT_GROUP = "ascend_patch.recipes"

BUILTIN_RECIPES: dict[str, str] = {
    "aimv2": "ascend_patch.recipes.aimv2",
    "dinov2": "ascend_patch.recipes.dinov2",
    "mingtok": "ascend_patch.recipes.mingtok",
    "mobilevit": "ascend_patch.recipes.mobilevit",
    "vtp": "ascend_patch.recipes.vtp",
}


@dataclass(frozen=True)
class Check:
    """A recipe's own accuracy check, which ``verify`` runs on the device beside the output comparison.

    ``run(model, inputs)`` computes the same values two ways on the model's device (the KV-cache
    decode and the full decode, say) and returns ``(expected, actual)``: dicts of named tensors,
    each pair of which must agree within the verify threshold. ``inputs`` is the forward's
    :class:`~ascend_patch.tools.inputs.Inputs`. ``applies(model)``: whether the model is one the check
    is for (a recipe's patches may serve other models); verify says which checks it did not run.
    A check that raises on a model it applies to fails the run.
    """

    name: str
    summary: str
    run: Callable[[Any, Any], tuple[Mapping[str, Any], Mapping[str, Any]]]
    applies: Callable[[Any], bool] | None = None  # None: every model


@dataclass(frozen=True)
class Recipe:
    name: str
    summary: str
    patches: tuple[str, ...]  # generic patches the model needs
    patch: Patch  # the model-specific targets (its name is the recipe's name)
    options: Mapping[str, Any] = field(default_factory=dict)  # defaults for the generic patches' options
    checks: tuple[Check, ...] = ()  # extra verify checks of what the recipe fixes


@lru_cache(maxsize=1)
def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def recipe_names() -> list[str]:
    return sorted(set(BUILTIN_RECIPES) | set(_entry_points()))


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``; an unknown name gets the known ones and the closest match."""
    if name in BUILTIN_RECIPES:
        recipe = importlib.import_module(BUILTIN_RECIPES[name]).RECIPE
    elif name in _entry_points():
        ep = _entry_points()[name]
        recipe = ep.load()
        # The plugin's wrappers act for the code that calls them: the migration log looks past them.
        from ..engine import calls

        for module in {ep.module, *(r.build.__module__ for r in recipe.patch.replaces)}:  # wrappers may live apart
            calls.skip_frames_of(sys.modules.get(module))
    else:
        from ..engine.runtime import unknown_name_error

        raise unknown_name_error(name, recipe_names(), what="recipe")
    if not isinstance(recipe, Recipe) or recipe.name != name or recipe.patch.name != name:
        raise TypeError(f"recipe entry {name!r} must be a Recipe named {name!r} whose patch is named {name!r}")
    return recipe


def list_recipes() -> dict[str, str]:
    """Recipe name -> one-line summary. A third-party recipe that fails to load is listed with the error."""
    listed: dict[str, str] = {}
    for name in recipe_names():
        try:
            listed[name] = get_recipe(name).summary
        except Exception as exc:  # an installed plugin must not break listing the others
            if name in BUILTIN_RECIPES:
                raise
            ep = _entry_points()[name]
            logger.warning("recipe entry point %s = %s failed to load: %r", name, ep.value, exc)
            listed[name] = f"(failed to load from {ep.value}: {exc!r})"
    return listed
