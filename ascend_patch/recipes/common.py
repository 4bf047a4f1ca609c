"""Model-specific fixes that more than one upstream repository needs, as builders recipes reuse.

- :func:`presence_flag_setup`: upstream env switches that test only whether a variable is *set*
  (DINOv2's ``XFORMERS_DISABLED``, MingTok's ``XFORMERS_ENABLED``), so ``=0`` means the opposite
  of what the user wrote.
- :func:`seed_function`: a repository's own ``fix_random_seeds`` that seeds "the GPU" with
  ``torch.cuda.manual_seed_all`` (DINOv2's hub repo, VTP).
- :func:`module_stand_in`: an upstream module of custom CUDA/Triton kernels (``import triton`` at
  its top) replaced, before anything imports it, by a module of PyTorch code with the same names.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..engine import calls
from ..engine.patch import PatchContext
from ..engine.slots import MISSING, AttrSlot, ItemSlot
from ..engine.warn import warn_user

# Spellings people use to switch something off; upstream only checks that the variable exists.
FALSY_SPELLINGS = frozenset({"0", "false", "no", "off"})


def presence_flag_setup(variable: str, effect: str, read_by: Sequence[str]) -> Callable[[PatchContext], None]:
    """A recipe ``setup`` for an env var upstream reads as "set or not", at import of ``read_by``.

    ``effect``: what setting it does upstream ("enables xFormers"). A value spelled off ("0",
    "false", ...) does ``effect`` all the same: the variable is unset (journaled, so revert sets it
    back) while the recipe is active and the user is warned. If a ``read_by`` module was imported
    before apply, the value was already read: say so, and that the recipe must come first.
    """

    def setup(ctx: PatchContext) -> None:
        value = os.environ.get(variable)
        target = f"os.environ[{variable!r}]"
        if value is None:
            return
        if value.strip().lower() not in FALSY_SPELLINGS:
            ctx.note("kept", target, f"{value!r}: {effect} (as set)")
            return
        imported = [name for name in read_by if name in sys.modules]
        if imported:
            ctx.note("nothing", target, f"{value!r} was read when {imported[0]} was imported, before apply: it "
                                        f"{effect} anyway. Apply the {ctx.patch!r} recipe before importing it")
            warn_user(f"{variable}={value!r} {effect} in {imported[0]} (only presence is checked) and it was "
                      f"read before ascend_patch.apply({ctx.patch!r}); unset {variable}, or apply the recipe "
                      "before importing the model code")
            return
        ctx.replace(ItemSlot(os.environ, variable), MISSING, kind="env",
                    note=f"{value!r} {effect} upstream (any value does): unset while the recipe is active")
        warn_user(f"{variable}={value!r} {effect} in the upstream code (it checks only that the variable is "
                  f"set); ascend_patch unsets it while the {ctx.patch!r} recipe is active. Unset it yourself to "
                  "silence this warning")

    return setup


def bound_caller(original: Any) -> Callable[..., Any]:
    """``(cls, *args, **kwargs)`` -> ``original`` bound to ``cls`` and called.

    ``original`` is a raw class attribute (the engine reads raw attributes): a classmethod, or another
    library's wrapper of one. Binding it, rather than calling ``original.__func__``, keeps that other
    wrapper in the call.
    """

    def call(cls: type, *args: Any, **kwargs: Any) -> Any:
        return original.__get__(None, cls)(*args, **kwargs)

    return functools.wraps(getattr(original, "__func__", original))(call)


def seed_device(device: str, seed: int) -> None:
    """Seed the generator of ``device`` ("npu", "cuda"; the CPU one is torch.manual_seed's job)."""
    module = getattr(torch, device, None) if device != "cpu" else None
    if module is not None and module.is_available():
        module.manual_seed_all(seed)


def seed_function(recipe: str) -> Callable[[Callable[..., Any], PatchContext], Callable[..., Any]]:
    """Builder for an upstream ``fix_random_seeds(seed=...)``: run it, then seed the target device too.

    Upstream seeds "the GPU" with ``torch.cuda.manual_seed_all``; without CUDA that call is queued
    and never runs. The generic ``seed`` patch redirects it, but only while it is active and only
    for calls that look ``torch.cuda`` up at call time; seeding the target here makes the
    function's promise hold on its own.
    """

    def build(original: Callable[..., Any], ctx: PatchContext) -> Callable[..., Any]:
        signature = inspect.signature(original)

        @functools.wraps(original)
        def fix_random_seeds(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            if ctx.active:
                bound = signature.bind(*args, **kwargs)
                bound.apply_defaults()
                seed = int(next(iter(bound.arguments.values())))
                seed_device(ctx.device, seed)
                if calls.STATE.enabled:
                    calls.log_call(recipe, original.__name__, f"-> also seeds the {ctx.device} generator")
            return result

        return fix_random_seeds

    return build


def module_stand_in(upstream: str, replacement: str) -> Callable[[PatchContext], None]:
    """A recipe ``setup`` that serves ``import <upstream>`` with the module ``replacement``.

    For kernel modules no device but a GPU can import (``import triton``, a compiled CUDA
    extension): the replacement implements the same public names in PyTorch, and the
    ``sys.modules`` entry is journaled, so revert removes it (or restores a module imported before).
    A module imported before apply is replaced too, but copies of its functions taken by then are not:
    apply the recipe before the model code is imported.
    """

    def setup(ctx: PatchContext) -> None:
        module = importlib.import_module(replacement)
        ctx.replace(ItemSlot(sys.modules, upstream), module, kind="module", note=f"-> {replacement} (PyTorch code)")
        parent, _, leaf = upstream.rpartition(".")
        if parent in sys.modules and hasattr(sys.modules[parent], leaf):  # ``from pkg import kernels`` reads this
            ctx.replace(AttrSlot(sys.modules[parent], leaf), module, kind="module")

    return setup
