"""The attention shims against raw SDPA and the eager fallback, measured side by side in one run.

For each shape: the shim's time (``flash_attn_func`` / ``flash_attn_varlen_func`` /
``xformers.ops.memory_efficient_attention``), the SDPA baseline (one call for dense shapes; one call
per sequence for packed ones, the best a caller can do without a varlen kernel) and the eager
fallback (``softmax(QK^T) V`` over the sequences padded to the longest with a mask, what code
without flash_attn writes). Times: median of interleaved runs on the CPU, 1 thread, forward only.
Memory: the peak of the bytes allocated during one forward on the CPU, from the profiler's
allocation events (kernels' own workspaces included). Ops: aten ops one call dispatches on the
simulated NPU (a stand-in for kernel launches), through the shims' npu path
(``npu_fusion_attention``, one kernel on an NPU) and through their SDPA path.

    PYTHONPATH=. python benchmarks/bench_attention.py [--repeat 7] [--quick] 2>/dev/null   # the profiler logs to stderr
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import ascend_patch
from ascend_patch import sim
from ascend_patch.shims import npu_fusion
from ascend_patch.sim import tensor as sim_tensor

SEQLENS = (100, 400, 650, 900)  # the packed shapes: 4 sequences of 100..900 tokens


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # "dense", "varlen", "blockdiag"
    heads: int = 16
    kv_heads: int = 16
    dim: int = 64
    seqlen: int = 0  # dense
    batch: int = 1  # dense
    causal: bool = False
    window: tuple[int, int] = (-1, -1)


CASES = (
    Case("DINOv2-L/518 dense", "dense", seqlen=1370),
    Case("MingTok decoder causal", "dense", seqlen=1024, causal=True),
    Case("varlen", "varlen"),
    Case("varlen causal", "varlen", causal=True),
    Case("varlen GQA 16/4", "varlen", kv_heads=4),
    Case("varlen causal window 128", "varlen", causal=True, window=(128, 0)),
    Case("xformers BlockDiagonalMask", "blockdiag"),
)


def _inputs(case: Case, dtype: torch.dtype, device: str) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    if case.kind == "dense":
        shape = (case.batch, case.seqlen)
    else:
        shape = (sum(SEQLENS),)

    def make(heads: int) -> torch.Tensor:
        return torch.randn(*shape, heads, case.dim, generator=gen).to(device=device, dtype=dtype)

    return {"q": make(case.heads), "k": make(case.kv_heads), "v": make(case.kv_heads)}


def _cu(device: str) -> torch.Tensor:
    return torch.tensor([0, *torch.tensor(SEQLENS).cumsum(0).tolist()], dtype=torch.int32, device=device)


def _mask(lq: int, lk: int, case: Case, device: str) -> torch.Tensor | None:
    """Bottom-right causal / windowed keep-mask for one (lq, lk) block, None when every key is seen."""
    if not case.causal and case.window == (-1, -1):
        return None
    i = torch.arange(lq, device=device)[:, None]
    j = torch.arange(lk, device=device)[None, :]
    rel = j - i - (lk - lq)
    keep = rel <= 0 if case.causal else torch.ones_like(rel, dtype=torch.bool)
    if case.window[0] >= 0:
        keep = keep & (rel >= -case.window[0])
    return keep


def shim_call(case: Case, x: dict[str, torch.Tensor]) -> Callable[[], object]:
    if case.kind == "dense":
        from flash_attn import flash_attn_func

        return lambda: flash_attn_func(x["q"], x["k"], x["v"], causal=case.causal, window_size=case.window)
    if case.kind == "varlen":
        from flash_attn import flash_attn_varlen_func

        cu, longest = _cu(str(x["q"].device)), max(SEQLENS)
        return lambda: flash_attn_varlen_func(x["q"], x["k"], x["v"], cu, cu, longest, longest, causal=case.causal,
                                              window_size=case.window)  # fmt: skip
    import xformers.ops as xops

    bias = xops.fmha.attn_bias.BlockDiagonalMask.from_seqlens(list(SEQLENS))
    return lambda: xops.memory_efficient_attention(*(t.unsqueeze(0) for t in x.values()), attn_bias=bias)


def sdpa_call(case: Case, x: dict[str, torch.Tensor]) -> Callable[[], object]:
    """Raw SDPA: one call on a dense shape, one call per sequence on a packed one."""
    gqa = case.heads != case.kv_heads

    def one(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        lq, lk = q.shape[1], k.shape[1]
        mask = _mask(lq, lk, case, str(q.device))
        causal_top_left = case.causal and lq == lk and case.window == (-1, -1)
        return F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=None if causal_top_left else mask,
            is_causal=causal_top_left, enable_gqa=gqa,
        ).transpose(1, 2)  # fmt: skip

    if case.kind == "dense":
        return lambda: one(x["q"], x["k"], x["v"])
    bounds = [0, *torch.tensor(SEQLENS).cumsum(0).tolist()]

    def per_sequence() -> list[torch.Tensor]:
        return [one(*(t[a:b].unsqueeze(0) for t in x.values())) for a, b in zip(bounds, bounds[1:])]

    return per_sequence


def eager_call(case: Case, x: dict[str, torch.Tensor]) -> Callable[[], object]:
    """softmax(QK^T) V with every sequence padded to the longest and a (B, 1, L, L) mask."""
    rep = case.heads // case.kv_heads

    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        k, v = (t.repeat_interleave(rep, dim=2) for t in (k, v))
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
        if keep is not None:
            scores = scores.masked_fill(~keep, float("-inf"))
        return torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1).nan_to_num(), v)

    device = str(x["q"].device)
    if case.kind == "dense":
        keep = _mask(case.seqlen, case.seqlen, case, device)
        return lambda: attend(x["q"], x["k"], x["v"], keep)
    longest, bounds = max(SEQLENS), [0, *torch.tensor(SEQLENS).cumsum(0).tolist()]
    valid = torch.arange(longest, device=device)[None, :] < torch.tensor(SEQLENS, device=device)[:, None]
    keep = valid[:, None, None, :] & valid[:, None, :, None]
    if case.causal or case.window != (-1, -1):
        keep = keep & _mask(longest, longest, case, device)

    def padded() -> torch.Tensor:
        def pad(t: torch.Tensor) -> torch.Tensor:
            return torch.stack([F.pad(t[a:b], (0, 0, 0, 0, 0, longest - (b - a))) for a, b in zip(bounds, bounds[1:])])

        return attend(pad(x["q"]), pad(x["k"]), pad(x["v"]), keep)

    return padded


def median_ms(calls: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Median ms per call of each; the calls alternate so that machine load hits them alike."""
    with torch.no_grad():
        for fn in calls.values():
            fn()
        samples: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(repeat):
            for name, fn in calls.items():
                start = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) * 1e3 for name, values in samples.items()}


