"""Tensors on the simulated npu:0: factories, copies, views, in-place ops, devices, autograd."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from ascend_patch.sim import SimTensor

pytestmark = pytest.mark.usefixtures("sim_npu")

NPU = "npu:0"  # compared as strings: torch.device("npu") parses only after install


def test_factories_make_npu_tensors_with_the_right_values():
    cases = {
        "zeros": (torch.zeros(2, 3, device="npu"), torch.zeros(2, 3)),
        "ones": (torch.ones(4, dtype=torch.int64, device="npu"), torch.ones(4, dtype=torch.int64)),
        "full": (torch.full((2,), 3.5, device="npu"), torch.full((2,), 3.5)),
        "arange": (torch.arange(1, 10, 2, device="npu"), torch.arange(1, 10, 2)),
        "linspace": (torch.linspace(0, 1, 5, device="npu"), torch.linspace(0, 1, 5)),
        "eye": (torch.eye(3, device="npu"), torch.eye(3)),
        "tensor": (torch.tensor([[1.0, 2.0], [3.0, 4.0]], device="npu"), torch.tensor([[1.0, 2.0], [3.0, 4.0]])),
        "tril_indices": (torch.tril_indices(3, 3, device="npu"), torch.tril_indices(3, 3)),
    }
    for name, (npu, cpu) in cases.items():
        assert isinstance(npu, SimTensor), name
        assert str(npu.device) == NPU, name
        assert npu.dtype == cpu.dtype, name
        assert torch.equal(npu.cpu(), cpu), name
    empty = torch.empty(5, 7, device="npu:0", dtype=torch.float16)
    assert (empty.shape, empty.dtype, str(empty.device)) == (torch.Size([5, 7]), torch.float16, NPU)


def test_copies_between_host_and_device_are_real_copies():
    host = torch.arange(6.0).reshape(2, 3)
    dev = host.to("npu")
    assert str(dev.device) == NPU and dev.is_npu and not host.is_npu
    host.add_(100)  # the device copy must not see it
    back = dev.cpu()
    assert type(back) is torch.Tensor and back.device.type == "cpu"
    assert torch.equal(back, torch.arange(6.0).reshape(2, 3))
    back.zero_()  # nor the device tensor this
    assert dev.sum().item() == 15.0
    assert str(torch.ones(3).npu().device) == NPU
    assert torch.equal(torch.ones(3, device="npu").to("cpu", torch.int32), torch.ones(3, dtype=torch.int32))
    dst = torch.zeros(3, device="npu")
    dst.copy_(torch.tensor([1.0, 2.0, 3.0]))
    assert dst.tolist() == [1.0, 2.0, 3.0]
    cpu_dst = torch.zeros(3)
    cpu_dst.copy_(dst)
    assert cpu_dst.tolist() == [1.0, 2.0, 3.0]


def test_views_share_memory_and_in_place_ops_return_the_same_tensor():
    base = torch.zeros(4, 4, device="npu")
    row = base[1]
    flat = base.view(-1)
    assert isinstance(row, SimTensor) and str(row.device) == NPU
    result = row.add_(2.0)
    assert result is row
    flat[0] = 7.0
    assert base[1].tolist() == [2.0] * 4
    assert base[0, 0].item() == 7.0
    assert base.sum().item() == 15.0
    transposed = base.t()
    transposed.mul_(2)
    assert base[0, 0].item() == 14.0
    assert base.data_ptr() == flat.data_ptr() != 0


def test_out_arguments_and_shape_changing_in_place_ops():
    a = torch.arange(6.0, device="npu").reshape(2, 3)
    out = torch.empty(2, 3, device="npu")
    assert torch.add(a, a, out=out) is out
    assert out.tolist() == [[0.0, 2.0, 4.0], [6.0, 8.0, 10.0]]
    grown = torch.empty(0, device="npu")  # out= resizes its argument
    assert torch.mul(a, 3, out=grown) is grown
    assert grown.shape == (2, 3) and grown[1, 2].item() == 15.0
    b = torch.arange(6.0, device="npu").reshape(2, 3)
    b.t_()
    assert b.shape == (3, 2) and b[2, 1].item() == 5.0
    b.unsqueeze_(0)
    assert b.shape == (1, 3, 2)
    c = torch.zeros(2, device="npu")
    c.resize_(3, 3)
    assert c.shape == (3, 3) and str(c.device) == NPU


def test_mixing_npu_and_cpu_tensors_raises_the_hardware_error():
    dev = torch.randn(2, 3, device="npu")
    host = torch.randn(2, 3)
    message = "Expected all tensors to be on the same device, but found at least two devices, npu:0 and cpu!"
    for op in (lambda: dev + host, lambda: torch.cat([dev, host]), lambda: host.mul_(dev), lambda: dev @ host.T):
        with pytest.raises(RuntimeError) as excinfo:
            op()
        assert str(excinfo.value) == message
    # Allowed as on CUDA: 0-dim CPU tensors, and CPU index tensors.
    assert str((dev * torch.tensor(2.0)).device) == NPU
    assert torch.equal(dev[torch.tensor([1, 0])].cpu(), dev.cpu()[[1, 0]])


def test_core_ops_match_cpu():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 6, 8)
    w = torch.randn(3, 8, 3, 3)
    weight, bias = torch.randn(16, 8), torch.randn(16)
    q, k, v = torch.randn(3, 2, 4, 5, 8).unbind(0)
    ops = {
        "sdpa": lambda d: F.scaled_dot_product_attention(q.to(d), k.to(d), v.to(d)),
        "sdpa causal": lambda d: F.scaled_dot_product_attention(q.to(d), k.to(d), v.to(d), is_causal=True),
        "layer_norm": lambda d: F.layer_norm(x.to(d), (8,)),
        "linear": lambda d: F.linear(x.to(d), weight.to(d), bias.to(d)),
        "conv2d": lambda d: F.conv2d(x.permute(0, 3, 1, 2).to(d), w.to(d), padding=1),
        "softmax": lambda d: x.to(d).softmax(-1),
        "cat": lambda d: torch.cat([x.to(d), x.to(d) * 2], dim=1),
        "index": lambda d: x.to(d)[:, 1:3, ::2][x.to(d)[:, 1:3, ::2] > 0],
        "sort": lambda d: x.to(d).sort(dim=-1).values,
        "interpolate": lambda d: F.interpolate(x.to(d), scale_factor=2, mode="bilinear"),
    }
    for name, op in ops.items():
        expected = op("cpu")
        got = op("npu")
        assert str(got.device) == NPU, name
        torch.testing.assert_close(got.cpu(), expected, rtol=1e-5, atol=1e-6, msg=name)


def test_scalars_printing_numpy_and_saving(tmp_path):
    t = torch.tensor([1.5, -2.0], device="npu")
    assert t[0].item() == 1.5
    assert f"{t[1]:.1f}" == "-2.0"
    assert repr(t) == "tensor([ 1.5000, -2.0000], device='npu:0')"
    assert repr(torch.ones(2, device="npu", requires_grad=True) * 2) == (
        "tensor([2., 2.], device='npu:0', grad_fn=<MulBackward0>)"
    )
    with pytest.raises(TypeError, match=r"can't convert npu:0 device type tensor to numpy. Use Tensor.cpu\(\)"):
        t.numpy()
    assert t.cpu().numpy().tolist() == [1.5, -2.0]

    model = torch.nn.Linear(3, 2).npu()
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    torch.save(state, tmp_path / "state.pt")
    loaded = torch.load(tmp_path / "state.pt")
    assert loaded["weight"].device.type == "cpu"
    assert torch.equal(loaded["weight"], model.weight.detach().cpu())
    torch.save(t, tmp_path / "t.pt")  # a device tensor saves and loads back onto the device
    again = torch.load(tmp_path / "t.pt")
    assert str(again.device) == NPU and torch.equal(again.cpu(), t.cpu())
    assert torch.load(tmp_path / "t.pt", map_location="cpu").device.type == "cpu"


def test_module_to_npu_keeps_parameters_and_trains_like_cpu():
    torch.manual_seed(0)
    cpu_model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.GELU(approximate="tanh"), torch.nn.Linear(8, 3))
    npu_model = copy.deepcopy(cpu_model)
    params_before = list(npu_model.parameters())
    npu_opt = torch.optim.AdamW(npu_model.parameters(), lr=1e-2)  # created before the move, as usual
    cpu_opt = torch.optim.AdamW(cpu_model.parameters(), lr=1e-2)
    assert npu_model.npu() is npu_model
    after = list(npu_model.parameters())
    assert all(a is b for a, b in zip(params_before, after))  # same Parameter objects, swapped in place
    for p in after:
        assert isinstance(p, torch.nn.Parameter) and p.requires_grad and str(p.device) == NPU

    x, y = torch.randn(5, 6), torch.randint(0, 3, (5,))
    for _ in range(3):
        for model, opt, dev in ((cpu_model, cpu_opt, "cpu"), (npu_model, npu_opt, "npu")):
            opt.zero_grad()
            loss = F.cross_entropy(model(x.to(dev)), y.to(dev))
            loss.backward()
            opt.step()
    assert str(npu_model[0].weight.grad.device) == NPU
    for p_cpu, p_npu in zip(cpu_model.parameters(), npu_model.parameters()):
        torch.testing.assert_close(p_npu.detach().cpu(), p_cpu.detach(), rtol=1e-5, atol=1e-6)
        assert not torch.equal(p_npu.detach().cpu(), p_cpu.detach() * 0)
    assert repr(npu_model[0].bias).startswith("Parameter containing:\ntensor([")


def test_gradients_flow_back_to_a_cpu_leaf():
    leaf = torch.randn(3, 3, requires_grad=True)
    (leaf.to("npu") * 3).sum().backward()
    assert leaf.grad.device.type == "cpu"
    assert torch.equal(leaf.grad, torch.full((3, 3), 3.0))


def test_manual_seed_makes_npu_random_numbers_deterministic_and_separate_from_cpu():
    torch.manual_seed(123)
    a = torch.randn(4, device="npu")
    b = torch.rand(4, device="npu")
    torch.manual_seed(123)
    assert torch.equal(torch.randn(4, device="npu").cpu(), a.cpu())
    assert torch.equal(torch.rand(4, device="npu").cpu(), b.cpu())
    torch.manual_seed(123)
    cpu_first = torch.randn(4)
    torch.manual_seed(123)
    torch.randn(100, device="npu")  # draws from the device generator only
    assert torch.equal(torch.randn(4), cpu_first)
    torch.manual_seed(7)
    d1 = F.dropout(torch.ones(1000, device="npu"), 0.5)
    torch.manual_seed(7)
    d2 = F.dropout(torch.ones(1000, device="npu"), 0.5)
    assert torch.equal(d1.cpu(), d2.cpu()) and 300 < int((d1 == 0).sum()) < 700


def test_deepcopy_and_data_assignment():
    model = torch.nn.Linear(2, 2).npu()
    clone = copy.deepcopy(model)
    assert str(clone.weight.device) == NPU and isinstance(clone.weight, torch.nn.Parameter)
    with torch.no_grad():
        clone.weight.fill_(0)
    assert model.weight.abs().sum().item() > 0
    param = torch.nn.Parameter(torch.ones(2, device="npu"))
    param.data = torch.zeros(3, device="npu")
    assert param.shape == (3,) and param.sum().item() == 0.0
    with pytest.raises(RuntimeError, match="incompatible tensor type"):
        param.data = torch.zeros(3)  # a CPU tensor cannot become an npu parameter's data


def test_torch_load_onto_the_device_keeps_shared_storages(tmp_path):
    import gc

    from ascend_patch.sim import serialization

    base = torch.arange(12.0).reshape(3, 4)
    torch.save({"w": base, "row": base[1], "ids": torch.tensor([1, 2])}, tmp_path / "ckpt.pt")
    gc.collect()
    start = torch.npu.memory_allocated()
    for location in ("npu", "npu:0", torch.device("npu", 0), {"cpu": "npu:0"}):
        loaded = torch.load(tmp_path / "ckpt.pt", map_location=location)
        assert {str(t.device) for t in loaded.values()} == {NPU}
        assert torch.equal(loaded["w"].cpu(), base) and loaded["ids"].tolist() == [1, 2]
    loaded["row"].add_(100)  # one storage in the file, one storage after loading
    assert loaded["w"][1].tolist() == [104.0, 105.0, 106.0, 107.0]
    assert torch.npu.memory_allocated() - start == 12 * 4 + 2 * 8
    assert not serialization._host  # placeholders are gone once torch.load returns
    del loaded
    gc.collect()
    assert torch.npu.memory_allocated() == start
    with pytest.raises(RuntimeError, match="device_count\\(\\) is 1"):
        torch.load(tmp_path / "ckpt.pt", map_location="npu:1")

    model = torch.nn.Linear(3, 2).npu()  # a whole pickled module keeps npu Parameters
    torch.save(model, tmp_path / "model.pt")
    again = torch.load(tmp_path / "model.pt", weights_only=False)
    assert isinstance(again.weight, torch.nn.Parameter) and str(again.weight.device) == NPU
    assert torch.equal(again.weight.detach().cpu(), model.weight.detach().cpu())


def test_pin_memory_works_with_the_simulated_accelerator():
    host = torch.arange(6.0).reshape(2, 3)
    pinned = host.pin_memory()
    assert pinned.device.type == "cpu" and torch.equal(pinned, host)
    assert pinned.data_ptr() != host.data_ptr()
    assert str(pinned.to("npu", non_blocking=True).device) == NPU
