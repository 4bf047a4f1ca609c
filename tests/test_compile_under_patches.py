"""torch.compile keeps working under every patch, alone and as the default set, on cpu and the simulated NPU.

Inductor and dynamo query ``torch.cuda`` (device properties for the cache key, the CUDA RNG state
around every compiled frame): under the ``device`` patch those internals must still hear the truth.
"""

from __future__ import annotations

import pytest
import torch
from conftest import device_of

import ascend_patch
from ascend_patch.patches import DEFAULT_PATCHES


class Block(torch.nn.Module):
    """Written the CUDA way: a factory with device="cuda" inside the compiled forward."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(8, 16)
        self.fc2 = torch.nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = torch.ones(4, device="cuda") if torch.cuda.is_available() else torch.ones(4, device=x.device)
        return self.fc2(torch.nn.functional.gelu(self.fc1(x))) + bias


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _compiled_matches_eager(target: str, backend: str, *names: str) -> None:
    device = device_of(target)
    torch.manual_seed(0)
    model = Block()
    x = torch.randn(3, 8)
    with ascend_patch.patched(*names, device=target):
        model.to(device)
        inputs = x.to(device)
        eager = model(inputs)
        compiled = torch.compile(model, backend=backend)(inputs)
    assert compiled.device.type == device
    torch.testing.assert_close(compiled.cpu(), eager.cpu(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", DEFAULT_PATCHES)
def test_compile_under_each_patch(name, target):
    _compiled_matches_eager(target, "aot_eager", name)


def test_inductor_under_the_default_set(target):
    """The failures seen before: inductor read the host's CUDA device properties (gcnArchName) on a cpu
    target, and dynamo called an unmapped torch.cuda.get_rng_state with "device" alone on the sim."""
    _compiled_matches_eager(target, "inductor")
    _compiled_matches_eager(target, "inductor", "device")


def test_compile_after_revert_and_apply_again(target):
    """Dynamo builds its table of torch functions once, by name: built under the patch it must still name
    the builtins, or the next activation's wrappers are traced into and their builtin is refused."""
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    code = textwrap.dedent(f"""
        import torch, ascend_patch
        for round in range(2):
            with ascend_patch.patched(device={target!r}):
                f = torch.compile(lambda p: torch.where(p < 0.5, torch.zeros_like(p), p), fullgraph=True)
                out = f(torch.rand(4).cuda())
                assert out.device.type == {device_of(target)!r}
            torch._dynamo.reset()
        print("ok")
    """)
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]
