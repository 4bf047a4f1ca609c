"""fp32_autocast: autocast(dtype=float32) regions follow the chosen policy."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import device_of

import ascend_patch


def bf16_layer_and_input(device: str):
    torch.manual_seed(0)
    layer = nn.Linear(16, 8).to(device)
    x = torch.randn(4, 16).to(device).bfloat16()
    return layer, x


def test_fp32_policy_computes_in_fp32_like_cuda(target):
    device = device_of(target)
    layer, x = bf16_layer_and_input(device)
    expected = F.linear(x.float(), layer.weight, layer.bias)
    with ascend_patch.patched("fp32_autocast", device=target, fp32_autocast="fp32"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "target dtype is not supported" warning
            with torch.autocast(device, dtype=torch.float32):
                out = layer(x)
                probs = torch.softmax(x, dim=-1)
                kept = x + 1  # ops outside CUDA's autocast lists keep their dtype
    assert out.dtype == torch.float32 and probs.dtype == torch.float32 and kept.dtype == torch.bfloat16
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert torch._C._len_torch_function_stack() == 0  # the upcast mode was popped


def test_bf16_policy_downgrades_the_region(target):
    device = device_of(target)
    layer, x = bf16_layer_and_input(device)
    with torch.autocast(device, dtype=torch.bfloat16):
        expected = layer(x.float())
    with ascend_patch.patched("fp32_autocast", device=target, fp32_autocast="bf16"):
        with torch.autocast(device, dtype=torch.float32):
            assert torch.get_autocast_dtype(device) == torch.bfloat16
            out = layer(x.float())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_off_policy_and_unpatched_keep_pytorchs_behaviour(target):
    device = device_of(target)
    layer, x = bf16_layer_and_input(device)
    for scope in (ascend_patch.patched("fp32_autocast", device=target, fp32_autocast="off"),
                  ascend_patch.patched("seed", device=target)):
        with scope:
            with pytest.warns(UserWarning, match="target dtype is not supported"):
                with torch.autocast(device, dtype=torch.float32):
                    with pytest.raises(RuntimeError):  # bf16 input, fp32 weight: autocast was off
                        layer(x)


@pytest.mark.parametrize("policy", [None, "auto"])
def test_cuda_region_maps_through_the_autocast_patch(target, policy):
    """MingTok's case: torch.cuda.amp.autocast(dtype=float32) around a decoder. The default keeps
    CUDA's fp32 meaning on every target (code asserting fp32 inside the region holds); "auto" is
    the bf16 downgrade on npu that the MingTok port chose."""
    device = device_of(target)
    layer, x = bf16_layer_and_input(device)
    options = {"fp32_autocast": policy} if policy else {}
    with ascend_patch.patched("autocast", "fp32_autocast", device=target, **options):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with torch.cuda.amp.autocast(dtype=torch.float32):
                out = layer(x)
    expected_dtype = torch.bfloat16 if device == "npu" and policy == "auto" else torch.float32
    assert out.dtype == expected_dtype
    records = ascend_patch.report().filter(patch="fp32_autocast", action="call")
    assert records and records[0].target == "autocast('cuda', dtype=float32)"
    assert records[0].where.startswith("tests/test_fp32_autocast.py:")


def test_nested_and_decorated_regions_restore_the_outer_one(target):
    device = device_of(target)
    layer, x = bf16_layer_and_input(device)
    with ascend_patch.patched("fp32_autocast", device=target, fp32_autocast="fp32"):

        @torch.autocast(device, dtype=torch.float32)
        def fp32_head(inp):
            return layer(inp)

        with torch.autocast(device, dtype=torch.bfloat16):
            assert fp32_head(x).dtype == torch.float32
            assert layer(x.float()).dtype == torch.bfloat16  # outer region active again
            with pytest.raises(ZeroDivisionError):
                with torch.autocast(device, dtype=torch.float32):
                    1 / 0
            assert torch._C._len_torch_function_stack() == 0
            assert layer(x.float()).dtype == torch.bfloat16
