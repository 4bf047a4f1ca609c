"""Run a CUDA-written repository unmodified on an Ascend NPU (or the simulated one) with ascend_patch.

The steps every port repeats by hand, in one script:

1. scan the repository for CUDA-only constructs and say which patch handles each (and what none does);
2. apply the generic patches (and a recipe if the model has one) BEFORE the repository is imported;
3. run its entry point or script as it is;
4. print the migration log: every call site that went through a patch, with file:line, old -> new and
   its class, then what found nothing to patch (``ascend_patch.report(internal=True)`` also lists each
   patched target).

    python examples/port_any_cuda_repo.py --repo path/to/repo --script tools/infer.py --device sim -- --batch 2
    python examples/port_any_cuda_repo.py --repo path/to/repo --entry mypkg.run:main --device npu --dtype bf16

``--model-path`` / ``--image`` are passed on to the script as the same options. ``--dtype`` decides what
``autocast(dtype=torch.float32)`` regions become where the device rejects fp32 autocast: fp32 keeps CUDA's
meaning (autocast off, inputs upcast), bf16 downgrades them (faster, what most NPU ports chose).
"""

from __future__ import annotations

import argparse
import importlib
import runpy
import sys
from pathlib import Path
from typing import Any

import ascend_patch
from ascend_patch.engine.device import DEVICE_CHOICES
from ascend_patch.tools.scan import scan


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", required=True, help="the repository's root (put on sys.path)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--entry", help="module:function to call with no arguments, e.g. mypkg.run:main")
    what.add_argument("--script", help="a script inside the repository, run as __main__")
    p.add_argument("--recipe", help="a model recipe to apply on top of the generic patches (ascend-patch list)")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="target (sim = simulated NPU)")
    p.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"), help="fp32 autocast regions: keep or bf16")
    p.add_argument("--model-path", help="passed on to the script as --model-path")
    p.add_argument("--image", help="passed on to the script as --image")
    p.add_argument("script_args", nargs=argparse.REMAINDER, help="after --: arguments for the script")
    return p


def describe(value: Any) -> str:
    """A short, readable summary of what the entry point returned."""
    import torch

    if isinstance(value, torch.Tensor):
        return f"tensor{tuple(value.shape)} {str(value.dtype).removeprefix('torch.')} on {value.device}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: " + (f"{len(v)} entries" if isinstance(v, dict) else describe(v))
                               for k, v in value.items()) + "}"
    return repr(value)[:80]


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    repo = Path(args.repo).resolve()
    if not repo.is_dir():
        parser().error(f"--repo {args.repo!r} is not a directory")

    findings = scan(repo)
    print(f"scan of {repo}: {len(findings.findings)} CUDA-only construct(s), {len(findings.unhandled)} unhandled")
    for f in findings.unhandled:
        print(f"  unhandled: {f.file}:{f.line} {f.construct} - {f.note}")

    names = [args.recipe] if args.recipe else []
    # Generic patches first, then the recipe; both before the repository's code is imported.
    ascend_patch.apply(device=args.device, fp32_autocast=args.dtype)
    if names:
        ascend_patch.apply(*names, device=args.device)
    print(f"patches on {ascend_patch.target_device(args.device)} ({args.device}): {', '.join(ascend_patch.active())}")

    sys.path.insert(0, str(repo))
    passed = [*(["--model-path", args.model_path] if args.model_path else []),
              *(["--image", args.image] if args.image else []),
              *[a for a in args.script_args if a != "--"]]  # fmt: skip
    if args.entry:
        module, _, function = args.entry.partition(":")
        result = getattr(importlib.import_module(module), function or "main")()
        print(f"{args.entry} returned {describe(result)}")
    else:
        script = (repo / args.script).resolve()
        sys.argv = [str(script), *passed]
        runpy.run_path(str(script), run_name="__main__")
    # What changed in the repository's behaviour: call sites, and anything not patched or kept as is.
    report = ascend_patch.report(internal=True)
    shown = [r for r in report if r.action in ("call", "nothing", "kept", "skipped", "left")]
    print(ascend_patch.MigrationReport(shown, report.stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
