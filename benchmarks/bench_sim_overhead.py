"""Per-op overhead of the simulated NPU (ascend_patch.sim) against plain CPU.

Every simulated op is the same CPU kernel plus a trip through ``__torch_dispatch__`` (unwrap, run,
wrap); this measures that trip. For each case it prints the median time per call on cpu and on the
simulated npu, their ratio, how many aten ops one call dispatches, and the overhead per aten op.

    PYTHONPATH=. python benchmarks/bench_sim_overhead.py [--threads 1] [--repeat 200]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from ascend_patch import sim
from ascend_patch.sim import tensor as sim_tensor


def sim_ops(fn: Callable[[], object]) -> int:
    """How many aten ops one call sends through the simulator's dispatch."""
    count = 0
    original = sim_tensor.dispatch

    def counting(func, args, kwargs):  # type: ignore[no-untyped-def]
        nonlocal count
        count += 1
        return original(func, args, kwargs)

    sim_tensor.dispatch = counting
    try:
        fn()
    finally:
        sim_tensor.dispatch = original
    return count


def median_us(cpu_fn: Callable[[], object], npu_fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median microseconds per call of each; the two alternate so that machine load hits both alike."""
    for _ in range(max(3, repeat // 10)):
        cpu_fn()
        npu_fn()
    cpu_samples, npu_samples = [], []
    for _ in range(repeat):
        for fn, samples in ((cpu_fn, cpu_samples), (npu_fn, npu_samples)):
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
    return statistics.median(cpu_samples) * 1e6, statistics.median(npu_samples) * 1e6


def tiny_dinov2() -> torch.nn.Module | None:
    try:
        from transformers import Dinov2Config, Dinov2Model
    except ImportError:
        return None
    config = Dinov2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                          image_size=56, patch_size=14)  # fmt: skip
    return Dinov2Model(config).eval()


def cases(device: str) -> dict[str, Callable[[], object]]:
    torch.manual_seed(0)
    a, b = torch.randn(16, device=device), torch.randn(16, device=device)
    linear = torch.nn.Linear(512, 512).to(device)
    x = torch.randn(8, 512, device=device)
    m1, m2 = torch.randn(512, 512, device=device), torch.randn(512, 512, device=device)
    found = {
        "add, 16 elements": lambda: a + b,
        "linear 512x512, batch 8": lambda: linear(x),
        "matmul 512x512 @ 512x512": lambda: m1 @ m2,
    }
    model = tiny_dinov2()
    if model is not None:
        model.to(device)
        pixels = torch.randn(1, 3, 56, 56, device=device)
        found["tiny DINOv2 forward (2 layers, d=64)"] = lambda: model(pixel_values=pixels)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--repeat", type=int, default=200, help="timed calls per case (default 200)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    sim.install()
    cpu_cases, npu_cases = cases("cpu"), cases("npu")
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.repeat} calls, no_grad")
    header = f"{'case':38} {'cpu us':>10} {'sim-npu us':>11} {'ratio':>7} {'aten ops':>9} {'overhead/op us':>15}"
    print(header)
    print("-" * len(header))
    with torch.no_grad():
        for name, cpu_fn in cpu_cases.items():
            npu_fn = npu_cases[name]
            cpu_us, npu_us = median_us(cpu_fn, npu_fn, args.repeat)
            ops = sim_ops(npu_fn)
            print(
                f"{name:38} {cpu_us:10.1f} {npu_us:11.1f} {npu_us / cpu_us:7.1f} {ops:9d} {(npu_us - cpu_us) / ops:15.1f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
