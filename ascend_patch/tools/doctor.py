"""``ascend-patch doctor``: what this machine has, what the patches would do here, and known traps.

Everything is read without side effects that could break the process: versions come from
package metadata, and torch_npu is never imported here. Whether it imports is probed in a
child process, because a torch_npu wheel installed without the CANN toolkit fails to load its
shared libraries - and since torch 2.5 autoloads device backends, it then breaks ``import torch``
itself.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import platform
import subprocess
import sys
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

from ..engine.table import table
from .environment import DISTRIBUTIONS, device_label, package_version
from .environment import cann as read_cann
from .errors import InputError

logger = logging.getLogger("ascend_patch")

AUTOLOAD_ENV = "TORCH_DEVICE_BACKEND_AUTOLOAD"
COMPAT_ENV = "TORCH_NPU_USE_COMPATIBLE_IMPL"


@dataclass
class PatchStatus:
    name: str
    kind: str  # "patch" or "recipe"
    status: str  # "applies", "skipped", "error"
    reason: str = ""


@dataclass
class Pitfall:
    level: str  # "ok", "info", "warn"
    topic: str
    message: str


@dataclass
class DoctorReport:
    python: str
    platform: str
    versions: dict[str, str | None]  # distribution -> version (None: not installed)
    torch_npu: str  # "not installed" / "imports" / "simulated" / "fails to import: ..."
    cann: dict[str, Any]
    device: str  # the target the patches would send CUDA work to; "sim" for the simulated NPU
    device_note: str
    autocast_dtypes: list[str]
    patches: list[PatchStatus] = field(default_factory=list)
    pitfalls: list[Pitfall] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_text(self) -> str:
        lines = [f"python {self.python} on {self.platform}"]
        for dist, version in self.versions.items():
            shown = version or "not installed"
            if dist == "torch_npu":
                shown = f"{version}, {self.torch_npu}" if version else self.torch_npu
            lines.append(f"{dist:<14}{shown}")
        cann = self.cann
        lines.append(f"{'CANN':<14}{cann.get('version') or 'version unknown'}"
                     f" ({cann.get('home') or 'no toolkit found'})")
        lines.append(f"{'target':<14}{self.device}  {self.device_note}".rstrip())
        lines.append(f"{'autocast':<14}{', '.join(self.autocast_dtypes) or 'none'} on {self.device}")
        lines.append("")
        lines.append("patches on this target:")
        lines += table(("name", "kind", "status", "why"), [(p.name, p.kind, p.status, p.reason) for p in self.patches])
        lines += ["", "known pitfalls:"]
        lines += table(("level", "topic", "what"), [(p.level, p.topic, p.message) for p in self.pitfalls])
        return "\n".join(lines)

    __str__ = to_text


def _torch_npu_state() -> tuple[str, bool]:
    """(description, importable). Never imports torch_npu in this process."""
    loaded = sys.modules.get("torch_npu")
    if loaded is not None:
        from ..sim import torch_npu_module

        return ("simulated (ascend_patch.sim)", True) if torch_npu_module.is_simulated(loaded) else ("imported", True)
    if importlib.util.find_spec("torch_npu") is None:
        return "not installed", False
    # A child process: a torch_npu without CANN may fail to load its libraries (or worse) on import.
    env = dict(os.environ, **{AUTOLOAD_ENV: "0"})
    try:
        probe = subprocess.run(
            [sys.executable, "-c", "import torch, torch_npu; print(torch_npu.npu.is_available())"],
            check=False, capture_output=True, text=True, timeout=120, env=env,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return "import timed out after 120 s", False
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or [f"exit code {probe.returncode}"])[-1]
        return f"fails to import: {last}", False
    available = probe.stdout.strip().endswith("True")
    return ("imports, NPU available" if available else "imports, but no NPU is visible"), True


def _autocast_dtypes(device: str) -> list[str]:
    """Ask PyTorch: entering autocast with an unsupported dtype warns and disables it."""
    import torch

    supported = []
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                with torch.autocast(device, dtype=dtype):
                    pass
            except Exception as exc:  # noqa: BLE001 - a backend may raise instead of warning
                logger.debug("autocast %s %s: %s", device, dtype, exc)
                continue
        if not any("not supported" in str(w.message) or "Disabling" in str(w.message) for w in caught):
            supported.append(str(dtype).replace("torch.", ""))
    return supported


def _patch_statuses(device: str) -> list[PatchStatus]:
    from ..engine.patch import PatchContext
    from ..engine.runtime import skip_reason
    from ..patches import get_patch, patch_names
    from ..recipes import get_recipe, recipe_names

    def status(patch: Any, kind: str) -> PatchStatus:
        try:
            ctx = PatchContext(patch.name, device, {k: o.default for k, o in patch.options.items()})
            reason = skip_reason(patch, ctx)
        except Exception as exc:  # noqa: BLE001 - doctor reports, it does not fail
            return PatchStatus(patch.name, kind, "error", f"{type(exc).__name__}: {exc}")
        return PatchStatus(patch.name, kind, "skipped" if reason else "applies", reason or patch.summary)

    out = [status(get_patch(name), "patch") for name in patch_names()]
    for name in recipe_names():
        try:
            recipe = get_recipe(name)
        except Exception as exc:  # noqa: BLE001 - a broken third-party entry point
            out.append(PatchStatus(name, "recipe", "error", f"{type(exc).__name__}: {exc}"))
            continue
        st = status(recipe.patch, "recipe")
        if st.status == "applies":
            st.reason = f"{', '.join(recipe.patches)} + own targets; {recipe.summary}"
        out.append(st)
    return out


def torch_pairing(torch_version: str | None, npu_version: str | None) -> Pitfall | None:
    """Whether torch_npu is the release for the installed torch. A torch_npu package is versioned after
    the torch it is built for - ``2.7.1``, ``2.7.1.post8``, ``2.10.0rc2`` for torch 2.7.1 / 2.10.0
    (Ascend/pytorch COMPATIBILITY.md) - and loads against no other."""
    from packaging.version import InvalidVersion, Version

    if torch_version is None or npu_version is None:
        return None
    topic = "torch / torch_npu"
    try:
        torch_release, npu_release = Version(torch_version).release[:3], Version(npu_version).release[:3]
    except InvalidVersion as exc:
        return Pitfall("warn", topic, f"cannot compare the versions: {exc}")
    want = ".".join(map(str, torch_release))
    if torch_release == npu_release:
        return Pitfall("ok", topic, f"torch_npu {npu_version} is a release for torch {want}")
    built_for = ".".join(map(str, npu_release))
    return Pitfall("warn", topic, f"torch_npu {npu_version} is built for torch {built_for}, but torch {torch_version} "
                   f"is installed: pip install \"torch_npu=={want}.*\" (the release for this torch), or "
                   f"torch=={built_for} for this torch_npu (table: docs/install.md)")


def doctor(device: str | None = None) -> DoctorReport:
    """Collect the report; ``device`` as for ``apply`` ("auto" when None)."""
    asked = device or os.environ.get("ASCEND_PATCH_DEVICE") or "auto"
    if asked == "sim":
        # Install first, so the torch_npu line below describes the simulated module doctor evaluates.
        try:
            from .. import sim

            sim.install()
        except Exception as exc:  # noqa: BLE001 - reported below as "'sim' unusable"
            logger.warning("doctor: simulated NPU not installed: %s", exc)
    versions = {d: package_version(d) for d in DISTRIBUTIONS}
    npu_state, npu_importable = _torch_npu_state()
    cann = read_cann()
    pitfalls: list[Pitfall] = []

    installed_npu = versions["torch_npu"] is not None
    if installed_npu and not cann["home"]:
        pitfalls.append(Pitfall("warn", "torch_npu without CANN",
                                "torch_npu is installed but no CANN toolkit was found: torch >= 2.5 autoloads it "
                                "and `import torch` fails. Source set_env.sh (e.g. /usr/local/Ascend/ascend-toolkit/"
                                f"set_env.sh) or set {AUTOLOAD_ENV}=0"))
    elif installed_npu and not npu_importable and not npu_state.startswith("simulated"):
        pitfalls.append(Pitfall("warn", "torch_npu import", f"torch_npu {npu_state}; set {AUTOLOAD_ENV}=0 to keep "
                                "`import torch` working while you fix the CANN environment"))
    else:
        pitfalls.append(Pitfall("ok", "torch_npu / CANN", f"torch_npu {npu_state}; {AUTOLOAD_ENV}="
                                f"{os.environ.get(AUTOLOAD_ENV, '(unset)')}"))

    pairing = torch_pairing(versions["torch"], versions["torch_npu"])
    if pairing is not None:
        pitfalls.append(pairing)

    torch_error = None
    try:
        import torch  # fails here exactly when the pitfall above bites
    except Exception as exc:  # noqa: BLE001
        torch_error = f"{type(exc).__name__}: {exc}"
        pitfalls.insert(0, Pitfall("warn", "import torch", f"fails ({torch_error}); try {AUTOLOAD_ENV}=0"))

    target, note, dtypes, patches = "unknown", "", [], []
    if torch_error is None:
        from ..engine.device import target_device

        broken_npu = installed_npu and not npu_importable and "torch_npu" not in sys.modules
        if asked.split(":")[0] in ("auto", "npu") and broken_npu:
            # target_device("auto") would import the broken torch_npu in this process.
            target, note = ("cuda" if torch.cuda.is_available() else "cpu"), "(torch_npu does not import, see pitfalls)"
        else:
            try:
                target = target_device(asked)
            except ValueError as exc:
                if device is not None:  # a bad name or index given here is bad input; in the env, a finding
                    raise InputError(f"--device: {exc}") from None
                target, note = "cpu", f"({asked!r} unusable: {exc})"
            except Exception as exc:  # noqa: BLE001 - DeviceNotAvailable, SimInstallError
                target, note = "cpu", f"({asked!r} unusable: {exc})"
        dtypes = _autocast_dtypes(target)
        patches = _patch_statuses(target)
        if "float32" not in dtypes:
            pitfalls.append(Pitfall("info", "fp32 autocast", f"autocast(dtype=float32) is rejected on {target} "
                                    "(PyTorch disables the region); the fp32_autocast patch applies its policy"))

    compat = os.environ.get(COMPAT_ENV)
    pitfalls.append(Pitfall(
        "info", COMPAT_ENV,
        f"{'set to ' + repr(compat) if compat is not None else 'unset'}: with 1, aten gelu on NPU honours "
        "approximate='none' (read once, at the first GELU); without it GELU is the tanh form - the gelu patch "
        "routes GELU modules to torch_npu.npu_gelu either way",
    ))  # fmt: skip
    for name in ("ASCEND_PATCH_DEVICE", "ASCEND_PATCH_SIMULATE_NPU", "ASCEND_PATCH_LOG"):
        if os.environ.get(name):
            pitfalls.append(Pitfall("info", name, f"set to {os.environ[name]!r}"))

    return DoctorReport(
        python=platform.python_version(), platform=platform.platform(terse=True), versions=versions,
        torch_npu=npu_state, cann=cann, device=device_label(target) if torch_error is None else target,
        device_note=note, autocast_dtypes=dtypes,
        patches=patches, pitfalls=pitfalls,
    )  # fmt: skip
