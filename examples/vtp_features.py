"""VTP (MiniMax-AI/VTP) on an Ascend NPU: SSL features, reconstruction through the 64-channel latents, CLIP features.

What the recipe does here: the text tower's causal ``attn_mask``, left uninitialised by
``VTPModel.from_pretrained`` on transformers >= 5, is rebuilt after loading; the bf16 RoPE
tables are computed once per image size on the CPU (upstream recomputes them on the device for
every block); ``fix_random_seeds`` seeds the NPU; the text tower's GELU is the exact erf form;
``torch.autocast("cuda")`` regions (as in the upstream README) and "cuda" device strings act on the NPU.

VTP is not on PyPI (the PyPI package named vtp is unrelated): clone the repository and pass its
root with --repo. Weights (MiniMaxAI/VTP-Large-f16d64 on the Hugging Face Hub) go in --model-path.

    git clone https://github.com/MiniMax-AI/VTP
    python examples/vtp_features.py --repo VTP --device sim --tiny --check          # no weights
    python examples/vtp_features.py --repo VTP --model-path ./VTP-Large-f16d64 --image dog.png \\
        --out dog_recon.png --device npu --dtype bf16
"""

from __future__ import annotations

import sys


import ascend_patch  # noqa: F401  (the recipe is applied in start(), before the vtp code is imported)
from ascend_patch.tools.examples import example_parser, main_exit_code, psnr, save_png, start


def reconstruct(model, pixels):
    latents = model.get_reconstruction_latents(pixels)
    return latents, model.get_latents_decoded_images(latents)


def main(argv=None) -> int:
    parser = example_parser(__doc__, "vtp")
    parser.add_argument("--out", help="write the reconstruction here (PNG)")
    args = parser.parse_args(argv)
    run = start("vtp", args)
    model, pixels = run.model, run.pixels

    features, ms = run.timed(lambda: model.get_last_layer_feature(pixels))
    cls, patches = features["cls_token"].float().cpu(), features["patch_tokens"].float().cpu()
    print(f"  last-layer features: CLS {tuple(cls.shape)} (L2 norm {cls.norm():.3f}), patch tokens "
          f"{tuple(patches.shape)}, {ms:.1f} ms per image")

    (latents, image), ms = run.timed(lambda: reconstruct(model, pixels))
    note = " (random weights: PSNR means nothing)" if run.loaded.random_init else ""
    print(f"  reconstruction: latents {tuple(latents.shape)} -> image {tuple(image.shape)}, PSNR "
          f"{psnr(image[0], pixels[0], run.spec):.2f} dB vs the input, {ms:.1f} ms per image{note}")
    if args.out:
        save_png(image[0], args.out, run.spec)
        print(f"  wrote {args.out}")

    if model.config.train_clip:
        clip, ms = run.timed(lambda: model.get_clip_image_feature(pixels, normalize=True))
        print(f"  CLIP image feature {tuple(clip.shape)}, {ms:.1f} ms per image")

    # The same outputs verify compares, the text tower included (a seeded synthetic caption).
    ok = run.check()
    run.finish()
    return main_exit_code(ok)


if __name__ == "__main__":
    sys.exit(main())
