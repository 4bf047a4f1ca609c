"""MingTok's fp32 pixel-decoder region under both ``fp32_autocast`` policies, measured side by side in one run.

MingTok runs its encoder and semantic decoder in the model dtype (bf16) and its pixel decoder under
``torch.cuda.amp.autocast(dtype=torch.float32)``. The generic default, ``fp32_autocast="fp32"``, keeps
CUDA's meaning (autocast off, inputs upcast); the ``mingtok`` recipe keeps the NPU port's choice,
``"auto"`` (a bf16 downgrade on npu). For each policy: the reconstruction's error against the
unpatched CPU fp32 run of the same weights, and the forward time, on the simulated NPU (the
simulator runs CPU kernels: the times compare the policies' work, not Ascend kernels).

    PYTHONPATH=. python benchmarks/bench_fp32_autocast.py [--full] [--repeat 3] [--repo path/to/Ming-UniVision]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

import ascend_patch
from ascend_patch.tools.models import get_spec

REPO = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "repos" / "Ming-UniVision"
POLICIES = ("fp32", "auto")


def relative_error(got: torch.Tensor, reference: torch.Tensor) -> float:
    return float((got.float() - reference).norm() / reference.norm())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the full-size architecture (default: the tiny config)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--repo", default=str(REPO), help="Ming-UniVision clone (default: the test fixture)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = get_spec("mingtok")
    with ascend_patch.patched("mingtok", device="sim"):
        loaded = spec.build(None, tiny=not args.full, repo=args.repo)
    pixels = spec.inputs(loaded.image_size, 1, seed=0)
    with torch.no_grad():
        reference = spec.run(spec.prepare(loaded.model, "cpu", torch.float32), pixels)["reconstruction"]
    # fp32 weights with the checkpoint's model_dtype (bf16): encoder and semantic decoder autocast to bf16,
    # so the pixel decoder's region is the only difference between the policies.
    model = spec.prepare(loaded.model, "npu", torch.float32)
    spec.set_run_dtype(model, torch.bfloat16)
    config = "full" if args.full else "tiny"
    print(f"MingTok ({config} config), fp32 weights, model_dtype bf16, simulated NPU, 1 thread")
    print(f"{'fp32_autocast':<14} {'reconstruction rel err':>24} {'pixel decoder dtype':>20} {'forward ms':>11}")
    for policy in POLICIES:
        with ascend_patch.patched("mingtok", device="sim", fp32_autocast=policy), torch.no_grad():
            inputs = pixels.to("npu")
            out = spec.run(model, inputs)["reconstruction"]
            samples = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                spec.run(model, inputs)
                samples.append((time.perf_counter() - start) * 1e3)
        print(f"{policy:<14} {relative_error(out.cpu(), reference):>24.3e} {str(out.dtype):>20} "
              f"{statistics.median(samples):>11.1f}")


if __name__ == "__main__":
    main()
