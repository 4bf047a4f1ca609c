"""MingTok-Vision (``mingtok`` of inclusionAI/Ming-UniVision, not on PyPI): latent, features, reconstruction."""

from __future__ import annotations

from typing import Any

import torch

from . import ModelSpec, Upstream


def run(model: Any, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
    features = model(pixels)
    # The three stages are used separately downstream (the latent by Ming-UniVision's generator, the
    # semantic features for understanding, the pixel decoder for images) and run in different
    # autocast regions (model dtype vs the fp32 pixel-decoder region): report each.
    return {
        "latent": features["latent"],
        "patch_tokens": features["x_norm_patchtokens"],
        "reconstruction": model.forward_pixel_decoder(features["x_norm_patchtokens"]),
    }


def config_image_size(config: Any) -> int:
    return int(config.low_level_encoder.get("img_size", 224))


def set_run_dtype(model: Any, dtype: torch.dtype) -> None:
    # forward / forward_feature_decoder autocast to model_dtype (bf16 in the checkpoint's config):
    # an fp32 run must be fp32 there too, a bf16 run autocasts to bf16 as the checkpoint does.
    model.model_dtype = dtype


SPEC = ModelSpec(
    recipe="mingtok",
    checkpoint="inclusionAI/MingTok-Vision",
    # mingtok/config/config_mingtok.json: encoder ViT 768x12 patch 32 at 512 px -> 32-channel latent,
    # causal semantic decoder 1024x24, pixel decoder 1024x24 patch 16 (heads = width // 64).
    full_config=dict(
        pretrained_checkpoint="",
        low_level_encoder=dict(img_size=512, patch_size=32, depth=12, embed_dim=768, ffn_layer="swiglufused",
                               out_dim=32),
        semantic_decoder=dict(in_dim=32, patch_size=32, embed_dim=1024, decoder_depth=24, ffn_layer="swiglufused"),
        pixel_decoder=dict(patch_size=16, decoder_depth=24, norm_pix_loss=True, embed_dim=1024, loss_type="L1-plain"),
        scaling_factor=8.09449291,
        mean=1.46817409,
    ),
    # Same architecture at 64 px: 16 latent tokens + class token, 2 heads per layer (width 128).
    tiny_config=dict(
        low_level_encoder=dict(img_size=64, patch_size=16, depth=2, embed_dim=128, ffn_layer="swiglufused",
                               out_dim=32),
        semantic_decoder=dict(in_dim=32, patch_size=16, embed_dim=128, decoder_depth=2, ffn_layer="swiglufused"),
        pixel_decoder=dict(patch_size=8, decoder_depth=2, norm_pix_loss=True, embed_dim=128, loss_type="L1-plain"),
        scaling_factor=8.09449291,
        mean=1.46817409,
    ),
    model_class="mingtok.modeling_mingtok:MingTok",
    config_class="mingtok.modeling_mingtok:MingTokConfig",
    # mingtok/utils/processor.py CenterCropProcessor: resize short side 512 (bicubic), centre crop 512,
    # mean/std 0.5 (pixels in [-1, 1], the range the reconstruction is clamped to).
    crop_size=512,
    resize_ratio=1.0,
    resample="BICUBIC",
    normalize=((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    bgr=False,
    random_input="randn",
    run=run,
    upstream=Upstream("mingtok", "https://github.com/inclusionAI/Ming-UniVision"),
    config_image_size=config_image_size,
    set_run_dtype=set_run_dtype,
    # fp32 run: the pixel decoder's autocast(float32) region keeps fp32 semantics instead of the
    # default bf16 downgrade on the NPU, so the whole run is fp32.
    recipe_options={"fp32": {"fp32_autocast": "fp32"}},
)
