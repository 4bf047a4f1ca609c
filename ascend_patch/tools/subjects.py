"""What ``verify`` and ``bench`` run: a model, the patches it runs under, its inputs, what is compared.

A subject comes from one of four places, all ending in the same :class:`Built`:

- a recipe with a built-in model (``dinov2``): its :class:`~ascend_patch.tools.models.ModelSpec`;
- a Hugging Face model folder, or a hub id in the local cache (:mod:`.hf_folder`);
- a factory, ``"package.module:build"`` or ``"path/to/file.py:build"``: ``build()`` returns
  ``(model, example_inputs)``, the inputs as :meth:`Inputs.of` takes them;
- a model object and its example inputs (the Python API).

The model is built while the patches are active, as the user's script builds it: a factory that
calls ``.cuda()`` or imports flash_attn works. A recipe brings its patches, options and checks;
otherwise ``patches`` (default: the default set of ``apply()``) are used.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ..recipes import Check, Recipe
from .inputs import Inputs
from .models import MODEL_MODULES, InputError, get_spec

ALL = "all"  # ``without=["all"]``: a run with none of the subject's patches


def _to(model: torch.nn.Module, device: str, dtype: torch.dtype) -> torch.nn.Module:
    return model.to(device=device, dtype=dtype)


def _call(model: torch.nn.Module, inputs: Inputs) -> Any:
    return inputs.call(model)


@dataclass
class Built:
    """A built model and how to feed it."""

    model: torch.nn.Module
    source: str  # what was built or loaded, for the report
    random_init: bool
    inputs: Callable[[int | None], Inputs]  # batch size (None: the subject's own) -> inputs on the CPU
    input_desc: str
    run: Callable[[torch.nn.Module, Inputs], Any] = _call  # the forward under test
    prepare: Callable[[torch.nn.Module, str, torch.dtype], torch.nn.Module] = _to  # model -> device, dtype
    classifier_outputs: tuple[str, ...] = ("logits",)  # outputs whose argmax is compared


@dataclass(frozen=True)
class Subject:
    name: str  # for the report: the recipe, folder, factory or model class
    patches: tuple[str, ...]  # what is applied: (recipe name,) or generic patch names
    build: Callable[[], Built]  # called with the patches active
    options: Mapping[str, Any] = field(default_factory=dict)
    recipe: Recipe | None = None
    # The arguments of resolve() that name this subject again in another process (None: an object).
    request: Mapping[str, Any] | None = None

    @property
    def checks(self) -> tuple[Check, ...]:
        return self.recipe.checks if self.recipe is not None else ()

    @property
    def members(self) -> tuple[str, ...]:
        """What ``without`` may switch off: the generic patches, and a recipe's own targets (its name)."""
        if self.recipe is None:
            return self.patches
        return tuple(dict.fromkeys((*self.recipe.patches, *self.patches)))

    def plan(self, off: Sequence[str]) -> tuple[tuple[str, ...], dict[str, Any], list[str]]:
        """(names to apply, their options, names to revert once applied) for a run with ``off`` switched off.

        Without a recipe's own targets its generic patches still run, with the recipe's options: what
        the generic patches alone make of the model.
        """
        from ..patches import get_patch

        if ALL in off:
            return (), {}, []
        if self.recipe is not None and self.recipe.name in off:
            names = tuple(p for p in self.members if p not in off)
            declared = {key for name in names for key in get_patch(name).options}
            options = {k: v for k, v in {**self.recipe.options, **self.options}.items() if k in declared}
            return names, options, []
        return self.patches, dict(self.options), list(off)

    def ablations(self, without: Sequence[str]) -> list[list[str]]:
        """Each ``without`` item is one extra run; "gelu,seed" switches both off in the same run."""
        runs: list[list[str]] = []
        for item in without:
            names = [n.strip() for n in str(item).split(",") if n.strip()]
            if not names:
                raise InputError(f"--without {item!r}: name a patch ({', '.join(self.members)}) or '{ALL}'")
            if names == [ALL]:
                runs.append([ALL])
                continue
            of = f"recipe {self.recipe.name!r}" if self.recipe is not None else self.name
            for name in names:
                if name not in self.members:
                    close = difflib.get_close_matches(name, [*self.members, ALL], n=1)
                    hint = f". Did you mean {close[0]!r}?" if close else ""
                    raise InputError(f"--without {name!r}: not a patch of {of} (its patches: "
                                     f"{', '.join(self.members)}; or '{ALL}'){hint}")
            runs.append(names)
        return runs


