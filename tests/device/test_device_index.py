"""apply(device="npu:N"): npu:N is the process's one CUDA device, as CUDA_VISIBLE_DEVICES=N makes it.

"cuda", "cuda:0", torch.device("cuda"[, 0]) and the ordinal 0 land on npu:N; any other CUDA index raises;
torch.cuda.current_device() is 0 and device_count() 1. Without an index nothing changes. The simulated NPU
keeps every tensor on npu:0, so it takes "sim" / "sim:0" and refuses "sim:N" (N > 0) naming that limit;
npu:3 itself is checked on the wrappers, with the argument each one hands to torch.
"""

from __future__ import annotations

import sys

import pytest
import torch
from conftest import device_of

import ascend_patch
from ascend_patch.engine.device import DeviceNotAvailable, resolve_target, target_device
from ascend_patch.engine.patch import PatchContext
from ascend_patch.engine.slots import MISSING
from ascend_patch.patches.device import NpuCurrentDeviceSlot
from ascend_patch.patches.device.cuda_api import _npu_api
from ascend_patch.patches.device.factories import _factory
from ascend_patch.patches.device.mapping import device_mapper, placement, translate
from ascend_patch.patches.device.transfers import _module_to, _tensor_to
from ascend_patch.sim import SimUnsupportedError

NOT_VISIBLE = "CUDA device {} is not visible: apply\\(device='npu:3'\\) makes npu:3 this process's only CUDA device"


# -- parsing ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["npu:x", "npu:-1", "npu:", "npu:1.5", "sim:x", "sim:-1"])
def test_a_bad_index_is_one_value_error_naming_device_and_the_form(bad, monkeypatch):
    kind = bad.split(":")[0]
    expected = rf"^device='{bad}': a device index is a whole number >= 0: give '{kind}' or '{kind}:N' \(e\.g\. "
    with pytest.raises(ValueError, match=expected):
        target_device(bad)
    with pytest.raises(ValueError, match=expected):
        ascend_patch.apply("device", device=bad)
    monkeypatch.setenv("ASCEND_PATCH_DEVICE", bad)
    with pytest.raises(ValueError, match=rf"^ASCEND_PATCH_DEVICE='{bad}': a device index is a whole number"):
        ascend_patch.apply("device")
    assert ascend_patch.active() == []


@pytest.mark.parametrize("bad", ["cpu:1", "cuda:0", "auto:2"])
def test_an_index_where_none_is_taken_is_refused_not_dropped(bad):
    with pytest.raises(ValueError, match=rf"^device='{bad}': only npu and sim take a device index"):
        ascend_patch.apply("device", device=bad)
    assert ascend_patch.active() == []


def test_the_target_resolves_to_its_type_and_index():
    assert resolve_target("sim") == ("npu", None) and resolve_target("sim:0") == ("npu", 0)
    assert resolve_target("NPU:0 ") == ("npu", 0) and resolve_target(torch.device("npu", 0)) == ("npu", 0)
    assert target_device("sim:0") == "npu"  # the type alone, a plain string
    assert resolve_target("cpu") == ("cpu", None)


def test_the_simulator_refuses_a_nonzero_index_naming_its_limit():
    for asked in ("sim:3", "npu:1"):  # with the simulator installed, "npu" is the simulated NPU
        limit = rf"^device='{asked}': the simulated NPU keeps every tensor on npu:0 .* so it cannot target npu:\d"
        with pytest.raises(SimUnsupportedError, match=limit):
            ascend_patch.apply("device", device=asked)
    assert ascend_patch.active() == []


def test_an_index_beyond_the_machine_names_its_npus(monkeypatch):
    import ascend_patch.engine.device as device_module

    monkeypatch.setattr(device_module, "npu_available", lambda: True)
    monkeypatch.setitem(sys.modules, "torch_npu", None)  # not the simulated one
    monkeypatch.setattr(torch.npu, "device_count", lambda: 2)
    with pytest.raises(DeviceNotAvailable, match=r"^device='npu:2': this machine has 2 NPU\(s\), npu:0 to npu:1"):
        target_device("npu:2")
    assert resolve_target("npu:1") == ("npu", 1)


