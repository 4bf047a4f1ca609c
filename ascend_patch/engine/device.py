"""Which device the patches send CUDA work to."""

from __future__ import annotations

import importlib.util
import logging
import os
import sys

from .env import flag

logger = logging.getLogger("ascend_patch")

DEVICE_CHOICES = ("auto", "npu", "cuda", "cpu", "sim")
ENV_DEVICE = "ASCEND_PATCH_DEVICE"
ENV_SIMULATE = "ASCEND_PATCH_SIMULATE_NPU"


class DeviceNotAvailable(RuntimeError):
    pass


def npu_available() -> bool:
    """True when torch_npu (real or simulated) is importable and reports an NPU.

    torch_npu is imported only here and only when installed: importing it pulls in the CANN
    runtime, and a wheel installed without CANN fails, which must not break ``import ascend_patch``.
    """
    import torch

    if "torch_npu" not in sys.modules and not hasattr(torch, "npu"):
        if importlib.util.find_spec("torch_npu") is None:
            return False
        try:
            importlib.import_module("torch_npu")
        except Exception as exc:  # ImportError, OSError for missing CANN libraries, ...
            logger.error(
                "torch_npu is installed but failed to import (%s); source the CANN environment "
                "(set_env.sh) or pass device='cpu'/'sim'",
                exc,
            )
            return False
    npu = getattr(torch, "npu", None)
    return bool(npu is not None and npu.is_available())


# Only these kinds take a device index: they are the accelerators the patches map CUDA work to. An
# index on cpu/cuda/auto would be dropped (the cpu has none; the patches are skipped on a cuda target,
# where CUDA_VISIBLE_DEVICES chooses the GPU), so it is refused rather than ignored.
INDEXED_CHOICES = ("npu", "sim")


def _index_of(kind: str, index_text: str, named: str) -> int:
    """The device index of ``kind:index_text``; ``named`` spells the argument in errors (``device='npu:x'``)."""
    if kind not in INDEXED_CHOICES:
        raise ValueError(
            f"{named}: only {' and '.join(INDEXED_CHOICES)} take a device index "
            f"(e.g. device='npu:3'); give {kind!r} without one"
            + (" and choose the GPU with CUDA_VISIBLE_DEVICES" if kind == "cuda" else "")
        )
    if not (index_text.isascii() and index_text.isdigit()):
        example = f"'{kind}:0'" if kind == "sim" else f"'{kind}:3'"
        raise ValueError(
            f"{named}: a device index is a whole number >= 0: give '{kind}' or '{kind}:N' (e.g. {example})"
        )
    return int(index_text)


def _check_index(index: int, named: str, *, simulated: bool) -> None:
    """Refuse an index the NPU (real or simulated) does not have, naming the limit."""
    import torch

    if simulated:
        if index != 0:
            from ..sim.unsupported import SimUnsupportedError

            # PyTorch gives a Python backend one device (torch/csrc/acc/Module.cpp): every simulated
            # tensor lives on npu:0, so a target npu:N would be dropped, not simulated.
            raise SimUnsupportedError(
                f"{named}: the simulated NPU keeps every tensor on npu:0 (PyTorch gives a Python backend "
                f"one device per process), so it cannot target npu:{index}; dry-run with device='sim' "
                f"(or 'sim:0') and use device='npu:{index}' on an Ascend machine"
            )
        return
    count = torch.npu.device_count()  # type: ignore[attr-defined]
    if index >= count:
        raise DeviceNotAvailable(f"{named}: this machine has {count} NPU(s), npu:0 to npu:{count - 1}")


def target_device(device: str | None = None) -> str:
    """``"npu"`` when torch_npu and an NPU are there, else ``"cuda"``, else ``"cpu"``.

    ``device`` (or the env var ``ASCEND_PATCH_DEVICE``) overrides the detection; ``"sim"``
    installs the simulated NPU (:mod:`ascend_patch.sim`) and answers ``"npu"``. The index of
    ``"npu:N"`` is checked here and given by :func:`resolve_target`.
    """
    return resolve_target(device)[0]


def resolve_target(device: str | None = None) -> tuple[str, int | None]:
    """(device type, index): ``"npu:3"`` -> ``("npu", 3)``, ``"sim"`` -> ``("npu", None)``.

    The "device" patch makes npu:N the process's CUDA device. A malformed index (``"npu:x"``,
    ``"npu:-1"``) or an index on cpu/cuda/auto is a ``ValueError``; an index the NPU does not have is
    :class:`DeviceNotAvailable`; a nonzero index on the simulated NPU a ``SimUnsupportedError``.
    """
    import torch

    if isinstance(device, torch.device):
        device = str(device)
    if device is not None and (not isinstance(device, str) or not device.strip()):  # 0, 1 or "" would
        # otherwise mean "auto" or fail later
        raise ValueError(f"device={device!r}: give a device name ({', '.join(DEVICE_CHOICES)}), e.g. device='npu'")
    from_env = not device
    choice = (device or os.environ.get(ENV_DEVICE) or "auto").strip().lower()
    kind, sep, index_text = choice.partition(":")
    if kind not in DEVICE_CHOICES:
        named = f"{ENV_DEVICE}={choice!r}" if from_env else repr(device)
        raise ValueError(f"unknown device {named}: choose one of {', '.join(DEVICE_CHOICES)}")
    named = f"{ENV_DEVICE}={choice!r}" if from_env else f"device={device!r}"
    index = _index_of(kind, index_text, named) if sep else None
    if kind == "sim" and index is not None:
        _check_index(index, named, simulated=True)  # before installing: a refused apply leaves nothing behind
    if kind == "sim" or (kind == "auto" and flag(ENV_SIMULATE)):
        from .. import sim

        sim.install()
        return "npu", index
    if kind == "auto":
        if npu_available():
            return "npu", None
        return ("cuda" if torch.cuda.is_available() else "cpu"), None
    if kind == "npu" and not npu_available():
        raise DeviceNotAvailable(
            "device 'npu' requested but no NPU is available: install the CANN toolkit and the torch_npu "
            "release paired with your torch (ascend-patch doctor names it), or use device='sim' for the simulated NPU"
        )
    if kind == "cuda" and not torch.cuda.is_available():
        raise DeviceNotAvailable("device 'cuda' requested but torch.cuda.is_available() is False; use 'cpu' or 'sim'")
    if index is not None:
        simulated = getattr(sys.modules.get("torch_npu"), "__ascend_patch_sim__", False) is True
        _check_index(index, named, simulated=simulated)
    return kind, index
