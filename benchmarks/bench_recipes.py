"""What the mingtok and vtp recipes change in speed, measured side by side in one run (CPU / simulated NPU).

1. MingTok bidirectional attention (a pixel-decoder layer: 1024 wide, 16 heads, 1024 tokens at 512 px):
   upstream's hand-written ``softmax(q k^T) v`` (its path without flash_attn / xFormers) vs the
   recipe's SDPA, on the CPU.
2. MingTok token-by-token decoding with the semantic decoder (1024 wide, 24 blocks): upstream's cache
   is never filled, so the only correct decode re-runs the whole prefix for every new token; the
   recipe fills the KV cache and runs one token per step.
3. VTP RoPE tables: upstream rebuilds the bf16 (sin, cos) tables on the device for every block of
   every forward (24 per encoder pass); the recipe builds them once per image size. Per encoder
   pass, on the simulated NPU (whose per-op dispatch cost stands in, roughly, for kernel launches).

The model code is the fixture reproduction of each upstream repository (tests/fixtures/repos), full-size
shapes, random weights.

    PYTHONPATH=. python benchmarks/bench_recipes.py [--threads 2] [--repeat 5] [--tokens 32]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

import ascend_patch

REPOS = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "repos"


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def row(name: str, upstream_ms: float, recipe_ms: float) -> None:
    print(f"  {name:<44} {upstream_ms:10.2f} {recipe_ms:10.2f} {upstream_ms / recipe_ms:8.1f}x")


def header(title: str) -> None:
    print(f"\n{title}\n  {'':<44} {'upstream':>10} {'recipe':>10} {'speed-up':>9}\n  {'':<44} {'ms':>10} {'ms':>10}")


def mingtok_attention(repeat: int) -> None:
    from mingtok.vision_transformer.layers.attention import MemEffAttention

    header("MingTok attention layer, 1024 tokens x 1024 wide, 16 heads, CPU fp32 (per forward)")
    torch.manual_seed(0)
    layer = MemEffAttention(1024, num_heads=16, qkv_bias=True).eval()
    for batch in (1, 4):
        x = torch.randn(batch, 1024, 1024)
        with torch.no_grad():
            upstream = median_ms(lambda: layer(x), repeat)
            with ascend_patch.patched("mingtok", device="cpu"):
                recipe = median_ms(lambda: layer(x), repeat)
        row(f"batch {batch}", upstream, recipe)


def mingtok_decode(repeat: int, tokens: int) -> None:
    from transformers.cache_utils import DynamicCache

    from mingtok.vision_transformer import build_semantic_decoder

    header(f"MingTok semantic decoder (1024 wide, 24 blocks): decode {tokens} tokens one at a time, CPU fp32")
    torch.manual_seed(0)
    decoder = build_semantic_decoder({"in_dim": 32, "patch_size": 32, "embed_dim": 1024, "decoder_depth": 24,
                                      "ffn_layer": "swiglufused"}).eval()
    latent = torch.randn(1, tokens, 32)

    def recompute_prefix() -> None:  # correct without a cache: the whole prefix for every new token
        for t in range(1, tokens + 1):
            decoder(latent[:, :t], use_cache=False)

    def with_cache() -> None:
        cache = DynamicCache()
        for t in range(tokens):
            decoder(latent[:, t:t + 1], use_cache=True, past_key_values=cache)

    with torch.no_grad():
        upstream = median_ms(recompute_prefix, max(1, repeat // 5))
        with ascend_patch.patched("mingtok", device="cpu"):
            recipe = median_ms(with_cache, max(1, repeat // 5))
    row(f"{tokens} tokens (per token: {upstream / tokens:.1f} vs {recipe / tokens:.1f} ms)", upstream, recipe)


def vtp_rope(repeat: int) -> None:
    from vtp.models.layers.embeddings import RopePositionEmbedding

    blocks = 24
    header(f"VTP RoPE tables for one encoder pass ({blocks} blocks, 16x16 patches, 1024 wide / 16 heads), sim npu")
    rope = RopePositionEmbedding(1024, num_heads=16, dtype=torch.bfloat16).eval().to("npu")

    def encoder_pass() -> None:
        for _ in range(blocks):  # upstream calls rope_embed(H=H, W=W) inside its block loop
            rope(H=16, W=16)

    with torch.no_grad():
        upstream = median_ms(encoder_pass, repeat * 4)
        with ascend_patch.patched("vtp", device="sim"):
            recipe = median_ms(encoder_pass, repeat * 4)
            stats = ascend_patch.report().stats["vtp"]
    calls = stats["rope_tables_computed"] + stats["rope_tables_reused"]
    row(f"{blocks} calls (recipe: {stats['rope_tables_computed']} build in {calls} calls)", upstream, recipe)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=32, help="decode length for the KV-cache comparison")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sys.path[:0] = [str(REPOS / "Ming-UniVision"), str(REPOS / "VTP")]
    ascend_patch.target_device("sim")  # installs the simulated NPU
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.repeat} runs after a warm-up")
    mingtok_attention(args.repeat)
    mingtok_decode(args.repeat, args.tokens)
    vtp_rope(args.repeat)


if __name__ == "__main__":
    main()
