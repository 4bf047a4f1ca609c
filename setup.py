"""Packaging hook only (the metadata is in pyproject.toml): install ``ascend_patch_autoapply.pth``.

The .pth lands in site-packages for a wheel install (it is written to the root of ``build_lib``,
which is the root of the wheel) and for an editable install (``pip install -e .``: setuptools'
PEP 660 ``editable_wheel`` runs ``build_py`` in editable mode and packs everything installed into
``install_lib`` - the unpacked editable wheel - so the .pth is written there). Its one line imports
``ascend_patch._autoapply`` only when ``ASCEND_PATCH_APPLY`` is set; see that module, which holds
the same line (``PTH_LINE``; tests check that the two agree).
"""

from __future__ import annotations

import os

from setuptools import setup
from setuptools.command.build_py import build_py

PTH_NAME = "ascend_patch_autoapply.pth"
PTH_LINE = (
    "import os; os.environ.get('ASCEND_PATCH_APPLY', '0') not in ('', '0') "
    "and __import__('ascend_patch._autoapply')._autoapply.main()"
)


class build_py_with_pth(build_py):
    """build_py that also writes the start-up .pth next to the top-level package."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            folder = self.get_finalized_command("install").install_lib  # the unpacked editable wheel
        else:
            folder = self.build_lib  # the root of the wheel
        self.mkpath(folder)
        path = os.path.join(folder, PTH_NAME)
        with open(path, "w", encoding="utf-8") as out:
            out.write(PTH_LINE + "\n")


setup(cmdclass={"build_py": build_py_with_pth})
