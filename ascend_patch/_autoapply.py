"""Start-up switch: ``ASCEND_PATCH_APPLY=dinov2`` patches every Python process, torchrun workers included.

The package installs ``ascend_patch_autoapply.pth`` into site-packages (``setup.py`` writes it into
both the wheel and the editable wheel). Python runs its one line at start-up; the line reads
``os.environ`` itself (``os`` is already imported by ``site``) and imports this module and calls
:func:`main` only when ``ASCEND_PATCH_APPLY`` is set to something other than ``0``, so with the
variable unset nothing is imported: neither torch nor ascend_patch. Importing this module does
nothing by itself.

Values: ``default`` (the default patch set), a recipe or patch name, or a comma list
(``dinov2,distributed``; ``default`` may be one of them). ``ASCEND_PATCH_DEVICE`` picks the target
(``auto | npu | cuda | cpu | sim``). A bad value never stops the process: one line on stderr naming
the variable, and the process runs unpatched. ``python -S`` skips site-packages' ``.pth`` files,
and this switch with them.
"""

from __future__ import annotations

import os
import sys

ENV_APPLY = "ASCEND_PATCH_APPLY"
ENV_DEVICE = "ASCEND_PATCH_DEVICE"
DEFAULT = "default"

# The file and its line; setup.py writes the same (it cannot import this package at build time).
PTH_NAME = "ascend_patch_autoapply.pth"
PTH_LINE = (
    "import os; os.environ.get('ASCEND_PATCH_APPLY', '0') not in ('', '0') "
    "and __import__('ascend_patch._autoapply')._autoapply.main()"
)


def names_from(value: str) -> list[str]:
    """``"dinov2, distributed"`` -> the names for ``apply``; ``default`` expands to the default set.

    Raises ValueError naming the unknown name and the closest known one.
    """
    from .api import known_names
    from .engine.runtime import unknown_name_error
    from .patches import DEFAULT_PATCHES

    known = known_names()
    names: list[str] = []
    for name in (part.strip() for part in value.split(",")):
        if not name:
            continue
        if name == DEFAULT:
            names += [n for n in DEFAULT_PATCHES if n not in names]
        elif name not in known:
            raise unknown_name_error(name, [*known, DEFAULT])
        elif name not in names:
            names.append(name)
    if not names:
        raise ValueError(f"no names given: use {DEFAULT!r}, a recipe or patch name, or a comma list")
    return names


_started = False


def main() -> list[str]:
    """Apply what ``ASCEND_PATCH_APPLY`` names on ``ASCEND_PATCH_DEVICE``; on any error one line on
    stderr and nothing applied (never raises: it runs inside every Python process's start-up).

    Runs once per process: ``site`` may process a venv's .pth files twice (seen with CPython 3.11 venvs).
    """
    global _started
    value = os.environ.get(ENV_APPLY, "").strip()
    if _started or value in ("", "0"):
        return []
    _started = True
    device = os.environ.get(ENV_DEVICE, "").strip() or None
    try:
        from . import apply

        return apply(*names_from(value), device=device)
    except Exception as exc:  # noqa: BLE001 - a typo in an exported variable must not break other processes
        where = f"{ENV_APPLY}={value!r}" + (f" with {ENV_DEVICE}={device!r}" if device else "")
        reason = " ".join(str(exc).split()) or type(exc).__name__
        print(f"ascend-patch: ignoring {where}: {reason}; this process runs unpatched", file=sys.stderr)
        return []
