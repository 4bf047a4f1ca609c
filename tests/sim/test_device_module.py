"""torch.npu of the simulated device: device queries, memory counters, events, streams, rng state."""

from __future__ import annotations

import gc
import time

import pytest
import torch


def test_device_queries(sim_npu):
    npu = sim_npu
    assert torch.npu is npu
    assert npu.is_available() and npu.device_count() == 1 and npu.current_device() == 0
    assert npu.get_device_name() == npu.get_device_name(0) == "Ascend910B (simulated)"
    assert npu.get_device_properties("npu:0").total_memory == 64 * 1024**3
    assert npu.is_bf16_supported()
    npu.set_device("npu:0")
    npu.set_device(0)
    npu.synchronize()
    with pytest.raises(RuntimeError, match="Invalid device ordinal 1: the simulated NPU has 1 device"):
        npu.set_device(1)
    with pytest.raises(ValueError, match="Expected a npu device"):
        npu.get_device_name("cpu")


def test_memory_counters_track_live_tensor_bytes(sim_npu):
    npu = sim_npu
    gc.collect()
    start = npu.memory_allocated()
    npu.reset_peak_memory_stats()
    x = torch.empty(256 * 1024, device="npu")  # 1 MiB of float32
    assert npu.memory_allocated() - start == 1024 * 1024
    views = (x.view(512, 512), x[10:], x.unsqueeze(0))
    assert npu.memory_allocated() - start == 1024 * 1024  # views add nothing
    del x
    assert npu.memory_allocated() - start == 1024 * 1024  # the views keep the storage
    del views
    assert npu.memory_allocated() == start
    assert npu.max_memory_allocated() - start == 1024 * 1024
    assert npu.memory_reserved() >= start + 1024 * 1024  # a caching allocator keeps the block
    npu.empty_cache()
    assert npu.memory_reserved() == npu.memory_allocated()
    free, total = npu.mem_get_info()
    assert total == 64 * 1024**3 and free == total - npu.memory_reserved()

    model = torch.nn.Linear(256, 256).npu()  # 256*256*4 + 256*4 bytes
    params = 256 * 256 * 4 + 256 * 4
    assert npu.memory_allocated() - start == params
    model(torch.randn(4, 256, device="npu")).sum().backward()
    assert npu.memory_allocated() - start == 2 * params  # the gradients
    model.zero_grad(set_to_none=True)
    model.cpu()
    gc.collect()
    assert npu.memory_allocated() == start
    grown = torch.empty(10, device="npu")
    grown.resize_(1000)
    assert npu.memory_allocated() - start == 4000
    del grown
    npu.reset_peak_memory_stats()
    assert npu.max_memory_allocated() == npu.memory_allocated() == start


def test_events_time_host_work(sim_npu):
    npu = sim_npu
    begin, end = npu.Event(enable_timing=True), npu.Event(enable_timing=True)
    begin.record()
    time.sleep(0.05)
    end.record(npu.current_stream())
    end.synchronize()
    assert begin.query() and end.query()
    assert 45.0 <= begin.elapsed_time(end) < 5000.0
    with pytest.raises(RuntimeError, match="enable_timing=True"):
        npu.Event().elapsed_time(npu.Event())
    with pytest.raises(RuntimeError, match="recorded"):
        npu.Event(enable_timing=True).elapsed_time(end)


def test_streams_are_enough_for_timing_code(sim_npu):
    npu = sim_npu
    default = npu.default_stream()
    assert npu.current_stream() is default
    side = npu.Stream()
    with npu.stream(side):
        assert npu.current_stream() is side
        event = side.record_event()
        default.wait_stream(side)
        side.wait_event(event)
    assert npu.current_stream() is default
    assert side.query() and str(side.device) == "npu:0" and side != npu.Stream()
    side.synchronize()
    torch.ones(4, device="npu").record_stream(side)  # a real torch.Stream; a no-op on the simulator


def test_rng_state_round_trip_and_seeding(sim_npu):
    npu = sim_npu
    npu.manual_seed(5)
    assert npu.initial_seed() == 5
    state = npu.get_rng_state()
    first = torch.randn(8, device="npu").cpu()
    npu.set_rng_state(state)
    assert torch.equal(torch.randn(8, device="npu").cpu(), first)
    npu.manual_seed_all(6)
    assert not torch.equal(torch.randn(8, device="npu").cpu(), first)
    with torch.random.fork_rng(device_type="npu"):
        torch.randn(100, device="npu")
    after_fork = torch.randn(8, device="npu")
    npu.manual_seed(6)
    torch.randn(8, device="npu")
    assert torch.equal(torch.randn(8, device="npu").cpu(), after_fork.cpu())
    npu.seed()
    assert npu.initial_seed() != 6
