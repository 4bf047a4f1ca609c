"""What the scripts in ``examples/`` share: their command line, loading, timing and the accuracy check.

Each example is a script a user can copy: apply the recipe before the model code is imported,
load the model with its upstream ``from_pretrained`` (or build the real full-size architecture with
random weights, and say so), run it on the target device. The parts that are the same in every
example live here, so the examples show only what is particular to their model.

    args = example_parser(__doc__, "dinov2").parse_args()
    run = start("dinov2", args)                      # apply + load + inputs on the device
    features, ms = run.timed(lambda: run.model(pixel_values=run.pixels))
    run.check()                                      # --check: device vs CPU fp32, per output
    run.finish()                                     # what the patches did
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..engine.device import DEVICE_CHOICES
from .compare import compare
from .environment import device_label
from .models import DTYPES, InputError, LoadedModel, ModelSpec, get_spec, parse_dtype, synchronize

Outputs = Callable[[torch.nn.Module, torch.Tensor], dict[str, torch.Tensor]]


def example_parser(description: str | None, recipe: str) -> argparse.ArgumentParser:
    """The options every example takes; ``--repo`` where the model code is not on PyPI."""
    spec = get_spec(recipe)
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-path", help="local weights folder, loaded with the upstream from_pretrained "
                                             "(default: the full-size architecture with random weights)")
    parser.add_argument("--image", help="image file (default: a seeded random input)")
    parser.add_argument("--device", default="auto", choices=DEVICE_CHOICES,
                        help="where to run; sim = the simulated NPU (default: auto = npu, else cuda, else cpu)")
    parser.add_argument("--dtype", default="fp32", choices=list(DTYPES), help="dtype of the run (default fp32)")
    parser.add_argument("--tiny", action="store_true", help="a few-layer config of the same architecture (tests)")
    parser.add_argument("--check", action="store_true", help="compare with the same model on the CPU in fp32")
    parser.add_argument("--iters", type=int, default=3, help="timed runs after one warm-up (default 3)")
    if spec.upstream is not None:
        parser.add_argument("--repo", help=f"a clone of {spec.upstream.repository} (its {spec.upstream.package}/ "
                                           "package is not on PyPI)")
    return parser


@dataclass
class ExampleRun:
    recipe: str
    spec: ModelSpec
    loaded: LoadedModel
    model: torch.nn.Module  # on the device, in the run dtype
    device: str  # torch device type ("npu" for the simulator)
    dtype: torch.dtype
    pixels: torch.Tensor  # on the device
    reference: torch.nn.Module | None  # CPU fp32 copy for --check
    iters: int

    def timed(self, fn: Callable[[], Any]) -> tuple[Any, float]:
        """One warm-up call, then the median of ``iters`` synchronised calls in ms."""
        with torch.no_grad():
            result = fn()
            times = []
            for _ in range(max(self.iters, 1)):
                synchronize(self.device)
                started = time.perf_counter()
                result = fn()
                synchronize(self.device)
                times.append((time.perf_counter() - started) * 1e3)
        return result, sorted(times)[len(times) // 2]

    def check(self, outputs: Outputs | None = None) -> bool | None:
        """With ``--check``: print cosine similarity and relative error per output vs CPU fp32.

        ``outputs``: model and pixels -> named tensors; default the spec's ``run`` (what verify compares).
        """
        if self.reference is None:
            return None
        outputs = outputs or self.spec.run
        with torch.no_grad():
            ref = outputs(self.reference, self.pixels.float().cpu())
            got = outputs(self.model, self.pixels)
        ok = True
        print(f"check vs CPU fp32 ({device_label(self.device)}, {str(self.dtype).removeprefix('torch.')}):")
        for name, expected in ref.items():
            c = compare(expected.float(), got[name].float().cpu())
            ok &= c.passed(0.01)
            print(f"  {name:<16} cos {c.cosine_similarity:.8f}  max diff {c.max_abs_diff:.2e}  "
                  f"rel err {100 * c.mean_relative_error:.5f} %")
        return ok

    def finish(self) -> None:
        """Print what the patches did: per patch, the targets patched and the call sites seen."""
        import ascend_patch

        report = ascend_patch.report(internal=True)
        lines: dict[str, list[str]] = {}
        for record in report.records:
            if record.action in ("patched", "copy", "call", "nothing", "kept"):
                lines.setdefault(record.patch, []).append(record.action)
        summary = [f"{patch}: " + ", ".join(f"{actions.count(a)} {a}" for a in dict.fromkeys(actions))
                   for patch, actions in lines.items()]
        print("ascend_patch: " + "; ".join(summary) + " (ascend_patch.report() has the details)")


def start(recipe: str, args: argparse.Namespace, *, options: dict[str, Any] | None = None,
          load: Callable[[ModelSpec], LoadedModel] | None = None) -> ExampleRun:
    """Apply the recipe first (upstream code may decide things at import), then load and move the model.

    ``load``: the example's own loading (e.g. a converted checkpoint) instead of ``spec.build``.
    """
    import ascend_patch

    spec = get_spec(recipe)
    dtype = parse_dtype(args.dtype)
    device = ascend_patch.target_device(args.device)
    ascend_patch.apply(recipe, device=args.device, **{**spec.options_for(args.dtype), **(options or {})})
    try:
        loaded = load(spec) if load is not None else spec.build(args.model_path, tiny=args.tiny,
                                                                repo=getattr(args, "repo", None))
    except InputError as exc:  # no --repo, a folder without config.json, ...: the message names the fix
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"{recipe}: {loaded.source}")
    if loaded.random_init:
        print("  random weights: outputs show that the port runs and matches the CPU, not what the model predicts"
              " (pass --model-path for real weights)")
    reference = spec.prepare(copy.deepcopy(loaded.model), "cpu", torch.float32) if args.check else None
    model = spec.prepare(loaded.model, device, dtype)
    pixels = spec.inputs(loaded.image_size, 1, image=args.image).to(device=device, dtype=dtype)
    label = device_label(device)
    asked = "" if label == args.device else f" ({args.device})"
    print(f"  device {label}{asked}, dtype {args.dtype}, input {tuple(pixels.shape)}"
          f"{' from ' + args.image if args.image else ' (seeded random)'}")
    return ExampleRun(recipe, spec, loaded, model, device, dtype, pixels, reference, args.iters)


def to_unit_range(pixels: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    """A (3, H, W) model-space image -> RGB in [0, 1] on the CPU: the inverse of the spec's preprocessing."""
    image = pixels.float().cpu()
    if spec.bgr:
        image = image.flip(0)
    if spec.normalize is not None:
        mean, std = (torch.tensor(v).view(3, 1, 1) for v in spec.normalize)
        image = image * std + mean
    return image.clamp(0, 1)


def psnr(image: torch.Tensor, reference: torch.Tensor, spec: ModelSpec) -> float:
    """PSNR in dB of two model-space images, compared in [0, 1]."""
    mse = (to_unit_range(image, spec) - to_unit_range(reference, spec)).pow(2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def save_png(image: torch.Tensor, path: str, spec: ModelSpec) -> None:
    """Write a model-space (3, H, W) image as an RGB PNG."""
    from PIL import Image

    pixels = (to_unit_range(image, spec) * 255).round().to(torch.uint8)
    Image.fromarray(pixels.permute(1, 2, 0).cpu().numpy()).save(path)  # (H, W, 3) uint8: RGB


def main_exit_code(check: bool | None) -> int:
    """0 unless ``--check`` found an output off by more than 1 % relative error."""
    return 1 if check is False else 0


__all__: Sequence[str] = ("ExampleRun", "example_parser", "main_exit_code", "psnr", "save_png", "start",
                          "to_unit_range")
