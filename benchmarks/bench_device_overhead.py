"""Per-call cost of the "device" patch: patched vs unpatched calls, side by side in one run.

    python benchmarks/bench_device_overhead.py [--number 1000] [--repeat 150] [--log off|summary|detail]

Fast path (no CUDA spelling, what a model's hot loop mostly does): ``torch.zeros(4)``,
``t.to("cpu")``, ``t.to(torch.float64)``, ``torch.zeros(4, device="cpu")``. Mapped path: ``t.cuda()`` and
``torch.ones(4, device="cuda")`` under the patch, compared with the call they become
(``t.to("cpu")`` / ``torch.ones(4, device="cpu")``) unpatched.

Method: ``--repeat`` rounds; in each round every case is timed unpatched, then patched (best of 3
runs of ``--number`` calls each), on the thread's CPU-time clock (time spent descheduled does not
count). "extra ns" is best patched minus best unpatched over all rounds: the cost on a core of its
own. "paired median" is the median over rounds of the difference within a round: what the cost
was under whatever load the machine had (on a shared machine with busy hyper-threads, every call,
ours included, runs up to 2x slower).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
import timeit

import torch

import ascend_patch

CASES = (
    # (label, unpatched statement, patched statement)
    ("torch.zeros(4)", "torch.zeros(4)", "torch.zeros(4)"),
    ("torch.zeros(4, device='cpu')", "torch.zeros(4, device='cpu')", "torch.zeros(4, device='cpu')"),
    ("t.to('cpu')", "t.to('cpu')", "t.to('cpu')"),
    ("t.to(torch.float64)", "t.to(torch.float64)", "t.to(torch.float64)"),
    ("t.cuda()  [mapped]", "t.to('cpu')", "t.cuda()"),
    ("t.to('cuda:0')  [mapped]", "t.to('cpu')", "t.to('cuda:0')"),
    ("torch.ones(4, device='cuda')  [mapped]", "torch.ones(4, device='cpu')", "torch.ones(4, device='cuda')"),
    # Python properties / wrappers that check their caller (PyTorch's own code hears the truth).
    ("t.is_cuda", "t.is_cuda", "t.is_cuda"),
    ("torch.cuda.is_available()", "torch.cuda.is_available()", "torch.cuda.is_available()"),
    ("torch.cuda.memory_allocated()  [mapped]", "torch.cuda.memory_allocated()", "torch.cuda.memory_allocated()"),
)


def best_ns(stmt: str, number: int, namespace: dict) -> float:
    # Thread CPU time, not wall time: on a shared machine, time spent descheduled is not the call's.
    timer = timeit.Timer(stmt, timer=time.thread_time, globals=namespace)
    return min(timer.repeat(number=number, repeat=3)) / number * 1e9


def measure(number: int, repeat: int, log: str) -> list[tuple[str, float, float, float]]:
    """Per case: best unpatched ns, best patched ns, median of the paired per-round differences."""
    namespace = {"torch": torch, "t": torch.zeros(4)}
    base: dict[str, list[float]] = {label: [] for label, _, _ in CASES}
    ours: dict[str, list[float]] = {label: [] for label, _, _ in CASES}
    for _ in range(repeat):
        # One round: every case unpatched, then every case patched, seconds apart at most.
        for label, plain, _ in CASES:
            base[label].append(best_ns(plain, number, namespace))
        with ascend_patch.patched("device", device="cpu", log=log):
            for label, _, patched in CASES:
                ours[label].append(best_ns(patched, number, namespace))
    return [
        (label, min(base[label]), min(ours[label]), statistics.median(o - b for o, b in zip(ours[label], base[label])))
        for label, _, _ in CASES
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=1000, help="calls per timing")
    parser.add_argument("--repeat", type=int, default=150, help="timings per case (best is kept)")
    parser.add_argument("--log", default="summary", choices=("off", "summary", "detail"),
                        help="migration-log level while patched (mapped calls record their call site)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"torch {torch.__version__}, Python {platform.python_version()}, {platform.processor() or platform.machine()}"
    )
    print(f"{'call':42} {'unpatched ns':>13} {'patched ns':>11} {'extra ns':>9} {'paired median':>14}")
    print(f"migration log: {args.log}")
    results = measure(args.number, args.repeat, args.log)
    for label, base, ours, paired in results:
        print(f"{label:42} {base:13.0f} {ours:11.0f} {ours - base:9.0f} {paired:14.0f}")
    worst = max(ours - base for _, base, ours, _ in results)
    print(f"worst extra (best timings): {worst:.0f} ns per call (target: <= 1000 ns on CPU)")


if __name__ == "__main__":
    main()
