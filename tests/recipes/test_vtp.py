"""vtp recipe: seeds through the star-exported ``fix_random_seeds``, the causal text mask rebuilt after
``from_pretrained``, bf16 RoPE tables computed once per shape on the CPU, exact-erf GELU in the text
tower, on the fixture copy of MiniMax-AI/VTP's ``vtp`` package."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.overrides import TorchFunctionMode

import ascend_patch
from ascend_patch.engine.slots import MISSING, resolve
from ascend_patch.recipes import vtp as recipe
from ascend_patch.tools.models.vtp import SPEC, text_tokens
from conftest import device_of

from .helpers import forget_package, metrics

pytest.importorskip("transformers")

REPO = Path(__file__).resolve().parents[1] / "fixtures" / "repos" / "VTP"
TINY = SPEC.tiny_config
SIZE = TINY["image_size"]


@pytest.fixture(autouse=True)
def vtp_repo(monkeypatch: pytest.MonkeyPatch):
    """The fixture repository on sys.path; every test imports ``vtp`` afresh. Importing it changes two
    ``torch._dynamo.config`` values process-wide (as upstream does): they are put back after each test."""
    monkeypatch.syspath_prepend(str(REPO))
    # Saved and set back by hand: monkeypatch's undo may delattr, which hides a torch config option.
    saved = {name: getattr(torch._dynamo.config, name) for name in ("automatic_dynamic_shapes",
                                                                    "accumulated_cache_size_limit")}
    forget_package("vtp")
    yield
    forget_package("vtp")
    for name, value in saved.items():
        setattr(torch._dynamo.config, name, value)


def vtp_hf() -> Any:
    return importlib.import_module("vtp.models.vtp_hf")


def tiny_model(**overrides: Any) -> Any:
    hf = vtp_hf()
    torch.manual_seed(0)
    return hf.VTPModel(hf.VTPConfig(**{**TINY, **overrides})).eval()


def pixels(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def outputs(model: Any, x: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return {k: v.float().cpu() for k, v in SPEC.run(model, x).items()}


def causal(n: int) -> torch.Tensor:
    return torch.full((n, n), float("-inf")).triu_(1)


class CountCos(TorchFunctionMode):
    """Counts ``torch.cos`` calls: RoPE's forward makes exactly one per table it computes."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func is torch.cos:
            self.calls += 1
        return func(*args, **(kwargs or {}))


# -- recipe wiring ----------------------------------------------------------------------------


def test_registered_with_its_patches():
    assert "vtp" in ascend_patch.list_recipes()
    with ascend_patch.patched("vtp", device="cpu") as on:
        assert on == ["seed", "gelu", "autocast", "fp32_autocast", "device", "vtp"]


def test_revert_restores_originals_by_identity(target):
    tiny_model()  # imports every target module
    package = importlib.import_module("vtp.models.utils")
    before = {t: resolve(t).read_own() for t in (rep.target for rep in recipe.RECIPE.patch.replaces)}
    copy_before = vars(package)["fix_random_seeds"]
    model_class = vtp_hf().VTPModel
    inherited = resolve(recipe.FROM_PRETRAINED_TARGET).read()
    assert before[recipe.FROM_PRETRAINED_TARGET] is MISSING and copy_before is before[recipe.SEED_TARGET]
    with ascend_patch.patched("vtp", device=target):
        for t, original in before.items():
            assert resolve(t).read_own() is not original, t
        assert vars(package)["fix_random_seeds"] is resolve(recipe.SEED_TARGET).read_own()
        assert "from_pretrained" in vars(model_class)
    after = {t: resolve(t).read_own() for t in before}
    assert all(after[t] is before[t] for t in before)
    assert vars(package)["fix_random_seeds"] is copy_before
    assert "from_pretrained" not in vars(model_class)  # inherited again, not a copy
    assert resolve(recipe.FROM_PRETRAINED_TARGET).read() is inherited


def test_revert_before_import_leaves_the_model_code_untouched():
    ascend_patch.apply("vtp", device="cpu")
    ascend_patch.revert()
    embeddings = importlib.import_module("vtp.models.layers.embeddings")  # the hook fires and must do nothing
    assert not hasattr(vars(embeddings.RopePositionEmbedding)["forward"], "__wrapped__")
    assert not hasattr(importlib.import_module("vtp.models.utils").fix_random_seeds, "__wrapped__")


