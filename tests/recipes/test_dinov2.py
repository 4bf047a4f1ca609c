"""dinov2 recipe: transformers Dinov2Model (GELU by type, both MLP attribute names) and the torch.hub repo
(xformers shim with the indexing ops, XFORMERS_DISABLED presence pitfall, fix_random_seeds on the target).

The hub repo is tests/fixtures/repos/dinov2: our own small reproduction with the upstream dotted names.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import ascend_patch
from ascend_patch.engine.slots import resolve
from ascend_patch.recipes import dinov2 as recipe
from ascend_patch.shims.xformers.ops import indexing as shim_indexing
from ascend_patch.shims.xformers.ops import swiglu_op as shim_swiglu
from ascend_patch.shims.xformers.ops.fmha import memory_efficient_attention as shim_mea
from conftest import device_of

from .helpers import forget_package, metrics

transformers = pytest.importorskip("transformers")
from transformers import Dinov2Config, Dinov2Model  # noqa: E402
from transformers.activations import GELUActivation  # noqa: E402

REPO = Path(__file__).resolve().parents[1] / "fixtures" / "repos" / "dinov2"
FLAG = "XFORMERS_DISABLED"

# initializer_range 0.2: GELU inputs of order 1, as in a trained model, where tanh and erf differ.
TINY = dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, mlp_ratio=4, patch_size=14, image_size=56,
            hidden_act="gelu", layer_norm_eps=1e-6, initializer_range=0.2)
HUB_TINY = dict(img_size=56, embed_dim=32, depth=2, num_heads=4)


def assert_accurate(out: torch.Tensor, ref: torch.Tensor) -> None:
    cos, rel = metrics(out, ref)
    assert cos >= 0.99999 and rel <= 1e-3, (cos, rel)


def pixels(batch: int = 2, size: int = 56, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


# -- transformers Dinov2Model -------------------------------------------------------------------


def tiny_hf_model() -> Dinov2Model:
    torch.manual_seed(0)
    return Dinov2Model(Dinov2Config(**TINY)).eval()


def hf_forward(model: nn.Module, x: torch.Tensor, device: str) -> torch.Tensor:
    with torch.no_grad():
        out = model.to(device)(pixel_values=x.to(device)).last_hidden_state.cpu()
    model.cpu()
    return out


INSTALLED_NAME = recipe.mlp_activation_name(transformers.__version__)
OTHER_NAME = "activation" if INSTALLED_NAME == "activation_fn" else "activation_fn"


class MlpWithActivationAt(nn.Module):
    """transformers' Dinov2MLP with its GELU held under ``name``: the layout of the versions on the other
    side of the 5.18 rename, built by renaming the submodule (same weights, same module object)."""

    def __init__(self, mlp: nn.Module, name: str) -> None:
        super().__init__()
        self.fc1, self.fc2, self.name = mlp.fc1, mlp.fc2, name
        setattr(self, name, getattr(mlp, INSTALLED_NAME))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.fc2(getattr(self, self.name)(self.fc1(hidden)))


class HandPortedGelu(nn.Module):
    """What the seed NPU port assigned by attribute name: exact GELU through torch_npu."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch_npu  # the simulated one here

        return torch_npu.npu_gelu(x, approximate="none")


def test_transformers_tiny_unpatched_vs_patched(target):
    device = device_of(target)
    model, x = tiny_hf_model(), pixels()
    ref = hf_forward(model, x, "cpu")  # unpatched CPU fp32
    unpatched = hf_forward(model, x, device)
    with ascend_patch.patched("dinov2", device=target):
        patched = hf_forward(model, x, device)  # built before apply: the type patch covers it
        routed = ascend_patch.report().stats["gelu"]["modules_routed"]
    assert_accurate(patched, ref)
    if device == "cpu":  # nothing to fix on the CPU: the original path, bit for bit
        assert torch.equal(patched, ref) and torch.equal(unpatched, ref) and routed == 0
        return
    _, rel_unpatched = metrics(unpatched, ref)
    _, rel_patched = metrics(patched, ref)
    assert rel_unpatched > 5e-5 and rel_unpatched > 100 * rel_patched, (rel_unpatched, rel_patched)
    assert routed == TINY["num_hidden_layers"]  # one GELUActivation per layer


