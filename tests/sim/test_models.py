"""Tiny random-init transformers vision models on the simulated npu against CPU fp32.

MobileViT and AIMv2 use SiLU, so they must match CPU to 1e-5 as they are. DINOv2 uses GELU, which
on the (simulated) NPU is the tanh form: it matches CPU to 1e-5 only with the compatible
implementation (``TORCH_NPU_USE_COMPATIBLE_IMPL=1`` on hardware; set here through the simulator's
read-once switch, whose environment path test_install checks in a subprocess) or with
``torch_npu.npu_gelu`` in place of the GELU modules - which is the DINOv2 precision problem and its fix.
"""

from __future__ import annotations

import pytest
import torch
from transformers import (
    Aimv2VisionConfig,
    Aimv2VisionModel,
    Dinov2Config,
    Dinov2Model,
    MobileViTConfig,
    MobileViTForImageClassification,
)

from ascend_patch.sim import numerics

pytestmark = pytest.mark.usefixtures("sim_npu")


def run_on_cpu_and_npu(model: torch.nn.Module, pixels: torch.Tensor, key: str) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    with torch.no_grad():
        expected = model(pixel_values=pixels)[key]
        model.to("npu")
        got = model(pixel_values=pixels.to("npu"))[key]
    assert str(got.device) == "npu:0"
    return got.cpu(), expected


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got - expected).norm() / expected.norm()).item()


def dinov2(layers: int) -> Dinov2Model:
    torch.manual_seed(0)
    config = Dinov2Config(
        hidden_size=64, num_hidden_layers=layers, num_attention_heads=4, intermediate_size=256, image_size=56,
        patch_size=14, hidden_act="gelu",
    )  # fmt: skip
    return Dinov2Model(config)


def test_mobilevit_matches_cpu():
    torch.manual_seed(0)
    config = MobileViTConfig(image_size=64, hidden_sizes=[16, 24, 32], neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 48],
                             num_labels=10)  # fmt: skip
    got, expected = run_on_cpu_and_npu(MobileViTForImageClassification(config), torch.randn(2, 3, 64, 64), "logits")
    assert expected.shape == (2, 10)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_aimv2_matches_cpu():
    torch.manual_seed(0)
    config = Aimv2VisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                               image_size=56, patch_size=14, use_head=False)  # fmt: skip
    got, expected = run_on_cpu_and_npu(Aimv2VisionModel(config), torch.randn(2, 3, 56, 56), "last_hidden_state")
    assert expected.shape == (2, 16, 64)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_dinov2_matches_cpu_with_the_compatible_gelu(monkeypatch):
    monkeypatch.setattr(numerics, "_compatible_impl", True)  # as TORCH_NPU_USE_COMPATIBLE_IMPL=1 before start
    got, expected = run_on_cpu_and_npu(dinov2(2), torch.randn(2, 3, 56, 56), "last_hidden_state")
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_dinov2_gelu_precision_problem_reproduces_and_the_gelu_patch_fixes_it(monkeypatch):
    import ascend_patch

    monkeypatch.setattr(numerics, "_compatible_impl", False)  # the default: aclnnGelu, tanh form
    model = dinov2(6)
    pixels = torch.randn(2, 3, 56, 56)
    default, expected = run_on_cpu_and_npu(model, pixels, "last_hidden_state")
    with ascend_patch.patched("gelu", device="sim"), torch.no_grad():
        fixed = model(pixel_values=pixels.to("npu")).last_hidden_state.cpu()
        assert ascend_patch.report().stats["gelu"]["modules_routed"] == 6
    error_default, error_fixed = relative_error(default, expected), relative_error(fixed, expected)
    assert error_fixed < 1e-5
    assert error_default > 10 * error_fixed
