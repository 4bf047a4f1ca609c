"""The minimal dinov2 / mobilevit recipes: what they switch on, and MobileViT's eager-only attention."""

from __future__ import annotations

import pytest

import ascend_patch


def test_recipes_are_registered():
    recipes = ascend_patch.list_recipes()
    assert {"dinov2", "mobilevit"} <= set(recipes)


def test_dinov2_switches_on_its_patches_and_explains_itself():
    # The full dinov2 tests (transformers and the torch.hub repo) are in tests/recipes/test_dinov2.py.
    with ascend_patch.patched("dinov2", device="cpu") as on:
        assert on == ["gelu", "seed", "autocast", "fp32_autocast", "attention", "dinov2"]
        kept = ascend_patch.report().filter(patch="dinov2", action="kept")
        assert any("gelu patch" in r.detail for r in kept)
        waiting = ascend_patch.report().filter(patch="dinov2", action="waiting")
        assert [r.target for r in waiting] == ["dinov2.utils.utils:fix_random_seeds"]  # the hub repo, not imported
    assert ascend_patch.active() == []


def test_mobilevit_any_attn_implementation_falls_back_to_eager(tmp_path):
    from transformers import MobileViTForImageClassification

    from ascend_patch.tools.models import get_spec

    config = get_spec("mobilevit").build(tiny=True).model.config
    with pytest.raises(ValueError, match="scaled_dot_product_attention"):
        MobileViTForImageClassification._from_config(config, attn_implementation="sdpa")
    with ascend_patch.patched("mobilevit", device="cpu"):
        model = MobileViTForImageClassification._from_config(config, attn_implementation="sdpa")
        assert model.config._attn_implementation == "eager"
        model.save_pretrained(tmp_path)
        loaded = MobileViTForImageClassification.from_pretrained(tmp_path, attn_implementation="sdpa")
        assert loaded.config._attn_implementation == "eager"
        calls = ascend_patch.report().filter(patch="mobilevit", action="call")
        assert calls and calls[0].target == "attn_implementation='sdpa'"
    # Reverted: the class inherits the original check again.
    from transformers.models.mobilevit.modeling_mobilevit import MobileViTPreTrainedModel

    assert "_check_and_adjust_attn_implementation" not in vars(MobileViTPreTrainedModel)
    with pytest.raises(ValueError):
        MobileViTForImageClassification._from_config(config, attn_implementation="sdpa")
