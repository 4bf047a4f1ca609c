"""DINOv2 image features (CLS token + patch tokens) on an Ascend NPU with ascend_patch.

What the recipe does here: GELU runs as torch_npu.npu_gelu (exact erf) instead of aclnnGelu's
tanh form (1.33 % -> 0.03 % relative error on the CLS token of dinov2-large), CUDA seeds and
autocast regions act on the NPU, and the original torch.hub repo's xformers imports resolve to SDPA.

    python examples/dinov2_features.py --device sim --check              # simulated NPU, no weights
    python examples/dinov2_features.py --model-path ./dinov2-large --image cat.jpg --device npu
"""

from __future__ import annotations

import sys

import ascend_patch  # noqa: F401  (the recipe is applied in start(), before transformers' model code runs)
from ascend_patch.tools.examples import example_parser, main_exit_code, start


def main(argv=None) -> int:
    args = example_parser(__doc__, "dinov2").parse_args(argv)
    run = start("dinov2", args)
    out, ms = run.timed(lambda: run.model(pixel_values=run.pixels))
    hidden = out.last_hidden_state.float().cpu()
    cls, patches = hidden[:, 0], hidden[:, 1:]  # global vs dense features
    print(f"  CLS feature {tuple(cls.shape)} (L2 norm {cls.norm():.3f}), patch features {tuple(patches.shape)}, "
          f"{ms:.1f} ms per image")
    ok = run.check()  # the outputs verify compares: CLS token and patch tokens
    run.finish()
    return main_exit_code(ok)


if __name__ == "__main__":
    sys.exit(main())
