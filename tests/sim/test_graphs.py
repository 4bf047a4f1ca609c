"""The eager emulation of CUDA/NPU graphs (ascend_patch.sim.graphs), on CPU tensors and on the simulated npu.

Every test compares a captured-and-replayed region with the same code run eagerly; the root conftest
installs the simulator for the whole session.
"""

from __future__ import annotations

import copy
import logging
import threading

import pytest
import torch
from torch import nn

from ascend_patch.sim import SimTensor, graphs
from ascend_patch.sim.graphs import Graph, graph, graph_pool_handle, is_current_stream_capturing, make_graphed_callables


@pytest.fixture(params=["cpu", "npu"])
def dev(request) -> str:
    return request.param


def mlp(dev: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3)).to(dev)


def inputs(dev: str, n: int, seed: int = 1) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 6, generator=gen).to(dev) for _ in range(n)]


def test_mlp_forward_replay_matches_eager(dev):
    model = mlp(dev)
    static_in = torch.zeros(4, 6, device=dev)
    g = Graph()
    with torch.no_grad(), graph(g):
        static_out = model(static_in)
    assert static_out.device.type == dev
    if dev == "npu":
        assert isinstance(static_out, SimTensor)
    assert g.num_recorded_ops > 0
    for x in inputs(dev, 3):
        static_in.copy_(x)
        g.replay()
        with torch.no_grad():
            torch.testing.assert_close(static_out, model(x))


def test_capture_with_grad_enabled_and_under_inference_mode(dev):
    model = mlp(dev)
    x, y = inputs(dev, 2)
    static_in = x.clone()
    g = Graph()
    with graph(g):  # autograd records: the outputs carry grad_fn, replay still refills them
        static_out = model(static_in)
    assert static_out.requires_grad
    static_in.copy_(y)
    g.replay()
    torch.testing.assert_close(static_out.detach(), model(y).detach())

    g2 = Graph()
    with torch.inference_mode():
        infer_in = x.clone()
        with graph(g2):
            infer_out = model(infer_in)
    assert infer_out.is_inference()
    with torch.inference_mode():
        infer_in.copy_(y)
    g2.replay()  # outside inference mode, replay still writes the inference tensors (as kernels would)
    torch.testing.assert_close(infer_out, model(y).detach())


def test_inplace_ops_in_captured_region(dev):
    w = torch.randn(6, 5, device=dev)
    acc = torch.full((4, 5), 10.0, device=dev)  # pre-existing memory the graph writes
    static_in = torch.zeros(4, 6, device=dev)

    def region(x: torch.Tensor) -> torch.Tensor:
        h = x @ w
        h.relu_()
        h.add_(1.5)
        h[:, 0].mul_(-2)  # in-place through a view of an intermediate
        acc.add_(h)
        return h

    g = Graph()
    with graph(g):
        static_out = region(static_in)
    # Captured kernels do not run on the device: the capture leaves pre-existing memory as it was.
    torch.testing.assert_close(acc, torch.full((4, 5), 10.0, device=dev))

    expected_acc = acc.clone()
    for x in inputs(dev, 2):
        static_in.copy_(x)
        g.replay()
        expected = torch.relu(x @ w) + 1.5
        expected[:, 0] *= -2
        expected_acc += expected
        torch.testing.assert_close(static_out, expected)
        torch.testing.assert_close(acc, expected_acc)  # each replay writes it again


def test_batchnorm_running_stats_and_autocast(dev):
    # native_batch_norm writes its running statistics without declaring it in its schema
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8)).to(dev).train()
    twin = copy.deepcopy(model)
    static_in = torch.zeros(4, 6, device=dev)
    g = Graph()
    with graph(g), torch.autocast(dev, dtype=torch.bfloat16):
        static_out = model(static_in)
    bn, twin_bn = model[1], twin[1]
    torch.testing.assert_close(bn.running_mean, twin_bn.running_mean, rtol=0, atol=0)  # capture did not run
    assert bn.num_batches_tracked.item() == 0
    for x in inputs(dev, 2):
        static_in.copy_(x)
        g.replay()
        with torch.autocast(dev, dtype=torch.bfloat16):
            expected = twin(x)
        assert static_out.dtype == torch.bfloat16
        torch.testing.assert_close(static_out, expected)
    torch.testing.assert_close(bn.running_mean, twin_bn.running_mean)
    torch.testing.assert_close(bn.running_var, twin_bn.running_var)
    assert bn.num_batches_tracked.item() == twin_bn.num_batches_tracked.item() == 2


