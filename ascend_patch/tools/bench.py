"""Latency and throughput of any patched model per batch size, with device synchronisation.

Each iteration is timed on its own so that percentiles mean something: with device events
(``torch.npu.Event`` / ``torch.cuda.Event``, recorded around the forward and synchronised on
the end event) when the device has them, else with ``perf_counter`` around a forward that is
followed by ``synchronize()`` - without it an asynchronous device returns before the work ran and
the numbers measure the launch only. Peak device memory is reset per batch size. The model is
whatever :func:`~ascend_patch.tools.subjects.resolve` takes (a recipe, a Hugging Face folder, a
factory, a model with inputs); a factory's example batch is resampled to each batch size.

    result = bench("dinov2", batch_sizes=(1, 2, 4, 8), warmup=10, iters=100, device="sim")
    print(result.to_text()); result.plot("bench.png")
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..engine.table import table
from .environment import environment
from .inputs import Inputs
from .models import InputError, device_module, parse_dtype, resolve_device, synchronize, tensor_bytes
from .subjects import resolve

logger = logging.getLogger("ascend_patch")
phases = logging.getLogger("ascend_patch.progress")  # a line per finished phase (the CLI shows them)

DEFAULT_WARMUP = 10  # untimed iterations per batch size, at most --iters


@dataclass
class BenchRow:
    batch_size: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    per_sample_p50_ms: float
    throughput_per_s: float  # samples per second: batch_size / mean latency
    peak_memory_bytes: int | None  # None where the device has no memory counters (cpu)
    samples_ms: list[float]  # every timed iteration, in order


@dataclass
class BenchResult:
    subject: str  # the recipe, folder, factory or model class
    device: str  # where it ran: "npu", "sim" (the simulated NPU), "cuda", "cpu"
    device_asked: str
    device_type: str  # the torch device type ("npu" for sim)
    dtype: str
    model: str
    random_init: bool
    input: str
    parameters: int
    weights_bytes: int
    warmup: int
    iters: int
    timer: str  # "device events" or "perf_counter + synchronize"
    active: list[str]  # patches active while timing
    rows: list[BenchRow]
    environment: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_text(self) -> str:
        where = self.device if self.device == self.device_asked else f"{self.device} (asked: {self.device_asked})"
        lines = [
            f"bench {self.subject} on {where} ({self.environment['device_name']}), {self.dtype}: {self.model}",
            f"input: {self.input}",
            (f"{self.parameters / 1e6:.2f} M parameters, weights {_mib(self.weights_bytes)}; {self.warmup} warmup + "
             f"{self.iters} timed iterations per batch size; timer: {self.timer}"),
            f"patches: {', '.join(self.active) or 'none'}",
            "",
        ]
        header = ("batch", "p50 ms", "p90 ms", "p99 ms", "p50 ms/sample", "samples/s", "peak mem")
        rows = [
            (str(r.batch_size), f"{r.p50_ms:.2f}", f"{r.p90_ms:.2f}", f"{r.p99_ms:.2f}", f"{r.per_sample_p50_ms:.2f}",
             _rate(r.throughput_per_s), _mib(r.peak_memory_bytes))
            for r in self.rows
        ]  # fmt: skip
        return "\n".join(lines + table(header, rows, right=range(len(header))))

    __str__ = to_text

    def plot(self, path: str | os.PathLike[str]) -> Path:
        """Latency (p50 with p90/p99) and throughput vs batch size, as a PNG."""
        return plot(self, path)


def _mib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:.1f} MiB"


def percentile(values: Sequence[float], q: int) -> float:
    """Linear-interpolated percentile (numpy's default: ``statistics.quantiles``' inclusive method)."""
    if len(values) == 1:  # quantiles() needs two points before Python 3.13
        return float(values[0])
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if 0 < q < 100 else \
        float(min(values) if q == 0 else max(values))


def _rate(per_s: float) -> str:
    """Samples per second with enough digits for a slow model (0.0412) and no noise for a fast one."""
    return f"{per_s:.1f}" if per_s >= 100 else f"{per_s:.3g}"


def _timer(kind: str) -> tuple[str, Callable[[Callable[[], Any]], float]]:
    """A function timing one call in ms, and its name."""
    mod = device_module(kind)
    event_cls = getattr(mod, "Event", None) if mod is not None else None
    if event_cls is not None:

        def timed(fn: Callable[[], Any]) -> float:
            start, end = event_cls(enable_timing=True), event_cls(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()  # wait for the work, not only for its launch
            return float(start.elapsed_time(end))

        return "device events", timed

    def timed_host(fn: Callable[[], Any]) -> float:
        synchronize(kind)
        started = time.perf_counter()
        fn()
        synchronize(kind)
        return (time.perf_counter() - started) * 1e3

    return "perf_counter + synchronize", timed_host


def _memory_counters(kind: str) -> tuple[Callable[[], None], Callable[[], int | None]]:
    mod = device_module(kind)
    if mod is None or not hasattr(mod, "max_memory_allocated"):
        return (lambda: None), (lambda: None)
    reset = getattr(mod, "reset_peak_memory_stats", lambda: None)
    return reset, lambda: int(mod.max_memory_allocated())


def _check_plot_path(path: str | os.PathLike[str]) -> Path:
    out = Path(path)
    if out.suffix.lower() != ".png":
        raise InputError(f"--plot {str(out)!r}: the plot is written as PNG; name it *.png")
    if not out.parent.is_dir():
        raise InputError(f"--plot {str(out)!r}: folder {str(out.parent)!r} does not exist")
    if out.is_dir() or not os.access(out if out.exists() else out.parent, os.W_OK):
        # Found now, not after the whole benchmark ran.
        raise InputError(f"--plot {str(out)!r} cannot be written: choose a writable file path")
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise InputError("--plot needs matplotlib: pip install 'ascend-patch[plot]'") from exc
    return out


def _is_int(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def bench(
    target: Any = None,
    inputs: Any = None,
    *,
    batch_sizes: Sequence[int] = (1, 2, 4, 8),
    warmup: int | None = None,
    iters: int = 100,
    device: str | None = None,
    dtype: str = "fp32",
    progress: bool | None = None,
    plot: str | os.PathLike[str] | None = None,
    **subject: Any,
) -> BenchResult:
    """Time a patched model on ``device`` for each batch size.

    ``target``, ``inputs`` and ``subject`` (``factory``, ``recipe``, ``patches``, ``model_path``,
    ``tiny``, ``repo``, ``random_init``, ``trust_remote_code``, ``run``) name the model as for
    :func:`~ascend_patch.tools.verify.verify`. ``warmup``: untimed iterations per batch size (None:
    ``min(10, iters)``). ``progress``: tqdm bars on stderr (None: only when
    stderr is a terminal). ``plot``: also write a PNG there. Raises
    :class:`~ascend_patch.tools.models.InputError` on bad input.
    """
    import ascend_patch

    torch_dtype = parse_dtype(dtype)
    try:  # a str or a lone int is not a list of sizes ("1 2" would be '1', ' ', '2')
        sizes = None if isinstance(batch_sizes, (str, bytes)) else list(batch_sizes)
    except TypeError:
        sizes = None
    if not sizes or not all(_is_int(b, 1) for b in sizes):
        raise InputError(f"--batch-sizes must be a list of integers >= 1, e.g. batch_sizes=(1, 8), got {batch_sizes!r}")
    if not _is_int(iters, 1):
        raise InputError(f"--iters must be an integer >= 1, got {iters!r}")
    if warmup is None:
        warmup = min(DEFAULT_WARMUP, iters)
    if not _is_int(warmup, 0):
        raise InputError(f"--warmup must be an integer >= 0 (or None: min({DEFAULT_WARMUP}, iters)), got {warmup!r}")
    plot_path = _check_plot_path(plot) if plot is not None else None
    chosen = resolve(target, inputs, dtype=dtype, **subject)
    asked, kind = resolve_device(device)

    from tqdm.auto import tqdm

    timer_name, timed = _timer(kind)
    reset_peak, peak = _memory_counters(kind)
    rows = []
    with ascend_patch.patched(*chosen.patches, device=asked, **chosen.options), torch.no_grad():
        started = time.perf_counter()
        built = chosen.build()  # under the patches, as a user's script builds it
        phases.info("bench %s: built %s in %.1f s", chosen.name, built.source, time.perf_counter() - started)
        model = built.prepare(built.model, kind, torch_dtype)
        active = ascend_patch.active()
        for b in sizes:
            batch: Inputs = built.inputs(b).to(kind, torch_dtype)
            synchronize(kind)
            reset_peak()
            times: list[float] = []
            bar = tqdm(total=warmup + iters, desc=f"{chosen.name} bs={b}", unit="it", leave=False,
                       disable=None if progress is None else not progress)
            with bar:
                for i in range(warmup + iters):
                    ms = timed(lambda x=batch: built.run(model, x))
                    if i >= warmup:  # warmup iterations fill caches and compile kernels; not timed
                        times.append(ms)
                    bar.update()
            mean = sum(times) / len(times)
            rows.append(BenchRow(
                batch_size=b, p50_ms=percentile(times, 50), p90_ms=percentile(times, 90),
                p99_ms=percentile(times, 99), mean_ms=mean, per_sample_p50_ms=percentile(times, 50) / b,
                throughput_per_s=b * 1e3 / mean if mean > 0 else float("inf"), peak_memory_bytes=peak(),
                samples_ms=times,
            ))  # fmt: skip
            phases.info("bench %s: batch %d: %d + %d iterations, p50 %.2f ms", chosen.name, b, warmup, iters,
                          rows[-1].p50_ms)

    env = environment(kind)
    result = BenchResult(
        subject=chosen.name, device=env.device, device_asked=asked, device_type=kind, dtype=dtype, model=built.source,
        random_init=built.random_init, input=built.input_desc, parameters=sum(p.numel() for p in model.parameters()),
        weights_bytes=tensor_bytes(model), warmup=warmup, iters=iters, timer=timer_name, active=active, rows=rows,
        environment=env.to_dict(),
    )  # fmt: skip
    if plot_path is not None:
        result.plot(plot_path)
    return result


def plot(result: BenchResult, path: str | os.PathLike[str]) -> Path:
    out = _check_plot_path(path)
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must come before pyplot
    import matplotlib.pyplot as plt

    sizes = [r.batch_size for r in result.rows]
    fig, (ax_lat, ax_thr) = plt.subplots(1, 2, figsize=(10, 4))
    ax_lat.plot(sizes, [r.p50_ms for r in result.rows], "o-", label="p50")
    ax_lat.plot(sizes, [r.p90_ms for r in result.rows], "s--", label="p90")
    ax_lat.plot(sizes, [r.p99_ms for r in result.rows], "^:", label="p99")
    ax_lat.set(xlabel="batch size", ylabel=f"latency per batch (ms) on {result.device}", title="latency")
    ax_lat.legend()
    ax_thr.plot(sizes, [r.throughput_per_s for r in result.rows], "o-", color="tab:green")
    ax_thr.set(xlabel="batch size", ylabel=f"samples / s on {result.device}", title="throughput")
    for ax in (ax_lat, ax_thr):
        ax.set_ylim(bottom=0)  # from 0: a 5 % difference must not look like 5x
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"{result.subject} on {result.device} ({result.dtype}), {result.model}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, format="png", dpi=100)
    plt.close(fig)
    return out
