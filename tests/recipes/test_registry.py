"""The recipe registry: every built-in recipe is complete (docs page, model spec, example) and bad names
get the known ones with the closest match."""

from __future__ import annotations

from pathlib import Path

import pytest

import ascend_patch
from ascend_patch.patches import patch_names
from ascend_patch.recipes import BUILTIN_RECIPES, get_recipe
from ascend_patch.tools.models import InputError, get_spec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = {"mingtok": "mingtok_reconstruct.py", "vtp": "vtp_features.py", "aimv2": "aimv2_features.py",
            "dinov2": "dinov2_features.py", "mobilevit": "mobilevit_classify.py"}


def test_the_five_seed_models_are_built_in():
    assert set(BUILTIN_RECIPES) == set(EXAMPLES)
    assert set(EXAMPLES) <= set(ascend_patch.list_recipes())


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_each_recipe_is_complete(name):
    recipe = get_recipe(name)
    assert recipe.name == recipe.patch.name == name and recipe.summary
    assert set(recipe.patches) <= set(patch_names())
    assert recipe.patch.replaces or recipe.patch.setup, "a recipe patch with neither targets nor setup"
    assert get_spec(name).recipe == name
    page = ROOT / "docs" / "recipes" / f"{name}.md"
    assert page.is_file() and "measured" in page.read_text().lower()
    assert f'start("{name}"' in (ROOT / "examples" / EXAMPLES[name]).read_text()


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_each_recipe_applies_and_reverts_without_its_model_code(name):
    # Before the upstream code is imported, targets wait for it; revert leaves nothing behind
    # (the autouse fixture checks every generic target by identity).
    with ascend_patch.patched(name, device="cpu") as on:
        assert on == [*get_recipe(name).patches, name]
    assert ascend_patch.active() == []


def test_unknown_names_get_the_closest_match():
    with pytest.raises(ValueError, match=r"unknown patch or recipe 'mingtk'\. Did you mean 'mingtok'\?"):
        ascend_patch.apply("mingtk")
    with pytest.raises(ValueError, match=r"unknown recipe 'dinov3'\. Did you mean 'dinov2'\?.*mobilevit"):
        get_recipe("dinov3")
    with pytest.raises(InputError, match=r"Did you mean 'vtp'\?"):
        get_spec("vpt")
    with pytest.raises(ValueError, match=r"unknown option 'fp32_autocas'\. Did you mean 'fp32_autocast'\?"):
        ascend_patch.apply("mingtok", fp32_autocas="fp32")