def test_view_of_intermediate_as_static_output(dev, tmp_path):
    static_in = torch.zeros(4, 6, device=dev)
    g = Graph()
    with graph(g):
        h = static_in * 3 + 1
        expanded = h[:, 1:4].unsqueeze(0).expand(2, -1, -1)  # copying into this would raise (overlap)
        transposed = h.t()
        reshaped = h.t().reshape(-1)  # clone + _unsafe_view: an alias the schema does not declare
        row = h[1]
    assert expanded._base is h or expanded.untyped_storage().data_ptr() == h.untyped_storage().data_ptr()
    # Views are not replayed (they alias memory the other ops refill): only the ops computing h, and
    # the clone that reshape of a transposed tensor makes; its _unsafe_view is an undeclared alias.
    g.enable_debug_mode()
    g.debug_dump(str(tmp_path / "ops.txt"))
    ops = [line.split(": ", 1)[1].split("(", 1)[0] for line in (tmp_path / "ops.txt").read_text().splitlines()]
    assert ops == ["aten.mul.Tensor", "aten.add.Tensor", "aten.clone.default"]
    for x in inputs(dev, 2):
        static_in.copy_(x)
        g.replay()
        ref = x * 3 + 1
        torch.testing.assert_close(expanded, ref[:, 1:4].unsqueeze(0).expand(2, -1, -1))
        torch.testing.assert_close(transposed, ref.t())
        torch.testing.assert_close(reshaped, ref.t().reshape(-1))
        torch.testing.assert_close(row, ref[1])


def test_factory_ops_inside_capture(dev):
    static_in = torch.zeros(4, 6, device=dev)
    g = Graph()
    with graph(g):
        buf = torch.zeros(4, 6, device=dev)
        buf += static_in  # would accumulate across replays if zeros were not run again
        ramp = torch.arange(6, device=dev, dtype=torch.float32)
        scratch = torch.empty(8, device=dev)
        scratch[:4].copy_(static_in[:, 0])  # the rest of scratch is never written in the graph
        static_out = buf * 2 + ramp
    scratch[4:] = 7.0  # memory of an allocation keeps its contents across replays, as on the device
    for x in inputs(dev, 3):
        static_in.copy_(x)
        g.replay()
        torch.testing.assert_close(static_out, x * 2 + torch.arange(6, device=dev, dtype=torch.float32))
        torch.testing.assert_close(scratch[:4], x[:, 0])
        torch.testing.assert_close(scratch[4:], torch.full((4,), 7.0, device=dev))


def test_random_ops_draw_fresh_numbers_each_replay(dev):
    drop = nn.Dropout(p=0.5).train()
    static_in = torch.ones(64, 32, device=dev)
    torch.manual_seed(123)
    g = Graph()
    with graph(g):
        static_out = drop(static_in)
    first_capture_value = static_out.clone()
    outs = []
    for _ in range(3):
        g.replay()
        outs.append(static_out.clone())
    assert all(o.shape == (64, 32) for o in outs)
    assert not torch.equal(outs[0], outs[1]) and not torch.equal(outs[1], outs[2])
    for o in outs:  # still dropout: zeros and 2s
        assert set(o.unique().tolist()) <= {0.0, 2.0}
        assert 0.3 < (o == 0).float().mean().item() < 0.7
    # capture did not consume random numbers (as with CUDA's graph-safe generators), so the first
    # replay draws what eager code draws right after the same seed
    torch.manual_seed(123)
    torch.testing.assert_close(outs[0], drop(static_in))
    torch.testing.assert_close(first_capture_value, outs[0])


def test_training_step_capture_replays_like_eager_steps(dev):
    model = mlp(dev)
    twin = copy.deepcopy(model)
    loss_fn = nn.MSELoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    twin_opt = torch.optim.SGD(twin.parameters(), lr=0.05, momentum=0.9)
    data = inputs(dev, 4, seed=3)
    targets = [torch.randn(4, 3).to(dev) for _ in range(4)]

    def eager_step(m, o, x, t):
        o.zero_grad(set_to_none=True)
        loss = loss_fn(m(x), t)
        loss.backward()
        o.step()
        return loss.detach()

    static_in, static_target = data[0].clone(), targets[0].clone()
    for m, o in ((model, opt), (twin, twin_opt)):  # warmup, as the CUDA recipe does on a side stream
        eager_step(m, o, data[0], targets[0])

    g = Graph()
    opt.zero_grad(set_to_none=True)
    before = [p.detach().clone() for p in model.parameters()]
    with graph(g):
        static_loss = loss_fn(model(static_in), static_target)
        static_loss.backward()
        opt.step()
    for p, b in zip(model.parameters(), before):  # the captured step did not run
        torch.testing.assert_close(p.detach(), b)

    for x, t in zip(data[1:3], targets[1:3]):
        static_in.copy_(x)
        static_target.copy_(t)
        g.replay()
        expected_loss = eager_step(twin, twin_opt, x, t)
        torch.testing.assert_close(static_loss.detach(), expected_loss)
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p.detach(), q.detach())
        torch.testing.assert_close(p.grad, q.grad)
    for p, q in zip(model.parameters(), twin.parameters()):  # momentum buffers too
        torch.testing.assert_close(opt.state[p]["momentum_buffer"], twin_opt.state[q]["momentum_buffer"])


