"""A training script body written for a CUDA machine, as research code has it. Not a test module.

It calls ``.cuda()``, factories with ``device="cuda"``, ``.to("cuda:0")``, ``torch.cuda.Event``
timing, ``torch.cuda.synchronize()`` and ``torch.cuda.max_memory_allocated()``; test_device_script.py
runs it unmodified under ascend_patch and compares it with the same computation written for CPU.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(8, 32)
        self.fc2 = torch.nn.Linear(32, 4)
        self.register_buffer("scale", torch.ones(32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(x)) * self.scale
        # An upstream habit: a constant built "on the GPU" inside forward.
        bias = torch.full((h.shape[-1],), 0.01, device="cuda")
        return self.fc2(h + bias)


def train(data: torch.Tensor, labels: torch.Tensor, steps: int = 4) -> dict[str, Any]:
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    model = Net().cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    data, labels = data.cuda(non_blocking=True), labels.to("cuda:0")
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    losses = []
    for step in range(steps):
        index = torch.arange(step * 8, (step + 1) * 8, device=torch.device("cuda"))
        loss = F.cross_entropy(model(data[index]), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    end.record()
    torch.cuda.synchronize()
    return {
        "losses": losses,
        "state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "device": str(next(model.parameters()).device),
        "elapsed_ms": start.elapsed_time(end),
        "peak_bytes": torch.cuda.max_memory_allocated(),
    }
