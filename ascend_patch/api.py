"""The public verbs by name: patch and recipe names resolved to patches, then handed to the engine.

This layer sits above the engine (which knows how to patch, not which patches exist) and above
the registries in :mod:`ascend_patch.patches` and :mod:`ascend_patch.recipes`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from .engine import runtime
from .engine.patch import Patch
from .engine.runtime import Planned, unknown_name_error
from .patches import DEFAULT_PATCHES, get_patch, patch_names
from .recipes import get_recipe, recipe_names


def known_names() -> dict[str, str]:
    """Every name ``apply`` takes -> "patch" or "recipe"."""
    names = dict.fromkeys(patch_names(), "patch")
    names.update(dict.fromkeys(recipe_names(), "recipe"))
    return names


def plan(names: Sequence[str]) -> list[Planned]:
    """Names -> the patches to switch on, in order (no names: the default set).

    A recipe contributes its generic patches first, then its own targets, all owned by the recipe.
    """
    known = known_names()
    out: list[Planned] = []
    for name in names or DEFAULT_PATCHES:
        kind = known.get(name)
        if kind is None:
            raise unknown_name_error(name, list(known))
        if kind == "patch":
            out.append(Planned(get_patch(name)))
            continue
        recipe = get_recipe(name)
        out += [Planned(_recipe_member(member, name), name, recipe.options) for member in recipe.patches]
        out.append(Planned(recipe.patch, name, recipe.options))
    return out


def _recipe_member(name: str, recipe: str) -> Patch:
    if name not in patch_names():
        raise ValueError(f"recipe {recipe!r} names unknown patch {name!r}; known: {', '.join(patch_names())}")
    return get_patch(name)


def apply(
    *names: str,
    device: str | None = None,
    log: str | None = None,
    log_dir: str | os.PathLike[str] | None = None,
    **options: Any,
) -> list[str]:
    """Switch on patches and recipes; returns the names switched on by this call.

    No names: the default set of generic patches. Targets already imported are patched now,
    the others when their module is imported. Applying an active patch again does nothing.
    ``log``: "off" | "summary" | "detail" call-site logging (default: env ASCEND_PATCH_LOG, else
    summary; "detail" also prints each new call site and makes ``report()`` show the internal view).
    ``log_dir`` (default: env ASCEND_PATCH_LOG_DIR): a folder the migration log is written to at
    exit, as ``ascend_patch_<rank>_<pid>.jsonl`` (one file per process: per torchrun worker).
    """
    return runtime.apply(plan(names), device=device, log=log, log_dir=log_dir, **options)


def revert(*names: str) -> list[str]:
    """Undo patches (all when no names), newest first, restoring the original objects.

    A recipe name reverts the recipe and the patches it switched on.
    """
    if not names:
        return runtime.revert()
    known = known_names()
    for name in names:
        if name not in known:
            raise unknown_name_error(name, list(known))
    return runtime.revert(names)


@contextmanager
def patched(
    *names: str,
    device: str | None = None,
    log: str | None = None,
    log_dir: str | os.PathLike[str] | None = None,
    **options: Any,
) -> Iterator[list[str]]:
    """``apply`` on entry, ``revert`` of what this block switched on at exit (also on exceptions)."""
    switched_on = apply(*names, device=device, log=log, log_dir=log_dir, **options)
    try:
        yield switched_on
    finally:
        if switched_on:
            runtime.revert(switched_on)
