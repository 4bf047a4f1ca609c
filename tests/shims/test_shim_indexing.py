"""xformers.ops indexing shim (scaled_index_add, index_select_cat) against plain-torch references.

The references are written from xformers' docstrings ("equivalent pytorch code"), as explicit
per-row loops in float64, and differentiated by autograd; nothing here calls the shim.
"""

from __future__ import annotations

import importlib
import sys

import pytest
import torch

import ascend_patch
from ascend_patch.patches.attention import shim_module_names
from ascend_patch.shims.xformers import ops as xops
from ascend_patch.shims.xformers.ops import indexing
from conftest import device_of


def ref_scaled_index_add(input: torch.Tensor, index: torch.Tensor, source: torch.Tensor,
                         scaling: torch.Tensor | None, alpha: float) -> torch.Tensor:
    """Row by row, float64: out[index[i]] = input[index[i]] + alpha * scaling * source[i]."""
    rows = list(input.double().unbind(0))
    for i, j in enumerate(index.tolist()):
        added = source[i].double() * (scaling.double() if scaling is not None else 1.0)
        rows[j] = rows[j] + alpha * added
    return torch.stack(rows)


def ref_index_select_cat(sources, indices) -> torch.Tensor:
    pieces = [source[j].double().reshape(-1) for source, index in zip(sources, indices) for j in index.tolist()]
    return torch.cat(pieces)


def leaf(*shape: int, device: str, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(device).requires_grad_(True)


def grads_of(out: torch.Tensor, grad_out: torch.Tensor, *tensors: torch.Tensor) -> list[torch.Tensor | None]:
    found = torch.autograd.grad(out, tensors, grad_out.to(out.dtype).to(out.device), allow_unused=True)
    return [None if g is None else g.cpu().double() for g in found]


@pytest.mark.parametrize("with_scaling", [False, True], ids=["plain", "scaled"])
def test_scaled_index_add_forward_and_gradients(target, with_scaling):
    device = device_of(target)
    batch, m, d, alpha = 7, 5, 6, 0.73
    base = leaf(batch, m, d, device=device, seed=0)
    source = leaf(4, m, d, device=device, seed=1)
    scaling = leaf(d, device=device, seed=2) if with_scaling else None
    index = torch.tensor([5, 0, 3, 6]).to(device)
    params = [base, source] + ([scaling] if with_scaling else [])

    inp = base.clone()  # written in place, as upstream: not a leaf
    out = xops.scaled_index_add(inp, index, source, scaling, alpha)
    assert out is inp and out.device.type == device and out.dtype == torch.float32

    ref_params = [p.detach().cpu().double().requires_grad_(True) for p in params]
    ref_scaling = ref_params[2] if with_scaling else None
    ref = ref_scaled_index_add(ref_params[0], index.cpu(), ref_params[1], ref_scaling, alpha)
    torch.testing.assert_close(out.detach().cpu().double(), ref.detach(), rtol=1e-6, atol=1e-6)
    # Rows not in index are untouched, bit for bit.
    untouched = [1, 2, 4]
    assert torch.equal(out.detach().cpu()[untouched], base.detach().cpu()[untouched])

    grad_out = torch.randn(batch, m, d, generator=torch.Generator().manual_seed(3))
    got = grads_of(out, grad_out, *params)
    expected = torch.autograd.grad(ref, ref_params, grad_out.double())
    for name, g, e in zip(["input", "source", "scaling"], got, expected):
        assert g is not None, name
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5, msg=name)


def test_scaled_index_add_matches_torch_index_add_in_bf16(target):
    device = device_of(target)
    g = torch.Generator().manual_seed(4)
    inp = torch.randn(6, 3, 8, generator=g).bfloat16()
    source = torch.randn(3, 3, 8, generator=g).bfloat16()
    scaling = torch.randn(8, generator=g).bfloat16()
    index = torch.tensor([4, 1, 2])
    expected = torch.index_add(inp, 0, index, scaling * source, alpha=0.5)  # upstream's documented equivalent
    out = xops.scaled_index_add(inp.to(device), index.to(device), source.to(device), scaling.to(device), 0.5)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out.cpu(), expected)


