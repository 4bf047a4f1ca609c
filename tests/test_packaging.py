"""What pip builds from this checkout: the wheel, the editable wheel and the sdist, and what installing them does.

Built once from a copy of the checkout's files (those git tracks or would: a clean clone's, with
this change), each build hook in its own process as pip calls it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from ascend_patch._autoapply import PTH_LINE, PTH_NAME
from ascend_patch.tools.doctor import torch_pairing

REPO = Path(__file__).resolve().parents[1]
# Never pulled by an extra: the user's torch build (CPU, CUDA or the one torch_npu needs) stays.
TORCH_STACK = re.compile(r"^(torch|torch[-_]npu|triton|nvidia-.*)$", re.IGNORECASE)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("packaging")
    src, out = root / "src", root / "dist"
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout  # fmt: skip
    for name in filter(None, files.decode().split("\0")):
        if (REPO / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    out.mkdir()
    for hook in ("build_wheel", "build_editable", "build_sdist"):
        code = f"import sys; from setuptools import build_meta; build_meta.{hook}(sys.argv[1])"
        proc = subprocess.run([sys.executable, "-c", code, str(out)], cwd=src, capture_output=True, text=True,
                              timeout=300, check=False)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-5000:]
    return out


def wheel(dist: Path, editable: bool = False) -> Path:
    (found,) = [w for w in dist.glob("*.whl") if (".editable" in w.name) == editable]
    return found


def metadata_of(path: Path):
    with zipfile.ZipFile(path) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        return Parser().parsestr(zf.read(name).decode())


def test_wheel_and_editable_wheel_install_the_startup_hook(dist):
    """Both wheels pip builds (``pip install .`` and ``pip install -e .``) put the .pth at their root."""
    for built in (wheel(dist), wheel(dist, editable=True)):
        with zipfile.ZipFile(built) as zf:
            assert zf.read(PTH_NAME).decode() == PTH_LINE + "\n", built.name
            record = next(n for n in zf.namelist() if n.endswith(".dist-info/RECORD"))
            assert f"{PTH_NAME}," in zf.read(record).decode()  # pip uninstall removes it


def test_metadata_license_dependencies_and_extras(dist):
    meta = metadata_of(wheel(dist))
    assert meta["License-Expression"] == "Apache-2.0" and meta.get_all("License-File") == ["LICENSE"]
    assert "License" not in meta  # the deprecated free-text field
    # The package index page: the pip-user path first, no relative links (they break there).
    page = meta.get_payload()
    assert page.index("pip install ascend-patch") < page.index("pip install -e")
    assert not re.findall(r"\]\((?!https?://)[^)]*\)", page)
    with zipfile.ZipFile(wheel(dist)) as zf:
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in zf.namelist())
        assert "ascend_patch/py.typed" in zf.namelist()
    requires = meta.get_all("Requires-Dist")
    names = {re.split(r"[ ;<>=!~\[]", r, maxsplit=1)[0].lower() for r in requires}
    assert {"torch", "wrapt", "einops", "numpy", "pillow", "tqdm", "packaging"} <= names
    # torch is a plain dependency (any build the user has); no extra brings torch, torch_npu or CUDA wheels.
    for req in requires:
        if "extra ==" in req:
            assert not TORCH_STACK.match(re.split(r"[ ;<>=!~\[]", req, maxsplit=1)[0]), req
    assert "npu" not in meta.get_all("Provides-Extra")


def test_installing_with_every_extra_keeps_the_installed_torch(dist, tmp_path):
    """pip's resolver, asked to install the wheel with every extra here (torch 2.13.0 installed),
    would install no torch, torch_npu, triton or CUDA wheel."""
    extras = ",".join(metadata_of(wheel(dist)).get_all("Provides-Extra"))
    report = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report", str(report),
                           f"ascend-patch[{extras}] @ {wheel(dist).as_uri()}"], capture_output=True, text=True,
                          timeout=600, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    installs = [item["metadata"]["name"] for item in json.loads(report.read_text())["install"]]
    assert "ascend-patch" in installs and not [n for n in installs if TORCH_STACK.match(n)], installs


def test_sdist_carries_tests_docs_examples_and_license(dist):
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    assert {"LICENSE", "README.md", "docs/cli.md", "tests/conftest.py", "examples/port_any_cuda_repo.py",
            "tools/refresh_docs.py", "ascend_patch/py.typed"} <= names  # fmt: skip
    assert not [n for n in names if "__pycache__" in n]


@pytest.mark.parametrize(
    ("torch_version", "npu_version", "level", "says"),
    [
        ("2.13.0+cpu", "2.13.0", "ok", "a release for torch 2.13.0"),
        ("2.7.1", "2.7.1.post8", "ok", "a release for torch 2.7.1"),
        ("2.10.0", "2.10.0rc2", "ok", "a release for torch 2.10.0"),
        ("2.13.0", "2.7.1.post8", "warn", 'pip install "torch_npu==2.13.0.*"'),
        ("2.5.1", "2.6.0", "warn", "or torch==2.6.0 for this torch_npu"),
    ],
)
def test_doctor_names_the_torch_npu_for_the_installed_torch(torch_version, npu_version, level, says):
    found = torch_pairing(torch_version, npu_version)
    assert found is not None and found.level == level and says in found.message
    assert torch_pairing(torch_version, None) is None  # no torch_npu: nothing to pair


def test_doctor_reports_the_pairing(monkeypatch):
    from ascend_patch.tools import doctor

    fake = {"torch": "2.13.0", "torch_npu": "2.7.1.post8"}
    monkeypatch.setattr(doctor, "package_version", lambda dist: fake.get(dist))
    report = doctor.doctor("cpu")
    (pair,) = [p for p in report.pitfalls if p.topic == "torch / torch_npu"]
    assert pair.level == "warn" and "torch_npu==2.13.0.*" in pair.message
    assert "torch / torch_npu" in report.to_text()
