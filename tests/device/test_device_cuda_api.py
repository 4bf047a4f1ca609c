"""device: torch.cuda queries and handles answer for the target (host implementations on cpu)."""

from __future__ import annotations

import time

import pytest
import torch
from conftest import device_of

import ascend_patch
from ascend_patch.patches.device.host import HostStream, WallClockEvent
from ascend_patch.patches.device.policy import REPORTED_CAPABILITY


@pytest.mark.parametrize(
    "policy, on_cpu, on_npu",
    [("target", False, True), ("true", True, True), ("false", False, False)],
)
def test_is_available_policy(policy, on_cpu, on_npu, target):
    expected = on_npu if target == "sim" else on_cpu
    with ascend_patch.patched("device", device=target, cuda_is_available=policy):
        assert torch.cuda.is_available() is expected
        # device_count agrees with is_available: 0 when it answers False.
        assert (torch.cuda.device_count() > 0) is expected
    assert torch.cuda.is_available() is False  # this machine has no CUDA


def test_unknown_policy_is_rejected():
    with pytest.raises(ValueError, match="cuda_is_available"):
        ascend_patch.apply("device", device="cpu", cuda_is_available="yes")
    assert ascend_patch.active() == []


def test_device_queries(target):
    with ascend_patch.patched("device", device=target, cuda_is_available="true"):
        assert torch.cuda.device_count() == 1
        assert torch.cuda.current_device() == 0
        torch.cuda.set_device(0)
        torch.cuda.set_device("cuda:0")
        torch.cuda.set_device(torch.device("cuda", 0))
        torch.cuda.synchronize()
        torch.cuda.synchronize("cuda:0")
        name = torch.cuda.get_device_name()
        assert isinstance(name, str) and name == torch.cuda.get_device_name(0)
        props = torch.cuda.get_device_properties(0)
        assert props.name == name and props.total_memory > 0
        major, minor = torch.cuda.get_device_capability()
        assert (major, minor) == REPORTED_CAPABILITY
        assert torch.cuda.is_bf16_supported()
        with torch.cuda.device(0):
            assert torch.zeros(1, device="cuda").device.type == device_of(target)


def test_memory_counters(target):
    with ascend_patch.patched("device", device=target):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        block = torch.empty(1024, 256, device="cuda")  # 1 MiB
        after = torch.cuda.memory_allocated(0)
        peak = torch.cuda.max_memory_allocated("cuda:0")
        reserved = torch.cuda.memory_reserved()
        free, total = torch.cuda.mem_get_info()
        stats = torch.cuda.memory_stats()
        del block
        torch.cuda.reset_max_memory_allocated()
    assert 0 <= free <= total and total > 0
    assert stats["allocated_bytes.all.peak"] >= stats["allocated_bytes.all.current"] >= 0
    if target == "cpu":
        # No device memory exists: every device counter is 0 (mem_get_info reports host memory).
        assert before == after == peak == reserved == 0
    else:
        # The simulated NPU counts real bytes of live tensors.
        assert after - before == 1024 * 256 * 4
        assert peak >= after and reserved >= after


def test_event_timing_measures_wall_time(target):
    with ascend_patch.patched("device", device=target):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        time.sleep(0.05)
        torch.randn(64, 64, device="cuda") @ torch.randn(64, 64, device="cuda")
        end.record()
        end.synchronize()
        torch.cuda.synchronize()
        elapsed = start.elapsed_time(end)
        assert start.query() and end.query()
    assert 45.0 <= elapsed <= 2000.0


def test_host_event_errors_match_cuda():
    with ascend_patch.patched("device", device="cpu"):
        untimed = torch.cuda.Event()
        timed = torch.cuda.Event(enable_timing=True)
        assert isinstance(timed, WallClockEvent)
        with pytest.raises(RuntimeError, match="recorded"):
            timed.elapsed_time(torch.cuda.Event(enable_timing=True))
        untimed.record()
        timed.record()
        with pytest.raises(RuntimeError, match="enable_timing"):
            untimed.elapsed_time(timed)