def peak_cpu_bytes(fn: Callable[[], object]) -> int:
    """The most bytes held at once by what one call allocates on the CPU (the profiler's memory events)."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())  # fmt: skip
    held = peak = 0
    for event in events:
        held += event.nbytes()
        peak = max(peak, held)
    return peak


def aten_ops(fn: Callable[[], object]) -> int:
    """How many aten ops one call dispatches on the simulated NPU.

    ``npu_fusion_attention`` counts as one op: on an NPU it is one kernel, where the simulator's
    reference implementation dispatches a few dozen.
    """
    import torch_npu

    count, inside = 0, False
    original, fused = sim_tensor.dispatch, torch_npu.npu_fusion_attention

    def counting(func, args, kwargs):  # type: ignore[no-untyped-def]
        nonlocal count
        count += not inside
        return original(func, args, kwargs)

    def one_kernel(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal count, inside
        count, inside = count + 1, True
        try:
            return fused(*args, **kwargs)
        finally:
            inside = False

    sim_tensor.dispatch, torch_npu.npu_fusion_attention = counting, one_kernel
    try:
        with torch.no_grad():
            fn()
    finally:
        sim_tensor.dispatch, torch_npu.npu_fusion_attention = original, fused
    return count


@contextlib.contextmanager
def sdpa_path_only() -> Iterator[None]:
    """The shims as on a device without the fused op: their SDPA path."""
    saved = npu_fusion.fusion_op
    npu_fusion.fusion_op = lambda device: None
    try:
        yield
    finally:
        npu_fusion.fusion_op = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="fp32 only, fewer cases (a smoke run)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sim.install()
    ascend_patch.apply("attention", device="sim")
    dtypes = (torch.float32,) if args.quick else (torch.float32, torch.bfloat16)
    cases = CASES[:3] if args.quick else CASES
    print(f"torch {torch.__version__}, 1 thread; times and memory on the CPU, ops on the simulated NPU")
    header = (f"{'case':28} {'dtype':5} {'shim ms':>8} {'sdpa ms':>8} {'eager ms':>9} {'shim/sdpa':>9} "
              f"{'shim/eager':>10} {'mem shim/eager':>14} {'ops npu path':>12} {'ops sdpa path':>13}")  # fmt: skip
    print(header)
    for dtype in dtypes:
        for case in cases:
            x = _inputs(case, dtype, "cpu")
            calls = {"shim": shim_call(case, x), "sdpa": sdpa_call(case, x), "eager": eager_call(case, x)}
            ms = median_ms(calls, args.repeat)
            mem_shim, mem_eager = peak_cpu_bytes(calls["shim"]), peak_cpu_bytes(calls["eager"])
            on_npu = _inputs(case, dtype, "npu")
            ops_fused = aten_ops(shim_call(case, on_npu))
            with sdpa_path_only():
                ops_shim = aten_ops(shim_call(case, on_npu))
            label = "fp32" if dtype is torch.float32 else "bf16"
            print(f"{case.name:28} {label:5} {ms['shim']:8.2f} {ms['sdpa']:8.2f} {ms['eager']:9.2f} "
                  f"{ms['shim'] / ms['sdpa']:9.2f} {ms['shim'] / ms['eager']:10.2f} "
                  f"{mem_shim / max(mem_eager, 1):14.2f} {ops_fused:12d} {ops_shim:13d}")  # fmt: skip


if __name__ == "__main__":
    main()
