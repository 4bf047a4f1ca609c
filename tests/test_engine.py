"""The engine on synthetic targets: journal, identity restore, hooks, copies, errors, report."""

from __future__ import annotations

import importlib
import json
import logging
import os
import subprocess
import sys
import types
import warnings

import pytest

import ascend_patch
from ascend_patch.engine import JOURNAL, Patch, Replace
from ascend_patch.engine.device import DeviceNotAvailable
from ascend_patch.engine.slots import AttrSlot
from ascend_patch.patches import PATCH_MODULES


@pytest.fixture
def register(monkeypatch):
    """Make a Patch object known to apply() by name for one test."""

    def _register(patch: Patch) -> Patch:
        module = types.ModuleType(f"_test_patch_{patch.name}")
        module.PATCH = patch
        monkeypatch.setitem(sys.modules, module.__name__, module)
        monkeypatch.setitem(PATCH_MODULES, patch.name, module.__name__)
        return patch

    return _register


@pytest.fixture
def fresh_modules():
    """Import fixture modules fresh and forget them afterwards."""
    names = ("engine_target", "copy_holder", "late_target")
    for name in names:
        sys.modules.pop(name, None)
    yield
    for name in names:
        sys.modules.pop(name, None)


def wrap_result(suffix: str):
    def build(original, ctx):
        def wrapper(*args, **kwargs):
            return f"{original(*args, **kwargs)}+{suffix}"

        return wrapper

    return build


def test_revert_restores_every_kind_of_original_by_identity(register, fresh_modules):
    import engine_target as t

    raw = {name: t.Widget.__dict__[name] for name in ("make", "build", "method", "size")}
    original_greet = t.greet
    register(
        Patch(
            "demo",
            "test",
            replaces=(
                Replace("engine_target:greet", wrap_result("a")),
                Replace("engine_target:Widget.make", lambda o, c: staticmethod(lambda: "patched static")),
                Replace("engine_target:Widget.build", lambda o, c: classmethod(lambda cls: "patched class")),
                Replace("engine_target:Widget.method", lambda o, c: lambda self: "patched method"),
                Replace("engine_target:Widget.size", lambda o, c: staticmethod(lambda x: -1)),
                Replace("engine_target:SubWidget.method", lambda o, c: lambda self: "patched sub"),
            ),
        )
    )
    assert ascend_patch.apply("demo", device="cpu") == ["demo"]
    assert t.greet() == "original+a"
    assert (t.Widget.make(), t.Widget.build(), t.Widget().method(), t.Widget.size("ab")) == (
        "patched static", "patched class", "patched method", -1)  # fmt: skip
    assert t.SubWidget().method() == "patched sub"
    # the journal saved the raw staticmethod object, not the function a getattr would give
    assert JOURNAL.original(AttrSlot(t.Widget, "make")) is raw["make"]

    assert ascend_patch.revert("demo") == ["demo"]
    assert t.greet is original_greet
    for name, obj in raw.items():
        assert t.Widget.__dict__[name] is obj, name
    # the subclass only inherited "method": revert deletes what the patch added to it
    assert "method" not in t.SubWidget.__dict__
    assert t.SubWidget().method() == "method"
    assert len(JOURNAL) == 0


def test_first_original_wins_and_reverse_order_restores(register, fresh_modules):
    import engine_target as t

    original = t.greet
    register(Patch("one", "t", replaces=(Replace("engine_target:greet", wrap_result("1")),)))
    register(Patch("two", "t", replaces=(Replace("engine_target:greet", wrap_result("2")),)))
    ascend_patch.apply("one", "two", device="cpu")
    assert t.greet() == "original+1+2"
    assert JOURNAL.original(AttrSlot(t, "greet")) is original
    ascend_patch.revert()
    assert t.greet is original


def test_revert_leaves_a_slot_someone_replaced_again_and_warns(register, fresh_modules):
    import engine_target as t

    original = t.greet
    register(Patch("one", "t", replaces=(Replace("engine_target:greet", wrap_result("1")),)))
    register(Patch("two", "t", replaces=(Replace("engine_target:greet", wrap_result("2")),)))
    ascend_patch.apply("one", "two", device="cpu")
    with pytest.warns(RuntimeWarning, match="revert patch 'two' first"):
        ascend_patch.revert("one")
    assert t.greet() == "original+1+2"  # left in place, not torn out from under "two"
    assert ascend_patch.report().filter(patch="one", action="left")
    ascend_patch.revert("two")
    t.greet = original  # the orphaned wrapper of "one" is ours to clean up now