def test_streams(target):
    with ascend_patch.patched("device", device=target):
        default = torch.cuda.current_stream()
        side = torch.cuda.Stream()
        assert isinstance(side, torch.cuda.Stream)
        with torch.cuda.stream(side):
            assert torch.cuda.current_stream() == side
            y = torch.ones(4, device="cuda") * 2
            event = side.record_event()
        assert torch.cuda.current_stream() == default
        assert torch.cuda.default_stream() == default
        default.wait_stream(side)
        default.wait_event(event)
        event.wait()
        side.synchronize()
        assert side.query() and event.query()
        with torch.cuda.stream(None):  # a no-op on CUDA too
            pass
    torch.testing.assert_close(y.cpu(), torch.full((4,), 2.0))
    if target == "cpu":
        assert isinstance(side, HostStream)


def test_default_generators_seed_the_target_generator(target):
    with ascend_patch.patched("device", device=target):
        assert len(torch.cuda.default_generators) == 1
        torch.cuda.default_generators[0].manual_seed(7)
        first = torch.randn(5, device="cuda")
        torch.cuda.default_generators[0].manual_seed(7)
        second = torch.randn(5, device="cuda")
    torch.testing.assert_close(first.cpu(), second.cpu(), rtol=0, atol=0)


CUDA_ONLY_SOURCE = '''
import torch

def attend(q, k, v):
    """Written for CUDA: flash-attn when there is a GPU, a slow path otherwise."""
    if torch.cuda.is_available():
        from flash_attn import flash_attn_func
        return flash_attn_func(q.cuda(), k.cuda(), v.cuda(), causal=True)
    raise RuntimeError("the CPU path of this model is not implemented")
'''


def test_true_policy_runs_cuda_only_branches_into_the_attention_shim(tmp_path, monkeypatch):
    # is_available() == True on a cpu target: the CUDA branch runs and meets the flash_attn shim.
    (tmp_path / "cuda_only_model.py").write_text(CUDA_ONLY_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 6, 4, 8) for _ in range(3))
    expected = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
    ).transpose(1, 2)
    import importlib

    with ascend_patch.patched("device", "attention", device="cpu", cuda_is_available="true"):
        model = importlib.import_module("cuda_only_model")
        got = model.attend(q, k, v)
    monkeypatch.delitem(__import__("sys").modules, "cuda_only_model")
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    with ascend_patch.patched("device", device="cpu"), pytest.raises(RuntimeError, match="CPU path"):
        model.attend(q, k, v)  # the default policy keeps the CUDA branch off on a cpu target


def test_revert_restores_torch_cuda():
    names = (
        "is_available",
        "device_count",
        "synchronize",
        "Event",
        "Stream",
        "stream",
        "device",
        "memory_allocated",
        "default_generators",
    )
    before = {n: getattr(torch.cuda, n) for n in names}
    memory_module = torch.cuda.memory.memory_allocated
    with ascend_patch.patched("device", device="cpu", cuda_is_available="true"):
        assert all(getattr(torch.cuda, n) is not before[n] for n in names)
        assert torch.cuda.memory.memory_allocated is not memory_module  # the definition's copy too
    assert {n: getattr(torch.cuda, n) for n in names} == before
    for name in names:
        assert getattr(torch.cuda, name) is before[name]
    assert torch.cuda.memory.memory_allocated is memory_module
    with pytest.raises((AssertionError, RuntimeError)):
        torch.cuda.synchronize()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_is_cuda_follows_the_is_available_policy(target):
    """``assert q.is_cuda`` guards pass exactly when torch.cuda.is_available() does; PyTorch's own code
    (nn.LSTM asking before reaching for cuDNN) keeps the true answer."""
    device = device_of(target)
    for policy, expected in (("target", target == "sim"), ("true", True), ("false", False)):
        with ascend_patch.patched("device", device=target, cuda_is_available=policy):
            x = torch.ones(2).cuda()
            assert x.is_cuda is expected and torch.cuda.is_available() is expected, policy
            assert torch.zeros(2).storage().is_cuda is (expected and device == "cpu")  # sim storages are host ones
            assert torch.zeros(2).untyped_storage().is_cuda is (expected and device == "cpu")
            assert torch.Tensor.is_cuda.__get__(x) is expected
    with ascend_patch.patched("device", device="cpu", cuda_is_available="true"):
        lstm = torch.nn.LSTM(3, 4)
        out, _ = lstm(torch.randn(2, 1, 3).cuda())  # flatten_parameters would call cuDNN if it heard True
    assert out.shape == (2, 1, 4) and not torch.ones(1).is_cuda
