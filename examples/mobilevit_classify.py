"""MobileViT image classification (ImageNet-1k) on an Ascend NPU with ascend_patch.

MobileViT has no CUDA code of its own; what a port trips over is in the scripts around it:
"cuda" device strings, CUDA seeding, and ``attn_implementation="sdpa"`` (MobileViT has eager
attention only and raises). The recipe maps the device, seeds the NPU and falls back to eager.
Its image processor feeds BGR pixels in [0, 1] (no mean/std): feeding RGB silently costs accuracy.

    python examples/mobilevit_classify.py --device sim --check                  # no weights needed
    python examples/mobilevit_classify.py --model-path ./mobilevit-x-small --image cat.jpg --device npu
"""

from __future__ import annotations

import sys

import ascend_patch  # noqa: F401  (the recipe is applied in start(), before the model code runs)
from ascend_patch.tools.examples import example_parser, main_exit_code, start


def main(argv=None) -> int:
    parser = example_parser(__doc__, "mobilevit")
    parser.add_argument("--top", type=int, default=5, help="how many classes to print (default 5)")
    args = parser.parse_args(argv)
    run = start("mobilevit", args)
    out, ms = run.timed(lambda: run.model(pixel_values=run.pixels))
    probs = out.logits.float().softmax(-1)[0].cpu()
    labels = run.model.config.id2label
    top = probs.topk(min(args.top, probs.numel()))
    print(f"  top-{len(top.indices)} of {probs.numel()} classes ({ms:.1f} ms per image):")
    for p, i in zip(top.values.tolist(), top.indices.tolist()):
        print(f"    {p:7.2%}  {labels.get(i, i)}")
    ok = run.check()
    run.finish()
    return main_exit_code(ok)


if __name__ == "__main__":
    sys.exit(main())