def test_user_replacement_after_apply_is_not_overwritten_on_revert(register, fresh_modules):
    import engine_target as t

    register(Patch("demo", "t", replaces=(Replace("engine_target:greet", wrap_result("x")),)))
    ascend_patch.apply("demo", device="cpu")

    def users_own():
        return "user"

    t.greet = users_own
    with pytest.warns(RuntimeWarning, match="not restoring engine_target.greet"):
        ascend_patch.revert("demo")
    assert t.greet is users_own


def test_apply_twice_is_a_noop_and_never_double_wraps(register, fresh_modules):
    import engine_target as t

    register(Patch("demo", "t", replaces=(Replace("engine_target:greet", wrap_result("x")),)))
    assert ascend_patch.apply("demo", device="cpu") == ["demo"]
    assert ascend_patch.apply("demo", device="cpu") == []
    assert t.greet() == "original+x"
    assert len(JOURNAL) == 1
    ascend_patch.revert()


def test_patched_nests_and_reverts_on_exception(register, fresh_modules):
    import engine_target as t

    original = t.greet
    register(Patch("outer", "t", replaces=(Replace("engine_target:greet", wrap_result("o")),)))
    register(Patch("inner", "t", replaces=(Replace("engine_target:Widget.method", lambda o, c: lambda s: "in"),)))
    with ascend_patch.patched("outer", device="cpu"):
        with pytest.raises(KeyError):
            with ascend_patch.patched("outer", "inner", device="cpu") as switched_on:
                assert switched_on == ["inner"]  # outer was already active: not this block's to revert
                raise KeyError("boom")
        assert ascend_patch.active() == ["outer"]
        assert t.greet() == "original+o"
        assert t.Widget().method() == "method"
    assert t.greet is original and ascend_patch.active() == []


def test_post_import_hook_patches_late_module_and_is_inert_after_revert(register, fresh_modules):
    register(Patch("late", "t", replaces=(Replace("late_target:value", lambda o, c: lambda: 2),)))
    ascend_patch.apply("late", device="cpu")
    assert ascend_patch.report().filter(patch="late", action="waiting")
    import late_target

    assert late_target.value() == 2
    original = JOURNAL.original(AttrSlot(late_target, "value"))
    ascend_patch.revert("late")
    assert late_target.value is original and late_target.value() == 1
    # the wrapt hook cannot be unregistered: a fresh import after revert must stay unpatched
    del sys.modules["late_target"]
    importlib.import_module("late_target")
    assert sys.modules["late_target"].value() == 1


def test_failing_hook_never_breaks_the_users_import(register, fresh_modules, caplog):
    def explode(original, ctx):
        raise RuntimeError("builder bug")

    register(Patch("bad", "t", replaces=(Replace("late_target:value", explode),)))
    ascend_patch.apply("bad", device="cpu")
    with caplog.at_level(logging.ERROR, logger="ascend_patch"):
        import late_target
    assert late_target.value() == 1
    assert "patching late_target after its import failed" in caplog.text
    ascend_patch.revert("bad")


def test_copies_taken_before_apply_are_patched_reported_and_restored(register, fresh_modules):
    import copy_holder
    import engine_target as t

    original = t.greet
    register(Patch("demo", "t", replaces=(Replace("engine_target:greet", wrap_result("x"), copies=True),)))
    ascend_patch.apply("demo", device="cpu")
    assert copy_holder.call_greet() == "original+x"
    copies = ascend_patch.report().filter(patch="demo", action="copy")
    assert [r.target for r in copies] == ["copy_holder.greet"]
    ascend_patch.revert("demo")
    assert copy_holder.greet is original and t.greet is original


def test_copies_taken_while_active_are_restored_on_revert(register, fresh_modules):
    # A star import or a late ``from x import f`` after apply copies the *replacement*; the journal
    # never saw it, so revert must find it by identity or a (passive) wrapper would stay behind.
    import engine_target as t

    original = t.greet
    register(Patch("demo", "t", replaces=(Replace("engine_target:greet", wrap_result("x"), copies=True),)))
    ascend_patch.apply("demo", device="cpu")
    import copy_holder  # imported while patched: its greet is our wrapper

    assert copy_holder.greet is not original and copy_holder.call_greet() == "original+x"
    ascend_patch.revert("demo")
    assert copy_holder.greet is original and t.greet is original
    restored = [r for r in ascend_patch.report().filter(patch="demo", action="reverted") if r.target != "-"]
    assert [r.target for r in restored] == ["copy_holder.greet"]