def test_nested_capture_and_misuse_raise(dev):
    g, inner = Graph(), Graph()
    with pytest.raises(RuntimeError, match="without a preceding successful capture"):
        g.replay()
    x = torch.ones(3, device=dev)
    with graph(g):
        y = x + 1
        with pytest.raises(RuntimeError, match="nested"):
            inner.capture_begin()
        with pytest.raises(RuntimeError, match="nested"), graph(inner):
            pass
    with pytest.raises(RuntimeError, match="already owns a captured graph"):
        g.capture_begin()
    with pytest.raises(RuntimeError, match="capture error mode"):
        inner.capture_begin(capture_error_mode="strict")
    g.reset()
    assert g.num_recorded_ops == 0
    with graph(g):  # after reset the graph captures again
        z = x * 5
    x.fill_(2)
    g.replay()
    torch.testing.assert_close(z, torch.full((3,), 10.0, device=dev))
    torch.testing.assert_close(y, torch.full((3,), 2.0, device=dev))  # the old recording was dropped


def test_is_current_stream_capturing_only_inside_capture(dev):
    assert not is_current_stream_capturing()
    g = Graph()
    seen_in_other_thread: list[bool] = []
    with graph(g):
        assert is_current_stream_capturing()
        worker = threading.Thread(target=lambda: seen_in_other_thread.append(is_current_stream_capturing()))
        worker.start()
        worker.join()
        torch.ones(2, device=dev) * 2
    assert seen_in_other_thread == [False]
    assert not is_current_stream_capturing()
    with pytest.raises(ValueError), graph(Graph()):
        assert is_current_stream_capturing()
        raise ValueError("body failed")
    assert not is_current_stream_capturing()  # the capture ended with the exception


def test_make_graphed_callables_match_eager(dev):
    module = mlp(dev)
    twin = copy.deepcopy(module)

    def fn(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a * b).sin()

    sample = torch.randn(4, 6, device=dev, requires_grad=True)
    graphed_module = make_graphed_callables(module, (sample,))
    assert graphed_module is module  # a module stays the same object, as with CUDA
    graphed_mod2, graphed_fn = make_graphed_callables((twin, fn), ((sample,), (sample, sample)))
    for x in inputs(dev, 2):
        x.requires_grad_(True)
        out = graphed_module(x)
        ref = mlp(dev)(x)
        torch.testing.assert_close(out, ref)
        torch.testing.assert_close(graphed_mod2(x), ref)
        (gx,) = torch.autograd.grad(graphed_fn(x, x).sum(), x)
        torch.testing.assert_close(gx, torch.cos(x * x) * 2 * x)
    with pytest.raises(AssertionError, match="only Tensors"):
        make_graphed_callables(fn, (sample, 3))
    module.register_forward_hook(lambda *a: None)
    with pytest.raises(AssertionError, match="hooks"):
        make_graphed_callables(module, (sample,))


def test_pools_debug_dump_and_first_capture_log(dev, tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(graphs, "_logged_first_capture", False)
    handle = graph_pool_handle()
    assert isinstance(handle, tuple) and handle != graph_pool_handle()
    g1, g2 = Graph(), Graph()
    x = torch.ones(3, device=dev)
    with caplog.at_level(logging.INFO, logger="ascend_patch.sim"):
        with graph(g1, pool=handle):
            y = (x + 1).exp()
        with graph(g2, pool=g1.pool()):
            y * 2
    messages = [r.getMessage() for r in caplog.records if r.name == "ascend_patch.sim" and r.levelno == logging.INFO]
    assert messages == [f"CUDA/NPU graph emulated by replaying {g1.num_recorded_ops} recorded ops"]
    assert g1.pool() == handle and g2.pool() == handle
    with pytest.raises(RuntimeError):
        Graph().pool()
    with pytest.warns(UserWarning, match="debug not enabled"):
        g1.debug_dump(str(tmp_path / "no.txt"))
    g1.enable_debug_mode()
    g1.debug_dump(str(tmp_path / "graph.txt"))
    lines = (tmp_path / "graph.txt").read_text().splitlines()
    assert len(lines) == g1.num_recorded_ops == 2
    assert "aten.add" in lines[0] and "aten.exp" in lines[1]
    with pytest.raises(RuntimeError, match="no native"):
        g1.raw_cuda_graph()
    assert torch.equal(y, torch.full((3,), 2.0, device=dev).exp())