@pytest.mark.parametrize("layout", ["installed", "renamed"])
def test_both_mlp_attribute_names_are_routed_and_a_port_by_name_is_a_no_op(layout):
    model, x = tiny_hf_model(), pixels()
    ref = hf_forward(model, x, "cpu")
    name, wrong = (INSTALLED_NAME, OTHER_NAME) if layout == "installed" else (OTHER_NAME, INSTALLED_NAME)
    layers = model.encoder.layer
    if layout == "renamed":
        for layer in layers:
            layer.mlp = MlpWithActivationAt(layer.mlp, name)
        assert torch.equal(hf_forward(model, x, "cpu"), ref)  # same model, other attribute name
    for layer in layers:
        assert isinstance(getattr(layer.mlp, name), GELUActivation) and not hasattr(layer.mlp, wrong)
    tanh_on_sim = hf_forward(model, x, "npu")

    # A port written for the other version: assigning the name this model does not read adds a module
    # that forward never calls.
    for layer in layers:
        setattr(layer.mlp, wrong, HandPortedGelu())
    assert torch.equal(hf_forward(model, x, "npu"), tanh_on_sim)
    assert metrics(tanh_on_sim, ref)[1] > 5e-5

    with ascend_patch.patched("dinov2", device="sim"):
        patched = hf_forward(model, x, "npu")
        routed = ascend_patch.report().stats["gelu"]["modules_routed"]
    assert_accurate(patched, ref)
    assert routed == len(layers)


def test_transformers_only_run_explains_the_waiting_hub_target():
    with ascend_patch.patched("dinov2", device="cpu"):
        report = ascend_patch.report()
    own = report.filter(patch="dinov2")
    assert [r.target for r in own if r.action == "waiting"] == [recipe.SEED_TARGET]
    assert not [r for r in own if r.action == "nothing"]  # waiting is expected, not reported as a problem
    kept = {r.target: r.detail for r in own if r.action == "kept"}
    assert "expected" in kept[recipe.SEED_TARGET]
    assert f"mlp.{INSTALLED_NAME}" in kept["transformers.activations:GELUActivation"]


# -- the torch.hub repo (fixture) ----------------------------------------------------------------


@pytest.fixture
def hub(monkeypatch):
    """Put the fixture repo on sys.path, without XFORMERS_DISABLED; forget its modules afterwards."""
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.delenv(FLAG, raising=False)
    yield importlib.import_module
    forget_package("dinov2")


def build_hub_model(hub: Any, **overrides: Any) -> nn.Module:
    vit = hub("dinov2.models.vision_transformer")
    layer_scale = hub("dinov2.layers.layer_scale").LayerScale
    torch.manual_seed(0)
    model = vit.vit_small(**{**HUB_TINY, **overrides})
    for module in model.modules():  # LayerScale starts at 1.0: make the scaling visible
        if isinstance(module, layer_scale):
            nn.init.uniform_(module.gamma, 0.5, 1.5)
    return model


def unpatched_reference(hub: Any, **overrides: Any) -> tuple[dict[str, torch.Tensor], nn.Module]:
    """State dict and CPU model from an import without the recipe (xformers missing: math path)."""
    model = build_hub_model(hub, **overrides)
    assert hub("dinov2.layers.attention").XFORMERS_AVAILABLE is False
    forget_package("dinov2")
    return {k: v.clone() for k, v in model.state_dict().items()}, model.eval()


def test_hub_repo_without_the_recipe_loses_xformers_and_its_nested_path(hub):
    model = build_hub_model(hub).train()
    for module in recipe.XFORMERS_READERS:
        assert hub(module).XFORMERS_AVAILABLE is False
    with pytest.raises(AssertionError, match="xFormers is required"):
        model([pixels(2), pixels(2, 28)], is_training=True)


def draw_kept_rows(batch_sizes: list[int], depth: int, drop: float, device: str) -> list[list[torch.Tensor]]:
    """The random rows stochastic depth keeps, drawn in the fixture's order (per block: attention
    branch for every crop, then MLP branch for every crop), on the device's generator."""
    keep = [max(int(b * (1 - drop)), 1) for b in batch_sizes]
    return [[torch.randperm(b, device=device)[:k].cpu() for b, k in zip(batch_sizes, keep)]
            for _ in range(2 * depth)]