def test_a_replacement_other_modules_already_hold_is_left_to_them(register, fresh_modules, monkeypatch):
    # The device patch puts torch.npu.Event in place of torch.cuda.Event: revert must not "restore"
    # torch.npu's own attribute to the CUDA class because it is the same object as the replacement.
    import engine_target as t

    def shout() -> str:
        return "shout"

    holder = types.ModuleType("shared_holder")
    holder.shout = shout
    monkeypatch.setitem(sys.modules, "shared_holder", holder)
    original = t.greet
    register(Patch("shared", "t", replaces=(Replace("engine_target:greet", lambda orig, ctx: shout, copies=True),)))
    ascend_patch.apply("shared", device="cpu")
    assert t.greet is shout
    ascend_patch.revert("shared")
    assert t.greet is original and holder.shout is shout


def test_failed_apply_leaves_nothing_behind(register, fresh_modules):
    import engine_target as t

    def explode(original, ctx):
        raise RuntimeError("builder bug")

    register(Patch("good", "t", replaces=(Replace("engine_target:greet", wrap_result("x")),)))
    register(Patch("bad", "t", replaces=(Replace("engine_target:Widget.make", explode),)))
    original = t.greet
    with pytest.raises(RuntimeError, match="builder bug"):
        ascend_patch.apply("good", "bad", device="cpu")
    assert ascend_patch.active() == [] and t.greet is original and len(JOURNAL) == 0


def test_nothing_to_patch_and_skipped_are_reported(register, fresh_modules):
    import engine_target  # noqa: F401

    register(Patch("absent", "t", replaces=(Replace("engine_target:renamed_in_v5", wrap_result("x"), optional=True),)))
    register(Patch("notneeded", "t", skip_reason=lambda ctx: f"not needed on {ctx.device}"))
    ascend_patch.apply("absent", "notneeded", device="cpu")
    report = ascend_patch.report()
    nothing = report.filter(patch="absent", action="nothing")
    assert any("renamed_in_v5" in r.detail for r in nothing)
    assert any(r.target == "-" and "found nothing to patch" in r.detail for r in nothing)
    assert report.filter(patch="notneeded", action="skipped")[0].detail == "not needed on cpu"
    assert "absent" not in str(report)  # the default view is the call sites: bookkeeping is internal
    assert not list(report) and report.filter(patch="absent")  # ... while filter() still sees it
    text = str(ascend_patch.report(internal=True))
    assert "absent" in text and "skipped" in text
    ascend_patch.revert()


def test_declared_version_conflict_skips_with_a_clear_reason(register, fresh_modules):
    import engine_target  # noqa: F401

    register(Patch("pinned", "t", replaces=(Replace("engine_target:greet", wrap_result("x")),),
                   requires={"torch": "<1.0"}))
    ascend_patch.apply("pinned", device="cpu")
    assert engine_target.greet() == "original"
    (skipped,) = ascend_patch.report().filter(patch="pinned", action="skipped")
    assert "torch" in skipped.detail and "<1.0" in skipped.detail
    ascend_patch.revert()


def test_report_writes_jsonl(register, fresh_modules, tmp_path):
    import engine_target  # noqa: F401

    register(Patch("demo", "t", replaces=(Replace("engine_target:greet", wrap_result("x")),)))
    with ascend_patch.patched("demo", device="cpu"):
        path = ascend_patch.report().to_jsonl(tmp_path / "report.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert {"patch": "demo", "action": "patched", "target": "engine_target.greet", "detail": "", "count": 1,
            "where": "", "category": "", "change": ""} in rows


def test_unknown_names_and_options_get_the_closest_match():
    with pytest.raises(ValueError, match=r"unknown patch or recipe 'gelv'\. Did you mean 'gelu'\?.*autocast"):
        ascend_patch.apply("gelv", device="cpu")
    with pytest.raises(ValueError, match=r"unknown option 'fp32_autocat'.*Did you mean 'fp32_autocast'"):
        ascend_patch.apply("fp32_autocast", device="cpu", fp32_autocat="bf16")
    # An option of a patch left out of the call names that patch; nothing is applied.
    with pytest.raises(ValueError, match=r"^fp32_autocast is an option of the fp32_autocast patch, which is not in "
                                         r"this apply\(\) call: add 'fp32_autocast' to the names"):
        ascend_patch.apply("gelu", device="cpu", fp32_autocast="fp32")
    with pytest.raises(ValueError, match=r"Did you mean 'fp32_autocast' \(an option of the fp32_autocast patch\)"):
        ascend_patch.apply("gelu", device="cpu", fp32_autocst="fp32")
    assert ascend_patch.active() == []
    with pytest.raises(ValueError, match=r"fp32_autocast='fp64' is not valid.*'bf16'"):
        ascend_patch.apply("fp32_autocast", device="cpu", fp32_autocast="fp64")
    with pytest.raises(ValueError, match="unknown patch or recipe 'nope'"):
        ascend_patch.revert("nope")
    assert ascend_patch.active() == []


