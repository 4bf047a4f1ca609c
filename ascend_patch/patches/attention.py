"""attention: ``flash_attn`` and ``xformers`` resolve to SDPA-backed shims.

Neither package has an NPU build (transformers #36618/#39844, xformers #1237) and neither runs
on CPU, so CUDA research code that imports them dies at import. ``F.scaled_dot_product_attention``
is the portable target: on NPU it dispatches to the fused attention kernel (torch-npu-facts.md).

Before::

    from flash_attn import flash_attn_func          # ModuleNotFoundError on NPU
After ``apply("attention")`` the import gets :mod:`ascend_patch.shims.flash_attn`, and
``transformers.utils.is_flash_attn_2_available()`` answers True so upstream takes that path.

Modes (option ``attention``): ``"shim"`` (default) or ``"hide"``: the imports raise
ImportError so upstream uses its own non-flash fallback, and is_flash_attn_2_available()
answers False. On a CUDA target with the real package installed, the real one is kept.

The shim modules are put into ``sys.modules`` under the upstream names through the journal,
so revert removes them (or restores a real module that was imported before) exactly. A finder
at the front of ``sys.meta_path`` serves "hide" and names an unshimmed submodule clearly.
"""

from __future__ import annotations

import functools
import importlib
import importlib.abc
import importlib.util
import pkgutil
import sys
from typing import Any, Callable, Sequence

from ..engine.patch import Option, Patch, PatchContext, Replace
from ..engine.slots import MISSING, ItemSlot, ListSlot

PACKAGES = ("flash_attn", "xformers")
SHIM_ROOT = "ascend_patch.shims"


class AttentionImportFinder(importlib.abc.MetaPathFinder):
    slot_name = "ascend_patch.attention"

    def __init__(self, mode: str, packages: Sequence[str]) -> None:
        self.mode = mode
        self.packages = tuple(packages)

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        top = fullname.partition(".")[0]
        if top not in self.packages:
            return None
        if self.mode == "hide":
            raise ModuleNotFoundError(
                f"No module named {fullname!r} (hidden by ascend_patch attention='hide' so upstream uses its "
                "own fallback; apply attention='shim' to get the SDPA-backed shim)",
                name=fullname,
            )
        raise ModuleNotFoundError(
            f"ascend_patch's {top} shim does not provide {fullname!r}; it covers "
            f"{', '.join(shim_module_names(top))}. Use attention='hide' to make upstream fall back, "
            "or open an issue naming the function you need",
            name=fullname,
        )


@functools.lru_cache(maxsize=None)
def shim_module_names(package: str) -> tuple[str, ...]:
    """Upstream module names the shim package provides (walks ascend_patch/shims/<package>)."""
    shim_package = f"{SHIM_ROOT}.{package}"
    root = importlib.import_module(shim_package)
    # Walk under our own names: walking "flash_attn.*" would import through the finder.
    walked = pkgutil.walk_packages(root.__path__, prefix=f"{shim_package}.")
    return (package, *(package + info.name[len(shim_package):] for info in walked))


def _real_package_available(package: str) -> bool:
    module = sys.modules.get(package)
    if module is not None:
        return not getattr(module, "__ascend_patch_shim__", False)
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def _packages_to_shim(ctx: PatchContext) -> list[str]:
    # The real package is kept only where it can run: a CUDA target (on npu: always the shim).
    return [p for p in PACKAGES if not (ctx.device == "cuda" and _real_package_available(p))]


def _setup(ctx: PatchContext) -> None:
    mode = ctx.options["attention"]
    packages = _packages_to_shim(ctx) if mode == "shim" else list(PACKAGES)
    for kept in sorted(set(PACKAGES) - set(packages)):
        ctx.note("kept", kept, "the real package is installed and the target is cuda")
    if not packages:
        return
    ctx.replace(ListSlot(sys.meta_path, AttentionImportFinder.slot_name), AttentionImportFinder(mode, packages),
                kind="finder", note=f"mode={mode}")
    modules = sys.modules
    # One pass over sys.modules for every package (it holds thousands of names once torch is in).
    starts = tuple(packages)
    imported = [n for n in modules if n.startswith(starts) and n.partition(".")[0] in packages]
    for package in packages:
        # Drop any module already imported under the upstream names (a real package that
        # cannot run here, or a cached failure), so the next import meets the shim or the finder.
        stale = [n for n in imported if n.partition(".")[0] == package]
        if mode == "shim":
            for name in shim_module_names(package):
                shim = importlib.import_module(f"{SHIM_ROOT}.{name}")
                ctx.replace(ItemSlot(modules, name), shim, kind="module", note=f"-> {shim.__name__}")
                if name in stale:
                    stale.remove(name)
        for name in stale:
            ctx.replace(ItemSlot(modules, name), MISSING, kind="module", note="removed while patched")


def _flash_answer(ctx: PatchContext) -> bool | None:
    """What flash-attn availability checks should say; None: ask the real package (kept on cuda)."""
    if ctx.options["attention"] == "hide":
        return False
    return True if "flash_attn" in _packages_to_shim(ctx) else None


def _flash_available(original: Callable[..., bool], ctx: PatchContext) -> Callable[..., bool]:
    answer = _flash_answer(ctx)

    def is_flash_attn_2_available(*args: Any, **kwargs: Any) -> bool:
        return original(*args, **kwargs) if answer is None or not ctx.active else answer

    return is_flash_attn_2_available


def _flash_greater_or_equal(original: Callable[..., bool], ctx: PatchContext) -> Callable[..., bool]:
    from packaging.version import Version

    answer = _flash_answer(ctx)

    def is_flash_attn_greater_or_equal(library_version: str) -> bool:
        if answer is None or not ctx.active:
            return original(library_version)
        shim_version = importlib.import_module(f"{SHIM_ROOT}.flash_attn").__version__
        return answer and Version(shim_version) >= Version(library_version)

    return is_flash_attn_greater_or_equal


PATCH = Patch(
    name="attention",
    summary="flash_attn / xformers imports resolve to SDPA-backed shims (or are hidden so upstream falls back)",
    setup=_setup,
    replaces=(
        Replace("transformers.utils.import_utils:is_flash_attn_2_available", _flash_available, copies=True,
                optional=True),
        Replace("transformers.utils.import_utils:is_flash_attn_greater_or_equal", _flash_greater_or_equal,
                copies=True, optional=True),
    ),
    options={"attention": Option("shim", ("shim", "hide"), "shim: SDPA-backed flash_attn/xformers; hide: ImportError")},
)