def test_dynamo_config_change_is_reported_as_kept():
    with ascend_patch.patched("vtp", device="cpu"):
        importlib.import_module("vtp.models.layers.block")
        kept = {r.target: r.detail for r in ascend_patch.report().filter(patch="vtp", action="kept")}
    assert torch._dynamo.config.automatic_dynamic_shapes is False  # what the import did, process-wide
    assert torch._dynamo.config.accumulated_cache_size_limit == 1024
    assert "automatic_dynamic_shapes=False" in kept["torch._dynamo.config"]


# -- accuracy -----------------------------------------------------------------------------------


def test_unpatched_and_patched_match_the_cpu(target):
    model, x = tiny_model(), pixels()
    reference = outputs(model, x)  # unpatched CPU fp32
    device = device_of(target)
    model.to(device)
    unpatched = outputs(model, x.to(device))
    with ascend_patch.patched("vtp", device=target):
        patched = outputs(model, x.to(device))
    assert patched.keys() == reference.keys() == {"cls_token", "patch_tokens", "latents", "reconstruction",
                                                  "clip_image", "clip_text"}
    for name, ref in reference.items():
        cos, rel = metrics(patched[name], ref)
        assert cos >= 0.99999 and rel <= 1e-3, (name, cos, rel)
        if name != "clip_text" or target == "cpu":
            # RoPE computed on the CPU gives the tables the device computed: nothing else moves.
            assert torch.equal(patched[name], unpatched[name]), name
    if target == "sim":  # the text tower's GELU is the one output the recipe changes on the npu
        assert not torch.equal(patched["clip_text"], unpatched["clip_text"])


def test_text_gelu_routed_to_npu_gelu_and_it_matters():
    model = tiny_model()
    tokens = text_tokens(model.config, 2, "cpu")
    with torch.no_grad():
        reference = model.get_clip_text_feature(tokens, normalize=False)
        model.to("npu")
        unpatched = model.get_clip_text_feature(tokens.to("npu"), normalize=False).cpu()
        with ascend_patch.patched("vtp", device="sim"):
            patched = model.get_clip_text_feature(tokens.to("npu"), normalize=False).cpu()
            stats = ascend_patch.report().stats["gelu"]
    assert stats["modules_routed"] == TINY["text_depth"]  # one nn.GELU per text block, nothing else
    rel_unpatched, rel_patched = metrics(unpatched, reference)[1], metrics(patched, reference)[1]
    # Unpatched, aclnnGelu's tanh form (simulated) moves the text features; npu_gelu is the erf form.
    assert rel_patched <= 1e-6 and rel_unpatched > 10 * rel_patched, (rel_unpatched, rel_patched)


# -- fix_random_seeds -----------------------------------------------------------------------------

SEED_PATHS = ["vtp.models.utils", "vtp.models.utils.utils"]


def draws(fix: Any, seed: int, device: str) -> torch.Tensor:
    fix(seed)
    return torch.randn(4, device=device).cpu()


@pytest.mark.parametrize("path", SEED_PATHS)
def test_fix_random_seeds_applied_after_import(path, target):
    fix_before = importlib.import_module(path).fix_random_seeds
    with ascend_patch.patched("vtp", device=target):
        fix = importlib.import_module(path).fix_random_seeds
        assert fix is not fix_before and fix.__wrapped__ is fix_before
        device = device_of(target)
        first, again, other = draws(fix, 7, device), draws(fix, 7, device), draws(fix, 8, device)
        records = {(r.action, r.target) for r in ascend_patch.report().filter(patch="vtp")}
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert ("patched", "vtp.models.utils.utils.fix_random_seeds") in records
    assert ("copy", "vtp.models.utils.fix_random_seeds") in records
    assert importlib.import_module(path).fix_random_seeds is fix_before