def test_options_differing_from_the_active_ones_warn():
    with ascend_patch.patched("fp32_autocast", device="cpu", fp32_autocast="bf16"):
        with pytest.warns(UserWarning, match="revert\\('fp32_autocast'\\) first"):
            assert ascend_patch.apply("fp32_autocast", device="cpu", fp32_autocast="fp32") == []
    # apply() inside the block pinned the patch: it stays on until revert(), with the block's options.
    assert ascend_patch.engine.runtime.context_of("fp32_autocast").options == {"fp32_autocast": "bf16"}
    ascend_patch.revert()


def test_target_device_detection_and_overrides(monkeypatch):
    monkeypatch.delenv("ASCEND_PATCH_DEVICE", raising=False)
    monkeypatch.delenv("ASCEND_PATCH_SIMULATE_NPU", raising=False)
    expected = "npu" if ascend_patch.engine.device.npu_available() else "cpu"
    assert ascend_patch.target_device() == expected
    assert ascend_patch.target_device("cpu") == "cpu"
    monkeypatch.setenv("ASCEND_PATCH_DEVICE", "cpu")
    assert ascend_patch.target_device() == "cpu"
    with pytest.raises(ValueError, match="choose one of auto, npu, cuda, cpu, sim"):
        ascend_patch.target_device("tpu")
    with pytest.raises(DeviceNotAvailable, match="use 'cpu' or 'sim'"):
        ascend_patch.target_device("cuda")


def test_import_is_light_and_lists_work():
    code = (
        "import sys, ascend_patch; "
        "assert 'torch_npu' not in sys.modules and 'transformers' not in sys.modules, 'eager import'; "
        "assert 'torch' not in sys.modules, 'torch imported eagerly'; "
        "print(sorted(ascend_patch.list_patches()))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "gelu" in out and "autocast" in out


def test_no_warnings_from_a_plain_apply_revert_cycle():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with ascend_patch.patched(device="cpu"):
            pass


def test_call_sites_are_logged_once_per_site_with_levels(caplog):
    import torch

    def region():
        return torch.autocast("cpu", dtype=torch.float32)  # one call site, many calls

    with ascend_patch.patched("fp32_autocast", device="cpu", log="summary"):
        for _ in range(3):
            with region():
                pass
        (call,) = ascend_patch.report().filter(patch="fp32_autocast", action="call")
    assert call.count == 3 and call.where.endswith("test_engine.py:" + str(region.__code__.co_firstlineno + 1))
    assert "[fp32_autocast=fp32]" in call.detail and call.where in str(ascend_patch.report())

    ascend_patch.report(clear=True)
    with ascend_patch.patched("fp32_autocast", device="cpu", log="off"):
        with region():
            pass
        assert not ascend_patch.report().filter(action="call")

    with caplog.at_level(logging.INFO, logger="ascend_patch"):
        with ascend_patch.patched("fp32_autocast", device="cpu", log="detail"):
            with region():
                pass
    assert "autocast('cpu', dtype=float32) -> autocast off" in caplog.text
    ascend_patch.apply("seed", device="cpu", log="summary")  # back to the default level
    ascend_patch.revert("seed")
    with pytest.raises(ValueError, match="choose one of off, summary, detail"):
        ascend_patch.apply("seed", device="cpu", log="verbose")


def test_a_recipe_reverts_what_it_switched_on_and_nothing_else():
    ascend_patch.apply("gelu", device="cpu")
    switched_on = ascend_patch.apply("dinov2", device="cpu")
    assert "gelu" not in switched_on and {"seed", "autocast", "dinov2"} <= set(switched_on)
    reverted = ascend_patch.revert("dinov2")
    assert set(reverted) == set(switched_on)
    assert ascend_patch.active() == ["gelu"]  # active before the recipe: not the recipe's to revert
    ascend_patch.revert("gelu")
    with pytest.raises(ValueError, match="unknown patch or recipe 'dinov3'. Did you mean 'dinov2'"):
        ascend_patch.apply("dinov3", device="cpu")


@pytest.mark.parametrize(("value", "on"), [("1", True), ("yes", True), ("ON", True), ("false", False), ("no", False),
                                           ("off", False), ("0", False), ("", False)])
def test_switches_are_parsed_strictly(monkeypatch, value, on):
    from ascend_patch.engine.env import flag

    monkeypatch.setenv("ASCEND_PATCH_SIMULATE_NPU", value)
    assert flag("ASCEND_PATCH_SIMULATE_NPU") is on
    monkeypatch.setenv("ASCEND_PATCH_SIMULATE_NPU", "maybe")
    with pytest.raises(ValueError, match=r"^ASCEND_PATCH_SIMULATE_NPU='maybe' is not a switch"):
        flag("ASCEND_PATCH_SIMULATE_NPU")


def test_simulate_npu_false_does_not_simulate():
    code = "import sys, ascend_patch; print('torch_npu' in sys.modules, ascend_patch.target_device('auto'))"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASCEND_PATCH")}
    for value, expected in [("false", "False cpu"), ("1", "True npu")]:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                              env={**env, "ASCEND_PATCH_SIMULATE_NPU": value}, check=False)  # fmt: skip
        assert proc.stdout.strip() == expected, (value, proc.stderr[-2000:])


