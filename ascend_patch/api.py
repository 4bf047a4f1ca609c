"""The public verbs by name: patch and recipe names resolved to patches, then handed to the engine.

This layer sits above the engine (which knows how to patch, not which patches exist) and above
the registries in :mod:`ascend_patch.patches` and :mod:`ascend_patch.recipes`.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from .engine import calls, runtime
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
    the others when their module is imported. Applying an active patch again does nothing (for another
    device it raises: revert it first).
    ``log``: "off" | "summary" | "detail" call-site logging (default: env ASCEND_PATCH_LOG, else
    summary; "detail" also prints each new call site and makes ``report()`` show the internal view).
    ``log_dir`` (default: env ASCEND_PATCH_LOG_DIR): a folder the migration log is written to at
    exit, as ``ascend_patch_<rank>_<pid>.jsonl`` (one file per process: per torchrun worker).
    """
    planned = _checked_plan(names, options, "apply")
    return runtime.apply(planned, device=device, log=log, log_dir=log_dir, **options)


def _checked_plan(names: Sequence[Any], options: Mapping[str, Any], verb: str) -> list[Planned]:
    _check_names(names, verb)
    planned = plan(names)
    _check_options(planned, options)
    return planned


def _check_names(names: Sequence[Any], verb: str) -> None:
    for name in names:
        if not isinstance(name, str):
            how = f"{verb}('gelu', 'seed')" if isinstance(name, (list, tuple, set)) else f"{verb}('dinov2') or {verb}()"
            raise TypeError(f"{verb}() takes patch and recipe names as separate strings, e.g. {how}; got {name!r}")


def _check_options(planned: Sequence[Planned], options: Mapping[str, Any]) -> None:
    """An option of a patch that is not in this call names that patch (the engine only sees the plan)."""
    declared = {key for item in planned for key in item.patch.options}
    for key in options:
        if key in declared:
            continue
        # Only on this error path: the table imports every patch module.
        owner = {option: name for name in patch_names() for option in get_patch(name).options}
        if key in owner:
            raise ValueError(f"{key} is an option of the {owner[key]} patch, which is not in this apply() call: "
                             f"add {owner[key]!r} to the names (apply(..., {owner[key]!r}, {key}=...))")
        close = difflib.get_close_matches(key, [*sorted(declared), *owner], n=1)
        hint = "" if not close else f" Did you mean {close[0]!r}?" if close[0] in declared else \
            f" Did you mean {close[0]!r} (an option of the {owner[close[0]]} patch)?"
        raise ValueError(f"unknown option {key!r}.{hint} Options of this call: {', '.join(sorted(declared)) or 'none'}")


def revert(*names: str) -> list[str]:
    """Undo patches (all when no names), newest first, restoring the original objects.

    A recipe name reverts the recipe and the patches it switched on.
    """
    if not names:
        return runtime.revert()
    _check_names(names, "revert")
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
    """``apply`` on entry; at exit (also on an exception) the patches this block holds are reverted
    unless another ``patched()`` block, in any thread, still holds them or ``apply()`` switched them on.

    Patches are process-wide, not per thread: while any block holds a patch, code in every thread runs
    patched. Blocks may exit in any order (the last holder's exit reverts). An explicit ``revert()``
    inside a block wins: the block's exit then does nothing more. A ``log`` level given here holds for
    the block only. Yields the names this block switched on.
    """
    planned = _checked_plan(names, options, "patched")
    previous = calls.level()
    holder = object()
    try:
        switched_on = runtime.apply(planned, device=device, log=log, log_dir=log_dir, holder=holder, **options)
        try:
            yield switched_on
        finally:
            runtime.release(holder, [item.patch.name for item in planned])
    finally:
        if log is not None:
            calls.set_level(previous)
