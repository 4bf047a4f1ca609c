"""Per-model recipes: which generic patches a model needs, plus its own targets.

Built-in recipes live in this package; third-party ones register through the entry-point
group ``ascend_patch.recipes`` (each entry point names a :class:`Recipe` object; see
docs/writing-a-recipe.md). A built-in name wins over an entry point of the same name.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata
from typing import Any, Mapping

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
class Recipe:
    name: str
    summary: str
    patches: tuple[str, ...]  # generic patches the model needs
    patch: Patch  # the model-specific targets (its name is the recipe's name)
    options: Mapping[str, Any] = field(default_factory=dict)  # defaults for the generic patches' options


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
        recipe = _entry_points()[name].load()
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
            logger.warning("ascend_patch: recipe entry point %s = %s failed to load: %r", name, ep.value, exc)
            listed[name] = f"(failed to load from {ep.value}: {exc!r})"
    return listed