def test_fix_random_seeds_seeds_the_npu_by_itself(monkeypatch):
    # torch.manual_seed reaches the npu only through PyTorch's PrivateUse1 hook; without it (and
    # without the generic seed patch) upstream's function leaves the npu generator alone.
    monkeypatch.setattr(torch.random, "_seed_custom_device", lambda seed: None)
    fix = importlib.import_module("vtp.models.utils").fix_random_seeds
    assert not torch.equal(draws(fix, 7, "npu"), draws(fix, 7, "npu"))
    with ascend_patch.patched("vtp", device="sim"):
        ascend_patch.revert("seed")  # only the recipe's own wrapper is left
        fix = importlib.import_module("vtp.models.utils").fix_random_seeds
        assert torch.equal(draws(fix, 7, "npu"), draws(fix, 7, "npu"))


APPLY_FIRST = textwrap.dedent(
    """
    import sys, importlib, torch
    sys.path.insert(0, sys.argv[1])
    import ascend_patch
    for path in sys.argv[2:]:
        for name in [n for n in sys.modules if n == "vtp" or n.startswith("vtp.")]:
            del sys.modules[name]
        ascend_patch.report(clear=True)
        ascend_patch.apply("vtp", device="sim")
        fix = importlib.import_module(path).fix_random_seeds  # imported after apply: the hook patches it
        package, module = importlib.import_module("vtp.models.utils"), importlib.import_module("vtp.models.utils.utils")
        assert package.fix_random_seeds is module.fix_random_seeds is fix and hasattr(fix, "__wrapped__"), path
        def draw(seed):
            fix(seed)
            return torch.randn(4, device="npu").cpu()
        assert torch.equal(draw(5), draw(5)) and not torch.equal(draw(5), draw(6)), path
        records = {(r.action, r.target) for r in ascend_patch.report().filter(patch="vtp")}
        assert ("patched", "vtp.models.utils.utils.fix_random_seeds") in records, records
        original = fix.__wrapped__
        ascend_patch.revert()
        assert package.fix_random_seeds is original and module.fix_random_seeds is original, f"{path}: not restored"
        # The package's star export ran after the hook: it copied the wrapper, and revert found it.
        reverted = {r.target for r in ascend_patch.report().filter(patch="vtp", action="reverted")}
        assert "vtp.models.utils.fix_random_seeds" in reverted, reverted
        print("ok", path)
    """
)


def test_fix_random_seeds_applied_before_import():
    # One fresh interpreter; each import path is imported for the first time after apply.
    result = subprocess.run([sys.executable, "-c", APPLY_FIRST, str(REPO), *SEED_PATHS], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == [f"ok {path}" for path in SEED_PATHS], result.stdout


# -- from_pretrained: the causal text mask ---------------------------------------------------------


def test_unpatched_load_leaves_the_mask_uninitialised(tmp_path):
    # A context length no other test uses, and the source kept alive: the uninitialised memory the
    # loader hands out cannot be a recycled causal mask of this size.
    source = tiny_model(text_context_length=13)
    source.save_pretrained(tmp_path)
    loaded = vtp_hf().VTPModel.from_pretrained(tmp_path)
    assert loaded.attn_mask.shape == (13, 13)
    assert not torch.equal(loaded.attn_mask, causal(13)), \
        "transformers now initialises non-persistent buffers on load: the recipe's rebuild is a no-op, revisit it"
    assert torch.equal(source.attn_mask, causal(13))


def test_patched_load_rebuilds_the_causal_mask(tmp_path, target):
    source = tiny_model()
    source.save_pretrained(tmp_path)
    tokens = text_tokens(source.config, 2, "cpu")
    with torch.no_grad():
        expected = source.get_clip_text_feature(tokens)
    device = device_of(target)
    with ascend_patch.patched("vtp", device=target):
        model, info = vtp_hf().VTPModel.from_pretrained(tmp_path, output_loading_info=True)
        n = TINY["text_context_length"]
        assert torch.equal(model.attn_mask, causal(n)) and model.attn_mask.dtype is torch.float32
        model.to(device)
        with torch.no_grad():
            got = model.get_clip_text_feature(tokens.to(device)).cpu()
        report = ascend_patch.report()
    assert not info["missing_keys"]
    assert report.stats["vtp"]["attn_masks_rebuilt"] == 1
    notes = [r.detail for r in report.filter(patch="vtp", action="call") if r.target == "VTPModel.from_pretrained"]
    assert notes and f"causal {n}x{n}" in notes[0]
    assert torch.allclose(got, expected, rtol=0, atol=1e-6)
    if target == "cpu":
        assert torch.equal(got, expected)


def test_verify_loads_a_checkpoint_under_the_recipe(tmp_path):
    # verify loads the model as a user's script does, recipe first: the text mask is rebuilt, so the
    # CLIP text features of the reference and of the device run are right (unpatched: NaN or noise).
    from ascend_patch.tools.verify import verify

    tiny_model(text_context_length=17).save_pretrained(tmp_path)
    result = verify("vtp", model_path=tmp_path, device="sim", repo=REPO)
    text = next(o for o in result.runs[0].outputs if o.name == "clip_text")
    assert not result.random_init and result.passed
    assert text.cosine_similarity >= 0.99999 and text.mean_relative_error <= 1e-3


def test_model_without_text_tower_loads_untouched(tmp_path):
    tiny_model(train_clip=False).save_pretrained(tmp_path)
    with ascend_patch.patched("vtp", device="cpu"):
        model = vtp_hf().VTPModel.from_pretrained(tmp_path)
        report = ascend_patch.report()
    assert not hasattr(model, "attn_mask") and report.stats["vtp"]["attn_masks_rebuilt"] == 0


# -- RoPE tables ----------------------------------------------------------------------------------


def rope(**kwargs: Any) -> Any:
    embeddings = importlib.import_module("vtp.models.layers.embeddings")
    return embeddings.RopePositionEmbedding(64, num_heads=4, dtype=torch.bfloat16, **kwargs).eval()


@pytest.mark.parametrize("periods_dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32-periods"])
def test_rope_tables_are_the_cpu_upstream_ones(target, periods_dtype):
    module = rope().to(periods_dtype)  # an fp32 run casts the periods buffer, not self.dtype
    sin_ref, cos_ref = module(H=5, W=7)  # unpatched, on the CPU
    module.to(device_of(target))
    with ascend_patch.patched("vtp", device=target):
        sin, cos = module(H=5, W=7)
    assert sin.device.type == device_of(target) and sin.dtype is sin_ref.dtype
    assert torch.equal(sin.cpu(), sin_ref) and torch.equal(cos.cpu(), cos_ref)


