"""Warnings for user mistakes, attributed to the user's line rather than to ours."""

from __future__ import annotations

import contextlib
import sys
import warnings


def _ours(filename: str, module: str) -> bool:
    # contextlib: ``patched()`` is a generator context manager, its frames sit between us and the user.
    return module.split(".")[0] == "ascend_patch" or filename == contextlib.__file__


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` pointing at the first frame outside ascend_patch (the user's ``apply`` call).

    A fixed ``stacklevel`` is wrong as soon as the call path changes (``apply`` vs ``patched()``,
    a recipe setup calling a shared helper); counting our own frames is not.
    """
    frame, level = sys._getframe(1), 2
    while frame.f_back is not None and _ours(frame.f_code.co_filename, frame.f_globals.get("__name__", "")):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