# -- patches ------------------------------------------------------------------------------------


def _patch_plan(recipe: str | None, patches: Sequence[str] | None) -> tuple[tuple[str, ...], Recipe | None]:
    """(names to apply, the recipe) for a recipe and/or generic patches ("default": the default set).
    No names: the default set, as ``apply()``."""
    from ..patches import DEFAULT_PATCHES, patch_names
    from ..recipes import get_recipe, recipe_names

    found = None
    if recipe is not None:
        try:
            found = get_recipe(recipe)
        except ValueError as exc:  # unknown: the known names and the closest match
            raise InputError(f"--recipe: {exc}") from None
    generic: list[str] = []
    for name in patches or (() if found else ("default",)):
        if name not in (*patch_names(), "default"):
            hint = " (a recipe: use --recipe)" if name in recipe_names() else ""
            raise InputError(f"unknown patch {name!r}{hint}; patches: default, {', '.join(patch_names())}")
        generic += DEFAULT_PATCHES if name == "default" else [name]
    return tuple(dict.fromkeys([*([recipe] if found else []), *generic])), found


# -- the four sources ---------------------------------------------------------------------------


def recipe_subject(recipe: str, *, dtype: str, model_path: str | os.PathLike[str] | None = None, tiny: bool = False,
                   repo: str | os.PathLike[str] | None = None, image: str | os.PathLike[str] | None = None,
                   seed: int = 0) -> Subject:
    """A recipe's built-in model (random-init full size, ``tiny``, or ``model_path``)."""
    spec = get_spec(recipe)
    spec.check_image(image)
    if tiny and model_path is not None:
        raise InputError("--tiny, --model-path: give one (--tiny builds a small random model, --model-path loads one)")
    if repo is not None and spec.upstream is None:
        raise InputError(f"--repo: not for recipe {recipe!r} (its model comes from an installed package)")
    patches, found = _patch_plan(recipe, None)

    def build() -> Built:
        loaded = spec.build(model_path, tiny=tiny, repo=repo)
        return Built(
            loaded.model, loaded.source, loaded.random_init,
            inputs=lambda b: Inputs((spec.inputs(loaded.image_size, b or 1, image=image, seed=seed),)),
            input_desc=str(image) if image else f"seeded random tensor (seed {seed})",
            run=lambda model, inputs: spec.run(model, *inputs.args),
            prepare=spec.prepare, classifier_outputs=spec.classifier_outputs,
        )  # fmt: skip

    return Subject(recipe, patches, build, spec.options_for(dtype), found)


def folder_subject(target: str, *, recipe: str | None = None, patches: Sequence[str] | None = None,
                   random_init: bool = False, trust_remote_code: bool = False,
                   image: str | os.PathLike[str] | None = None, seed: int = 0) -> Subject:
    from . import hf_folder

    folder = hf_folder.resolve_folder(target)  # fails now, before anything is built
    names, found = _patch_plan(recipe, patches)

    def build() -> Built:
        loaded = hf_folder.load_folder(str(folder), random_init=random_init, trust_remote_code=trust_remote_code)
        loaded.inputs(1, seed, image)  # bad --image / unknown input kinds fail before the reference runs
        return Built(loaded.model, loaded.source, random_init, inputs=lambda b: loaded.inputs(b or 1, seed, image),
                     input_desc=str(image) if image else f"seeded random inputs (seed {seed})")

    name = folder.name if Path(target).is_dir() else target  # a hub id names its cached snapshot better
    return Subject(name, names, build, recipe=found)