def test_device_argument_names_what_is_wrong(monkeypatch):
    import torch

    assert ascend_patch.apply("gelu", device=torch.device("cpu")) == ["gelu"]
    ascend_patch.revert()
    for bad in (0, 1):
        with pytest.raises(ValueError, match=rf"^device={bad}: give a device name"):
            ascend_patch.apply("gelu", device=bad)
    monkeypatch.setenv("ASCEND_PATCH_DEVICE", "tpu")
    with pytest.raises(ValueError, match=r"^unknown device ASCEND_PATCH_DEVICE='tpu'"):
        ascend_patch.apply("gelu")
    assert ascend_patch.active() == []


def test_a_second_apply_for_another_device_is_refused_not_ignored():
    assert ascend_patch.apply("gelu", device="cpu") == ["gelu"]
    try:
        with pytest.raises(ValueError, match=r"^patch 'gelu' is already active for device 'cpu', not 'npu': "
                                             r"revert\('gelu'\)"):
            ascend_patch.apply("gelu", "seed", device="sim")
        assert ascend_patch.active() == ["gelu"]  # all or nothing: seed was not left on
        assert ascend_patch.apply("gelu", device="cpu") == []  # the same device: a no-op, as before
    finally:
        ascend_patch.revert()


def _wrap_callable(original, ctx):
    if not callable(original):  # as a seed wrapper meets ``fix_random_seeds = 42``
        raise TypeError(f"expected a function, got {original!r}")
    return lambda *args, **kwargs: ("wrapped", original(*args, **kwargs))


def test_a_target_that_cannot_be_patched_is_a_skipped_row_and_the_rest_applies(register, fresh_modules):
    import engine_target as t

    original_greet = t.greet
    t.ANSWER = 42  # an upstream that turned a function into a constant
    try:
        register(Patch("mixed", "t", replaces=(Replace("engine_target:ANSWER", _wrap_callable),
                                               Replace("engine_target:greet", _wrap_callable))))
        assert ascend_patch.apply("mixed", device="cpu") == ["mixed"]
        assert t.ANSWER == 42 and t.greet()[0] == "wrapped"
        (row,) = ascend_patch.report().filter(patch="mixed", action="skipped")
        assert row.target == "engine_target:ANSWER"
        assert row.detail == "cannot patch a int: TypeError: expected a function, got 42"
        ascend_patch.revert("mixed")
        assert t.greet is original_greet
    finally:
        del t.ANSWER


def test_a_drifted_target_found_at_import_replaces_its_waiting_row(register, fresh_modules):
    register(Patch("late", "t", replaces=(Replace("late_target:gone", _wrap_callable),
                                          Replace("late_target:value", _wrap_callable))))
    ascend_patch.apply("late", device="cpu")
    assert [r.action for r in ascend_patch.report().filter(patch="late")] == ["waiting", "waiting"]
    import late_target

    try:
        rows = {r.target: r.action for r in ascend_patch.report().filter(patch="late")}
        assert rows == {"late_target:gone": "nothing", "late_target.value": "patched"}  # no "waiting" left
        assert late_target.value()[0] == "wrapped"
    finally:
        ascend_patch.revert("late")
