"""What the runtime handles, read from the patches, shims and recipes themselves (no table of our own).

A scan verdict names the patch that serves a construct only when that patch declares it:

- ``torch.cuda.X`` (any spelling: ``torch.cuda.manual_seed`` is a copy of
  ``torch.cuda.random.manual_seed``): the object ``torch.cuda.X`` is one a patch's ``Replace``
  target names, or the class whose method one names (``autocast.__init__`` serves
  ``torch.cuda.amp.autocast``). The device patch's ``UNMAPPED`` gives the reason for those it leaves.
- a syntax the scan sees (``.cuda()``, ``pin_memory_device=``, ``ProfilerActivity.CUDA``): the
  runtime function that meets it at run time (``SERVED_BY``), looked up among the patches' targets.
- ``flash_attn`` / ``xformers`` imports: the modules and attributes the shim packages really have.
- a recipe: the modules its own ``Replace`` targets live in.

Objects are resolved by import (torch is imported; nothing is patched). Computed once per process.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("ascend_patch")

# Syntax the scan recognises -> the runtime target that meets it when the code runs. The verdict is
# whichever patch declares that target (none: unhandled), so removing a target changes the verdict.
SERVED_BY: dict[str, str] = {
    "tensor_cuda": "torch:Tensor.cuda",  # x.cuda(), model.cuda() (Module.cuda calls it per tensor)
    "device_literal": "torch:Tensor.to",  # "cuda" / "cuda:N" passed as a device
    "tensor_type": "torch:Tensor.type",  # x.type("torch.cuda.HalfTensor")
    "pin_memory_device": "torch:Tensor.pin_memory",  # DataLoader(pin_memory_device="cuda")
    "profiler_cuda": "torch.profiler.profiler:profile.__init__",  # ProfilerActivity.CUDA, use_cuda=True
    "nccl": "torch.distributed.distributed_c10d:init_process_group",
    "fsdp_device_id": "torch.distributed.fsdp.fully_sharded_data_parallel:FullyShardedDataParallel.__init__",
    "autocast": "torch.amp.autocast_mode:autocast.__init__",
    "cuda_autocast": "torch.cuda.amp.autocast_mode:autocast.__init__",
    "grad_scaler": "torch.amp.grad_scaler:GradScaler.__init__",
    "custom_fwd": "torch.amp.autocast_mode:custom_fwd",
    "fp32_autocast": "torch.amp.autocast_mode:autocast.__enter__",
}
# torch.cuda names that are no target themselves but are built on one (the truth test runs each).
BUILT_ON: dict[str, str] = {"torch.cuda.nvtx.range": "torch.cuda.nvtx.range_push"}


@dataclass(frozen=True)
class Verdict:
    patch: str | None  # None: unhandled
    note: str = ""


def _patches() -> dict[str, Any]:
    from ...patches import get_patch, patch_names

    return {name: get_patch(name) for name in patch_names()}


@functools.lru_cache(maxsize=1)
def targets() -> dict[str, str]:
    """Every ``Replace`` target of the generic patches -> the patch that declares it (first wins)."""
    found: dict[str, str] = {}
    for name, patch in _patches().items():
        for rep in patch.replaces:
            found.setdefault(rep.target, name)
    return found


def served(key: str) -> str | None:
    """The patch that declares the runtime target serving ``SERVED_BY[key]``; None if no patch does."""
    return targets().get(SERVED_BY[key])


def _resolve(dotted: str) -> Any:
    """The object at ``a.b.c`` (imports the longest module prefix); raises LookupError if absent."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                raise LookupError(dotted)
            obj = getattr(obj, attr)
        return obj
    raise LookupError(dotted)


def _target_object(target: str) -> tuple[Any, Any]:
    """(object at ``module:attr.path``, its owner when the path has two parts, else None)."""
    module, _, path = target.partition(":")
    owner = importlib.import_module(module)
    parts = path.split(".")
    for part in parts[:-1]:
        owner = getattr(owner, part)
    return getattr(owner, parts[-1]), owner if len(parts) > 1 else None


def _key(obj: Any) -> tuple[str, str] | None:
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return (module, qualname) if isinstance(module, str) and isinstance(qualname, str) else None


@functools.lru_cache(maxsize=1)
def _cuda_objects() -> tuple[dict[int, str], dict[tuple[str, str], str], dict[str, str]]:
    """Patches' ``torch.cuda`` targets by object id, by (module, qualname), and by spelling."""
    by_id: dict[int, str] = {}
    by_key: dict[tuple[str, str], str] = {}
    by_name: dict[str, str] = {}
    for target, patch in targets().items():
        module, _, path = target.partition(":")
        if not module.startswith("torch.cuda"):
            continue
        by_name.setdefault(f"{module}.{path}", patch)
        try:
            obj, owner = _target_object(target)
        except (ImportError, AttributeError):
            continue  # an optional target this torch lacks
        for o in (obj, owner):
            if o is not None and (callable(o) or isinstance(o, type)):  # never ids of shared constants
                by_id.setdefault(id(o), patch)
                if (k := _key(o)) is not None:
                    by_key.setdefault(k, patch)
    return by_id, by_key, by_name


