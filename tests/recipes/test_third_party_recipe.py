"""A third-party recipe registered through the ``ascend_patch.recipes`` entry point (the walkthrough's example).

tests/fixtures/recipe_plugin holds an installed-looking distribution (a dist-info folder with
entry_points.txt) and the CUDA-written model it ports; docs/writing-a-recipe.md walks through it.
Each test runs in a fresh interpreter: entry points are read once per process, and the recipe is
applied before the model code is imported, as a user would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

PLUGIN = Path(__file__).resolve().parents[1] / "fixtures" / "recipe_plugin"


def run_python(code: str, *paths: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASCEND_PATCH")}
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          timeout=180)


def test_entry_point_recipe_is_listed_applied_before_import_and_reverted():
    proc = run_python(
        """
        import os
        import torch
        from torch.overrides import TorchFunctionMode
        import ascend_patch

        class Float64OnNpu(TorchFunctionMode):
            hits = 0
            def __torch_function__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                if isinstance(out, torch.Tensor) and out.dtype is torch.float64 and out.device.type == "npu":
                    Float64OnNpu.hits += 1
                return out

        assert "toyseg" in ascend_patch.list_recipes()
        try:
            ascend_patch.apply("toysge")
        except ValueError as exc:
            assert "Did you mean 'toyseg'?" in str(exc), exc
        else:
            raise AssertionError("unknown recipe accepted")

        on = ascend_patch.apply("toyseg", device="sim")   # before toyseg is imported
        assert on == ["gelu", "seed", "autocast", "toyseg"], on
        import toyseg
        from toyseg import model as toyseg_model
        toyseg.fix_random_seeds(0)
        net = toyseg.ToySeg().eval()
        x = torch.randn(2, 3, 8, 8)
        with torch.no_grad():
            reference = net(x)                      # the CPU takes the upstream code paths
            with Float64OnNpu():
                out = net.to("npu")(x.to("npu")).cpu()
        assert Float64OnNpu.hits == 0, Float64OnNpu.hits
        cos = torch.nn.functional.cosine_similarity(out.flatten(), reference.flatten(), dim=0).item()
        rel = ((out - reference).abs().mean() / reference.abs().mean()).item()
        assert cos >= 0.99999 and rel <= 1e-3, (cos, rel)
        report = ascend_patch.report()
        patched = [r.target for r in report.filter(patch="toyseg", action="patched")]
        assert "toyseg.model.coordinate_grid" in patched and "sys.modules['toyseg.kernels']" in patched, patched
        (grid,) = report.filter(patch="toyseg", action="call")
        # Attributed to the model code that called the recipe's wrapper, not to the plugin's own frame.
        assert grid.where.startswith(os.path.relpath(toyseg_model.__file__) + ":"), grid
        assert "ascend_patch_toyseg" not in str(report), str(report)
        assert report.stats["gelu"]["modules_routed"] == 1

        from ascend_patch.engine import JOURNAL
        from ascend_patch.engine.slots import resolve
        original = JOURNAL.original(resolve("toyseg.model:coordinate_grid"))
        ascend_patch.revert("toyseg")
        assert ascend_patch.active() == []
        assert toyseg_model.coordinate_grid is original and not hasattr(original, "__wrapped__")
        with torch.no_grad(), Float64OnNpu():
            net(x.to("npu"))                        # unpatched: float64 on the device again
        assert Float64OnNpu.hits > 0
        print("ok")
        """,
        PLUGIN,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("ok")


def test_a_triton_kernel_module_is_served_by_pytorch_code():
    """docs/writing-a-recipe.md, "Replacing a custom kernel": toyseg.norm imports a Triton kernel module."""
    proc = run_python(
        """
        import sys
        import torch
        import ascend_patch

        try:
            import toyseg.norm
        except ModuleNotFoundError as exc:
            assert exc.name == "triton", exc             # what every Ascend machine sees without the recipe
        else:
            raise AssertionError("toyseg.norm imported without triton")
        sys.modules.pop("toyseg.kernels", None)

        for device in ("cpu", "sim"):
            with ascend_patch.patched("toyseg", device=device):
                from toyseg.norm import RMSNorm
                import toyseg.kernels as kernels
                assert kernels.__name__ == "ascend_patch_toyseg.kernels"
                norm = RMSNorm(8)
                norm.weight.data.uniform_(0.5, 1.5)
                x = torch.randn(4, 8)
                target = "npu" if device == "sim" else "cpu"
                got = norm.to(target)(x.to(target)).cpu()
            reference = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight.detach().cpu()
            torch.testing.assert_close(got, reference)
            assert "toyseg.kernels" not in sys.modules       # revert removed the stand-in
            sys.modules.pop("toyseg.norm", None)
        print("ok")
        """,
        PLUGIN,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("ok")


def test_a_broken_plugin_is_listed_with_its_error_and_others_still_work(tmp_path):
    dist = tmp_path / "broken_recipe-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-recipe\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[ascend_patch.recipes]\nbroken = no_such_module:RECIPE\n")
    proc = run_python(
        """
        import logging
        import ascend_patch
        listed = ascend_patch.list_recipes()
        assert "failed to load from no_such_module:RECIPE" in listed["broken"], listed["broken"]
        assert "toyseg" in listed and "dinov2" in listed
        try:
            ascend_patch.apply("broken")
        except ModuleNotFoundError as exc:
            assert "no_such_module" in str(exc)
        else:
            raise AssertionError("a broken recipe applied")
        assert ascend_patch.active() == []
        print("ok")
        """,
        PLUGIN, tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # No logging configured by the program: the warning still reaches stderr, with the one prefix.
    assert "ascend_patch: warning: recipe entry point broken = no_such_module:RECIPE failed to load" in proc.stderr