def test_rope_computed_once_per_forward(target):
    depth = 3
    model = tiny_model(vision_depth=depth).to(device_of(target))
    x = pixels().to(device_of(target))
    with torch.no_grad(), CountCos() as unpatched:
        model.get_last_layer_feature(x)
    assert unpatched.calls == depth  # upstream: one table per block
    with ascend_patch.patched("vtp", device=target), torch.no_grad():
        with CountCos() as first:
            model.get_last_layer_feature(x)
        with CountCos() as second:
            model.get_last_layer_feature(x)
        stats = ascend_patch.report().stats["vtp"]
    assert (first.calls, second.calls) == (1, 0)
    assert stats["rope_tables_computed"] == 1 and stats["rope_tables_reused"] == 2 * depth - 1


def test_changed_periods_invalidate_the_cache(target):
    module = rope().to(device_of(target))
    with ascend_patch.patched("vtp", device=target):
        first = module(H=4, W=4)
        assert module(H=4, W=4) is first  # cached
        doubled = module.periods.cpu() * 2
        module.load_state_dict({"periods": doubled})  # in-place copy: the version counter moves
        second = module(H=4, W=4)
        module.periods.data = module.periods.data * 0.5  # storage swapped, no version bump
        third = module(H=4, W=4)
        stats = ascend_patch.report().stats["vtp"]
    reference = rope()
    reference.load_state_dict({"periods": doubled})
    assert torch.equal(second[0].cpu(), reference(H=4, W=4)[0]) and not torch.equal(second[0].cpu(), first[0].cpu())
    assert torch.equal(third[0].cpu(), first[0].cpu())  # back to the original periods
    assert stats["rope_tables_computed"] == 3


def test_training_with_augmentation_takes_the_original_path(target):
    module = rope(shift_coords=0.5).train().to(device_of(target))
    with ascend_patch.patched("vtp", device=target):
        a, b = module(H=4, W=4), module(H=4, W=4)
        stats = ascend_patch.report().stats["vtp"]
    assert a[0].device.type == device_of(target)
    assert not torch.equal(a[0].cpu(), b[0].cpu())  # fresh random shifts each call
    assert stats["rope_tables_computed"] == 0
