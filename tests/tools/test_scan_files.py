"""scan reads only regular source files of bounded size, reports what it could not parse (exit 1),
writes CSV, and names the recipe that knows the scanned tree."""

from __future__ import annotations

import csv
import io
import json
import os
import threading
from pathlib import Path

import ascend_patch.tools.scan as scan_module
from ascend_patch.tools.scan import UNHANDLED, scan

REPOS = Path(__file__).parents[1] / "fixtures" / "repos"
CUDA_LINE = "import torch\ntorch.cuda.synchronize()\n"


def scan_with_deadline(path: Path, seconds: float = 30):
    """scan(path) in a thread: a scan that blocks (opening a FIFO) fails the test instead of hanging it."""
    out: dict = {}
    thread = threading.Thread(target=lambda: out.setdefault("result", scan(path)), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"scan({path}) did not return within {seconds}s"
    return out["result"]


def test_fifo_and_device_links_are_skipped_not_read(tmp_path):
    (tmp_path / "model.py").write_text(CUDA_LINE)
    os.mkfifo(tmp_path / "pipe.py")  # opening it would block until a writer comes
    (tmp_path / "zero.py").symlink_to("/dev/zero")  # reading it would never end
    (tmp_path / "gone.py").symlink_to(tmp_path / "missing.py")  # dangling link
    result = scan_with_deadline(tmp_path)
    assert result.files_scanned == 1
    assert [(f.file, f.construct) for f in result.findings] == [("model.py", "torch.cuda.synchronize")]
    skipped = dict(entry.split(": ", 1) for entry in result.skipped)
    assert skipped.keys() == {"pipe.py", "zero.py", "gone.py"}
    assert "FIFO" in skipped["pipe.py"] and "device" in skipped["zero.py"] and "not readable" in skipped["gone.py"]
    assert result.exit_code == 0  # skipping is said, not a failure
    assert "skipped: zero.py: a device, not a regular file" in result.to_text()
    # A special file given as the path itself is skipped the same way.
    assert scan_with_deadline(tmp_path / "pipe.py").skipped == [f"{tmp_path / 'pipe.py'}: a FIFO, not a regular file"]


def test_files_over_the_size_cap_are_skipped(tmp_path, monkeypatch):
    monkeypatch.setattr(scan_module, "MAX_FILE_BYTES", 64)
    (tmp_path / "big.py").write_text(CUDA_LINE + "x = 1\n" * 20)
    (tmp_path / "small.py").write_text(CUDA_LINE)
    result = scan(tmp_path)
    assert [f.file for f in result.findings] == ["small.py"]
    assert len(result.skipped) == 1 and result.skipped[0].startswith("big.py: ")
    assert "over the 64-byte limit" in result.skipped[0]


def test_unparsable_files_are_reported_and_fail_the_scan(tmp_path, cli):
    (tmp_path / "py2.py").write_text("print 'python 2'\n")
    (tmp_path / "nul.py").write_bytes(b"x = 1\x00\n")
    result = scan(tmp_path)
    assert not result.findings and result.exit_code == 1
    assert sorted(e.split(":")[0] for e in result.errors) == ["nul.py", "py2.py"]
    run = cli("scan", tmp_path)
    assert run.code == 1 and "not parsed: py2.py: SyntaxError" in run.out and "all handled" not in run.out
    (tmp_path / "py2.py").unlink()
    (tmp_path / "nul.py").unlink()
    (tmp_path / "ok.py").write_text(CUDA_LINE)
    assert cli("scan", tmp_path).code == 0


def test_csv_has_a_row_per_finding_and_per_file_not_read(tmp_path, cli):
    (tmp_path / "model.py").write_text(CUDA_LINE + "import triton\n")
    (tmp_path / "py2.py").write_text("print 'python 2'\n")
    run = cli("scan", tmp_path, "--csv")
    assert run.code == 1
    rows = list(csv.DictReader(io.StringIO(run.out)))
    assert [(r["file"], r["line"], r["construct"], r["patch"]) for r in rows] == [
        ("model.py", "2", "torch.cuda.synchronize", "device"),
        ("model.py", "3", "import triton", UNHANDLED),
        ("py2.py", "0", "", "not parsed"),
    ]
    assert rows[1]["note"].startswith("needs a recipe") and "SyntaxError" in rows[2]["note"]
    assert cli("scan", tmp_path, "--csv", "--json").code == 2  # one format at a time


def test_a_tree_a_recipe_knows_is_named_with_the_recipe(cli):
    result = scan(REPOS / "Ming-UniVision")
    assert result.recipe_names == ["mingtok"]
    assert {m.module for m in result.recipes} >= {"mingtok.modeling_mingtok"}
    assert result.apply_call() == 'ascend_patch.apply("mingtok")'
    run = cli("scan", REPOS / "Ming-UniVision")
    assert "mingtok/modeling_mingtok.py: mingtok.modeling_mingtok, which it patches" in run.out
    assert run.out.rstrip().endswith('ascend_patch.apply("mingtok")')
    data = json.loads(cli("scan", REPOS / "Ming-UniVision", "--json").out)
    assert data["apply"] == 'ascend_patch.apply("mingtok")' and data["recipes"][0]["recipe"] == "mingtok"


def test_recipes_are_found_by_the_modules_they_patch(tmp_path):
    """From each recipe's own Replace targets: a copy of the module at any depth, or an import of it."""
    (tmp_path / "vendor" / "vtp" / "models" / "utils").mkdir(parents=True)
    (tmp_path / "vendor" / "vtp" / "models" / "utils" / "utils.py").write_text("import torch\n")
    (tmp_path / "run.py").write_text("from dinov2.utils.utils import fix_random_seeds\n")
    assert scan(tmp_path).recipe_names == ["dinov2", "vtp"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "utils.py").write_text(CUDA_LINE)  # a module named like one is not enough
    assert scan(tmp_path / "other").recipe_names == []
    assert "recipe:" not in scan(tmp_path / "other").to_text()
