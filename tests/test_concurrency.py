"""patched() across threads and out of order, apply() racing an import, importlib.reload of a
patched module: the semantics docs/index.md states, run on real PyTorch code."""

from __future__ import annotations

import importlib
import logging
import sys
import textwrap
import threading
import warnings

import pytest
import torch

import ascend_patch
from ascend_patch.engine import JOURNAL, Patch, Replace
from ascend_patch.engine import apply as engine_apply
from ascend_patch.engine.runtime import Planned
from ascend_patch.engine.slots import AttrSlot

F = torch.nn.functional


def exact_gelu(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x.cpu(), approximate="none")


def sim_gelu_error() -> float:
    x = torch.linspace(-4, 4, 257)
    return (F.gelu(x.to("npu")).cpu() - exact_gelu(x)).abs().max().item()


def test_a_block_exiting_first_leaves_the_patch_on_for_the_block_still_open():
    """Thread A enters patched("gelu"), B enters, A exits: B's block still runs with gelu on."""
    original = F.gelu
    a_entered, b_entered, a_exited = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, object] = {}

    def thread_a() -> None:
        with ascend_patch.patched("gelu", device="sim"):
            a_entered.set()
            b_entered.wait(10)
        a_exited.set()

    def thread_b() -> None:
        a_entered.wait(10)
        with ascend_patch.patched("gelu", device="sim") as switched_on:
            seen["switched_on"] = switched_on
            b_entered.set()
            a_exited.wait(10)
            seen["active"] = ascend_patch.active()
            seen["error"] = sim_gelu_error()
        seen["after"] = ascend_patch.active()

    threads = [threading.Thread(target=thread_a), threading.Thread(target=thread_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert seen["switched_on"] == []  # A switched it on; B only holds it
    assert seen["active"] == ["gelu"]
    assert seen["error"] < 1e-6  # the exact erf form, not the NPU's tanh form
    assert seen["after"] == []
    assert F.gelu is original
    assert sim_gelu_error() > 1e-4  # and off again: the simulated NPU's tanh GELU


def test_blocks_exiting_out_of_order_in_one_thread():
    original = F.gelu
    first, second = ascend_patch.patched("gelu", device="sim"), ascend_patch.patched("gelu", "seed", device="sim")
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert ascend_patch.active() == ["gelu", "seed"] and F.gelu is not original
    second.__exit__(None, None, None)
    assert ascend_patch.active() == [] and F.gelu is original


def test_explicit_revert_inside_a_block_wins_and_the_block_exit_does_nothing_more():
    original = F.gelu
    with ascend_patch.patched("gelu", device="sim"):
        ascend_patch.revert("gelu")
        assert F.gelu is original
        with ascend_patch.patched("gelu", device="sim"):  # a new holder of a new activation
            assert F.gelu is not original
        assert F.gelu is original
    assert ascend_patch.active() == []


def test_patched_under_an_applied_patch_leaves_it_applied():
    ascend_patch.apply("gelu", device="sim")
    with ascend_patch.patched("gelu", device="sim") as switched_on:
        assert switched_on == []
    assert ascend_patch.active() == ["gelu"]
    ascend_patch.revert()


def test_threads_storm_leaves_nothing_behind():
    original = F.gelu
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(20):
                with ascend_patch.patched("gelu", device="sim"):
                    assert "gelu" in ascend_patch.active()
                    assert sim_gelu_error() < 1e-6
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert ascend_patch.active() == [] and F.gelu is original and len(JOURNAL) == 0


@pytest.fixture
def module_dir(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    created: list[str] = []

    def write(name: str, body: str) -> None:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
        created.append(name)

    yield write
    for name in created:
        sys.modules.pop(name, None)


def add_one(original, ctx):
    def forward(self, x):
        return original(self, x) + 1

    return forward


def test_apply_while_another_thread_runs_the_target_module_body_waits_and_patches(module_dir, caplog):
    module_dir("racing_target", """
        import threading, torch
        started = threading.Event()
        go = threading.Event()
        started.set()
        go.wait(10)            # the body is still running when apply() is called

        class Block(torch.nn.Module):
            def forward(self, x):
                return x * 2
    """)
    patch = Patch("racing", "t", replaces=(Replace("racing_target:Block.forward", add_one),))
    importer = threading.Thread(target=importlib.import_module, args=("racing_target",))
    importer.start()
    while "racing_target" not in sys.modules or not hasattr(sys.modules["racing_target"], "go"):
        pass
    sys.modules["racing_target"].started.wait(10)
    threading.Timer(0.3, sys.modules["racing_target"].go.set).start()
    with caplog.at_level(logging.WARNING, logger="ascend_patch"):
        engine_apply([Planned(patch)], device="cpu")
    importer.join(10)
    block = sys.modules["racing_target"].Block()
    assert torch.equal(block(torch.ones(2)), torch.full((2,), 3.0))  # patched: x * 2 + 1
    assert not [r for r in caplog.records if "not covered" in r.getMessage()]
    rows = {r.target: r.action for r in ascend_patch.report(internal=True).records}
    assert rows["racing_target.Block.forward"] == "patched"
    ascend_patch.revert()
    assert torch.equal(block(torch.ones(2)), torch.full((2,), 2.0))


def test_apply_from_inside_the_target_module_import_is_reported_not_called_uncovered(module_dir, caplog):
    module_dir("self_applying", """
        import ascend_patch
        from ascend_patch.engine import Patch, Replace, apply
        from ascend_patch.engine.runtime import Planned
        apply([Planned(Patch("inside", "t", replaces=(Replace("self_applying:late", lambda o, c: o),)))],
              device="cpu")

        def late():
            return 1
    """)
    with caplog.at_level(logging.WARNING, logger="ascend_patch"):
        importlib.import_module("self_applying")
    rows = {r.target: (r.action, r.detail) for r in ascend_patch.report(internal=True).records}
    action, detail = rows["self_applying:late"]
    assert action == "skipped" and "still being imported (apply() ran during its import)" in detail
    assert not [r for r in caplog.records if "not covered" in r.getMessage()]
    ascend_patch.revert()


def test_reload_of_a_patched_module_patches_the_new_objects_and_revert_is_silent(module_dir):
    module_dir("reloaded_target", """
        import torch

        def scale(x):
            return x * 2

        class Block(torch.nn.Module):
            def forward(self, x):
                return scale(x)
    """)
    module = importlib.import_module("reloaded_target")
    patch = Patch("reloading", "t", replaces=(
        Replace("reloaded_target:Block.forward", add_one),
        Replace("reloaded_target:scale", lambda o, c: lambda x: o(x) * 10),
    ))
    engine_apply([Planned(patch)], device="cpu")
    old_block = module.Block()
    assert torch.equal(old_block(torch.ones(1)), torch.tensor([21.0]))
    importlib.reload(module)
    new_scale = JOURNAL.original(AttrSlot(module, "scale"))  # what the reload defined
    assert module.scale is not new_scale
    assert torch.equal(module.Block()(torch.ones(1)), torch.tensor([21.0]))  # the new objects are patched
    assert type(module.__loader__).__name__ != "_ReloadLoader"  # the module keeps its own loader
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ascend_patch.revert()
    assert module.scale is new_scale
    assert torch.equal(module.Block()(torch.ones(1)), torch.tensor([2.0]))
    assert torch.equal(old_block(torch.ones(1)), torch.tensor([2.0]))  # the old class restored too
    assert "reloaded" in {r.action for r in ascend_patch.report(internal=True).records}
    # The finder stays (as wrapt's does) and is inert with nothing on: a reload now runs unpatched.
    importlib.reload(module)
    assert torch.equal(module.Block()(torch.ones(1)), torch.tensor([2.0]))
    assert type(module.__loader__).__name__ != "_ReloadLoader"


def wrap_call(original, ctx):
    return lambda *args: f"wrapped {original(*args)}" if ctx.active else original(*args)


def test_a_lazy_import_into_a_none_global_is_found_by_revert(module_dir):
    module_dir("lazy_target", "def f():\n    return 'orig'\n")
    module_dir("lazy_user", "_f = None\n\ndef load():\n    global _f\n    from lazy_target import f as _f\n")
    target, user = importlib.import_module("lazy_target"), importlib.import_module("lazy_user")
    original = target.f
    engine_apply([Planned(Patch("lazy", "t", replaces=(Replace("lazy_target:f", wrap_call),)))], device="cpu")
    user.load()  # rebinds a global that held None: the module's number of globals does not change
    assert user._f() == "wrapped orig"
    ascend_patch.revert()
    assert user._f is original


def test_a_recipe_block_leaves_what_apply_pinned_or_another_block_holds():
    with ascend_patch.patched("dinov2", device="sim"):
        ascend_patch.apply("gelu", device="sim")
    assert ascend_patch.active() == ["gelu"]
    ascend_patch.revert()
    recipe, member = ascend_patch.patched("dinov2", device="sim"), ascend_patch.patched("gelu", device="sim")
    recipe.__enter__()
    member.__enter__()
    recipe.__exit__(None, None, None)
    assert ascend_patch.active() == ["gelu"]
    member.__exit__(None, None, None)
    assert ascend_patch.active() == []


def test_reload_neither_patches_a_skipped_patch_nor_wraps_a_wrapper_twice(module_dir):
    module_dir("helper_thing", "class Thing:\n    def method(self):\n        return 'orig'\n")
    module_dir("reexport", "from helper_thing import Thing\n\ndef h():\n    return 'orig'\n")
    module = importlib.import_module("reexport")
    skipped = Patch("npu_only", "t", replaces=(Replace("reexport:h", wrap_call),), skip_reason=lambda ctx: "not here")
    on = Patch("on", "t", replaces=(Replace("reexport:Thing.method", wrap_call),))
    engine_apply([Planned(skipped), Planned(on)], device="cpu")
    importlib.reload(module)
    assert module.h() == "orig"  # still skipped
    assert module.Thing().method() == "wrapped orig"  # Thing was not rebound: wrapped once, not twice
    assert len(JOURNAL.entries(["on"])) == 1
    ascend_patch.revert()
    assert module.Thing().method() == "orig"


def test_a_wrapper_left_behind_by_revert_stays_off_after_the_next_apply(module_dir):
    module_dir("left_target", "def k(x):\n    return x\n")
    module = importlib.import_module("left_target")
    patch = Patch("plus", "t", replaces=(Replace("left_target:k", lambda o, c: lambda x: o(x + 1) if c.active else o(x)),))
    engine_apply([Planned(patch)], device="cpu")
    inner = module.k
    module.k = users = lambda x: inner(x)  # someone wraps our wrapper: revert must leave it
    with pytest.warns(RuntimeWarning, match="not restoring left_target.k"):
        ascend_patch.revert()
    assert module.k(0) == 0
    engine_apply([Planned(patch)], device="cpu")
    assert module.k(0) == 1  # the new wrapper adds 1; the one left behind stays a pass-through
    ascend_patch.revert()
    assert module.k is users  # the user's wrapper, restored


def test_patched_restores_the_log_level_when_apply_fails():
    from ascend_patch.engine import calls

    before = calls.level()
    ascend_patch.apply("gelu", device="cpu")
    with pytest.raises(ValueError, match="already active for device 'cpu'"), \
            ascend_patch.patched("gelu", device="sim", log="off"):
        pass
    assert calls.level() == before
    ascend_patch.revert()


def test_a_builder_importing_what_another_thread_imports_does_not_deadlock(module_dir, monkeypatch):
    """Thread B imports a module a waiting patch targets; its post-import hook needs the engine lock,
    which thread A holds while a builder of A's apply imports that same module (B holds its import
    lock). B's hook hands the module to A, which patches it before releasing the lock."""
    from ascend_patch.engine import hooks

    monkeypatch.setattr(hooks, "HOOK_WAIT_S", 0.3)
    module_dir("contended", """
        import threading, time
        started = threading.Event()
        started.set()
        time.sleep(0.6)

        def f():
            return "orig"
    """)
    waiting = Patch("waiting", "t", replaces=(Replace("contended:f", wrap_call),))
    engine_apply([Planned(waiting)], device="cpu")  # not imported yet: waits for the import

    def importing_build(original, ctx):
        importlib.import_module("contended")  # blocks on B's import while this thread holds the lock
        return original

    module_dir("other_target", "def g():\n    return 1\n")
    importlib.import_module("other_target")
    importer = threading.Thread(target=importlib.import_module, args=("contended",), daemon=True)
    importer.start()
    while "contended" not in sys.modules or not hasattr(sys.modules["contended"], "started"):
        pass
    applier = threading.Thread(target=engine_apply, daemon=True, kwargs={"device": "cpu", "plan": [
        Planned(Patch("importing", "t", replaces=(Replace("other_target:g", importing_build),)))]})
    applier.start()
    importer.join(10)
    applier.join(10)
    assert not importer.is_alive() and not applier.is_alive(), "deadlocked"
    assert sys.modules["contended"].f() == "wrapped orig"
    ascend_patch.revert()
    assert sys.modules["contended"].f() == "orig"


def test_a_copy_rebound_by_a_reload_while_nothing_is_on_is_found_at_the_next_apply(module_dir):
    module_dir("reload_origin", "def f():\n    return 'orig'\n")
    module_dir("reload_copier", "from reload_origin import f\n")
    origin, copier = importlib.import_module("reload_origin"), importlib.import_module("reload_copier")
    patch = Patch("copies", "t", replaces=(Replace("reload_origin:f", wrap_call, copies=True),))
    engine_apply([Planned(patch)], device="cpu")  # the index now knows reload_copier.f
    ascend_patch.revert()
    importlib.reload(origin)
    importlib.reload(copier)  # same names, same sizes: only the reload finder tells the index
    engine_apply([Planned(patch)], device="cpu")
    assert copier.f() == "wrapped orig"  # the copy taken before apply is patched
    ascend_patch.revert()
    assert copier.f is origin.f
