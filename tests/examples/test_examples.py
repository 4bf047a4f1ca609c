"""Every script in examples/ runs (tiny config) on the CPU and the simulated NPU, in a fresh interpreter.

A fresh interpreter matters: each example applies its recipe before the model code is imported,
as a user's script does. ``--check`` makes the example compare its device outputs with the same
model on the CPU in fp32; the numbers it prints are asserted here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
FIXTURES = ROOT / "tests" / "fixtures"
REPOS = FIXTURES / "repos"

# script -> extra arguments (the upstream clones of the models that are not on PyPI are fixtures)
MODEL_EXAMPLES = {
    "dinov2_features.py": [],
    "aimv2_features.py": [],
    "mobilevit_classify.py": [],
    "mingtok_reconstruct.py": ["--repo", str(REPOS / "Ming-UniVision")],
    "vtp_features.py": ["--repo", str(REPOS / "VTP")],
}
CHECK_LINE = re.compile(r"^\s+(\S+)\s+cos ([\d.]+)\s+max diff \S+\s+rel err ([\d.]+) %$", re.M)


def run_example(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASCEND_PATCH")}
    return subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)


def checked_outputs(stdout: str) -> dict[str, tuple[float, float]]:
    return {name: (float(cos), float(rel) / 100) for name, cos, rel in CHECK_LINE.findall(stdout)}


def test_every_example_is_covered():
    assert {p.name for p in EXAMPLES.glob("*.py")} == {*MODEL_EXAMPLES, "port_any_cuda_repo.py"}


@pytest.mark.parametrize("device", ["cpu", "sim"])
@pytest.mark.parametrize("script", sorted(MODEL_EXAMPLES))
def test_model_example_runs_and_matches_the_cpu(script, device):
    proc = run_example(script, *MODEL_EXAMPLES[script], "--tiny", "--device", device, "--check", "--iters", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "random weights" in proc.stdout  # says so when no --model-path is given
    assert f"device {device}, dtype fp32" in proc.stdout  # a simulated run is labelled sim, never npu
    outputs = checked_outputs(proc.stdout)
    assert outputs, proc.stdout
    for name, (cos, rel) in outputs.items():
        assert cos >= 0.99999 and rel <= 1e-3, (name, cos, rel)
    assert "ascend_patch: " in proc.stdout  # the summary of what the patches did


def test_example_without_repo_says_how_to_get_it():
    proc = run_example("mingtok_reconstruct.py", "--tiny", "--device", "cpu")
    assert proc.returncode != 0
    assert "git clone https://github.com/inclusionAI/Ming-UniVision" in proc.stderr + proc.stdout


def test_aimv2_example_loads_an_ml_aim_checkpoint(tmp_path):
    import safetensors.torch
    from transformers import Aimv2VisionConfig, Aimv2VisionModel

    from ascend_patch.recipes.aimv2_checkpoint import hf_to_ml_aim
    from ascend_patch.tools.models import get_spec

    torch.manual_seed(3)
    model = Aimv2VisionModel(Aimv2VisionConfig(**get_spec("aimv2").tiny_config)).eval()
    path = tmp_path / "aimv2_tiny_ml_aim.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in hf_to_ml_aim(model.state_dict()).items()}, path)
    proc = run_example("aimv2_features.py", "--ml-aim-checkpoint", str(path), "--tiny", "--device", "sim", "--check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "(converted)" in proc.stdout and "random weights" not in proc.stdout
    cos, rel = checked_outputs(proc.stdout)["patch_tokens"]
    assert cos >= 0.99999 and rel <= 1e-3


def test_mobilevit_example_reads_a_real_image_and_folder(tmp_path):
    from PIL import Image

    from ascend_patch.tools.models import get_spec

    get_spec("mobilevit").build(tiny=True).model.save_pretrained(tmp_path / "ckpt")
    image = tmp_path / "stripes.png"
    Image.fromarray((torch.arange(96 * 80 * 3) % 251).to(torch.uint8).reshape(80, 96, 3).numpy()).save(image)
    proc = run_example("mobilevit_classify.py", "--model-path", str(tmp_path / "ckpt"), "--image", str(image),
                       "--device", "sim", "--check", "--top", "3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "random weights" not in proc.stdout and f"from {image}" in proc.stdout
    assert len(re.findall(r"^\s+[\d.]+%\s+LABEL_\d+$", proc.stdout, re.M)) == 3


@pytest.mark.parametrize("device", ["cpu", "sim"])
def test_port_any_cuda_repo_runs_the_fixture_unmodified(device, tmp_path):
    shutil.copytree(FIXTURES / "cuda_research", tmp_path / "cuda_research")  # a repository of its own
    proc = run_example("port_any_cuda_repo.py", "--repo", str(tmp_path), "--entry", "cuda_research.run:main",
                       "--device", device)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"scan of .*: \d+ CUDA-only construct\(s\), 0 unhandled", proc.stdout)
    expected_device = "npu:0" if device == "sim" else "cpu"
    assert f"device: '{expected_device}'" in proc.stdout
    # Call sites of the repository's own files are listed (file:line, class, patch, old -> new).
    for patch, where in [("device", "cuda_research/run.py:"), ("seed", "cuda_research/utils.py:"),
                         ("autocast", "cuda_research/model.py:"), ("attention", "cuda_research/layers.py:")]:
        row = rf"^\S*{re.escape(where)}\d+\s+(mapped|changed meaning|unsupported)\s+{patch}\s+\S.* -> "
        assert re.search(row, proc.stdout, re.M), (patch, proc.stdout)


def test_port_any_cuda_repo_runs_a_script_with_its_arguments(tmp_path):
    script = tmp_path / "infer.py"
    script.write_text(
        "import sys, torch\n"
        "x = torch.ones(2, device='cuda') * float(sys.argv[sys.argv.index('--scale') + 1])\n"
        "print('device', x.device, 'sum', x.sum().item(), 'image', sys.argv[sys.argv.index('--image') + 1])\n"
    )
    proc = run_example("port_any_cuda_repo.py", "--repo", str(tmp_path), "--script", "infer.py", "--device", "sim",
                       "--image", "cat.png", "--", "--scale", "3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "device npu:0 sum 6.0 image cat.png" in proc.stdout
    row = r'^\S*infer\.py:2\s+mapped\s+device\s+torch\.ones\(\.\.\., device="cuda"\) -> '
    assert re.search(row, proc.stdout, re.M), proc.stdout
