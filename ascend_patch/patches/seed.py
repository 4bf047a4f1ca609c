"""seed: ``torch.cuda`` RNG functions act on the target device's generator.

Without CUDA, ``torch.cuda.manual_seed_all(0)`` is queued and never runs, so research code
that seeds "the GPU" is silently unseeded on NPU. After ``apply("seed")`` the
``torch.cuda.random`` functions (and their ``torch.cuda.*`` copies) seed and read the npu
generator, or the CPU generator on a CPU-only machine. Not needed when the target is CUDA.
"""

from __future__ import annotations

import functools
import random
import sys
from typing import Any, Callable, Iterable

import torch

from ..engine import calls
from ..engine.patch import Patch, PatchContext, Replace


def _replacements(ctx: PatchContext) -> dict[str, Callable[..., Any]]:
    """Fresh functions with torch.cuda's signatures, bound to the target's generator."""
    if ctx.device == "cpu":
        gen = torch.default_generator
        seed_fn, get_state, set_state = gen.manual_seed, gen.get_state, gen.set_state
        reseed, initial = gen.seed, gen.initial_seed
    else:
        module = getattr(torch, ctx.device)  # torch.npu, registered by torch_npu or ascend_patch.sim
        seed_fn, get_state, set_state = module.manual_seed_all, module.get_rng_state, module.set_rng_state
        reseed, initial = module.seed, module.initial_seed

    def manual_seed(seed: int) -> None:
        seed_fn(int(seed))

    def manual_seed_all(seed: int) -> None:
        seed_fn(int(seed))

    def seed() -> None:
        reseed()

    def seed_all() -> None:
        reseed()

    def initial_seed() -> int:
        return int(initial())

    def get_rng_state(device: Any = "cuda") -> torch.Tensor:
        return get_state()

    def set_rng_state(new_state: torch.Tensor, device: Any = "cuda") -> None:
        set_state(new_state)

    def get_rng_state_all() -> list[torch.Tensor]:
        return [get_state()]

    def set_rng_state_all(new_states: Iterable[torch.Tensor]) -> None:
        set_state(list(new_states)[0])

    return {f.__name__: f for f in (manual_seed, manual_seed_all, seed, seed_all, initial_seed, get_rng_state,
                                    set_rng_state, get_rng_state_all, set_rng_state_all)}


# What each torch.cuda RNG function becomes on a cpu target / an accelerator target (the migration log).
_ON_CPU = {
    "manual_seed": "torch.default_generator.manual_seed(seed)",
    "manual_seed_all": "torch.default_generator.manual_seed(seed)",
    "seed": "torch.default_generator.seed()", "seed_all": "torch.default_generator.seed()",
    "initial_seed": "torch.default_generator.initial_seed()",
    "get_rng_state": "torch.default_generator.get_state()",
    "get_rng_state_all": "[torch.default_generator.get_state()]",
    "set_rng_state": "torch.default_generator.set_state(state)",
    "set_rng_state_all": "torch.default_generator.set_state(states[0])",
}  # fmt: skip
_ON_DEVICE = {
    "manual_seed": "manual_seed_all(seed)", "manual_seed_all": "manual_seed_all(seed)", "seed": "seed()",
    "seed_all": "seed()", "initial_seed": "initial_seed()", "get_rng_state": "get_rng_state()",
    "get_rng_state_all": "[get_rng_state()]", "set_rng_state": "set_rng_state(state)",
    "set_rng_state_all": "set_rng_state(states[0])",
}  # fmt: skip


def _builder(name: str) -> Callable[[Any, PatchContext], Any]:
    def build(original: Callable[..., Any], ctx: PatchContext) -> Callable[..., Any]:
        target = _replacements(ctx)[name]
        api = f"torch.cuda.{name}"
        new = _ON_CPU[name] if ctx.device == "cpu" else f"torch.{ctx.device}.{_ON_DEVICE[name]}"
        change = f"{api}(...) -> {new}"

        @functools.wraps(target)
        def replacement(*args: Any, **kwargs: Any) -> Any:
            if calls.STATE.enabled:
                frame = sys._getframe(1)
                # torch.manual_seed calls torch.cuda.manual_seed_all itself: the user wrote the former,
                # whose meaning is unchanged, so PyTorch's own calls are not in the log.
                if not calls.called_by_torch(frame):
                    calls.log_call("seed", api, change, frame=frame)
            return target(*args, **kwargs)

        replacement.__doc__ = f"ascend_patch: torch.cuda.{name} acting on the {ctx.device} generator."
        return replacement

    return build


NAMES = (
    "manual_seed", "manual_seed_all", "seed", "seed_all", "initial_seed",
    "get_rng_state", "set_rng_state", "get_rng_state_all", "set_rng_state_all",
)  # fmt: skip


def _skip(ctx: PatchContext) -> str | None:
    return "target is cuda: torch.cuda's own RNG functions already act on it" if ctx.device == "cuda" else None


PATCH = Patch(
    name="seed",
    summary="torch.cuda.manual_seed(_all)/seed/get_rng_state/... act on the target device's generator",
    replaces=tuple(Replace(f"torch.cuda.random:{name}", _builder(name), copies=True) for name in NAMES),
    skip_reason=_skip,
)


def seed_everything(seed: int) -> int:
    """Seed Python, NumPy (if installed), torch's CPU generator and every accelerator's generator."""
    if isinstance(seed, bool) or not isinstance(seed, int):  # checked before anything is seeded
        raise TypeError(f"seed_everything(seed): seed must be an int, got {seed!r}")
    if not 0 <= seed < 2**64:  # torch.manual_seed's range (negative seeds wrap differently per library)
        raise ValueError(f"seed_everything(seed): seed must be in 0 .. 2**64 - 1, got {seed!r}")
    random.seed(seed)
    numpy = sys.modules.get("numpy")
    if numpy is None:
        try:
            import numpy
        except ImportError:
            numpy = None
    if numpy is not None:
        numpy.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds CUDA and the PrivateUse1 (npu) module when present
    npu = getattr(torch, "npu", None)
    if npu is not None and npu.is_available():
        npu.manual_seed_all(seed)
    return seed