@functools.lru_cache(maxsize=1)
def unmapped() -> dict[str, str]:
    """``torch.cuda`` spellings the device patch leaves alone -> why (its ``UNMAPPED``)."""
    from ...patches.device import UNMAPPED

    reasons: dict[str, str] = {}
    for spelled, why in UNMAPPED.items():
        first = spelled.split(" ")[0]
        prefix = first.rpartition(".")[0]
        for alias in spelled.split(" / "):
            alias = alias.split(" ")[0]
            reasons[alias if "." in alias else f"{prefix}.{alias}"] = why
    return reasons


@functools.lru_cache(maxsize=4096)
def cuda_name(name: str) -> Verdict:
    """The verdict for a dotted ``torch.cuda...`` name as the code spells it."""
    name = BUILT_ON.get(name, name)
    if name == "torch.cuda":
        return _module_verdict(name)
    by_id, by_key, by_name = _cuda_objects()
    parts = name.split(".")
    for cut in range(len(parts), 2, -1):  # torch.cuda.Event.elapsed_time: the class decides
        prefix = ".".join(parts[:cut])
        if prefix in by_name:
            return Verdict(by_name[prefix])
        try:
            obj = _resolve(prefix)
        except LookupError:
            continue
        if id(obj) in by_id:
            return Verdict(by_id[id(obj)])
        if (k := _key(obj)) is not None and k in by_key:
            return Verdict(by_key[k])
        if hasattr(obj, "__path__") or type(obj).__name__ == "module":
            return _module_verdict(prefix)
    for cut in range(len(parts), 2, -1):
        why = unmapped().get(".".join(parts[:cut]))
        if why:
            return Verdict(None, f"left alone by the device patch: {why}")
    return Verdict(None, f"no patch serves {name}: it needs CUDA (NotImplemented / AttributeError on an NPU)")


def _module_verdict(module: str) -> Verdict:
    """``import torch.cuda.amp``: the patch with the most targets in that module tree."""
    counts: dict[str, int] = {}
    for target, patch in targets().items():
        mod = target.partition(":")[0]
        if mod == module or mod.startswith(module + "."):
            counts[patch] = counts.get(patch, 0) + 1
    if not counts:
        return Verdict(None, f"no patch serves {module}")
    return Verdict(max(counts, key=lambda p: counts[p]))


# -- flash_attn / xformers: the shim packages ------------------------------------------------------


@functools.lru_cache(maxsize=1)
def shimmed_packages() -> dict[str, str]:
    """Upstream package the attention patch serves from a shim -> that patch's name."""
    from ...patches.attention import PACKAGES, PATCH

    return {package: PATCH.name for package in PACKAGES}


@functools.cache
def shim_modules(package: str) -> tuple[str, ...]:
    from ...patches.attention import shim_module_names

    return shim_module_names(package)


def _shim_module(module: str) -> Any:
    from ...patches.attention import SHIM_ROOT

    return importlib.import_module(f"{SHIM_ROOT}.{module}")


def shim_import(module: str, names: Iterable[str] = ()) -> Verdict:
    """``import module`` / ``from module import names`` with the shim in place of the package."""
    top = module.partition(".")[0]
    patch = shimmed_packages()[top]
    provided = shim_modules(top)
    if module not in provided:
        return Verdict(None, f"the {top} shim has no {module} (the import fails at run time; it covers "
                             f"{', '.join(provided)}): a recipe serves it, or attention='hide' makes upstream "
                             "take its own fallback")  # fmt: skip
    shim = _shim_module(module)
    missing = [n for n in names if n != "*" and not hasattr(shim, n) and f"{module}.{n}" not in provided]
    if missing:
        return Verdict(None, f"the {top} shim's {module} has no {', '.join(missing)} (ImportError at run time): "
                             "a recipe serves it, or attention='hide' makes upstream take its own fallback")  # fmt: skip
    return Verdict(patch, "resolved to the SDPA-backed shim")


# -- recipes ---------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def recipe_modules() -> dict[str, tuple[str, str]]:
    """Module a recipe patches -> (recipe name, its summary), from each recipe's own Replace targets."""
    from ...recipes import get_recipe, recipe_names

    modules: dict[str, tuple[str, str]] = {}
    for name in recipe_names():
        try:
            recipe = get_recipe(name)
        except Exception as exc:  # noqa: BLE001 - a broken third-party recipe must not break the scan
            logger.warning("scan: recipe %s not loaded: %r", name, exc)
            continue
        for rep in recipe.patch.replaces:
            modules.setdefault(rep.target.partition(":")[0], (name, recipe.summary))
    return modules
