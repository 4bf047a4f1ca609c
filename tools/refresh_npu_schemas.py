"""Refresh tests/data/npu_op_schemas.json from a torch_npu wheel.

The simulated torch_npu (ascend_patch.sim) must keep the Python signatures of the real ops; a test
compares them with the op schemas recorded here. The schemas come from the file every torch_npu
wheel ships, ``torch_npu/csrc/aten/npu_native_functions_by_codegen.yaml``; the wheel is only read
as a zip archive, never installed (installing it breaks ``import torch`` without CANN).

    python tools/refresh_npu_schemas.py --version 2.13.0          # pip download --no-deps, then read
    python tools/refresh_npu_schemas.py path/to/torch_npu-*.whl   # read a wheel already downloaded
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

SCHEMA_FILE = "torch_npu/csrc/aten/npu_native_functions_by_codegen.yaml"
OPS = ("npu_gelu", "npu_fusion_attention")  # the ops ascend_patch.sim implements
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "npu_op_schemas.json"

# "- func: name(args) -> ret" or "  func: name(args) -> ret"; the name may carry an overload (".out").
_FUNC_LINE = re.compile(r"^\s*(?:-\s*)?func:\s*(?P<schema>(?P<name>[\w.]+)\(.*)$")


def extract_schemas(yaml_text: str, ops: tuple[str, ...] = OPS) -> dict[str, str]:
    """The schema line of each op in ``ops`` (default overload only)."""
    found: dict[str, str] = {}
    for line in yaml_text.splitlines():
        match = _FUNC_LINE.match(line)
        if match and match.group("name") in ops:
            found.setdefault(match.group("name"), match.group("schema").strip())
    missing = [op for op in ops if op not in found]
    if missing:
        raise SystemExit(f"{SCHEMA_FILE} has no schema for: {', '.join(missing)}")
    return found


def read_wheel(wheel: Path) -> tuple[str, dict[str, str]]:
    """(torch_npu version, schemas) read from the wheel archive."""
    with zipfile.ZipFile(wheel) as archive:
        yaml_text = archive.read(SCHEMA_FILE).decode("utf-8")
        version_py = archive.read("torch_npu/version.py").decode("utf-8")
    match = re.search(r"__version__\s*=\s*['\"]([^'\"]+)['\"]", version_py)
    version = match.group(1) if match else wheel.name.split("-")[1]
    return version, extract_schemas(yaml_text)


def download(version: str, into: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", f"torch-npu=={version}", "-d", str(into)],
        check=True,
    )
    wheels = sorted(into.glob("torch_npu-*.whl"))
    if not wheels:
        raise SystemExit(f"pip download produced no torch_npu wheel in {into}")
    return wheels[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("wheel", nargs="?", type=Path, help="a downloaded torch_npu wheel")
    source.add_argument("--version", help="download this torch-npu version with pip (no dependencies)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"where to write (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel if args.wheel is not None else download(args.version, Path(tmp))
        version, schemas = read_wheel(wheel)
        data = {
            "torch_npu_version": version,
            "wheel": wheel.name,
            "source": SCHEMA_FILE,
            "refreshed_by": "tools/refresh_npu_schemas.py",
            "schemas": schemas,
        }
    args.out.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {len(schemas)} schemas from torch_npu {version} to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
