"""DINOv2-large (transformers ``Dinov2Model``): CLS token and patch tokens."""

from __future__ import annotations

from typing import Any

import torch

from . import IMAGENET_MEAN, IMAGENET_STD, ModelSpec


def run(model: Any, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
    hidden = model(pixel_values=pixels).last_hidden_state
    # The CLS token and the patch tokens are used differently downstream (global vs dense
    # features) and the seed port's error differed between them: report them separately.
    return {"cls_token": hidden[:, 0], "patch_tokens": hidden[:, 1:]}


SPEC = ModelSpec(
    recipe="dinov2",
    checkpoint="facebook/dinov2-large",
    # facebook/dinov2-large config.json (ViT-L/14)
    full_config=dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, mlp_ratio=4,
                     patch_size=14, image_size=518, hidden_act="gelu", layer_norm_eps=1e-6,
                     layerscale_value=1.0, qkv_bias=True, use_swiglu_ffn=False),
    tiny_config=dict(hidden_size=64, num_hidden_layers=6, num_attention_heads=4, mlp_ratio=4,
                     patch_size=14, image_size=56, hidden_act="gelu", layer_norm_eps=1e-6),
    model_class="transformers:Dinov2Model",
    config_class="transformers:Dinov2Config",
    # BitImageProcessor: resize short side 256, centre crop 224. The checkpoint's image_size (518)
    # is its position-embedding grid, not the crop: a run uses min(config, crop).
    crop_size=224,
    resize_ratio=256 / 224,
    resample="BICUBIC",
    normalize=(IMAGENET_MEAN, IMAGENET_STD),
    bgr=False,
    random_input="randn",
    run=run,
)
