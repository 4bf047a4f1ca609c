"""AIMv2-large (transformers ``Aimv2VisionModel``, head-less encoder): patch features."""

from __future__ import annotations

from typing import Any

import torch

from . import ModelSpec


def run(model: Any, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
    # AIMv2 has no CLS token: the patch features are the output (the head is dropped for
    # head-less checkpoints by the recipe).
    return {"patch_tokens": model(pixel_values=pixels).last_hidden_state}


SPEC = ModelSpec(
    recipe="aimv2",
    checkpoint="apple/aimv2-large-patch14-224",
    # apple/aimv2-large-patch14-224 vision config (head-less encoder)
    full_config=dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=24, num_attention_heads=8,
                     patch_size=14, image_size=224, hidden_act="silu", rms_norm_eps=1e-5, qkv_bias=False,
                     mlp_bias=False, use_head=False, is_native=False),
    tiny_config=dict(hidden_size=64, intermediate_size=176, num_hidden_layers=4, num_attention_heads=4,
                     patch_size=14, image_size=56, use_head=False),
    model_class="transformers:Aimv2VisionModel",
    config_class="transformers:Aimv2VisionConfig",
    crop_size=224,  # CLIPImageProcessor: resize short side 224, centre crop 224, CLIP mean/std
    resize_ratio=1.0,
    resample="BICUBIC",
    normalize=((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    bgr=False,
    random_input="randn",
    run=run,
)