# -- npu:3, on the wrappers ---------------------------------------------------------------------------


def npu3() -> PatchContext:
    return PatchContext("device", "npu", {"cuda_is_available": "target"}, device_index=3)


@pytest.mark.parametrize(
    "device, expected",
    [
        ("cuda", "npu:3"),
        ("cuda:0", "npu:3"),
        (torch.device("cuda"), torch.device("npu", 3)),
        (torch.device("cuda", 0), torch.device("npu", 3)),
        (0, torch.device("npu", 3)),
        ("cpu", None),
        ("npu:1", None),  # the code's own npu devices are its choice
    ],
)
def test_every_visible_cuda_spelling_is_the_indexed_npu(device, expected):
    assert translate(device, "npu", 3) == expected
    assert type(translate(device, "npu", 3)) is type(expected)
    assert translate(device, "npu") == (None if expected is None else translate(device, "npu", None))


@pytest.mark.parametrize("invisible, ordinal", [("cuda:1", 1), (torch.device("cuda", 2), 2), (5, 5)])
def test_a_cuda_index_outside_the_visible_device_raises(invisible, ordinal):
    with pytest.raises(RuntimeError, match=NOT_VISIBLE.format(ordinal)):
        translate(invisible, "npu", 3)
    ctx = npu3()
    with pytest.raises(RuntimeError, match=NOT_VISIBLE.format(ordinal)):
        device_mapper(ctx, None)(invisible)
    ctx.active = False  # after revert a surviving wrapper passes everything through
    assert device_mapper(ctx, None)(invisible) is invisible


def test_cuda_written_calls_hand_torch_the_indexed_npu():
    ctx, seen = npu3(), []

    def spy(*args, **kwargs):
        seen.append((args, kwargs))

    t = torch.ones(1)
    _factory("zeros")(spy, ctx)(2, device="cuda")
    _factory("randn")(spy, ctx)(2, device=torch.device("cuda", 0))
    _tensor_to(spy, ctx)(t, "cuda")
    _tensor_to(spy, ctx)(t, 0, torch.float16)
    _module_to(spy, ctx)(None, device="cuda:0")
    assert seen == [
        ((2,), {"device": "npu:3"}),
        ((2,), {"device": torch.device("npu", 3)}),
        ((t, "npu:3"), {}),
        ((t, torch.device("npu", 3), torch.float16), {}),
        ((None,), {"device": "npu:3"}),
    ]
    assert placement(ctx) == "npu:3"  # what a bare x.cuda() / module.cuda() moves to
    with pytest.raises(RuntimeError, match=NOT_VISIBLE.format(1)):
        _tensor_to(spy, ctx)(t, "cuda:1")


def test_the_cuda_api_counts_one_device_at_ordinal_zero():
    ctx = npu3()
    assert _npu_api(ctx, "current_device")() == 0  # "cuda:0" and 0 map back to npu:3
    assert _npu_api(ctx, "device_count")() == 1
    ctx.options["cuda_is_available"] = "false"
    assert _npu_api(ctx, "device_count")() == 0  # never more devices than is_available() admits


def test_the_current_device_slot_never_initialises_a_device_to_read_it():
    class FakeNpu:
        def __init__(self, initialised):
            self.initialised, self.current, self.calls = initialised, 0, []

        def is_initialized(self):
            return self.initialised

        def current_device(self):
            self.calls.append("current_device")
            return self.current

        def set_device(self, index):
            self.calls.append(("set_device", index))
            self.current, self.initialised = index, True

    fresh = FakeNpu(initialised=False)
    slot = NpuCurrentDeviceSlot(fresh)
    assert slot.read_own() is MISSING and fresh.calls == []  # reading would have initialised npu:0
    slot.write(3)
    assert slot.read_own() == 3
    slot.erase()  # revert with nothing current before: npu:3 stays chosen
    assert fresh.calls == [("set_device", 3), "current_device"] and fresh.current == 3
    used = FakeNpu(initialised=True)
    assert NpuCurrentDeviceSlot(used).read_own() == 0