def _import_factory(spec: str, repo: str | os.PathLike[str] | None) -> Callable[[], Any]:
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise InputError(f"--factory {spec!r}: expected MODULE:FUNCTION or FILE.py:FUNCTION")
    if repo is not None:
        if not Path(repo).is_dir():
            raise InputError(f"--repo {str(repo)!r} is not a directory")
        sys.path.insert(0, str(Path(repo).resolve()))
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise InputError(f"--factory {spec!r}: {module_name} does not exist")
        sys.path.insert(0, str(path.resolve().parent))  # its sibling modules import as in a script
        loader_spec = importlib.util.spec_from_file_location(path.stem, path)
        assert loader_spec is not None and loader_spec.loader is not None
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[path.stem] = module
        loader_spec.loader.exec_module(module)
    else:
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())  # as `python -m` does: the current folder's modules import
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not module_name.startswith(exc.name):
                raise  # the factory's own imports: the user's code, with its traceback
            raise InputError(f"--factory {spec!r}: no module named {exc.name!r} (run from the folder holding it, "
                             "or pass --repo PATH)") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise InputError(f"--factory {spec!r}: {module_name} has no function {attr!r}")
    return factory


def factory_subject(factory: str | Callable[[], Any], *, recipe: str | None = None,
                    patches: Sequence[str] | None = None, repo: str | os.PathLike[str] | None = None,
                    run: Callable[[torch.nn.Module, Inputs], Any] | None = None,
                    classifier_outputs: Sequence[str] = ("logits",)) -> Subject:
    """``factory()`` -> ``(model, example_inputs)``, called with the patches active."""
    names, found = _patch_plan(recipe, patches)
    if isinstance(factory, str):  # "path/to/cuda_vit.py:build" -> "cuda_vit.py:build"
        module, _, attr = factory.rpartition(":")
        label = f"{Path(module).name}:{attr}" if module.endswith(".py") else factory
    else:
        label = getattr(factory, "__qualname__", repr(factory))

    def build() -> Built:
        fn = _import_factory(factory, repo) if isinstance(factory, str) else factory
        made = fn()
        if not (isinstance(made, tuple) and len(made) == 2 and isinstance(made[0], torch.nn.Module)):
            raise InputError(f"factory {label} returned {type(made).__name__}; it must return "
                             "(model: torch.nn.Module, example_inputs)")
        source = f"{type(made[0]).__name__} from factory {factory if isinstance(factory, str) else label}"
        return _built_from(made[0], made[1], source, run, classifier_outputs)

    return Subject(label, names, build, recipe=found)


def model_subject(model: torch.nn.Module, inputs: Any, *, recipe: str | None = None,
                  patches: Sequence[str] | None = None, run: Callable[[torch.nn.Module, Inputs], Any] | None = None,
                  classifier_outputs: Sequence[str] = ("logits",)) -> Subject:
    """A model the caller built, with example inputs."""
    if inputs is None:
        raise InputError("verify(model, inputs): a model needs example inputs (a tensor, a tuple of arguments or "
                         "a dict of keyword arguments)")
    names, found = _patch_plan(recipe, patches)
    example = Inputs.of(inputs)
    name = type(model).__name__
    return Subject(name, names, lambda: _built_from(model, example, f"{name} (given)", run, classifier_outputs),
                   recipe=found)


def _built_from(model: torch.nn.Module, example: Any, source: str,
                run: Callable[[torch.nn.Module, Inputs], Any] | None, classifier_outputs: Sequence[str]) -> Built:
    given = Inputs.of(example).to("cpu")  # a factory may have made them on the device

    def inputs(batch: int | None) -> Inputs:
        return given if batch is None else given.with_batch(batch)

    return Built(model.eval(), source, random_init=False, inputs=inputs, input_desc=f"example inputs: "
                 f"{given.describe()}", run=run or _call, classifier_outputs=tuple(classifier_outputs))


def resolve(target: Any = None, inputs: Any = None, *, factory: str | Callable[[], Any] | None = None,
            recipe: str | None = None, patches: Sequence[str] | None = None, dtype: str = "fp32",
            model_path: str | os.PathLike[str] | None = None, tiny: bool = False,
            repo: str | os.PathLike[str] | None = None, image: str | os.PathLike[str] | None = None, seed: int = 0,
            random_init: bool = False, trust_remote_code: bool = False,
            run: Callable[[torch.nn.Module, Inputs], Any] | None = None,
            classifier_outputs: Sequence[str] = ("logits",)) -> Subject:
    """The subject named by ``target`` (a recipe, a folder or hub id, ``"module:build"``, a model or a
    factory function) or ``factory``; options that do not fit the kind of target are refused."""
    named = {"factory": factory, "recipe": recipe, "patches": patches, "dtype": dtype, "model_path": model_path,
             "tiny": tiny, "repo": repo, "image": image, "seed": seed, "random_init": random_init,
             "trust_remote_code": trust_remote_code}  # fmt: skip
    subject = _resolve(target, inputs, run=run, classifier_outputs=classifier_outputs, **named)
    if isinstance(target, (str, type(None))) and isinstance(factory, (str, type(None))) and run is None:
        request = {"target": target, **named}
        subject = replace(subject, request={k: os.fspath(v) if isinstance(v, os.PathLike) else v
                                            for k, v in request.items()})
    return subject


