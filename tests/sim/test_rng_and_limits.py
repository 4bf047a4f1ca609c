"""The simulated NPU's generators, inference mode, device indices, and what it refuses instead of crashing."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from .helpers import run_python


def test_device_generator_draws_like_a_seeded_generator(sim_npu):
    gen = torch.Generator(device="npu")
    assert isinstance(gen, torch.Generator) and gen.device == torch.device("npu", 0)
    assert gen.initial_seed() == torch.Generator().initial_seed()  # PyTorch's default seed, as on a device
    gen.manual_seed(7)
    first = torch.randn(5, device="npu", generator=gen)
    gen.manual_seed(7)
    again = torch.randn(5, device="npu", generator=gen)
    assert first.device.type == "npu"
    torch.testing.assert_close(first.cpu(), again.cpu(), rtol=0, atol=0)
    # The stream is the CPU generator's for the same seed: draws are reproducible across runs.
    torch.testing.assert_close(first.cpu(), torch.randn(5, generator=torch.Generator().manual_seed(7)))


def test_device_generator_feeds_every_random_op(sim_npu):
    gen = torch.Generator(device="npu").manual_seed(3)
    state = gen.get_state()
    probs = torch.rand(6, device="npu")
    draws = [
        torch.multinomial(probs, 3, generator=gen),
        torch.randint(0, 10, (4,), device="npu", generator=gen),
        torch.randperm(5, device="npu", generator=gen),
        torch.rand(3, device="npu", generator=gen),
        torch.empty(4, device="npu").normal_(generator=gen),
        torch.empty(4, device="npu").uniform_(generator=gen),
        torch.bernoulli(probs, generator=gen),
    ]
    assert all(d.device.type == "npu" for d in draws)
    gen.set_state(state)  # replaying from the saved state gives the same numbers
    assert torch.equal(torch.multinomial(probs, 3, generator=gen).cpu(), draws[0].cpu())
    # The default device generator is untouched by draws from a user generator.
    torch.manual_seed(11)
    expected = torch.randn(3, device="npu").cpu()
    torch.manual_seed(11)
    torch.randn(3, device="npu", generator=gen)
    assert torch.equal(torch.randn(3, device="npu").cpu(), expected)


def test_generator_of_another_device_is_refused(sim_npu):
    with pytest.raises(RuntimeError, match="Expected a 'npu' device type for generator but found 'cpu'"):
        torch.randn(3, device="npu", generator=torch.Generator())


def test_generator_pickles_subclasses_and_bad_indices(sim_npu):
    gen = torch.Generator(device="npu").manual_seed(5)
    restored = pickle.loads(pickle.dumps(gen))
    assert restored.device.type == "npu" and torch.equal(restored.get_state(), gen.get_state())
    assert type(torch.Generator()) is torch._C.Generator  # other devices: PyTorch's own class

    class Seeded(torch.Generator):
        pass

    assert type(Seeded()) is Seeded and isinstance(Seeded(), torch.Generator)
    with pytest.raises(RuntimeError, match="Invalid device ordinal 3"):
        torch.Generator(device="npu:3")
    assert torch.npu.default_generators[0].device.type == "npu"


def test_views_in_inference_mode(sim_npu):
    weight = torch.randn(4, 4, device="npu", requires_grad=True)
    with torch.inference_mode():
        view = weight.view(16).unsqueeze(0).expand(2, 16)  # views of a normal tensor stay normal
        assert not view.is_inference()
        out = view * 2
        assert out.is_inference() and out.device.type == "npu"
        fresh = torch.randn(3, 4, device="npu")
        assert fresh.t().is_inference() and fresh[0].is_inference()
        torch.testing.assert_close(weight.detach()[0].cpu() * 2, out[0, :4].cpu())


def test_device_storages_raise_instead_of_crashing(sim_npu):
    from ascend_patch.sim import SimUnsupportedError

    for make in (
        lambda: torch.UntypedStorage(10, device="npu"),
        lambda: torch.UntypedStorage(10).to(device="npu"),
        lambda: torch.empty(3, device="npu").to_sparse(),
    ):
        with pytest.raises(SimUnsupportedError, match="simulated NPU .* does not support"):
            make()
    assert torch.UntypedStorage(4).device.type == "cpu"  # host storages are untouched


def test_device_indices_follow_the_local_world_size():
    """Under torchrun (LOCAL_WORLD_SIZE=2) rank 1's npu:1 exists and is served by npu:0."""
    result = run_python(
        """
        import json, torch
        from ascend_patch import sim
        sim.install()
        torch.npu.set_device(1)
        x = torch.ones(2, device="npu:1") + torch.ones(2, device="npu")
        try:
            torch.zeros(1, device="npu:2")
            beyond = None
        except RuntimeError as exc:
            beyond = str(exc)
        print(json.dumps([torch.npu.device_count(), torch.npu.current_device(), str(x.device), beyond]))
        """,
        env={"LOCAL_WORLD_SIZE": "2"},
    )
    assert result.returncode == 0, result.stderr
    count, current, device, beyond = json.loads(result.stdout.strip().splitlines()[-1])
    assert (count, current, device) == (2, 1, "npu:0")
    assert "Invalid device ordinal 2" in beyond


def test_bad_device_count_is_one_line():
    result = run_python("from ascend_patch import sim; sim.install()", env={"ASCEND_PATCH_SIM_DEVICES": "two"})
    assert result.returncode != 0
    assert "ASCEND_PATCH_SIM_DEVICES='two' is not a device count" in result.stderr
