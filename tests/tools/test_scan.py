"""scan: known constructs are found at their lines, with the patch that handles them; exit 0/1/2."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from ascend_patch.tools.scan import UNHANDLED, scan, scan_source

# (line, construct substring, patch) for every construct in REPO_MODEL; line numbers are the
# source's own, so the test fails if a finding is reported at the wrong line.
REPO_MODEL = textwrap.dedent('''\
    import os
    import torch
    import torch as th
    from torch.cuda.amp import autocast
    from torch.cuda import manual_seed_all
    import torch.distributed as dist

    XFORMERS_ENABLED = os.environ.get("XFORMERS_ENABLED")
    try:
        from xformers.ops import memory_efficient_attention
    except ImportError:
        pass
    from flash_attn import flash_attn_func


    def forward(x):
        with torch.cuda.amp.autocast(dtype=torch.float32):
            y = x * 2
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y = y + 1
        with autocast(enabled=True):
            y = y - 1
        return y


    def main(model):
        model = model.cuda()
        x = torch.randn(2, device="cuda:1")
        th.cuda.synchronize()
        torch.cuda.manual_seed_all(0)
        dist.init_process_group(backend="nccl")
        if "XFORMERS_DISABLED" in os.environ:
            pass
        scaler = torch.amp.GradScaler("cuda")
        return model(x), scaler
    ''')
EXPECTED_HANDLED = [
    (4, "torch.cuda.amp.autocast", "autocast"),
    (5, "torch.cuda.manual_seed_all", "seed"),
    (8, "XFORMERS_ENABLED", "attention"),
    (10, "xformers.ops", "attention"),
    (13, "flash_attn", "attention"),
    (17, "dtype=torch.float32", "fp32_autocast"),
    (19, "torch.autocast('cuda')", "autocast"),
    (21, "torch.cuda.amp.autocast", "autocast"),  # the imported name, followed to its call
    (27, ".cuda()", "device"),
    (28, "'cuda:1'", "device"),
    (29, "torch.cuda.synchronize", "device"),
    (30, "torch.cuda.manual_seed_all", "seed"),
    (31, "'nccl'", "distributed"),
    (32, "XFORMERS_DISABLED", "attention"),
    (34, "GradScaler", "autocast"),
]

REPO_UNHANDLED = textwrap.dedent('''\
    import torch
    from torch.utils.cpp_extension import load_inline
    import triton


    @torch.compile
    def f(x):
        pos = torch.arange(8, dtype=torch.float64, device=x.device)
        return x.double().cuda() + pos
    ''')
EXPECTED_UNHANDLED = [(2, "load_inline"), (3, "triton"), (6, "torch.compile"), (8, "float64"), (9, ".double().cuda()")]


def make_repo(root: Path) -> Path:
    (root / "pkg" / "csrc").mkdir(parents=True)
    (root / "pkg" / "model.py").write_text(REPO_MODEL)
    (root / "pkg" / "kernels.py").write_text(REPO_UNHANDLED)
    (root / "pkg" / "csrc" / "attn.cu").write_text("__global__ void k() {}\n")
    (root / "pkg" / "clean.py").write_text("import torch\nx = torch.zeros(3, device='cpu')\n")
    (root / "pkg" / "py2.py").write_text("print 'python 2'\n")
    (root / ".venv" / "lib").mkdir(parents=True)  # environments are not the repo's code
    (root / ".venv" / "lib" / "x.py").write_text("import torch\ntorch.cuda.synchronize()\n")
    return root


def found(findings, file: str) -> list[tuple[int, str, str]]:
    return [(f.line, f.construct, f.patch) for f in findings if f.file == file]


def test_handled_constructs_at_their_lines():
    findings = [(f.line, f.construct, f.patch) for f in scan_source(REPO_MODEL, "model.py")]
    for line, construct, patch in EXPECTED_HANDLED:
        assert any(l == line and construct in c and p == patch for l, c, p in findings), (line, construct, findings)
    # Each construct once: torch.cuda.amp.autocast(...) is one finding, not torch.cuda + amp + autocast.
    assert len(findings) == len(EXPECTED_HANDLED), findings
    assert all(p != UNHANDLED for _, _, p in findings)


def test_unhandled_constructs():
    findings = [(f.line, f.construct, f.patch) for f in scan_source(REPO_UNHANDLED, "kernels.py")]
    for line, construct in EXPECTED_UNHANDLED:
        assert any(l == line and construct in c and p == UNHANDLED for l, c, p in findings), (line, construct, findings)
    assert len(findings) == len(EXPECTED_UNHANDLED), findings


def test_cli_on_a_tree_exit_1_and_json(tmp_path, cli):
    repo = make_repo(tmp_path / "repo")
    run = cli("scan", repo, "--json")
    assert run.code == 1
    data = json.loads(run.out)
    files = {f["file"] for f in data["findings"]}
    assert files == {"pkg/model.py", "pkg/kernels.py", "pkg/csrc/attn.cu"}  # not .venv, not clean.py
    assert data["unhandled"] == len(EXPECTED_UNHANDLED) + 1  # + the .cu source
    assert any(f["file"] == "pkg/csrc/attn.cu" and f["patch"] == UNHANDLED for f in data["findings"])
    assert any("py2.py" in e for e in data["errors"])  # reported, not a crash
    text = cli("scan", repo)
    assert text.code == 1
    assert "pkg/model.py:17" in text.out and "fp32_autocast" in text.out
    assert "pkg/kernels.py:6" in text.out and "torch.compile" in text.out


def test_cli_exit_0_when_everything_is_handled(tmp_path, cli):
    (tmp_path / "model.py").write_text(REPO_MODEL)
    run = cli("scan", tmp_path)
    assert run.code == 0, run.out
    assert "0 unhandled" in run.out and "all handled: ascend_patch.apply(" in run.out
    clean = tmp_path / "clean.py"
    clean.write_text("import torch\n")
    run = cli("scan", clean)
    assert run.code == 0 and "0 CUDA construct(s)" in run.out


def test_api_result_matches_cli(tmp_path):
    repo = make_repo(tmp_path / "repo")
    result = scan(repo)
    assert result.exit_code == 1
    assert found(result.findings, "pkg/model.py") == [
        (f.line, f.construct, f.patch) for f in scan_source(REPO_MODEL, "pkg/model.py")
    ]


def test_cuda_only_code_is_flagged_as_needing_a_recipe():
    """What no generic patch can fix (docs/writing-a-recipe.md#replacing-a-custom-kernel)."""
    source = textwrap.dedent('''\
        import triton
        import torch


        def kernel(x, y):
            assert x.device.type == "cuda", "needs CUDA"
            if str(y.device) != "cuda:0" or y.device.type in ("cuda", "xpu"):
                return y
            if x.device.type == "cpu":
                return x
            return torch.zeros(2, device="cuda")
    ''')
    verdicts = {(f.line, f.construct, f.patch) for f in scan_source(source)}
    assert verdicts == {
        (1, "import triton", UNHANDLED),
        (6, "x.device.type == 'cuda'", UNHANDLED),
        (7, "x.device.type == 'cuda'", UNHANDLED),
        (11, "device 'cuda'", "device"),
    }
    assert all(f.note.startswith("needs a recipe") for f in scan_source(source) if f.patch == UNHANDLED)
