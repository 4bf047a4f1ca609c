"""``python -m ascend_patch ...`` is the ``ascend-patch`` command (``python -m ascend_patch run script.py``)."""

import sys

from .tools.cli import main

if __name__ == "__main__":
    sys.exit(main())
