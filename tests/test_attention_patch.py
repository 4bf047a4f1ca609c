"""attention: flash_attn / xformers imports resolve to the SDPA shims, or are hidden."""

from __future__ import annotations

import importlib
import math
import sys

import pytest
import torch

import ascend_patch
from conftest import device_of


def explicit_attention(q, k, v, causal=False):
    scores = torch.einsum("bnhd,bmhd->bhnm", q.double(), k.double()) / math.sqrt(q.shape[-1])
    if causal:
        n, m = q.shape[1], k.shape[1]
        i, j = torch.arange(n)[:, None], torch.arange(m)[None, :]
        scores = scores.masked_fill(j > i + (m - n), float("-inf"))
    return torch.einsum("bhnm,bmhd->bnhd", scores.softmax(-1), v.double()).float()


def test_without_the_patch_the_imports_fail():
    for name in ("flash_attn", "xformers.ops"):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(name)


def test_imports_resolve_to_shims_that_compute_attention(target):
    device = device_of(target)
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, s, 4, 16) for s in (5, 9, 9))
    with ascend_patch.patched("attention", device=target):
        from flash_attn import flash_attn_func
        from flash_attn.bert_padding import pad_input, unpad_input  # noqa: F401
        from flash_attn.flash_attn_interface import flash_attn_varlen_func  # noqa: F401
        import xformers.ops as xops
        from xformers.ops.fmha.attn_bias import BlockDiagonalMask  # noqa: F401

        assert getattr(sys.modules["flash_attn"], "__ascend_patch_shim__", False)
        out = flash_attn_func(q.to(device), k.to(device), v.to(device), causal=True)
        xout = xops.memory_efficient_attention(q.to(device), k.to(device), v.to(device))
        assert out.device.type == device
        patched_targets = {r.target for r in ascend_patch.report().filter(patch="attention")}
        assert "sys.modules['flash_attn.bert_padding']" in patched_targets
    torch.testing.assert_close(out.cpu(), explicit_attention(q, k, v, causal=True), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(xout.cpu(), explicit_attention(q, k, v), rtol=1e-5, atol=1e-5)
    with pytest.raises(ModuleNotFoundError):
        import flash_attn  # noqa: F401  (gone again after revert)


def test_hide_mode_makes_upstream_take_its_fallback():
    from transformers.utils import is_flash_attn_2_available

    assert is_flash_attn_2_available() is False  # not installed here
    with ascend_patch.patched("attention", device="cpu", attention="hide"):
        with pytest.raises(ImportError, match="hidden by ascend_patch"):
            import flash_attn  # noqa: F401
        with pytest.raises(ImportError, match="hidden by ascend_patch"):
            import xformers.ops  # noqa: F401
        import transformers

        assert transformers.utils.is_flash_attn_2_available() is False


def test_transformers_availability_answers_consistently_with_the_shim():
    import transformers
    import transformers.utils.import_utils as import_utils

    original = import_utils.is_flash_attn_2_available
    with ascend_patch.patched("attention", device="cpu"):
        assert import_utils.is_flash_attn_2_available() is True
        assert transformers.utils.is_flash_attn_2_available() is True
        assert import_utils.is_flash_attn_greater_or_equal("2.1.0") is True
        copies = {r.target for r in ascend_patch.report().filter(patch="attention", action="copy")}
        assert "transformers.utils.is_flash_attn_2_available" in copies
    assert import_utils.is_flash_attn_2_available is original
    assert transformers.utils.is_flash_attn_2_available is original


def test_unshimmed_submodule_gets_a_clear_error():
    with ascend_patch.patched("attention", device="cpu"):
        with pytest.raises(ModuleNotFoundError, match="shim does not provide 'flash_attn.not_a_module'"):
            import flash_attn.not_a_module  # noqa: F401


def test_a_module_imported_before_apply_is_swapped_and_restored(monkeypatch):
    import types

    stale = types.ModuleType("flash_attn")  # e.g. a CUDA-only build that cannot run here
    monkeypatch.setitem(sys.modules, "flash_attn", stale)
    with ascend_patch.patched("attention", device="cpu"):
        assert sys.modules["flash_attn"] is not stale
        assert sys.modules["flash_attn"].__ascend_patch_shim__
    assert sys.modules["flash_attn"] is stale