# -- end to end: "sim:0" (the simulator's one device), "sim" and "cpu" unchanged ----------------------


def test_an_indexed_target_is_the_process_cuda_device():
    torch.manual_seed(0)
    reference = torch.randn(3, generator=torch.Generator().manual_seed(5))
    model = torch.nn.Linear(3, 2)
    with ascend_patch.patched("device", device="sim:0"):
        made = [
            torch.ones(2).cuda(),
            torch.zeros(2, device="cuda"),
            torch.ones(2).to("cuda:0"),
            torch.ones(2).to(torch.device("cuda")),
            torch.ones(2, device=torch.cuda.current_device()),
            torch.ones(2).to(torch.device("cuda", torch.cuda.current_device())),
            torch.randn(3, device="cuda", generator=torch.Generator(device="cuda").manual_seed(5)),
        ]
        moved = model.cuda()
        assert (torch.cuda.current_device(), torch.cuda.device_count()) == (0, 1)
        (generator,) = torch.cuda.default_generators
        assert generator is torch.npu.default_generators[0]
        torch.cuda.set_device(0)
        assert torch.npu.current_device() == 0
        for invisible in ("cuda:1", 1):
            with pytest.raises(RuntimeError, match="CUDA device 1 is not visible"):
                torch.zeros(1, device=invisible)
        with pytest.raises(RuntimeError, match="CUDA device 1 is not visible"):
            torch.cuda.set_device(1)
        changes = {r.change for r in ascend_patch.report().filter(patch="device", action="call")}
    assert {t.device for t in made} == {torch.device("npu", 0)}
    assert moved.weight.device == torch.device("npu", 0)
    assert torch.equal(made[-1].cpu(), reference)  # the seeded generator of the indexed device draws as on CPU
    assert 'x.cuda() -> x.to("npu:0")' in changes and 'x.to("cuda:0") -> x.to("npu:0")' in changes
    assert 'torch.ones(..., device=0) -> torch.ones(..., device=torch.device("npu:0"))' in changes
    assert "torch.cuda.device_count() -> 1 (npu:0 is the only CUDA device)" in changes


def test_without_an_index_nothing_changes(target):
    device = device_of(target)
    with ascend_patch.patched("device", device=target):
        x = torch.ones(2).cuda()
        y = torch.zeros(2, device="cuda:0")
        changes = {r.change for r in ascend_patch.report().filter(patch="device", action="call")}
        if target == "sim":
            assert torch.cuda.current_device() == torch.npu.current_device()
            assert torch.cuda.device_count() == torch.npu.device_count()
            with pytest.raises(RuntimeError, match="Invalid device ordinal 1"):  # cuda:1 is npu:1, as before
                torch.zeros(1, device="cuda:1")
        else:
            assert torch.zeros(1, device="cuda:1").device.type == "cpu"
    assert x.device.type == y.device.type == device
    zero = f"{device}:0" if target == "sim" else device
    assert f'x.cuda() -> x.to("{device}")' in changes
    assert f'torch.zeros(..., device="cuda:0") -> torch.zeros(..., device="{zero}")' in changes


def test_a_second_apply_for_another_index_is_refused_and_contexts_are_not_shared():
    refused = pytest.raises(ValueError, match="already active for device 'npu', not 'npu:0'")
    with ascend_patch.patched("device", device="sim"), refused:
        ascend_patch.apply("device", device="sim:0")
    # After "sim": "sim:0" gets its own context (its own mapping), and "sim" its old one back.
    with ascend_patch.patched("device", device="sim:0"), pytest.raises(RuntimeError, match="1 is not visible"):
        torch.zeros(1, device="cuda:1")
    with ascend_patch.patched("device", device="sim"), pytest.raises(RuntimeError, match="Invalid device ordinal 1"):
        torch.zeros(1, device="cuda:1")
