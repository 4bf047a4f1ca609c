"""MobileViT-x-small (transformers ``MobileViTForImageClassification``): ImageNet logits."""

from __future__ import annotations

from typing import Any

import torch

from . import ModelSpec, torch_default_init


def run(model: Any, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"logits": model(pixel_values=pixels).logits}


SPEC = ModelSpec(
    recipe="mobilevit",
    checkpoint="apple/mobilevit-x-small",
    # apple/mobilevit-x-small config.json (2.3 M parameters, ImageNet-1k head)
    full_config=dict(hidden_sizes=[96, 120, 144], neck_hidden_sizes=[16, 32, 48, 64, 80, 96, 384],
                     num_attention_heads=4, image_size=256, patch_size=2, mlp_ratio=2.0, expand_ratio=4.0,
                     hidden_act="silu", conv_kernel_size=3, output_stride=32, num_labels=1000),
    tiny_config=dict(hidden_sizes=[32, 48, 64], neck_hidden_sizes=[8, 16, 24, 32, 40, 48, 96],
                     num_attention_heads=4, image_size=64, patch_size=2, num_labels=10),
    model_class="transformers:MobileViTForImageClassification",
    config_class="transformers:MobileViTConfig",
    crop_size=256,  # MobileViTImageProcessor: resize short side 288, centre crop 256, BGR, no mean/std
    resize_ratio=288 / 256,
    resample="BILINEAR",
    normalize=None,
    bgr=True,
    random_input="rand",
    run=run,
    classifier_outputs=("logits",),
    # MobileViT's _init_weights draws convs and BatchNorm scales from N(0, 0.02): random-init logits
    # come out ~1e-13, so a random model uses PyTorch's default init instead.
    init_fix=torch_default_init,
    # MobileViT has eager attention only; say so rather than rely on the sdpa -> eager fallback.
    load_kwargs={"attn_implementation": "eager"},
)
