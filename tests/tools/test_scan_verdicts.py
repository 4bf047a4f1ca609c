"""scan's verdicts follow what the patches and shims declare: take a target away and the verdict changes."""

from __future__ import annotations

import dataclasses
import types

import pytest

from ascend_patch.tools.scan import UNHANDLED, scan_source, verdicts

SOURCE = '''\
import torch
from xformers.ops import memory_efficient_attention
g = torch.cuda.CUDAGraph()
h = torch.zeros(2).type("torch.cuda.HalfTensor")
torch.cuda.manual_seed_all(0)
'''


def verdict_by_line() -> dict[int, str]:
    return {f.line: f.patch for f in scan_source(SOURCE)}


@pytest.fixture
def fresh_caches():
    caches = (verdicts.targets, verdicts._cuda_objects, verdicts.cuda_name)
    for cache in caches:
        cache.cache_clear()
    yield
    for cache in caches:
        cache.cache_clear()


def test_verdicts_come_from_the_patch_targets(monkeypatch, fresh_caches):
    assert verdict_by_line() == {2: "attention", 3: "device", 4: "device", 5: "seed"}
    real = verdicts._patches()
    dropped = {"torch.cuda:CUDAGraph", "torch:Tensor.type"}
    device = dataclasses.replace(real["device"],
                                 replaces=tuple(r for r in real["device"].replaces if r.target not in dropped))
    monkeypatch.setattr(verdicts, "_patches", lambda: {**real, "device": device})
    for cache in (verdicts.targets, verdicts._cuda_objects, verdicts.cuda_name):
        cache.cache_clear()
    found = {f.line: f for f in scan_source(SOURCE)}
    assert found[3].patch == UNHANDLED and "torch.cuda.CUDAGraph" in found[3].note
    assert found[4].patch == UNHANDLED and "torch:Tensor.type" in found[4].note
    assert found[5].patch == "seed"  # the seed patch still declares it


def test_import_verdicts_come_from_the_shim_modules(monkeypatch):
    shim = types.ModuleType("xformers.ops")  # a shim that lost memory_efficient_attention
    monkeypatch.setattr(verdicts, "_shim_module", lambda module: shim)
    found = {f.line: f for f in scan_source(SOURCE)}
    assert found[2].patch == UNHANDLED and "memory_efficient_attention" in found[2].note
    shim.memory_efficient_attention = object()
    assert {f.line: f.patch for f in scan_source(SOURCE)}[2] == "attention"
