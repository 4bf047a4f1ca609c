"""DINOv2 on the simulated Ascend NPU, with and without ascend_patch's gelu patch.

Builds the real facebook/dinov2-large architecture with random weights (no download), runs it
on the CPU in fp32 as the reference, then on the simulated NPU twice: as-is (plain GELU runs
the tanh approximation there, as aclnnGelu does on a real 910B) and under the gelu patch
(torch_npu.npu_gelu, exact erf). Prints the accuracy table an NPU port writes by hand.

    python examples/quickstart.py                 # dinov2-large, 224 px
    python examples/quickstart.py --tiny          # a 6-layer model, seconds
"""

from __future__ import annotations

import argparse
import time

import torch

import ascend_patch
from ascend_patch import sim
from ascend_patch.tools.compare import compare

LARGE = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
             patch_size=14, image_size=224)  # facebook/dinov2-large
TINY = dict(hidden_size=64, num_hidden_layers=6, num_attention_heads=4, intermediate_size=256,
            patch_size=14, image_size=56)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="a small 6-layer config instead of dinov2-large")
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()

    from transformers import Dinov2Config, Dinov2Model

    sim.install()
    config = Dinov2Config(**(TINY if args.tiny else LARGE))
    torch.manual_seed(0)
    started = time.perf_counter()
    model = Dinov2Model(config).eval()
    print(f"random-init DINOv2 ({config.num_hidden_layers} layers, hidden {config.hidden_size}; "
          f"no weights downloaded), built in {time.perf_counter() - started:.1f} s")
    pixels = torch.randn(args.batch, 3, config.image_size, config.image_size)

    with torch.no_grad():
        reference = model(pixels).last_hidden_state
        model.to("npu")
        plain = model(pixels.to("npu")).last_hidden_state.cpu()
        with ascend_patch.patched("gelu", device="npu"):
            patched = model(pixels.to("npu")).last_hidden_state.cpu()
            stats = ascend_patch.report().stats["gelu"]

    print(f"\nsimulated NPU vs CPU fp32 ({stats['modules_routed']} GELU modules routed to npu_gelu)")
    header = f"{'output':<14}{'gelu patch':<12}{'cos sim':>12}{'max diff':>12}{'mean diff':>12}{'rel err %':>11}"
    print(header + "\n" + "-" * len(header))
    for name, index in (("CLS token", (slice(None), 0)), ("patch tokens", (slice(None), slice(1, None)))):
        for label, output in (("off", plain), ("on", patched)):
            c = compare(reference[index], output[index])
            print(f"{name:<14}{label:<12}{c.cosine_similarity:>12.8f}{c.max_abs_diff:>12.2e}"
                  f"{c.mean_abs_diff:>12.2e}{100 * c.mean_relative_error:>11.5f}")


if __name__ == "__main__":
    main()
