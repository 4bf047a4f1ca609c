"""bench: percentiles, throughput, memory, JSON fields and the PNG plot (few iterations)."""

from __future__ import annotations

import json

from ascend_patch.tools.bench import BenchResult, bench, percentile

ROW_FIELDS = {"batch_size", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "per_sample_p50_ms", "throughput_per_s",
              "peak_memory_bytes", "samples_ms"}  # fmt: skip


def test_percentile_interpolates_like_numpy():
    values = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert percentile(values, 50) == 3.0
    assert percentile(values, 90) == 4.6
    assert percentile([7.0], 99) == 7.0


def test_bench_on_sim_json_and_plot(tmp_path, cli):
    plot = tmp_path / "bench.png"
    run = cli("bench", "dinov2", "--device", "sim", "--tiny", "--batch-sizes", "1", "2", "--warmup", "1",
              "--iters", "3", "--json", "--plot", plot)  # fmt: skip
    assert run.code == 0, run.err
    data = json.loads(run.out)
    assert data["device_type"] == "npu" and data["timer"] == "device events" and "gelu" in data["active"]
    assert data["device"] == "sim" and data["environment"]["device_name"] == "Ascend910B (simulated)"
    assert data["parameters"] > 0 and data["weights_bytes"] == 4 * data["parameters"] + data["weights_bytes"] % 4
    assert [r["batch_size"] for r in data["rows"]] == [1, 2]
    for row in data["rows"]:
        assert set(row) == ROW_FIELDS
        assert 0 < row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
        assert row["per_sample_p50_ms"] == row["p50_ms"] / row["batch_size"]
        assert row["throughput_per_s"] == row["batch_size"] * 1e3 / row["mean_ms"]
        assert len(row["samples_ms"]) == 3 and row["mean_ms"] == sum(row["samples_ms"]) / 3
        # The weights live on the device for the whole run, so the peak includes them.
        assert row["peak_memory_bytes"] >= data["weights_bytes"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 5000


def test_bench_api_on_cpu_text():
    result = bench("mobilevit", batch_sizes=[1], warmup=0, iters=2, device="cpu", tiny=True, progress=False)
    assert isinstance(result, BenchResult) and result.timer == "perf_counter + synchronize"
    assert result.rows[0].peak_memory_bytes is None  # no device memory counters on cpu
    text = result.to_text()
    assert "p50 ms" in text and "samples/s" in text and "n/a" in text


def test_throughput_keeps_its_digits_for_slow_models():
    from ascend_patch.tools.bench import _rate

    assert _rate(0.04123) == "0.0412" and _rate(46.71) == "46.7" and _rate(1104.53) == "1104.5"


def test_plot_axes_start_at_zero_and_name_the_device(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    result = bench("mobilevit", batch_sizes=[1, 2], warmup=0, iters=2, device="sim", tiny=True, progress=False)
    figures = []
    original = plt.close
    plt.close = lambda fig=None: figures.append(fig)  # keep the figure to look at its axes
    try:
        result.plot(tmp_path / "b.png")
    finally:
        plt.close = original
    (fig,) = figures
    for ax in fig.axes:
        assert ax.get_ylim()[0] == 0 and ax.get_ylabel().endswith(" on sim")
    original(fig)
