"""The transformers versions the mobilevit recipe declares are the versions it was measured to cover.

transformers moved MobileViT's attention check in 4.54: 4.45 - 4.53 raise for ``attn_implementation="sdpa"``
in the classmethod ``_autoset_attn_implementation(config)``, 4.54 on in the instance method
``_check_and_adjust_attn_implementation(attn_implementation)``. ``MEASURED`` is the table that
``benchmarks/mobilevit_transformers_versions.py`` printed, one scratch venv per version (docs/compatibility.md):
which check each version has, and whether ``from_pretrained(folder, attn_implementation="sdpa")`` then
worked under the recipe. Only one transformers is installed here, so the other versions are checked
through what the recipe declares (its range, its targets) and, for the 4.45 - 4.53 check, through a
stand-in with upstream's behaviour put where the engine looks for it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

import ascend_patch
from ascend_patch.recipes import mobilevit
from ascend_patch.tools.models import get_spec

transformers = pytest.importorskip("transformers")
from transformers import MobileViTForImageClassification  # noqa: E402
from transformers.modeling_utils import PreTrainedModel  # noqa: E402
from transformers.models.mobilevit.modeling_mobilevit import MobileViTPreTrainedModel  # noqa: E402

OLD, NEW = "_autoset_attn_implementation", "_check_and_adjust_attn_implementation"
# version -> (the method that checks attn_implementation there, from_pretrained(..., "sdpa") under the recipe)
MEASURED = {
    "4.45.2": (OLD, "works"), "4.46.3": (OLD, "works"), "4.47.1": (OLD, "works"), "4.48.3": (OLD, "works"),
    "4.49.0": (OLD, "works"), "4.50.3": (OLD, "works"), "4.51.3": (OLD, "works"), "4.52.4": (OLD, "works"),
    "4.53.3": (OLD, "works"), "4.54.1": (NEW, "works"), "4.55.4": (NEW, "works"), "4.56.2": (NEW, "works"),
    "4.57.6": (NEW, "works"), "5.0.0": (NEW, "works"), "5.24.0": (NEW, "works"),
}
COMPATIBILITY = Path(__file__).resolve().parents[2] / "docs" / "compatibility.md"


def declared() -> SpecifierSet:
    return SpecifierSet(mobilevit.RECIPE.patch.requires["transformers"])


def installed() -> Version:
    return Version(transformers.__version__)


def test_the_declared_range_is_the_measured_coverage():
    """Inside the range: measured to work, and the recipe targets that version's check. Outside: did not work."""
    targets = {rep.target.rsplit(".", 1)[-1] for rep in mobilevit.RECIPE.patch.replaces}
    for version, (check, outcome) in MEASURED.items():
        assert (version in declared()) == (outcome == "works"), (version, outcome, str(declared()))
        if version in declared():
            assert check in targets, f"transformers {version} checks attn_implementation in {check}: not a target"
    assert all(rep.optional for rep in mobilevit.RECIPE.patch.replaces), "each version has only one of the checks"


def test_the_measured_table_is_in_the_docs():
    page = COMPATIBILITY.read_text()
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| (\d+\.\d+\.\d+) \|.*$", page, re.MULTILINE)}
    for version, (check, outcome) in MEASURED.items():
        assert version in rows, f"docs/compatibility.md has no row for transformers {version}"
        cells = [c.strip() for c in rows[version].strip("|").split("|")]
        assert cells[2] == cells[3] == outcome and f"`{check}`" in cells[-1], rows[version]


def test_the_installed_transformers_uses_the_sdpa_path_it_was_measured_with(tmp_path):
    """In this environment: the request for sdpa loads eager attention, through this version's check, and the
    other version's target is reported as absent (optional) rather than warned about."""
    assert str(installed()) in declared()
    expected, absent = (NEW, OLD) if installed() >= Version("4.54") else (OLD, NEW)
    config = get_spec("mobilevit").build(tiny=True).model.config
    MobileViTForImageClassification._from_config(config, attn_implementation="eager").save_pretrained(tmp_path)
    with ascend_patch.patched("mobilevit", device="cpu"):
        model = MobileViTForImageClassification.from_pretrained(tmp_path, attn_implementation="sdpa")
        assert model.config._attn_implementation == "eager"
        report = ascend_patch.report(internal=True)
    patched = {r.target.rsplit(".", 1)[-1] for r in report.filter(patch="mobilevit", action="patched")}
    nothing = list(report.filter(patch="mobilevit", action="nothing"))
    assert patched == {expected}
    assert [r.target.rsplit(".", 1)[-1] for r in nothing] == [absent] and "(optional)" in nothing[0].detail
    assert not report.filter(patch="mobilevit", action="skipped")
    assert [r.target for r in report.filter(patch="mobilevit", action="call")] == ["attn_implementation='sdpa'"]


