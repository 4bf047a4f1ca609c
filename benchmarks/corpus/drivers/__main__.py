"""Run one corpus driver in this (fresh) process: ``python -m drivers --driver NAME --mode MODE ...``.

In ``patched`` mode ascend_patch is imported and applied before anything else (torch included), as a user
would at the top of a CUDA-written script; ``reference`` and ``baseline`` never import it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m drivers")
    p.add_argument("--name", required=True, help="the corpus entry's name")
    p.add_argument("--driver", required=True, help="module under drivers/")
    p.add_argument("--mode", required=True, choices=("reference", "patched", "baseline"))
    p.add_argument("--src", required=True, type=Path, help="the repository checkout at its pinned commit")
    p.add_argument("--work", required=True, type=Path, help="folder shared by the reference and patched runs")
    p.add_argument("--constructs", default="[]", help="a JSON list, echoed on the result line")
    p.add_argument("--tol", type=float, default=None, help="override the driver's pass threshold")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.mode == "patched":
        import ascend_patch

        ascend_patch.apply(device="sim")
    from drivers.common import run_child

    constructs = json.loads(args.constructs)
    return run_child(args.name, args.driver, args.src, args.work, args.mode, constructs, args.tol)


if __name__ == "__main__":
    sys.exit(main())
