"""Reading ``ASCEND_PATCH_*`` switches strictly: a value that is not a yes or a no is an error naming
the variable, never quietly taken as on (``ASCEND_PATCH_SIMULATE_NPU=false`` must not simulate)."""

from __future__ import annotations

import os

ON = ("1", "true", "yes", "on")
OFF = ("", "0", "false", "no", "off")


def flag(name: str) -> bool:
    """The boolean environment variable ``name``; unset or empty is off."""
    value = os.environ.get(name, "").strip().lower()
    if value in ON:
        return True
    if value in OFF:
        return False
    raise ValueError(f"{name}={os.environ[name]!r} is not a switch: set it to one of {', '.join(ON)} or "
                     f"{', '.join(v for v in OFF if v)} (or unset it)")
