"""MingTok-Vision image reconstruction (encoder -> semantic decoder -> pixel decoder) on an Ascend NPU.

What the recipe does here: ``maybe_autocast`` autocasts on the NPU (upstream's torch.cuda.amp
autocast silently disables itself there, so the model ran in fp32), the pixel decoder's fp32
autocast region follows the fp32_autocast policy (bf16 on the NPU by default, fp32 in an fp32
run), attention runs on SDPA (the fused kernel), the causal decoder's KV cache is filled (upstream's
non-flash fallback drops it, so token-by-token decoding was wrong), XFORMERS_ENABLED=0 no longer
enables xFormers, GELU is the exact erf form, and CUDA seeds/devices act on the NPU.

MingTok is not on PyPI: clone the repository and pass its root with --repo. Weights
(inclusionAI/MingTok-Vision on the Hugging Face Hub) go in --model-path.

    git clone https://github.com/inclusionAI/Ming-UniVision
    python examples/mingtok_reconstruct.py --repo Ming-UniVision --device sim --tiny --check   # no weights
    python examples/mingtok_reconstruct.py --repo Ming-UniVision --model-path ./MingTok-Vision \\
        --image cat.jpg --out cat_recon.png --device npu --dtype bf16
"""

from __future__ import annotations

import sys

import torch

import ascend_patch  # noqa: F401  (the recipe is applied in start(), before the mingtok code is imported)
from ascend_patch.tools.examples import example_parser, main_exit_code, psnr, save_png, start

# Token-by-token vs full-sequence decoding, mean relative difference: the same numbers up to
# reduction order in fp32; bf16/fp16 round the two orders differently. A decode that misses the
# cache (upstream without flash_attn/xFormers) is off by tens of percent.
DECODE_TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 5e-2, torch.float16: 1e-2}


def decode_with_cache(model: torch.nn.Module, latent: torch.Tensor, tokens: int) -> tuple[float, float]:
    """Max and mean relative difference between decoding ``tokens`` latents one at a time with the
    KV cache (how Ming-UniVision's generator calls it) and decoding them as one causal sequence."""
    full = model.forward_feature_decoder(latent[:, :tokens])["x_norm"]
    cache, steps = None, []
    for t in range(tokens):
        step = model.forward_feature_decoder(latent[:, t:t + 1], cache)
        cache = step["past_key_values"]
        steps.append(step["x_norm_patchtokens"])
    diff = (torch.cat(steps, dim=1).float() - full.float()).abs()
    return diff.max().item(), (diff.mean() / full.float().abs().mean()).item()


def main(argv: list[str] | None = None) -> int:
    parser = example_parser(__doc__, "mingtok")
    parser.add_argument("--out", help="write the reconstruction here (PNG)")
    parser.add_argument("--decode-tokens", type=int, default=32,
                        help="latent tokens in the KV-cache decode demo (default 32; 0 skips it)")
    args = parser.parse_args(argv)
    if args.decode_tokens < 0 or args.decode_tokens == 1:  # one token has no sequence to compare with
        parser.error(f"--decode-tokens must be 0 (skip) or >= 2, got {args.decode_tokens}")
    run = start("mingtok", args)
    image, ms = run.timed(lambda: run.model.forward_enc_dec(run.pixels))
    print(f"  reconstruction {tuple(image.shape)}: PSNR {psnr(image[0], run.pixels[0], run.spec):.2f} dB vs the input, "
          f"{ms:.1f} ms per image{' (random weights: PSNR means nothing)' if run.loaded.random_init else ''}")
    if args.out:
        save_png(image[0], args.out, run.spec)
        print(f"  wrote {args.out}")

    decode_ok = True
    if args.decode_tokens:
        with torch.no_grad():
            latent = run.model(run.pixels)["latent"]
            tokens = min(args.decode_tokens, latent.shape[1])
            diff, rel = decode_with_cache(run.model, latent, tokens)
        limit = DECODE_TOLERANCE[run.dtype]
        decode_ok = rel <= limit
        print(f"  KV-cache decode of {tokens} latent tokens one at a time vs the full sequence: max diff {diff:.2e}, "
              f"rel err {100 * rel:.5f} % ({'OK' if decode_ok else f'WRONG, over {100 * limit:g} %'})")

    ok = run.check()  # latent, semantic features and reconstruction, as verify compares
    run.finish()
    return main_exit_code(ok) or (0 if decode_ok else 1)


if __name__ == "__main__":
    sys.exit(main())