def nested_training_reference(model: nn.Module, crops: list[torch.Tensor], kept: list[list[torch.Tensor]],
                              ) -> list[torch.Tensor]:
    """Plain-torch reading of the nested training forward: each kept sample runs the branch alone (what
    the block-diagonal mask means), its residual is scaled by gamma and B / kept and added back."""
    xs = [model.prepare_tokens(c) for c in crops]
    draws = iter(kept)
    for block in model.blocks:
        branches = ((lambda t, b=block: b.attn(b.norm1(t)), block.ls1.gamma),
                    (lambda t, b=block: b.mlp(b.norm2(t)), block.ls2.gamma))
        for branch, gamma in branches:
            rows_per_crop = next(draws)
            xs = [torch.index_add(x, 0, rows, gamma * branch(x[rows]), alpha=x.shape[0] / len(rows))
                  for x, rows in zip(xs, rows_per_crop)]
    return [model.norm(x)[:, 0] for x in xs]


def test_hub_repo_runs_unmodified_under_the_recipe(target, hub):
    device = device_of(target)
    drop = 0.4
    state, ref_model = unpatched_reference(hub, drop_path_rate=drop)
    x = pixels(3)
    crops = [pixels(4, 56, seed=2), pixels(3, 28, seed=3)]  # two crop sizes, as in DINOv2 training
    with torch.no_grad():
        ref = ref_model(x)
        ref_per_crop = [ref_model.forward_features(c)["x_norm_patchtokens"] for c in crops]

    with ascend_patch.patched("dinov2", device=target):
        # The imports of dinov2/layers/*.py resolve to the shim (the indexing ops included).
        attention, block, swiglu = (hub(m) for m in recipe.XFORMERS_READERS)
        assert attention.XFORMERS_AVAILABLE and block.XFORMERS_AVAILABLE and swiglu.XFORMERS_AVAILABLE
        assert attention.memory_efficient_attention is shim_mea
        assert block.scaled_index_add is shim_indexing.scaled_index_add
        assert block.index_select_cat is shim_indexing.index_select_cat
        assert swiglu.SwiGLU is shim_swiglu.SwiGLU
        fix_random_seeds = hub("dinov2.utils").fix_random_seeds

        model = build_hub_model(hub, drop_path_rate=drop)
        model.load_state_dict(state)
        model.to(device).eval()
        with torch.no_grad():
            out = model(x.to(device))
            nested = model.forward_features([c.to(device) for c in crops])  # eval: one packed sequence
        # Training: stochastic depth on the kept rows of every crop, then backward.
        model.train()
        fix_random_seeds(5)
        features = model([c.to(device) for c in crops], is_training=True)
        fix_random_seeds(5)
        kept = draw_kept_rows([c.shape[0] for c in crops], len(model.blocks), drop, device)
        weights = [torch.randn(f["x_norm_clstoken"].shape, generator=torch.Generator().manual_seed(7 + i))
                   for i, f in enumerate(features)]
        sum((f["x_norm_clstoken"] * w.to(device)).sum() for f, w in zip(features, weights)).backward()
        routed = ascend_patch.report().stats["gelu"]["modules_routed"]

    assert out.device.type == device
    assert_accurate(out, ref)
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-5, atol=1e-5)
    for got, expected in zip(nested, ref_per_crop):
        torch.testing.assert_close(got["x_norm_patchtokens"].cpu(), expected, rtol=1e-5, atol=1e-5)
    assert routed == (HUB_TINY["depth"] if device == "npu" else 0)

    assert any(len(rows) < c.shape[0] for rows, c in zip(kept[0], crops))  # samples really were dropped
    ref_model.train()
    expected = nested_training_reference(ref_model, crops, kept)
    sum((e * w).sum() for e, w in zip(expected, weights)).backward()
    for f, e in zip(features, expected):
        torch.testing.assert_close(f["x_norm_clstoken"].detach().cpu(), e.detach(), rtol=1e-5, atol=1e-5)
    grads = dict(model.named_parameters())
    for name, param in ref_model.named_parameters():
        assert grads[name].grad is not None, name
        torch.testing.assert_close(grads[name].grad.cpu(), param.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_torch_hub_load_of_the_repo_under_the_recipe(hub):
    with ascend_patch.patched("dinov2", device="sim"):
        model = torch.hub.load(str(REPO), "dinov2_vits14", source="local", pretrained=False, img_size=28,
                               embed_dim=16, depth=1, num_heads=2, ffn_layer="swiglufused")
        assert hub("dinov2.layers.attention").XFORMERS_AVAILABLE
        assert isinstance(model.blocks[0].mlp, shim_swiglu.SwiGLU)  # xformers' fused SwiGLU, from the shim
        with torch.no_grad():
            out = model.to("npu")([pixels(2, 28).to("npu")], is_training=True)
    assert out[0]["x_norm_patchtokens"].shape == (2, 4, 16)


@pytest.mark.parametrize("order", ["imported_before_apply", "imported_after_apply"])
def test_fix_random_seeds_seeds_the_target_under_every_name(target, hub, monkeypatch, order):
    device = device_of(target)
    if order == "imported_before_apply":
        original = hub("dinov2.utils.utils").fix_random_seeds
        script = types.ModuleType("train_script")  # a user script that did `from dinov2.utils import ...`
        script.fix_random_seeds = hub("dinov2.utils").fix_random_seeds
        monkeypatch.setitem(sys.modules, "train_script", script)
    with ascend_patch.patched("dinov2", device=target):
        package, module = hub("dinov2.utils"), hub("dinov2.utils.utils")
        if order == "imported_after_apply":
            original = module.fix_random_seeds.__wrapped__
        names = [package.fix_random_seeds, module.fix_random_seeds]
        if order == "imported_before_apply":
            names.append(sys.modules["train_script"].fix_random_seeds)
        assert all(f is names[0] for f in names) and names[0] is not original
        assert names[0].__wrapped__ is original

        draws = []
        for seed_with in names:
            seed_with(11)
            draws.append(torch.randn(5, device=device).cpu())
            torch.randn(3, device=device)  # move the generator on before the next reseed
        report = ascend_patch.report()
    assert all(torch.equal(d, draws[0]) for d in draws)
    seeded = report.filter(patch="dinov2", action="call")
    assert seeded and seeded[0].detail == f"-> also seeds the {device} generator"
    copies = [r.target for r in report.filter(patch="dinov2", action="copy")]
    if order == "imported_before_apply":
        assert "dinov2.utils.fix_random_seeds" in copies and "train_script.fix_random_seeds" in copies
        assert sys.modules["train_script"].fix_random_seeds is original
    else:  # patched by the import hook before the package re-exported it: nothing to copy
        assert copies == []
    # Reverted under every name: copies the journal found, and the re-export taken while patched.
    assert module.fix_random_seeds is original and package.fix_random_seeds is original
    if order == "imported_after_apply":
        restored = [r.target for r in ascend_patch.report().filter(patch="dinov2", action="reverted")]
        assert "dinov2.utils.fix_random_seeds" in restored


@pytest.mark.parametrize("call,seed", [((11,), 11), ((), 31)], ids=["positional", "default"])
def test_fix_random_seeds_leaves_the_device_generator_seeded(hub, call, seed):
    with ascend_patch.patched("dinov2", device="sim"):
        fix_random_seeds = hub("dinov2.utils").fix_random_seeds
        torch.npu.manual_seed(123)
        fix_random_seeds(*call)  # the wrapper reads the seed the way upstream binds it (default 31)
        after_fix = torch.npu.get_rng_state().clone()
        torch.npu.manual_seed(seed)
        assert torch.equal(after_fix, torch.npu.get_rng_state())


def test_xformers_disabled_zero_is_unset_while_active(hub, monkeypatch):
    monkeypatch.setenv(FLAG, "0")  # meant as "keep xformers"; upstream reads any value as "disable"
    with pytest.warns(UserWarning, match="XFORMERS_DISABLED='0' disables xFormers"):
        ascend_patch.apply("dinov2", device="sim")
    try:
        assert FLAG not in os.environ
        assert all(hub(m).XFORMERS_AVAILABLE for m in recipe.XFORMERS_READERS)
        model = build_hub_model(hub).to("npu").train()
        with torch.no_grad():
            out = model([pixels(2).to("npu"), pixels(2, 28).to("npu")], is_training=True)
        assert len(out) == 2
        env = [r for r in ascend_patch.report().filter(patch="dinov2", action="patched") if FLAG in r.target]
        assert env and "unset while the recipe is active" in env[0].detail
    finally:
        ascend_patch.revert()
    assert os.environ[FLAG] == "0"  # restored on revert


def test_xformers_disabled_real_value_is_kept_and_reported(hub, monkeypatch):
    monkeypatch.setenv(FLAG, "1")
    _, ref_model = unpatched_reference(hub)
    x = pixels(2)
    with torch.no_grad():
        ref = ref_model(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the user's explicit choice: no warning
        ascend_patch.apply("dinov2", device="sim")
    try:
        assert os.environ[FLAG] == "1"
        assert not any(hub(m).XFORMERS_AVAILABLE for m in recipe.XFORMERS_READERS)
        kept = {r.target: r.detail for r in ascend_patch.report().filter(patch="dinov2", action="kept")}
        assert "(as set)" in kept[f"os.environ[{FLAG!r}]"]
        note = kept["dinov2.layers.attention:MemEffAttention"]
        assert "math attention" in note and "unset it to use the SDPA-backed xformers shim" in note
        model = build_hub_model(hub).to("npu").eval()
        model.load_state_dict(ref_model.state_dict())
        with torch.no_grad():
            out = model(x.to("npu"))  # the math path, exact GELU
        with pytest.raises(AssertionError, match="xFormers is required"):
            model.train()([pixels(2).to("npu")], is_training=True)
    finally:
        ascend_patch.revert()
    assert_accurate(out, ref)


@pytest.mark.parametrize("flag", ["0", None], ids=["flag_zero", "no_flag"])
def test_hub_repo_imported_before_apply_is_reported_too_late(hub, monkeypatch, flag):
    if flag is not None:
        monkeypatch.setenv(FLAG, flag)
    hub("dinov2.layers")  # imported first: the flag and the failed xformers import are baked in
    with pytest.warns(UserWarning, match="before ascend_patch.apply"):
        ascend_patch.apply("dinov2", device="cpu")
    try:
        nothing = {r.target: r.detail for r in ascend_patch.report().filter(patch="dinov2", action="nothing")}
        if flag is None:
            assert "before apply" in nothing["dinov2.layers.attention:XFORMERS_AVAILABLE"]
        else:
            assert "before apply" in nothing[f"os.environ[{FLAG!r}]"]
            assert os.environ[FLAG] == "0"  # read already: unsetting it now would change nothing
    finally:
        ascend_patch.revert()


def test_revert_restores_recipe_targets_by_identity(target, hub, monkeypatch):
    monkeypatch.setenv(FLAG, "off")
    hub("dinov2.utils.utils")  # imported first, so the target is patched at apply
    before = {r.target: resolve(r.target).read_own() for r in recipe.RECIPE.patch.replaces}
    copy_before = hub("dinov2.utils").fix_random_seeds
    with pytest.warns(UserWarning, match=FLAG):
        with ascend_patch.patched("dinov2", device=target):
            assert all(resolve(t).read_own() is not v for t, v in before.items())
            assert FLAG not in os.environ
    after = {r.target: resolve(r.target).read_own() for r in recipe.RECIPE.patch.replaces}
    assert all(after[t] is before[t] for t in before)
    assert hub("dinov2.utils").fix_random_seeds is copy_before
    assert os.environ[FLAG] == "off"


def test_dinov2_switches_on_its_patches_and_explains_itself():
    with ascend_patch.patched("dinov2", device="cpu") as on:
        assert on == ["gelu", "seed", "autocast", "fp32_autocast", "attention", "dinov2"]
        kept = ascend_patch.report().filter(patch="dinov2", action="kept")
        assert any("gelu patch" in r.detail for r in kept)
        waiting = ascend_patch.report().filter(patch="dinov2", action="waiting")
        assert [r.target for r in waiting] == ["dinov2.utils.utils:fix_random_seeds"]  # the hub repo, not imported
    assert ascend_patch.active() == []