def test_scaled_index_add_rejects_what_upstream_rejects():
    x = torch.zeros(4, 2, 3)
    with pytest.raises(ValueError, match="3-D"):
        xops.scaled_index_add(torch.zeros(4, 6), torch.tensor([0]), torch.zeros(1, 6))
    with pytest.raises(ValueError, match="agree"):
        xops.scaled_index_add(x, torch.tensor([0]), torch.zeros(1, 2, 4))
    with pytest.raises(ValueError, match="one entry per source row"):
        xops.scaled_index_add(x, torch.tensor([0, 1]), torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match=r"\[D\]"):
        xops.scaled_index_add(x, torch.tensor([0]), torch.zeros(1, 2, 3), torch.ones(2))
    # In place, like upstream's kernel: a leaf that requires grad cannot be written.
    with pytest.raises(RuntimeError, match="leaf"):
        xops.scaled_index_add(torch.zeros(4, 2, 3, requires_grad=True), torch.tensor([0]), torch.ones(1, 2, 3))


def test_index_select_cat_forward_and_gradients(target):
    device = device_of(target)
    # Two crop sizes of a packed batch, as DINOv2 builds them: [B, N*D] views of one leaf.
    (b0, n0), (b1, n1), d = (5, 3), (4, 2), 6
    src = leaf(b0 * n0 + b1 * n1, d, device=device, seed=5)
    sources = [src[: b0 * n0].reshape(b0, n0 * d), src[b0 * n0:].reshape(b1, n1 * d)]
    indices = [torch.tensor([3, 0, 4]).to(device), torch.tensor([2, 1]).to(device)]

    out = xops.index_select_cat(sources, indices)
    assert out.shape == (3 * n0 * d + 2 * n1 * d,) and out.device.type == device

    src_ref = src.detach().cpu().double().requires_grad_(True)
    sources_ref = [src_ref[: b0 * n0].reshape(b0, n0 * d), src_ref[b0 * n0:].reshape(b1, n1 * d)]
    ref = ref_index_select_cat(sources_ref, [i.cpu() for i in indices])
    assert torch.equal(out.detach().cpu().double(), ref.detach())  # a gather: exact

    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(6))
    (got,) = grads_of(out, grad_out, src)
    (expected,) = torch.autograd.grad(ref, [src_ref], grad_out.double())
    assert torch.equal(got, expected)
    # src rows of sample 1 of the first crop (never selected) get no gradient; sample 0's do.
    assert got[:n0].abs().sum() > 0 and got[n0: 2 * n0].abs().sum() == 0


def test_index_select_cat_rejects_mismatched_pairs():
    with pytest.raises(ValueError, match="2 sources but 1"):
        xops.index_select_cat([torch.zeros(2, 3), torch.zeros(2, 3)], [torch.tensor([0])])
    with pytest.raises(ValueError, match="2-D"):
        xops.index_select_cat([torch.zeros(2, 3, 4)], [torch.tensor([0])])


def test_exported_and_walked_as_upstream_module_names():
    assert {"scaled_index_add", "index_select_cat"} <= set(xops.__all__)
    assert xops.scaled_index_add is indexing.scaled_index_add
    assert "xformers.ops.indexing" in shim_module_names("xformers")


def test_dinov2_block_imports_resolve_to_the_shim(target):
    with ascend_patch.patched("attention", device=target):
        from xformers.ops import fmha, index_select_cat, scaled_index_add  # what dinov2's block.py imports

        assert scaled_index_add is indexing.scaled_index_add and index_select_cat is indexing.index_select_cat
        assert fmha.BlockDiagonalMask is xops.fmha.BlockDiagonalMask
        assert importlib.import_module("xformers.ops.indexing") is indexing
    assert "xformers.ops.indexing" not in sys.modules  # reverted: the shim is gone again