def _resolve(target: Any, inputs: Any, *, factory: str | Callable[[], Any] | None, recipe: str | None,
             patches: Sequence[str] | None, dtype: str, model_path: str | os.PathLike[str] | None, tiny: bool,
             repo: str | os.PathLike[str] | None, image: str | os.PathLike[str] | None, seed: int, random_init: bool,
             trust_remote_code: bool, run: Callable[[torch.nn.Module, Inputs], Any] | None,
             classifier_outputs: Sequence[str]) -> Subject:
    if target is not None and factory is not None:
        raise InputError("give a TARGET or --factory, not both")
    if target is None and factory is None:
        raise InputError("nothing to run: give a recipe, a model folder, or --factory MODULE:FUNCTION")
    if isinstance(target, torch.nn.Module):
        _refuse("a model object", model_path=model_path, tiny=tiny, repo=repo, image=image, seed=seed,
                random_init=random_init, trust_remote_code=trust_remote_code)
        return model_subject(target, inputs, recipe=recipe, patches=patches, run=run,
                             classifier_outputs=classifier_outputs)
    if callable(target) and not isinstance(target, str):
        factory, target = target, None
    if factory is not None or (isinstance(target, str) and ":" in target and not Path(target).exists()):
        _refuse("a factory (it makes its own inputs)", model_path=model_path, tiny=tiny, image=image, seed=seed,
                random_init=random_init, trust_remote_code=trust_remote_code, inputs=inputs)
        return factory_subject(factory if factory is not None else target, recipe=recipe, patches=patches,
                               repo=repo, run=run, classifier_outputs=classifier_outputs)
    if not isinstance(target, str):
        raise InputError(f"cannot verify a {type(target).__name__}: give a recipe name, a folder, a factory or a "
                         "torch.nn.Module with its inputs")
    _refuse("a named target (give a model object for inputs= and run=)", inputs=inputs, run=run)
    if target in MODEL_MODULES:
        _refuse(f"recipe {target!r} (it brings its own patches and model)", recipe=recipe, patches=patches,
                random_init=random_init, trust_remote_code=trust_remote_code)
        return recipe_subject(target, dtype=dtype, model_path=model_path, tiny=tiny, repo=repo, image=image, seed=seed)
    from ..engine.runtime import unknown_name_error
    from ..recipes import recipe_names

    if target in recipe_names():
        raise InputError(f"recipe {target!r} has no built-in model: run yours under it with "
                         f"--factory MODULE:FUNCTION --recipe {target}")
    if not Path(target).exists() and difflib.get_close_matches(target, recipe_names(), n=1):
        raise InputError(f"{unknown_name_error(target, recipe_names(), what='recipe')}; or give a model folder")
    _refuse("a model folder (--tiny and --model-path are for recipes)", model_path=model_path, tiny=tiny, repo=repo)
    return folder_subject(target, recipe=recipe, patches=patches, random_init=random_init,
                          trust_remote_code=trust_remote_code, image=image, seed=seed)


_FLAGS = {"model_path": "--model-path", "tiny": "--tiny", "repo": "--repo", "image": "--image",
          "random_init": "--random-init", "trust_remote_code": "--trust-remote-code", "recipe": "--recipe",
          "patches": "--patches", "inputs": "inputs=", "run": "run=", "seed": "--seed"}  # fmt: skip


def _refuse(kind: str, **given: Any) -> None:
    used = [_FLAGS[name] for name, value in given.items() if value not in (None, False, (), [])]
    if used:
        raise InputError(f"{', '.join(used)}: not for {kind}")
