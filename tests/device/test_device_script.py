"""A CUDA-written training script runs unmodified under "device" and matches its CPU version."""

from __future__ import annotations

from . import device_cuda_script as script
import torch
import torch.nn.functional as F
from conftest import device_of

import ascend_patch



def reference(data: torch.Tensor, labels: torch.Tensor, steps: int = 4) -> dict:
    """device_cuda_script.train written for the CPU, by hand: the numbers to match."""

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = torch.nn.Linear(8, 32)
            self.fc2 = torch.nn.Linear(32, 4)
            self.register_buffer("scale", torch.ones(32))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.fc1(x)) * self.scale
            return self.fc2(h + torch.full((h.shape[-1],), 0.01))

    torch.manual_seed(0)
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for step in range(steps):
        index = torch.arange(step * 8, (step + 1) * 8)
        loss = F.cross_entropy(model(data[index]), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return {"losses": losses, "state": {k: v.detach() for k, v in model.state_dict().items()}}


def test_cuda_script_runs_unmodified_and_matches_cpu(target):
    generator = torch.Generator().manual_seed(42)
    data, labels = torch.randn(32, 8, generator=generator), torch.randint(0, 4, (32,), generator=generator)
    expected = reference(data, labels)
    with ascend_patch.patched("device", device=target):
        got = script.train(data, labels)
        stats = ascend_patch.report().stats["device"]
    assert got["device"].startswith(device_of(target))
    # cpu: the very same arithmetic; sim: the simulated NPU's numerics.
    tol = 0.0 if target == "cpu" else 1e-4
    torch.testing.assert_close(torch.tensor(got["losses"]), torch.tensor(expected["losses"]), rtol=tol, atol=tol)
    for key, value in expected["state"].items():
        torch.testing.assert_close(got["state"][key], value, rtol=tol, atol=tol, msg=key)
    assert got["elapsed_ms"] > 0
    if target == "cpu":
        assert got["peak_bytes"] == 0  # no device memory on a cpu target
    else:
        assert got["peak_bytes"] >= 32 * 8 * 4  # at least the data lived on the simulated NPU
    # Every CUDA spelling in the script went through a mapping (and only those were counted).
    assert stats["Module.cuda"] == 1 and stats["Tensor.cuda"] == 1 and stats["Tensor.to"] == 1
    assert stats["torch.full"] == 4 and stats["torch.arange"] == 4
    assert stats["torch.cuda.synchronize"] == 1