# -- the 4.45 - 4.53 check, as a stand-in on this transformers -------------------------------------------


class Config:
    """What the old check reads: the request as ``_attn_implementation_internal`` (None: not asked)."""

    def __init__(self, requested: str | None) -> None:
        self._attn_implementation_internal = requested

    @property
    def _attn_implementation(self) -> str:
        return self._attn_implementation_internal or "eager"

    @_attn_implementation.setter
    def _attn_implementation(self, value: str) -> None:
        self._attn_implementation_internal = value


def old_check(cls, config, use_flash_attention_2=False, torch_dtype=None, device_map=None, check_device_map=True):
    """transformers 4.45 - 4.53's behaviour for a model without sdpa or flash-attention support."""
    if use_flash_attention_2:
        config._attn_implementation = "flash_attention_2"
    requested = config._attn_implementation_internal
    if requested == "flash_attention_2" and not cls._supports_flash_attn_2:
        raise ValueError(f"{cls.__name__} does not support Flash Attention 2.0 yet.")
    if requested == "sdpa" and not cls._supports_sdpa:
        raise ValueError(f"{cls.__name__} does not support an attention implementation through "
                         "torch.nn.functional.scaled_dot_product_attention yet.")
    return config


@pytest.fixture
def old_transformers(monkeypatch):
    """The 4.45 - 4.53 check where upstream had it (on PreTrainedModel), for a MobileViT without sdpa or flash."""
    monkeypatch.setattr(PreTrainedModel, OLD, classmethod(old_check), raising=False)
    monkeypatch.setattr(MobileViTPreTrainedModel, "_supports_flash_attn_2", False, raising=False)
    monkeypatch.setattr(MobileViTPreTrainedModel, "_supports_sdpa", False, raising=False)


@pytest.mark.parametrize("request_", ["sdpa", "flash_attention_2"])
def test_the_old_check_answers_eager_under_the_recipe(old_transformers, request_):
    with pytest.raises(ValueError, match="does not support"):
        MobileViTForImageClassification._autoset_attn_implementation(Config(request_))
    with ascend_patch.patched("mobilevit", device="cpu"):
        assert OLD in vars(MobileViTPreTrainedModel)  # written on the MobileViT class only: other models keep
        assert PreTrainedModel.__dict__[OLD].__func__ is old_check  # the inherited check
        config = MobileViTForImageClassification._autoset_attn_implementation(Config(request_), check_device_map=False)
        assert config._attn_implementation == "eager"
        calls = ascend_patch.report().filter(patch="mobilevit", action="call")
        assert [c.target for c in calls] == [f"attn_implementation={request_!r}"]
        # No request (or eager) is not a fallback: nothing logged, nothing changed.
        unasked = MobileViTForImageClassification._autoset_attn_implementation(Config(None))
        assert unasked._attn_implementation_internal is None
        assert len(ascend_patch.report().filter(patch="mobilevit", action="call")) == 1
    assert OLD not in vars(MobileViTPreTrainedModel)  # reverted: inherited from PreTrainedModel again
    with pytest.raises(ValueError, match="does not support"):
        MobileViTForImageClassification._autoset_attn_implementation(Config(request_))


def test_the_old_flash_attention_flag_answers_eager_under_the_recipe(old_transformers):
    """``from_pretrained(..., use_flash_attention_2=True)``, the deprecated spelling 4.45 - 4.52 still take."""
    with ascend_patch.patched("mobilevit", device="cpu"):
        config = MobileViTForImageClassification._autoset_attn_implementation(Config(None), use_flash_attention_2=True)
        assert config._attn_implementation == "eager"
    with pytest.raises(ValueError, match="Flash Attention"):
        MobileViTForImageClassification._autoset_attn_implementation(Config(None), use_flash_attention_2=True)

