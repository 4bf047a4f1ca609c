"""aimv2 recipe: float64 positions off the NPU, no silently random head, ml-aim checkpoint keys."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.overrides import TorchFunctionMode

import ascend_patch
from ascend_patch.engine.slots import resolve
from ascend_patch.recipes import aimv2 as recipe
from ascend_patch.recipes.aimv2_checkpoint import (
    CheckpointKeyError,
    has_head,
    hf_to_ml_aim,
    is_ml_aim_state_dict,
    ml_aim_to_hf,
)
from conftest import device_of

from .helpers import metrics

transformers = pytest.importorskip("transformers")
from transformers import Aimv2VisionConfig, Aimv2VisionModel  # noqa: E402
from transformers.models.aimv2 import modeling_aimv2  # noqa: E402

TINY = dict(hidden_size=64, intermediate_size=176, num_hidden_layers=3, num_attention_heads=4,
            patch_size=14, image_size=56)


def tiny_model(**overrides: Any) -> Aimv2VisionModel:
    torch.manual_seed(0)
    return Aimv2VisionModel(Aimv2VisionConfig(**{**TINY, **overrides})).eval()


def pixels(size: int = 56, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))


class Float64OnNpu(TorchFunctionMode):
    """Records every torch call that produced a float64 tensor on the (simulated) NPU."""

    def __init__(self) -> None:
        super().__init__()
        self.hits: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor) and out.dtype is torch.float64 and out.device.type == "npu":
            self.hits.append(getattr(func, "__name__", repr(func)))
        return out


def run(model: Aimv2VisionModel, x: torch.Tensor, device: str) -> tuple[torch.Tensor, list[str]]:
    model = model.to(device)
    with torch.no_grad(), Float64OnNpu() as spy:
        out = model(x.to(device)).last_hidden_state
    return out.cpu(), spy.hits


# -- recipe wiring --------------------------------------------------------------------------


def test_registered_with_its_patches():
    assert "aimv2" in ascend_patch.list_recipes()
    with ascend_patch.patched("aimv2", device="cpu") as on:
        assert on == ["seed", "autocast", "fp32_autocast", "device", "aimv2"]


def test_revert_restores_originals_by_identity(target):
    before = {r.target: resolve(r.target).read_own() for r in recipe.RECIPE.patch.replaces}
    inherited = resolve(recipe.FROM_PRETRAINED_TARGET).read()
    with ascend_patch.patched("aimv2", device=target):
        assert modeling_aimv2.build_2d_sinusoidal_position_embedding is not before[recipe.POS_EMBED_TARGET]
        assert "from_pretrained" in vars(Aimv2VisionModel)
    after = {r.target: resolve(r.target).read_own() for r in recipe.RECIPE.patch.replaces}
    assert after == before
    assert all(after[t] is before[t] for t in before)
    assert "from_pretrained" not in vars(Aimv2VisionModel)  # inherited again, not a copy
    assert resolve(recipe.FROM_PRETRAINED_TARGET).read() is inherited


# -- float64 position embeddings (is_native) -----------------------------------------------


def test_native_positions_reach_npu_in_float64_without_the_recipe():
    # The problem the recipe fixes, shown on the simulator (a real NPU has no such kernels).
    _, hits = run(tiny_model(is_native=True), pixels(), "npu")
    assert hits, "upstream no longer computes positions in float64 on the device: revisit the recipe"


def test_position_function_is_exact_vs_cpu(target):
    original = modeling_aimv2.build_2d_sinusoidal_position_embedding
    ref = original(4, 5, embed_dim=64, device=torch.device("cpu"), dtype=torch.float32)
    with ascend_patch.patched("aimv2", device=target), Float64OnNpu() as spy:
        got = modeling_aimv2.build_2d_sinusoidal_position_embedding(
            4, 5, embed_dim=64, cls_token=True, device=torch.device(device_of(target)), dtype=torch.float32)
    assert not spy.hits
    assert got.device.type == device_of(target) and got.dtype is torch.float32
    assert torch.equal(got.cpu()[1:], ref) and torch.equal(got.cpu()[0], torch.zeros(64))


@pytest.mark.parametrize("is_native", [True, False], ids=["sincos", "learned"])
def test_patched_matches_cpu_fp32(target, is_native):
    x = pixels()
    ref, _ = run(tiny_model(is_native=is_native), x, "cpu")  # unpatched CPU fp32 reference
    with ascend_patch.patched("aimv2", device=target):
        out, hits = run(tiny_model(is_native=is_native), x, device_of(target))
    assert hits == []  # no float64 tensor reached the npu
    cos, rel = metrics(out, ref)
    assert cos >= 0.99999 and rel <= 1e-3, (cos, rel)


# -- use_head --------------------------------------------------------------------------------


def save_headless_claiming_head(tmp_path: Path) -> Path:
    """A head-less checkpoint whose config.json still says use_head: true (the trap)."""
    tiny_model(use_head=False).save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["use_head"] = True
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    return tmp_path


def test_unpatched_load_gives_a_random_head(tmp_path):
    model = Aimv2VisionModel.from_pretrained(save_headless_claiming_head(tmp_path))
    assert model.use_head and model(pixels()).pooler_output is not None  # noise


def test_headless_checkpoint_loads_without_head(tmp_path, caplog, target):
    path = save_headless_claiming_head(tmp_path)
    x = pixels()
    ref = tiny_model(use_head=False)(x).last_hidden_state
    with ascend_patch.patched("aimv2", device=target), caplog.at_level(logging.WARNING, "ascend_patch"):
        ascend_patch.report(clear=True)
        model, info = Aimv2VisionModel.from_pretrained(path, output_loading_info=True)
        line = sys._getframe().f_lineno - 1
        out = model.to(device_of(target))(x.to(device_of(target)))
        row = next(r for r in ascend_patch.report().records if "use_head=False" in r.change)
    # In the migration log at the caller's line, classed as a change of meaning.
    assert row.where.endswith(f"test_aimv2.py:{line}") and row.category == "changed meaning"
    assert not model.use_head and not hasattr(model, "head") and model.config.use_head is False
    assert out.pooler_output is None
    assert not [k for k in info["missing_keys"] if k.startswith("head.")]
    assert metrics(out.last_hidden_state, ref)[0] >= 0.99999
    assert "use_head=False" in caplog.text and "use_head\": false" in caplog.text


def test_explicit_use_head_true_keeps_head_and_warns(tmp_path, caplog):
    path = save_headless_claiming_head(tmp_path)
    with ascend_patch.patched("aimv2", device="cpu"), caplog.at_level(logging.WARNING, "ascend_patch"):
        model = Aimv2VisionModel.from_pretrained(path, use_head=True)
    assert model.use_head and hasattr(model, "head")
    assert "RANDOMLY initialised" in caplog.text


def test_checkpoint_with_head_is_untouched(tmp_path, caplog):
    src = tiny_model(use_head=True)
    src.save_pretrained(tmp_path)
    with ascend_patch.patched("aimv2", device="cpu"), caplog.at_level(logging.WARNING, "ascend_patch"):
        model = Aimv2VisionModel.from_pretrained(tmp_path)
    assert model.use_head and "aimv2: " not in caplog.text
    assert torch.equal(model.head.cls_token, src.head.cls_token)


# -- ml-aim checkpoint conversion ----------------------------------------------------------


@pytest.mark.parametrize("use_head", [False, True], ids=["encoder", "with-head"])
def test_hf_to_ml_aim_round_trip_loads_strict_and_is_identical(use_head):
    model = tiny_model(use_head=use_head)
    sd = model.state_dict()
    ml = hf_to_ml_aim(sd)
    assert is_ml_aim_state_dict(ml) and has_head(ml) is use_head
    assert ml["trunk.blocks.0.attn.qkv.weight"].shape == (3 * 64, 64)
    assert ml["preprocessor.pos_embed"].shape == (1, 16, 64)
    # ml-aim's qkv is [q; k; v] along the output dimension.
    assert torch.equal(ml["trunk.blocks.1.attn.qkv.weight"][64:128], sd["encoder.layers.1.attention.k_proj.weight"])
    back = ml_aim_to_hf(ml)
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)
    loaded = Aimv2VisionModel(model.config).eval()
    loaded.load_state_dict(back, strict=True)
    x = pixels()
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert torch.equal(a.last_hidden_state, b.last_hidden_state)
    if use_head:
        assert torch.equal(a.pooler_output, b.pooler_output)


def test_ml_aim_to_hf_round_trip_is_exact():
    ml = hf_to_ml_aim(tiny_model(use_head=True).state_dict())
    again = hf_to_ml_aim(ml_aim_to_hf(ml))
    assert again.keys() == ml.keys() and all(torch.equal(again[k], ml[k]) for k in ml)
    expected = {"preprocessor.patchifier.proj.weight", "preprocessor.patchifier.norm.weight",
                "trunk.blocks.2.mlp.fc3.weight", "trunk.blocks.0.norm_2.weight", "trunk.post_trunk_norm.weight",
                "head.k.weight", "head.linear.bias", "head.cls_token"}
    assert expected <= ml.keys()


def test_unknown_keys_are_refused():
    with pytest.raises(CheckpointKeyError, match="trunk.blocks.0.attn.mystery"):
        ml_aim_to_hf({"trunk.blocks.0.attn.mystery.weight": torch.zeros(1)})
    with pytest.raises(CheckpointKeyError, match="qkv"):
        hf_to_ml_aim({"encoder.layers.0.attention.q_proj.weight": torch.zeros(2, 2)})


def test_another_librarys_wrapper_of_from_pretrained_still_runs(tmp_path):
    """A profiler or cache library wraps from_pretrained with wrapt before the recipe: both run."""
    import wrapt

    path = save_headless_claiming_head(tmp_path)
    seen = []

    def spy(wrapped, instance, args, kwargs):
        seen.append(instance)
        return wrapped(*args, **kwargs)

    saved = Aimv2VisionModel.__dict__.get("from_pretrained")
    wrapt.wrap_function_wrapper(modeling_aimv2, "Aimv2VisionModel.from_pretrained", spy)
    try:
        with ascend_patch.patched("aimv2", device="cpu"):
            model = Aimv2VisionModel.from_pretrained(path)
        assert seen == [Aimv2VisionModel] and not model.use_head  # the spy ran, and the recipe's guard
    finally:
        if saved is None:
            del Aimv2VisionModel.from_pretrained
        else:
            Aimv2VisionModel.from_pretrained = saved
