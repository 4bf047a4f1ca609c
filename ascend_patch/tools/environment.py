"""What a measurement ran on: package versions, CANN, the device's name, and whether it was simulated.

``verify`` and ``bench`` write this into their JSON so that a number can be traced to the stack that
produced it; ``doctor`` reads versions and CANN the same way. Nothing here imports torch_npu: a
loaded module is asked, an absent one is read from package metadata.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

CANN_ENV = ("ASCEND_HOME_PATH", "ASCEND_TOOLKIT_HOME", "ASCEND_OPP_PATH")
CANN_DEFAULT = Path("/usr/local/Ascend/ascend-toolkit/latest")
CANN_VERSION_FILES = ("version.cfg", "version.info", "compiler/version.info", "runtime/version.info",
                      "toolkit/version.info")  # fmt: skip
DISTRIBUTIONS = ("torch", "torch_npu", "transformers", "ascend-patch")
SIM = "sim"  # the label of a simulated NPU in every table, plot and JSON


def package_version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cann() -> dict[str, Any]:
    """CANN toolkit home and version (from its version files), and the environment variables that locate it."""
    env = {name: os.environ.get(name) for name in CANN_ENV}
    home = env["ASCEND_TOOLKIT_HOME"] or env["ASCEND_HOME_PATH"]
    if home is None and CANN_DEFAULT.exists():
        home = str(CANN_DEFAULT)
    version = None
    for name in CANN_VERSION_FILES if home else ():
        path = Path(home) / name  # type: ignore[arg-type]
        if path.is_file():
            for line in path.read_text(errors="replace").splitlines():
                key, _, value = line.partition("=")
                if key.strip().lower() in ("version", "toolkit_version", "runtime_running_version"):
                    version = value.strip().strip("[]\"'")
                    break
        if version:
            break
    return {"home": home, "version": version, "env": env}


def simulated_npu() -> bool:
    """True when the loaded torch_npu is ascend_patch's simulator."""
    from ..sim import torch_npu_module

    loaded = sys.modules.get("torch_npu")
    return loaded is not None and torch_npu_module.is_simulated(loaded)


def device_label(kind: str) -> str:
    """The device a run is reported on: "sim" for the simulated NPU, never a plain "npu"."""
    return SIM if kind == "npu" and simulated_npu() else kind


def device_name(kind: str) -> str:
    import torch

    module = getattr(torch, kind, None) if kind != "cpu" else None
    if module is not None and hasattr(module, "get_device_name"):
        return str(module.get_device_name())
    return platform.processor() or platform.machine() or "cpu"


@dataclass(frozen=True)
class Environment:
    device: str  # the label: "npu", "sim", "cuda", "cpu"
    device_type: str  # the torch device type the tensors had ("npu" for sim)
    device_name: str
    simulated: bool
    versions: dict[str, str | None]  # distribution -> version (None: not installed)
    cann: str | None
    python: str
    platform: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def environment(kind: str) -> Environment:
    versions = {dist: package_version(dist) for dist in DISTRIBUTIONS}
    loaded = sys.modules.get("torch_npu")
    if loaded is not None:  # the simulator is not a distribution; its module has the version
        found = getattr(loaded, "__version__", None)
        versions["torch_npu"] = str(found) if found is not None else versions["torch_npu"]
    label = device_label(kind)
    return Environment(
        device=label, device_type=kind, device_name=device_name(kind), simulated=label == SIM, versions=versions,
        cann=cann()["version"], python=platform.python_version(), platform=platform.platform(terse=True),
    )  # fmt: skip
