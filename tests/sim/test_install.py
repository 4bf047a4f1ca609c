"""install(): what it registers, idempotence, refusals and the environment variables (fresh processes)."""

from __future__ import annotations

import importlib.util
import sys

import torch

from ascend_patch import sim

from .helpers import run_python


def test_install_registers_npu_torch_npu_and_is_idempotent(sim_npu):
    assert sim.is_installed()
    sim.install()  # a second call changes nothing
    assert sim.is_installed() and torch.npu is sim_npu
    assert torch._C._get_privateuse1_backend_name() == "npu"
    assert hasattr(torch.Tensor, "npu") and hasattr(torch.nn.Module, "npu")
    import torch_npu

    assert sys.modules["torch_npu"] is torch_npu and torch_npu.npu is torch.npu
    assert torch_npu.__version__ == sim.TORCH_NPU_VERSION == "2.13.0.sim"
    spec = importlib.util.find_spec("torch_npu")
    assert spec is not None and spec.name == "torch_npu" and "simulated" in spec.origin
    from torch.npu.amp import GradScaler, autocast  # noqa: F401 - the import itself is the check
    from torch_npu.npu import memory_allocated  # noqa: F401


def test_transformers_sees_the_simulated_npu(sim_npu):
    from transformers.utils import import_utils, is_torch_npu_available

    assert is_torch_npu_available() is True
    assert is_torch_npu_available(check_device=True) is True
    assert import_utils._is_package_available("torch_npu")[0]


def test_refusals_and_environment_variables_in_fresh_processes(tmp_path):
    # 1. PrivateUse1 already taken by another backend.
    renamed = run_python(
        """
        import torch
        torch.utils.rename_privateuse1_backend("foo")
        from ascend_patch import sim
        try:
            sim.install()
        except sim.SimInstallError as exc:
            print("REFUSED", exc)
        print("INSTALLED", sim.is_installed())
        """
    )
    assert renamed.returncode == 0, renamed.stderr
    assert "REFUSED" in renamed.stdout and "renamed to 'foo'" in renamed.stdout
    assert "fresh process" in renamed.stdout and "INSTALLED False" in renamed.stdout

    # 2. A real torch_npu importable (a stand-in package on the path; it is never imported).
    fake = tmp_path / "site" / "torch_npu"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise RuntimeError('the simulator must not import a real torch_npu')\n")
    real = run_python(
        """
        import torch
        from ascend_patch import sim
        try:
            sim.install()
        except sim.SimInstallError as exc:
            print("REFUSED", exc)
        print("RENAMED", torch._C._get_privateuse1_backend_name())
        """,
        extra_path=[str(tmp_path / "site")],
    )
    assert real.returncode == 0, real.stderr
    assert "REFUSED" in real.stdout and "real torch_npu is importable" in real.stdout
    assert "RENAMED privateuseone" in real.stdout  # refused before touching anything

    # 3. ASCEND_PATCH_SIMULATE_NPU and TORCH_NPU_USE_COMPATIBLE_IMPL (read once, at the first GELU).
    env = run_python(
        """
        import os
        import torch
        import torch.nn.functional as F
        from ascend_patch import sim
        print("NOT SET", sim.install_from_env(), hasattr(torch, "npu"))
        os.environ["ASCEND_PATCH_SIMULATE_NPU"] = "0"
        print("ZERO", sim.install_from_env())
        os.environ["ASCEND_PATCH_SIMULATE_NPU"] = "1"
        print("SET", sim.install_from_env(), torch.npu.is_available())
        x = torch.linspace(-5, 5, 101)
        print("EXACT", torch.equal(F.gelu(x.npu()).cpu(), F.gelu(x)))
        os.environ["TORCH_NPU_USE_COMPATIBLE_IMPL"] = "0"
        print("STILL EXACT", torch.equal(F.gelu(x.npu()).cpu(), F.gelu(x)))
        """,
        env={"TORCH_NPU_USE_COMPATIBLE_IMPL": "1"},
    )
    assert env.returncode == 0, env.stderr
    assert env.stdout.split("\n")[:5] == ["NOT SET False False", "ZERO False", "SET True True", "EXACT True",
                                          "STILL EXACT True"]  # fmt: skip
