"""mingtok recipe: autocast on the model's device, the fp32 pixel-decoder policy, SDPA attention with a
KV cache that is filled, XFORMERS_ENABLED=0, on the fixture copy of Ming-UniVision's ``mingtok``."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

import ascend_patch
from ascend_patch.engine.slots import resolve
from ascend_patch.recipes import mingtok as recipe
from ascend_patch.tools.models.mingtok import SPEC
from conftest import device_of

from .helpers import forget_package, metrics

REPO = Path(__file__).resolve().parents[1] / "fixtures" / "repos" / "Ming-UniVision"
TARGETS = [rep.target for rep in recipe.RECIPE.patch.replaces]
TINY = SPEC.tiny_config


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: a second intra-op thread only adds barrier waits (seconds on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def mingtok_repo(monkeypatch: pytest.MonkeyPatch):
    """The fixture repository on sys.path; every test imports ``mingtok`` afresh."""
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.delenv("XFORMERS_ENABLED", raising=False)
    yield
    forget_package("mingtok")


def tiny_model(model_dtype: str = "fp32", **parts: dict[str, Any]) -> Any:
    from mingtok.modeling_mingtok import MingTok, MingTokConfig

    config = {**TINY, **{k: {**TINY[k], **v} for k, v in parts.items()}}
    torch.manual_seed(0)
    return MingTok(MingTokConfig(**config, model_dtype=model_dtype)).eval()


def pixels(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def outputs(model: Any, x: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return {k: v.float().cpu() for k, v in SPEC.run(model, x).items()}


def decode(model: Any, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """(full-sequence decode, token-by-token decode with the cache, the cache it returned)."""
    full = model.forward_feature_decoder(latent)["x_norm"]
    cache, steps = None, []
    for t in range(latent.shape[1]):
        step = model.forward_feature_decoder(latent[:, t:t + 1], cache)
        cache = step["past_key_values"]
        steps.append(step["x_norm_patchtokens"])
    return full, torch.cat(steps, dim=1), cache


def latent_of(model: Any, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)["latent"]


# -- recipe wiring --------------------------------------------------------------------------


def test_registered_with_its_patches():
    assert "mingtok" in ascend_patch.list_recipes()
    with ascend_patch.patched("mingtok", device="cpu") as on:
        assert on == ["autocast", "fp32_autocast", "attention", "gelu", "seed", "device", "mingtok"]


def test_fixture_has_upstream_parameter_names():
    # Built on the meta device: the full-size architecture without allocating 700 M parameters.
    from mingtok.modeling_mingtok import MingTok, MingTokConfig

    with torch.device("meta"):
        model = MingTok(MingTokConfig(**SPEC.full_config))
    names = dict(model.named_parameters())
    assert 690e6 < sum(p.numel() for p in names.values()) < 700e6
    assert names["low_level_encoder.blocks.0.11.mlp.w12.weight"].shape == (2 * 2048, 768)
    assert names["semantic_decoder.blocks.0.23.attn.qkv.weight"].shape == (3 * 1024, 1024)
    assert names["semantic_decoder.in_proj.weight"].shape == (1024, 32)
    assert names["pixel_decoder.blocks.0.23.mlp.fc1.weight"].shape == (4096, 1024)
    assert names["pixel_decoder.head.weight"].shape == (16 * 16 * 3, 1024)
    assert names["sem_to_pix.weight"].shape == (4 * 1024, 1024)
    assert {"low_level_encoder.out_proj.weight", "low_level_encoder.pos_embed",
            "low_level_encoder.cls_token"} <= set(names)


def test_revert_restores_originals_by_identity(target):
    import mingtok.modeling_mingtok  # noqa: F401  (imports the attention module too)

    before = {t: resolve(t).read_own() for t in TARGETS}
    with ascend_patch.patched("mingtok", device=target):
        assert all(resolve(t).read_own() is not before[t] for t in TARGETS)
    after = {t: resolve(t).read_own() for t in TARGETS}
    assert all(after[t] is before[t] for t in TARGETS)


def test_report_lists_the_patched_targets_and_call_sites():
    ascend_patch.apply("mingtok", device="sim", fp32_autocast="fp32")
    try:
        waiting = {r.target for r in ascend_patch.report().filter(patch="mingtok", action="waiting")}
        assert waiting == set(TARGETS)  # nothing imported yet: each target waits for its module
        model = tiny_model().to("npu")
        outputs(model, pixels(1).to("npu"))
        report = ascend_patch.report()
    finally:
        ascend_patch.revert("mingtok")
    patched = {r.target for r in report.filter(patch="mingtok", action="patched")}
    assert patched == {
        "mingtok.modeling_mingtok.MingTok.maybe_autocast",
        "mingtok.vision_transformer.layers.attention.CausalAttention.forward",
        "mingtok.vision_transformer.layers.attention.MemEffCausalAttention.forward",
        "mingtok.vision_transformer.layers.attention.Attention.forward",
        "mingtok.vision_transformer.layers.attention.MemEffAttention.forward",
    }
    # Call sites are file:line in the upstream code (relative to the working directory).
    calls = {(r.target, Path(r.where.partition(":")[0]).as_posix()) for r in report.filter(patch="mingtok",
                                                                                           action="call")}
    block, model_file = "mingtok/vision_transformer/layers/block.py", "mingtok/modeling_mingtok.py"
    assert any(api == "MemEffCausalAttention.forward" and where.endswith(block) for api, where in calls), calls
    assert any(api == "MemEffAttention.forward" and where.endswith(block) for api, where in calls), calls
    assert any(api == "MingTok.maybe_autocast" and where.endswith(model_file) for api, where in calls), calls
    assert report.stats["gelu"]["modules_routed"] == 3  # encoder out_act + the pixel decoder's two MLPs


# -- accuracy -------------------------------------------------------------------------------


def test_unpatched_and_patched_vs_cpu_fp32(target):
    device, x = device_of(target), pixels()
    reference = outputs(tiny_model(), x)  # upstream code, CPU, fp32
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        unpatched = outputs(tiny_model().to(device), x.to(device))
    with ascend_patch.patched("mingtok", device=target, fp32_autocast="fp32"):
        patched = outputs(tiny_model().to(device), x.to(device))
    deprecated = [w for w in caught if issubclass(w.category, FutureWarning) and "torch.cuda.amp" in str(w.message)]
    if target == "cpu":
        assert not deprecated  # upstream skips autocast on the CPU
        assert all(torch.equal(unpatched[k], reference[k]) for k in reference)
    else:
        assert deprecated  # upstream's torch.cuda.amp.autocast on the npu
    for name, ref in reference.items():
        cos, rel = metrics(patched[name], ref)
        assert cos >= 0.99999 and rel <= 1e-3, (name, cos, rel)
        if target == "sim":
            # Unpatched, GELU runs the NPU's tanh form; the recipe routes it to the exact erf one.
            assert metrics(unpatched[name], ref)[1] > 10 * rel, name


def test_from_pretrained_round_trip_under_the_recipe(tmp_path):
    from mingtok.modeling_mingtok import MingTok

    source = tiny_model(model_dtype="bf16")
    source.save_pretrained(tmp_path)
    x = pixels(1)
    with ascend_patch.patched("mingtok", device="cpu"):
        loaded = MingTok.from_pretrained(tmp_path).eval()
        assert loaded.model_dtype is torch.bfloat16
        got = outputs(loaded, x)
    expected = outputs(source, x)
    assert all(torch.allclose(got[k], expected[k], atol=1e-5, rtol=1e-5) for k in expected)


# -- KV cache -------------------------------------------------------------------------------


def test_kv_cache_decode_matches_full_sequence(target):
    device = device_of(target)
    with ascend_patch.patched("mingtok", device=target, fp32_autocast="fp32"):
        model = tiny_model().to(device)
        latent = latent_of(model, pixels().to(device))
        full, stepwise, cache = decode(model, latent)
        # Several new tokens on top of a cache: the causal diagonal must sit bottom-right.
        from transformers.cache_utils import DynamicCache

        shared = DynamicCache()
        model.forward_feature_decoder(latent[:, :5], shared)
        chunk = model.forward_feature_decoder(latent[:, 5:9], shared)["x_norm"]
    assert cache.get_seq_length() == latent.shape[1] and shared.get_seq_length() == 9
    torch.testing.assert_close(stepwise.cpu(), full.cpu(), atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(chunk.cpu(), full[:, 5:9].cpu(), atol=2e-5, rtol=1e-5)


def test_unpatched_kv_cache_decode_is_wrong():
    # The upstream bug the recipe fixes: without flash_attn/xFormers the cache is never filled.
    model = tiny_model()
    full, stepwise, cache = decode(model, latent_of(model, pixels()))
    assert cache is None
    assert (stepwise - full).abs().max() > 1e-2


def test_causal_attention_with_a_cache_and_several_new_tokens():
    # fa_enable=False builds CausalAttention, whose (N, N) mask does not fit a filled cache.
    from transformers.cache_utils import DynamicCache

    model = tiny_model(semantic_decoder={"fa_enable": False})
    latent = latent_of(model, pixels())
    with pytest.raises(RuntimeError):
        cache = DynamicCache()
        model.forward_feature_decoder(latent[:, :5], cache)
        model.forward_feature_decoder(latent[:, 5:9], cache)
    with ascend_patch.patched("mingtok", device="cpu"):
        full, stepwise, _ = decode(model, latent)
        cache = DynamicCache()
        model.forward_feature_decoder(latent[:, :5], cache)
        chunk = model.forward_feature_decoder(latent[:, 5:9], cache)["x_norm"]
    torch.testing.assert_close(stepwise, full, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(chunk, full[:, 5:9], atol=2e-5, rtol=1e-5)


# -- autocast -------------------------------------------------------------------------------


def region_dtypes(model: Any, x: torch.Tensor) -> dict[str, torch.dtype]:
    """Output dtype of a linear layer in each autocast region of forward_enc_dec."""
    layers = {"encoder": model.low_level_encoder.blocks[0][0].attn.qkv,
              "semantic": model.semantic_decoder.blocks[0][0].attn.qkv,
              "pixel": model.pixel_decoder.head}
    seen: dict[str, torch.dtype] = {}

    def record(name: str) -> Any:
        def hook(module: torch.nn.Module, args: Any, out: torch.Tensor) -> None:
            seen.setdefault(name, out.dtype)

        return hook

    hooks = [m.register_forward_hook(record(name)) for name, m in layers.items()]
    try:
        with torch.no_grad():
            model.forward_enc_dec(x)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


@pytest.mark.parametrize("policy, pixel_dtype", [(None, torch.bfloat16), ("fp32", torch.float32)],
                         ids=["default-bf16", "fp32"])
def test_pixel_decoder_region_follows_the_fp32_autocast_policy(policy, pixel_dtype):
    options = {} if policy is None else {"fp32_autocast": policy}
    with ascend_patch.patched("mingtok", device="sim", **options):
        model = tiny_model(model_dtype="bf16").to("npu")  # fp32 weights, bf16 autocast as the checkpoint
        seen = region_dtypes(model, pixels(1).to("npu"))
    assert seen == {"encoder": torch.bfloat16, "semantic": torch.bfloat16, "pixel": pixel_dtype}


def test_unpatched_npu_model_silently_runs_fp32():
    model = tiny_model(model_dtype="bf16").to("npu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.cuda.amp's deprecation and "CUDA is not available"
        seen = region_dtypes(model, pixels(1).to("npu"))
    assert set(seen.values()) == {torch.float32}


def test_maybe_autocast_on_npu_uses_the_model_dtype_without_future_warning():
    with ascend_patch.patched("mingtok", device="sim"):
        model = tiny_model(model_dtype="bf16")
        assert model.maybe_autocast(model.model_dtype).__class__.__name__ == "nullcontext"  # on the CPU
        model = model.to("npu")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with model.maybe_autocast(model.model_dtype):
                enabled, dtype = torch.is_autocast_enabled("npu"), torch.get_autocast_dtype("npu")
            with model.maybe_autocast(model.model_dtype, enable=False):
                disabled = not torch.is_autocast_enabled("npu")
    assert enabled and dtype is torch.bfloat16 and disabled
    assert not [w for w in caught if issubclass(w.category, FutureWarning)], [str(w.message) for w in caught]


# -- XFORMERS_ENABLED -----------------------------------------------------------------------


def test_xformers_enabled_zero_enables_xformers_upstream(monkeypatch):
    # The pitfall: with the xformers shim importable, "0" switches xFormers on.
    monkeypatch.setenv("XFORMERS_ENABLED", "0")
    with ascend_patch.patched("attention", device="cpu"):
        from mingtok.vision_transformer.layers import attention, swiglu_ffn

        assert attention.XFORMERS_AVAILABLE and swiglu_ffn.XFORMERS_AVAILABLE


def test_xformers_enabled_zero_is_unset_while_active(monkeypatch):
    monkeypatch.setenv("XFORMERS_ENABLED", "0")
    with pytest.warns(UserWarning, match="XFORMERS_ENABLED='0' enables xFormers"):
        ascend_patch.apply("mingtok", device="cpu")
    try:
        assert "XFORMERS_ENABLED" not in os.environ
        from mingtok.vision_transformer.layers import attention, block, swiglu_ffn

        assert not (attention.XFORMERS_AVAILABLE or block.XFORMERS_AVAILABLE or swiglu_ffn.XFORMERS_AVAILABLE)
        assert swiglu_ffn.SwiGLU is swiglu_ffn.SwiGLUFFN
    finally:
        ascend_patch.revert("mingtok")
    assert os.environ["XFORMERS_ENABLED"] == "0"


def test_xformers_enabled_read_before_apply_is_reported(monkeypatch):
    monkeypatch.setenv("XFORMERS_ENABLED", "0")
    import mingtok.modeling_mingtok  # noqa: F401  (reads the variable: too late for the recipe)

    with pytest.warns(UserWarning, match="read before ascend_patch.apply"):
        ascend_patch.apply("mingtok", device="cpu")
    try:
        assert os.environ["XFORMERS_ENABLED"] == "0"
        nothing = ascend_patch.report().filter(patch="mingtok", action="nothing")
    finally:
        ascend_patch.revert("mingtok")
    assert [r.target for r in nothing] == ["os.environ['XFORMERS_ENABLED']"]
    assert "Apply the 'mingtok' recipe before importing it" in nothing[0].detail


def test_nested_tensors_keep_the_xformers_path(monkeypatch):
    # XFORMERS_ENABLED=1 is meant: kept, and a nested-tensor forward (attn_bias set) stays upstream's.
    monkeypatch.setenv("XFORMERS_ENABLED", "1")
    with ascend_patch.patched("mingtok", device="cpu"):
        from mingtok.vision_transformer.layers import MemEffAttention, NestedTensorBlock

        kept = ascend_patch.report().filter(patch="mingtok", action="kept")
        torch.manual_seed(0)
        block = NestedTensorBlock(dim=128, num_heads=2, attn_class=MemEffAttention).eval()
        crops = [torch.randn(2, 5, 128), torch.randn(1, 9, 128)]
        with torch.no_grad():
            nested = block(crops)
            single = [block(c) for c in crops]
    assert kept and kept[0].target == "os.environ['XFORMERS_ENABLED']"
    for got, expected in zip(nested, single):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


# -- ordering -------------------------------------------------------------------------------


def test_import_before_apply_patches_existing_models():
    model = tiny_model()  # imported and built before the recipe
    latent = latent_of(model, pixels())
    with ascend_patch.patched("mingtok", device="cpu"):
        full, stepwise, _ = decode(model, latent)
    torch.testing.assert_close(stepwise, full, atol=2e-5, rtol=1e-5)


APPLY_FIRST = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[1])
    import torch
    import ascend_patch

    ascend_patch.apply("mingtok", device="sim", fp32_autocast="fp32")
    assert not [n for n in sys.modules if n.startswith("mingtok")]
    from mingtok.modeling_mingtok import MingTok, MingTokConfig
    from mingtok.vision_transformer.layers import attention

    # Imported while active: flash_attn availability is answered by the shim, as on an NPU.
    assert attention.flash_attn_func is not None and attention.flash_attn_func.__module__.startswith("ascend_patch")
    assert hasattr(vars(attention.MemEffCausalAttention)["forward"], "__wrapped__")
    config = dict(low_level_encoder=dict(img_size=64, patch_size=16, depth=1, embed_dim=128, ffn_layer="swiglu",
                                         out_dim=32),
                  semantic_decoder=dict(in_dim=32, patch_size=16, embed_dim=128, decoder_depth=2),
                  pixel_decoder=dict(patch_size=8, decoder_depth=1, embed_dim=128), model_dtype="fp32")
    model = MingTok(MingTokConfig(**config)).eval().to("npu")
    with torch.no_grad():
        latent = model(torch.randn(1, 3, 64, 64, device="npu"))["latent"]
    full = model.forward_feature_decoder(latent)["x_norm"]
    cache, steps = None, []
    for t in range(latent.shape[1]):
        step = model.forward_feature_decoder(latent[:, t:t + 1], cache)
        cache = step["past_key_values"]
        steps.append(step["x_norm_patchtokens"])
    print("max diff", (torch.cat(steps, 1) - full).abs().max().item())
    ascend_patch.revert()
    assert not hasattr(vars(attention.MemEffCausalAttention)["forward"], "__wrapped__")
    print("reverted")
    """
)


def test_apply_before_import_in_a_fresh_interpreter():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", APPLY_FIRST, str(REPO)], capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    diff = float(result.stdout.split("max diff", 1)[1].split()[0])
    assert diff < 2e-5 and "reverted" in result.stdout
