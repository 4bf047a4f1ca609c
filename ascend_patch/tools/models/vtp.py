"""VTP-Large-f16d64 (MiniMax-AI/VTP ``VTPModel``): SSL features, reconstruction latents and image, CLIP features.

The upstream package is not on PyPI (the PyPI project called ``vtp`` is unrelated): ``--repo`` a
clone of https://github.com/MiniMax-AI/VTP. The checkpoint's config.json could not be fetched
when this was written; the full-size config is our reading of the model card name and the
README: a ViT-L/16 encoder (1024 wide, 24 blocks, 16 heads) at 256 px with a 64-channel
bottleneck ("f16d64"), and the text tower and pixel decoder at ``VTPConfig``'s defaults
(768 wide, 12 blocks, 12 heads each). Pass ``--model-path`` to run the real checkpoint's own config.
"""

from __future__ import annotations

from typing import Any

import torch

from . import IMAGENET_MEAN, IMAGENET_STD, ModelSpec, Upstream

# Synthetic caption: CLIP's layout (start token, words, end token, zero padding) in a given vocabulary.
TEXT_WORDS = 9


def text_tokens(config: Any, batch_size: int, device: torch.device | str) -> torch.Tensor:
    """A seeded (batch, context) token batch. ``argmax`` pooling reads the end token, which has the
    largest id of the vocabulary as in CLIP's BPE (49407 of 49408)."""
    vocab, context = int(config.text_vocab_size), int(config.text_context_length)
    words = min(TEXT_WORDS, context - 2)
    gen = torch.Generator().manual_seed(1234)
    tokens = torch.zeros(batch_size, context, dtype=torch.long)
    tokens[:, 0] = vocab - 2
    tokens[:, 1:1 + words] = torch.randint(1, vocab - 2, (batch_size, words), generator=gen)
    tokens[:, 1 + words] = vocab - 1
    return tokens.to(device)


def run(model: Any, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
    # Each output is one of the entry points the README uses; each may break on its own (the text
    # tower alone has GELU and the causal mask, the decoder its own RoPE).
    features = model.get_last_layer_feature(pixels)
    latents = model.get_reconstruction_latents(pixels)
    outputs = {
        "cls_token": features["cls_token"],
        "patch_tokens": features["patch_tokens"],
        "latents": latents,
    }
    if model.pixel_decoder is not None:
        outputs["reconstruction"] = model.get_latents_decoded_images(latents)
    if model.config.train_clip:
        outputs["clip_image"] = model.get_clip_image_feature(pixels, normalize=True)
        tokens = text_tokens(model.config, pixels.shape[0], pixels.device)
        outputs["clip_text"] = model.get_clip_text_feature(tokens, normalize=True)
    return outputs


SPEC = ModelSpec(
    recipe="vtp",
    checkpoint="MiniMaxAI/VTP-Large-f16d64",
    full_config=dict(
        image_size=256, train_clip=True, train_reconstruction=True,
        vision_patch_size=16, vision_embed_dim=1024, vision_depth=24, vision_num_heads=16, vision_mlp_ratio=4.0,
        vision_ffn_layer="swiglu", vision_norm_layer="rmsnorm", vision_feature_bottleneck=64,
        vision_bottleneck_ae_only=True, vision_clip_feat="cls",
        text_context_length=77, text_vocab_size=49408, text_embed_dim=768, text_num_heads=12, text_depth=12,
        decoder_embed_dim=768, decoder_num_heads=12, decoder_depth=12,
    ),
    # Same architecture, a few blocks: head dims stay multiples of 4 (axial RoPE needs D_head % 4 == 0).
    tiny_config=dict(
        image_size=64, vision_patch_size=16, vision_embed_dim=64, vision_depth=2, vision_num_heads=4,
        vision_feature_bottleneck=16, text_context_length=16, text_vocab_size=128, text_embed_dim=64,
        text_num_heads=4, text_depth=2, decoder_embed_dim=64, decoder_num_heads=4, decoder_depth=2,
    ),
    model_class="vtp.models.vtp_hf:VTPModel",
    config_class="vtp.models.vtp_hf:VTPConfig",
    # README: Resize((256, 256)) (squashes to a square), ToTensor, ImageNet mean/std. Our preprocess
    # resizes the short side to 256 and centre-crops: the same pixels for square images.
    crop_size=256,
    resize_ratio=1.0,
    resample="BILINEAR",
    normalize=(IMAGENET_MEAN, IMAGENET_STD),
    bgr=False,
    random_input="randn",
    run=run,
    upstream=Upstream("vtp", "https://github.com/MiniMax-AI/VTP"),
)
