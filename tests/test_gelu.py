"""gelu: GELU on npu tensors is the exact erf form; other devices are untouched."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

import ascend_patch
from conftest import device_of


def exact_gelu(x: torch.Tensor) -> torch.Tensor:
    x = x.double()
    return (0.5 * x * (1 + torch.erf(x / 2**0.5))).float()


def tanh_gelu(x: torch.Tensor) -> torch.Tensor:
    x = x.double()
    return (0.5 * x * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (x + 0.044715 * x**3)))).float()


def inputs(device: str) -> torch.Tensor:
    torch.manual_seed(0)
    return (torch.randn(64, 33) * 3).to(device)


def test_modules_and_functional_calls_give_exact_gelu(target):
    from transformers.activations import GELUActivation

    device = device_of(target)
    x = inputs(device)
    built_before = nn.Sequential(nn.GELU(), GELUActivation())
    with ascend_patch.patched("gelu", device=target):
        built_after = GELUActivation()
        outs = {
            "nn.GELU": built_before[0](x),
            "GELUActivation before apply": built_before[1](x),
            "GELUActivation after apply": built_after(x),
            "F.gelu": F.gelu(x),
            "nn.GELU tanh": nn.GELU(approximate="tanh")(x),
        }
        stats = ascend_patch.report().stats.get("gelu", {})
    for name, out in outs.items():
        assert out.device.type == device, name
        reference = tanh_gelu(x.cpu()) if "tanh" in name else exact_gelu(x.cpu())
        torch.testing.assert_close(out.cpu(), reference, rtol=1e-6, atol=1e-6, msg=name)
    if device == "npu":
        assert stats["modules_routed"] == 4 and stats["functional_call_sites_routed"] == 1
    else:  # other devices take the original path untouched
        assert stats == {"modules_routed": 0, "functional_call_sites_routed": 0}


def test_cpu_results_are_bit_identical_to_unpatched():
    x = inputs("cpu")
    expected = (F.gelu(x), nn.GELU(approximate="tanh")(x))
    with ascend_patch.patched("gelu", device="cpu"):
        got = (F.gelu(x), nn.GELU(approximate="tanh")(x))
    for a, b in zip(got, expected):
        assert torch.equal(a, b)


def test_revert_restores_gelu_originals_by_identity():
    from transformers.activations import GELUActivation

    originals = (nn.GELU.__dict__["forward"], F.gelu, GELUActivation.__dict__["forward"])
    with ascend_patch.patched("gelu", device="cpu"):
        assert nn.GELU.__dict__["forward"] is not originals[0] and F.gelu is not originals[1]
        assert GELUActivation.__dict__["forward"] is not originals[2]
    assert (nn.GELU.__dict__["forward"], F.gelu, GELUActivation.__dict__["forward"]) == originals
    assert all(a is b for a, b in zip((nn.GELU.__dict__["forward"], F.gelu, GELUActivation.__dict__["forward"]),
                                      originals))
