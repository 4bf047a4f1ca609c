"""Per-model recipes: which generic patches a model needs, plus its own targets.

Built-in recipes live in this package; third-party ones register through the entry-point
group ``ascend_patch.recipes`` (each entry point names a :class:`Recipe` object).
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
    "mobilevit": "ascend_patch.recipes.mobilevit",
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
    if name in BUILTIN_RECIPES:
        recipe = importlib.import_module(BUILTIN_RECIPES[name]).RECIPE
    else:
        recipe = _entry_points()[name].load()
    if not isinstance(recipe, Recipe) or recipe.name != name or recipe.patch.name != name:
        raise TypeError(f"recipe entry {name!r} must be a Recipe named {name!r} whose patch is named {name!r}")
    return recipe


def list_recipes() -> dict[str, str]:
    return {name: get_recipe(name).summary for name in recipe_names()}
