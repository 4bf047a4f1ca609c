"""seed: torch.cuda RNG functions act on the target device's generator."""

from __future__ import annotations

import random
import sys

import numpy as np
import torch

import ascend_patch
from conftest import device_of


def draw(device: str) -> torch.Tensor:
    return torch.rand(5, device=device)


def test_cuda_seeding_seeds_the_target_generator(target):
    device = device_of(target)
    torch.manual_seed(123)
    expected = draw(device)
    with ascend_patch.patched("seed", device=target):
        torch.manual_seed(999)
        torch.cuda.manual_seed_all(123)
        first = draw(device)
        torch.cuda.manual_seed(123)
        again = draw(device)
        assert torch.cuda.initial_seed() == 123
    torch.testing.assert_close(first, expected, rtol=0, atol=0)
    torch.testing.assert_close(again, expected, rtol=0, atol=0)


def test_without_the_patch_cuda_seeding_does_nothing_here(target):
    device = device_of(target)
    torch.manual_seed(999)
    torch.cuda.manual_seed_all(123)  # queued for a CUDA that never comes
    unseeded = draw(device)
    torch.manual_seed(123)
    assert not torch.equal(unseeded, draw(device))


def test_rng_state_round_trip(target):
    device = device_of(target)
    with ascend_patch.patched("seed", device=target):
        torch.cuda.manual_seed_all(7)
        state = torch.cuda.get_rng_state()
        states = torch.cuda.get_rng_state_all()
        first = draw(device)
        torch.cuda.set_rng_state(state)
        torch.testing.assert_close(draw(device), first, rtol=0, atol=0)
        torch.cuda.set_rng_state_all(states)
        torch.testing.assert_close(draw(device), first, rtol=0, atol=0)
        torch.cuda.seed()
        assert not torch.equal(draw(device), first)


def test_copies_taken_at_import_are_patched_and_restored(target):
    sys.modules.pop("seed_copy_holder", None)
    import seed_copy_holder as holder

    original = holder.manual_seed_all
    device = device_of(target)
    torch.manual_seed(5)
    expected = draw(device)
    with ascend_patch.patched("seed", device=target):
        torch.manual_seed(0)
        holder.manual_seed_all(5)
        torch.testing.assert_close(draw(device), expected, rtol=0, atol=0)
        copies = {r.target for r in ascend_patch.report().filter(patch="seed", action="copy")}
        assert "seed_copy_holder.manual_seed_all" in copies and "torch.cuda.manual_seed_all" in copies
    assert holder.manual_seed_all is original is torch.cuda.random.manual_seed_all
    sys.modules.pop("seed_copy_holder", None)


def test_seed_everything_is_reproducible(target):
    device = device_of(target)

    def sample():
        return random.random(), float(np.random.rand()), draw("cpu"), draw(device)

    ascend_patch.seed_everything(42)
    a = sample()
    ascend_patch.seed_everything(42)
    b = sample()
    assert a[:2] == b[:2]
    torch.testing.assert_close(a[2], b[2], rtol=0, atol=0)
    torch.testing.assert_close(a[3], b[3], rtol=0, atol=0)


def test_seed_patch_is_skipped_on_cuda_targets():
    from ascend_patch.engine.patch import PatchContext
    from ascend_patch.patches.seed import PATCH

    assert "cuda" in PATCH.skip_reason(PatchContext("seed", "cuda", {}))
    assert PATCH.skip_reason(PatchContext("seed", "npu", {})) is None
