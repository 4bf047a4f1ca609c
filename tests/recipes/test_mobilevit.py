"""mobilevit recipe: a script written for CUDA (``.cuda()``, ``device="cuda"``, ``attn_implementation="sdpa"``,
CUDA seeding) runs unmodified on cpu and the simulated NPU and matches the CPU fp32 model."""

from __future__ import annotations

import pytest
import torch

import ascend_patch
from ascend_patch.tools.models import get_spec, torch_default_init
from conftest import device_of

from .helpers import metrics

transformers = pytest.importorskip("transformers")
from transformers import MobileViTForImageClassification  # noqa: E402


def cuda_script(config) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """What the upstream scripts around MobileViT look like on a CUDA machine."""
    torch.cuda.manual_seed_all(0)
    model = MobileViTForImageClassification._from_config(config, attn_implementation="sdpa")
    torch_default_init(model)  # random weights with O(1) logits (see tools.models.torch_default_init)
    model = model.cuda().eval()
    pixels = torch.rand(2, 3, 64, 64, device="cuda")  # BGR in [0, 1], as its image processor feeds it
    with torch.no_grad():
        logits = model(pixel_values=pixels).logits
    return model, pixels, logits


@pytest.fixture
def config():
    return get_spec("mobilevit").build(tiny=True).model.config


def test_the_script_fails_unpatched(config):
    with pytest.raises(ValueError, match="scaled_dot_product_attention"):
        cuda_script(config)


def test_the_script_runs_unmodified_and_matches_the_cpu(config, target):
    with ascend_patch.patched("mobilevit", device=target) as on:
        assert on == ["device", "seed", "autocast", "mobilevit"]
        model, pixels, logits = cuda_script(config)
        report = ascend_patch.report()
    assert logits.device.type == device_of(target)
    reference = MobileViTForImageClassification._from_config(config, attn_implementation="eager").eval()
    reference.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()})
    with torch.no_grad():
        expected = reference(pixel_values=pixels.cpu()).logits
    cos, rel = metrics(logits.cpu(), expected)
    assert cos >= 0.99999 and rel <= 1e-3, (cos, rel)
    assert torch.equal(logits.cpu().argmax(-1), expected.argmax(-1))
    calls = {(r.patch, r.target): r.where for r in report.filter(action="call")}
    # transformers overrides Module.cuda and runs the attention check itself: those sites are in transformers.
    assert {("device", "Module.cuda"), ("mobilevit", "attn_implementation='sdpa'")} <= calls.keys()
    assert "test_mobilevit.py" in calls[("device", "torch.rand")]
    assert "test_mobilevit.py" in calls[("seed", "torch.cuda.manual_seed_all")]


def test_mobilevit_any_attn_implementation_falls_back_to_eager(tmp_path):
    config = get_spec("mobilevit").build(tiny=True).model.config
    with pytest.raises(ValueError, match="scaled_dot_product_attention"):
        MobileViTForImageClassification._from_config(config, attn_implementation="sdpa")
    with ascend_patch.patched("mobilevit", device="cpu"):
        model = MobileViTForImageClassification._from_config(config, attn_implementation="sdpa")
        assert model.config._attn_implementation == "eager"
        model.save_pretrained(tmp_path)
        loaded = MobileViTForImageClassification.from_pretrained(tmp_path, attn_implementation="sdpa")
        assert loaded.config._attn_implementation == "eager"
        calls = ascend_patch.report().filter(patch="mobilevit", action="call")
        assert calls and calls[0].target == "attn_implementation='sdpa'"
    # Reverted: the class inherits the original check again.
    from transformers.models.mobilevit.modeling_mobilevit import MobileViTPreTrainedModel

    assert "_check_and_adjust_attn_implementation" not in vars(MobileViTPreTrainedModel)
    with pytest.raises(ValueError):
        MobileViTForImageClassification._from_config(config, attn_implementation="sdpa")
