"""The CUDA-written fixture package runs unmodified under patched() and matches plain PyTorch."""

from __future__ import annotations

import importlib
import sys

import cuda_research_reference as reference
import pytest
import torch
from conftest import device_of

import ascend_patch


@pytest.fixture
def fresh_import():
    """Import cuda_research inside the test (its imports must meet the patches) and forget it after."""

    def _import():
        return importlib.import_module("cuda_research")

    yield _import
    for name in [n for n in sys.modules if n.split(".")[0] == "cuda_research"]:
        del sys.modules[name]


def build(research, device, **kwargs):
    torch.manual_seed(0)
    model = research.TinyViT(**kwargs).eval()
    images = torch.randn(2, 3, 32, 32)
    return model, images


def assert_outputs_close(got, expected, tol):
    for key, value in expected.items():
        torch.testing.assert_close(got[key].float().cpu(), value.float(), rtol=tol, atol=tol, msg=key)


def test_it_cannot_even_be_imported_without_the_patches(fresh_import):
    with pytest.raises(ModuleNotFoundError, match="xformers|flash_attn"):
        fresh_import()


def test_runs_unmodified_and_matches_the_reference_in_fp32(target, fresh_import):
    device = device_of(target)
    with ascend_patch.patched(device=target, fp32_autocast="fp32"):
        research = fresh_import()
        research.fix_random_seeds(0)
        model, images = build(research, device)
        with torch.no_grad():
            expected = reference.forward(model, images)
            keep = torch.tensor([[True] * 17, [True] * 11 + [False] * 6])
            expected_padded = reference.forward(model, images, keep)
            model.to(device)
            got = model(images.to(device))
            got_padded = model(images.to(device), keep.to(device))
    assert got["cls"].device.type == device
    assert_outputs_close(got, expected, 1e-5)
    # varlen path: unpad_input / flash_attn_varlen_func / pad_input; padded rows compare on kept tokens
    for key in ("cls", "logits"):
        torch.testing.assert_close(got_padded[key].cpu(), expected_padded[key], rtol=1e-5, atol=1e-5)


def test_mixed_precision_regions_act_on_the_target(target, fresh_import):
    device = device_of(target)
    with ascend_patch.patched(device=target):  # default policy: the fp32 head keeps CUDA's fp32 meaning
        research = fresh_import()
        model, images = build(research, device, use_amp=True)
        with torch.no_grad():
            expected = reference.forward(model, images)
            model.to(device)
            got = model(images.to(device))
            decorated = model.forward_bf16(images.to(device))
    assert got["decoded"].dtype == torch.bfloat16 and decorated.dtype == torch.bfloat16
    assert got["logits"].dtype == torch.float32
    cos = torch.nn.functional.cosine_similarity(got["tokens"].float().cpu().flatten(), expected["tokens"].flatten(), 0)
    assert cos > 0.999


def test_seeding_through_torch_cuda_is_reproducible(target, fresh_import):
    device = device_of(target)
    with ascend_patch.patched(device=target):
        research = fresh_import()
        research.fix_random_seeds(3)
        first = torch.rand(4, device=device)
        research.fix_random_seeds(3)
        again = torch.rand(4, device=device)
    assert torch.equal(first.cpu(), again.cpu())
