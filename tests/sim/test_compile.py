"""torch.compile on the simulated npu: dynamo traces the wrappers, AOTAutograd desugars them to their
CPU inner tensors, and the backend (aot_eager here, inductor in one slower test) compiles CPU code."""

from __future__ import annotations

import copy
import gc

import pytest
import torch
import torch.nn.functional as F
from torch import nn


def _graphs(backend: str):
    """A backend that counts the graphs it is given, then hands them to ``backend``."""
    calls = []

    def counting(gm, example_inputs):  # type: ignore[no-untyped-def]
        calls.append(gm)
        return torch._dynamo.lookup_backend(backend)(gm, example_inputs)

    return counting, calls


@pytest.fixture(autouse=True)
def _fresh_dynamo(sim_npu):
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_compiled_function_matches_eager_and_stays_on_npu():
    x = torch.randn(4, 4, device="npu")
    f = lambda a: (a * 2).sin() + a.exp().mean()  # noqa: E731
    backend, graphs = _graphs("aot_eager")
    out = torch.compile(f, backend=backend, fullgraph=True)(x)
    assert out.device == torch.device("npu:0") and type(out) is type(x)
    torch.testing.assert_close(out, f(x))
    assert len(graphs) == 1


def test_compiled_module_moved_to_npu_trains_like_eager():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.LayerNorm(32), nn.Linear(32, 4)).to("npu")
    ref = copy.deepcopy(model)
    opt, opt_ref = (torch.optim.AdamW(m.parameters(), lr=1e-2) for m in (model, ref))
    compiled = torch.compile(model, backend="aot_eager")
    x, y = torch.randn(8, 16, device="npu"), torch.randn(8, 4, device="npu")
    for _ in range(2):
        for m, o in ((compiled, opt), (ref, opt_ref)):
            o.zero_grad()
            F.mse_loss(m(x), y).backward()
            o.step()
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        assert p.device == torch.device("npu:0") and p.grad.device == torch.device("npu:0")
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-5)


def test_factories_and_host_copies_inside_compiled_code_are_traced():
    def f(a, host):
        made = torch.ones(4, device="npu") + torch.arange(4, device=a.device)
        return (a + made + torch.tensor([1.0, 2, 3, 4], device="npu") + host.to("npu")).cpu()

    a, host = torch.randn(4, 4, device="npu"), torch.randn(4)
    backend, graphs = _graphs("aot_eager")
    out = torch.compile(f, backend=backend, fullgraph=True)(a, host)
    assert out.device.type == "cpu"
    torch.testing.assert_close(out, f(a, host))
    assert len(graphs) == 1


def test_gelu_keeps_the_simulated_tanh_form():
    x = torch.randn(100, device="npu") * 3
    torch.testing.assert_close(torch.compile(F.gelu, backend="aot_eager")(x), F.gelu(x))


def test_eager_ops_after_a_graph_break_are_not_compiled():
    def f(a):
        b = a.sin()
        torch._dynamo.graph_break()
        return b.cos() + a.sum().item()

    x = torch.randn(4, device="npu")
    backend, graphs = _graphs("aot_eager")
    torch.testing.assert_close(torch.compile(f, backend=backend)(x), f(x))
    # sin | cos, sum | + item: nothing from the simulator's own __torch_dispatch__ / dispatch, which
    # the eager .item() in the middle runs (without the frame marking dynamo compiled those too)
    assert len(graphs) == 3 and not any("_inner" in gm.code or "_unwrap" in gm.code for gm in graphs)


def test_memory_counters_ignore_tracing(sim_npu):
    gc.collect()
    before = sim_npu.memory_allocated()
    f = torch.compile(lambda a: (a @ a).relu().sum(0), backend="aot_eager", dynamic=True)
    for n in (8, 9, 10):
        f(torch.randn(n, n, device="npu"))
    gc.collect()
    assert sim_npu.memory_allocated() == before and isinstance(sim_npu.max_memory_allocated(), int)


def test_cpu_tensors_still_compile():
    x = torch.randn(4, 4)
    out = torch.compile(lambda a: (a * 2).sin(), backend="aot_eager")(x)
    assert type(out) is torch.Tensor and out.device.type == "cpu"


def test_inductor_compiles_the_inner_cpu_graph():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)).to("npu")
    x = torch.randn(4, 8, device="npu", requires_grad=True)
    out = torch.compile(model, backend="inductor")(x)
    out.sum().backward()
    torch.testing.assert_close(out, model(x))
    assert out.device == torch.device("npu:0") and x.grad.device == torch.device("npu:0")
