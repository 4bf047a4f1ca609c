"""A user's torch.Generator subclass builds instances of its own class under the "device" patch.

Whenever the class was defined: while the patch is on (it inherits the stand-in), before apply (it
never meets the stand-in: a mapping ``__new__`` is put on it and taken off at revert), or under an
earlier apply (its MRO keeps that apply's stand-in, which maps under the apply active now). On the
simulated NPU an instance on the device is a subclass of the user's class that is also the
simulator's generator (PyTorch's Python backend cannot make a PrivateUse1 generator), so there it is
``isinstance``, not ``type(...) is``. Seeded draws equal the CPU reference; revert restores by identity.
"""

from __future__ import annotations

import pytest
import torch
from conftest import device_of

import ascend_patch
from ascend_patch.patches.device.factories import _class_routes

SEED, N = 11, 6


def reference() -> torch.Tensor:
    return torch.randn(N, generator=torch._C.Generator().manual_seed(SEED))


def check_own_instance(gen: torch.Generator, cls: type, target: str) -> None:
    assert isinstance(gen, cls) and isinstance(gen, torch.Generator) and isinstance(gen, torch._C.Generator)
    assert gen.device.type == device_of(target)
    if target == "cpu":
        assert type(gen) is cls
    else:  # the simulator's device generator: a subclass of cls, same name
        assert issubclass(type(gen), cls) and type(gen).__qualname__ == cls.__qualname__


class DefinedBeforeApply(torch.Generator):  # at import: the simulator's stand-in is torch.Generator, no patch on
    def draw(self, n: int) -> torch.Tensor:
        return torch.randn(n, generator=self, device="cuda")


class SeededBeforeApply(torch.Generator):
    """A subclass with its own constructor signature: ``__new__`` takes the seed, ``__init__`` keeps it."""

    def __new__(cls, device=None, seed=0):
        gen = super().__new__(cls, device)
        gen.manual_seed(seed)
        return gen

    def __init__(self, device=None, seed=0):
        self.seed_given = seed


def test_a_subclass_defined_under_the_patch_builds_itself(target):
    original = torch.Generator
    with ascend_patch.patched("device", device=target):

        class MyGen(torch.Generator):
            def draw(self, n: int) -> torch.Tensor:
                return torch.randn(n, generator=self, device="cuda")

        gen = MyGen(device="cuda")
        check_own_instance(gen, MyGen, target)
        got = gen.manual_seed(SEED).draw(N)
        positional = MyGen("cuda:0")
        check_own_instance(positional, MyGen, target)
        assert type(MyGen()) is MyGen and MyGen().device.type == "cpu"
        assert type(MyGen(device="cpu")) is MyGen
        plain = torch.Generator(device="cuda")
        assert isinstance(plain, torch.Generator) and not isinstance(plain, MyGen)
    assert got.device.type == device_of(target)
    assert torch.equal(got.cpu(), reference())
    assert torch.Generator is original
    assert type(MyGen()) is MyGen  # after revert it still builds itself (on the CPU)


def test_subclasses_defined_before_apply_build_themselves(target):
    original = torch.Generator
    own_new = vars(SeededBeforeApply)["__new__"]
    with ascend_patch.patched("device", device=target):
        gen = DefinedBeforeApply(device="cuda")
        check_own_instance(gen, DefinedBeforeApply, target)
        got = gen.manual_seed(SEED).draw(N)
        seeded = SeededBeforeApply("cuda", seed=SEED)
        check_own_instance(seeded, SeededBeforeApply, target)
        assert seeded.seed_given == SEED and seeded.initial_seed() == SEED
        from_seeded = torch.randn(N, generator=seeded, device="cuda")
        assert type(DefinedBeforeApply()) is DefinedBeforeApply
    assert torch.equal(got.cpu(), reference()) and torch.equal(from_seeded.cpu(), reference())
    # Revert takes off what apply put on the user's classes, by identity.
    assert torch.Generator is original
    assert "__new__" not in vars(DefinedBeforeApply)
    assert vars(SeededBeforeApply)["__new__"] is own_new
    assert _class_routes == {}
    with pytest.raises((RuntimeError, AssertionError)):  # unpatched, "cuda" means CUDA again
        DefinedBeforeApply(device="cuda")


def test_a_subclass_made_under_one_apply_maps_under_the_next(target):
    original = torch.Generator
    with ascend_patch.patched("device", device=target):

        class Early(torch.Generator):
            pass

    class Late(torch.Generator):  # defined between two applies: torch.Generator is the original again
        pass

    assert torch.Generator is original
    with pytest.raises((RuntimeError, AssertionError)):
        Early(device="cuda")  # the first apply's stand-in is in Early's MRO, and passes through now
    # Another option: a new patch context, not the first one's.
    with ascend_patch.patched("device", device=target, cuda_is_available="true"):
        for cls in (Early, Late):
            gen = cls(device="cuda")
            check_own_instance(gen, cls, target)
            assert torch.equal(torch.randn(N, generator=gen.manual_seed(SEED), device="cuda").cpu(), reference())
    assert "__new__" not in vars(Late) and torch.Generator is original


def test_generators_made_under_the_patch_are_torch_generators(target):
    original = torch.Generator
    with ascend_patch.patched("device", device=target):
        made = [torch.Generator(device="cuda"), torch.Generator("cuda:0"), torch.Generator(), torch.default_generator]
        assert all(isinstance(g, torch.Generator) and isinstance(g, original) for g in made)
        assert issubclass(type(made[0]), torch.Generator) and issubclass(original, torch.Generator)
        assert [g.device.type for g in made] == [device_of(target)] * 2 + ["cpu"] * 2
        assert type(made[2]) is torch._C.Generator  # the original's own instances, not a stand-in's
    assert torch.Generator is original
    assert all(isinstance(g, torch.Generator) for g in made)
