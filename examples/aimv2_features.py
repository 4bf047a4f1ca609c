"""AIMv2 image features on an Ascend NPU with ascend_patch, from a transformers folder or an ml-aim checkpoint.

What the recipe does here: the sincos ("native") position table is computed in float64 on the
CPU (Ascend has no float64 kernels for it) and moved to the NPU, a head-less checkpoint whose
config still says use_head=true loads without a silently random head, and CUDA seeds/autocast
act on the NPU. Original apple/ml-aim checkpoints (timm-style keys, merged qkv) are converted.

    python examples/aimv2_features.py --device sim --check                      # no weights needed
    python examples/aimv2_features.py --model-path ./aimv2-large-patch14-224 --image cat.jpg --device npu
    python examples/aimv2_features.py --ml-aim-checkpoint aimv2_large_patch14_224.safetensors --device npu
"""

from __future__ import annotations

import math
import sys

import ascend_patch  # noqa: F401  (the recipe is applied in start(), before the model code runs)
from ascend_patch.tools.examples import example_parser, main_exit_code, start
from ascend_patch.tools.models import LoadedModel, ModelSpec


def load_ml_aim(path: str, spec: ModelSpec, tiny: bool) -> LoadedModel:
    """An ml-aim safetensors file -> Aimv2VisionModel; sizes are read from the weights' shapes."""
    import safetensors.torch
    from transformers import Aimv2VisionConfig, Aimv2VisionModel

    from ascend_patch.recipes.aimv2_checkpoint import has_head, ml_aim_to_hf

    state = safetensors.torch.load_file(path)
    proj = state["preprocessor.patchifier.proj.weight"]  # (hidden, 3, patch, patch)
    pos = state.get("preprocessor.pos_embed")  # (1, N, hidden); absent in the sincos "native" models
    layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("trunk.blocks."))
    config = {
        **(spec.tiny_config if tiny else spec.full_config),  # heads are not visible in the weights
        "hidden_size": proj.shape[0], "patch_size": proj.shape[-1], "num_hidden_layers": layers,
        "intermediate_size": state["trunk.blocks.0.mlp.fc1.weight"].shape[0], "use_head": has_head(state),
        "is_native": pos is None,
    }  # fmt: skip
    if pos is not None:
        config["image_size"] = math.isqrt(pos.shape[1]) * proj.shape[-1]
    model = Aimv2VisionModel(Aimv2VisionConfig(**config))
    model.load_state_dict(ml_aim_to_hf(state), strict=True)  # unknown keys raise; nothing is dropped
    return LoadedModel(model.eval(), f"ml-aim checkpoint {path!r} (converted)", config["image_size"], False)


def main(argv=None) -> int:
    parser = example_parser(__doc__, "aimv2")
    parser.add_argument("--ml-aim-checkpoint", help="an original apple/ml-aim .safetensors file (timm-style keys)")
    args = parser.parse_args(argv)
    load = (lambda spec: load_ml_aim(args.ml_aim_checkpoint, spec, args.tiny)) if args.ml_aim_checkpoint else None
    run = start("aimv2", args, load=load)
    out, ms = run.timed(lambda: run.model(pixel_values=run.pixels))
    tokens = out.last_hidden_state.float().cpu()
    pooled = "none (head-less encoder)" if out.pooler_output is None else tuple(out.pooler_output.shape)
    print(f"  patch features {tuple(tokens.shape)} (mean L2 norm {tokens.norm(dim=-1).mean():.3f}), pooled {pooled}, "
          f"{ms:.1f} ms per image")
    ok = run.check()
    run.finish()
    return main_exit_code(ok)


if __name__ == "__main__":
    sys.exit(main())
