"""``ascend-patch``: scan, verify, bench, doctor, list, run.

    ascend-patch scan path/to/repo              # CUDA-only constructs and the patch for each (exit 1: unhandled)
    ascend-patch verify dinov2 --device sim --without gelu
    ascend-patch verify ./my_hf_folder --device sim --random-init   # any architecture; or --factory pkg.mod:build
    ascend-patch bench dinov2 --batch-sizes 1 2 4 8 --warmup 10 --iters 100 --plot bench.png
    ascend-patch doctor
    ascend-patch list
    ascend-patch run --recipe dinov2 --device sim train.py --epochs 1   # an unmodified script, patched

Exit codes: 0 success / PASS, 1 unhandled constructs (scan) or FAIL (verify), 2 bad input (one
line on stderr, no traceback); ``run``: the script's own. Also ``python -m ascend_patch`` and
``python -m ascend_patch.tools.cli``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from .. import __version__
from ..engine.calls import LineFormat
from .errors import InputError

logger = logging.getLogger("ascend_patch")

PROG = "ascend-patch"
EXIT_OK, EXIT_FAIL, EXIT_INPUT = 0, 1, 2
PIP_NAMES = {"PIL": "Pillow", "cv2": "opencv-python", "yaml": "pyyaml", "sklearn": "scikit-learn"}  # import != pip


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line (no usage block) and exits 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_INPUT, f"{self.prog}: error: {message} (see --help)\n")


def _number(kind: type, minimum: float, *, strict: bool = False) -> Callable[[str], Any]:
    """An argparse type: ``kind(text)`` that is >= minimum (> minimum when strict)."""
    noun = "an integer" if kind is int else "a number"
    bound = f"> {minimum}" if strict else f">= {minimum}"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        if not math.isfinite(value):  # float("nan") and float("inf") parse, and mean nothing here
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(f"{text!r} must be {bound}")
        return value

    return parse


_positive_int = _number(int, 1)
_non_negative_int = _number(int, 0)
_positive_float = _number(float, 0, strict=True)


def _device_name(text: str) -> str:
    if not text.strip():  # an empty value (an unset shell variable) must not mean "auto"
        raise argparse.ArgumentTypeError("give a device: auto, npu, npu:N, cuda, cpu or sim")
    return text


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"{text!r}: give patch names separated by commas")
    return names


def _subject(args: argparse.Namespace) -> dict[str, Any]:
    """The verify / bench options that name the model."""
    return {
        "factory": args.factory, "recipe": args.recipe, "patches": args.patches, "model_path": args.model_path,
        "tiny": args.tiny, "repo": args.repo, "random_init": args.random_init,
        "trust_remote_code": args.trust_remote_code,
    }  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Run CUDA-written PyTorch models on Ascend NPUs: scan, verify, bench.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log what the patches do (-vv: debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no line per finished phase on stderr")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}", help="print the version")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("scan", help="static scan of a source tree for CUDA-only constructs")
    p.add_argument("path", help="a folder or a .py file")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="JSON instead of a table")
    fmt.add_argument("--csv", action="store_true", help="CSV (file,line,construct,patch,note) instead of a table")

    def model_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("target", nargs="?", metavar="TARGET",
                       help="a recipe with a built-in model (see `ascend-patch list`), a Hugging Face model folder "
                            "(config.json + weights) or a hub id in the local cache")
        p.add_argument("--factory", metavar="MODULE:FUNCTION",
                       help="instead of TARGET: FUNCTION() returns (model, example_inputs); MODULE may be a file.py")
        p.add_argument("--recipe", metavar="R", help="folder / factory: run under this recipe (and its checks)")
        p.add_argument("--patches", metavar="A,B", type=_names,
                       help="folder / factory: run under these patches ('default': the default set, the default "
                            "without --recipe; with --recipe: added to it)")
        p.add_argument("--device", default="auto", type=_device_name,
                       help="auto | npu | cuda | cpu | sim (simulated NPU), npu:N for one NPU; default auto")
        p.add_argument("--dtype", default="fp32", help="dtype of the device run: fp32 | bf16 | fp16")
        p.add_argument("--random-init", action="store_true",
                       help="folder: build the architecture from config.json alone (seeded), no weights")
        p.add_argument("--trust-remote-code", action="store_true", help="folder: allow the folder's own model code")
        p.add_argument("--model-path", help="recipe: a local from_pretrained folder (default: random-init full size)")
        p.add_argument("--tiny", action="store_true", help="recipe: a few-layer config of the architecture (seconds)")
        p.add_argument("--repo", metavar="PATH",
                       help="recipe: clone of the upstream repository for models not on PyPI (mingtok, vtp); "
                            "factory: a folder put on sys.path")

    p = sub.add_parser("verify", help="accuracy: CPU fp32 reference vs the patched model on the device (any model)")
    model_args(p)
    p.add_argument("--image", help="image file (default: a seeded random tensor)")
    p.add_argument("--without", nargs="+", default=[], metavar="PATCH",
                   help="extra run with this patch of the recipe off (each value one run; 'a,b' both; 'all')")
    p.add_argument("--threshold", type=_positive_float, default=0.01,
                   help="PASS when mean relative error <= this (default 0.01 = 1 %%)")
    p.add_argument("--batch-size", type=_positive_int, help="default: 1, or the factory's example batch")
    p.add_argument("--seed", type=int, default=0, help="seed of the random input")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="everything as JSON (metrics, samples, environment)")
    fmt.add_argument("--markdown", action="store_true", help="the table as Markdown")

    p = sub.add_parser("bench", help="latency p50/p90/p99, throughput and memory per batch size")
    model_args(p)
    p.add_argument("--batch-sizes", nargs="+", type=_positive_int, default=[1, 2, 4, 8], metavar="N",
                   help="batch sizes to time (default 1 2 4 8)")
    p.add_argument("--warmup", type=_non_negative_int, default=None,
                   help="untimed iterations per batch size (default: 10, at most --iters)")
    p.add_argument("--iters", type=_positive_int, default=100, help="timed iterations per batch size (default 100)")
    p.add_argument("--plot", metavar="OUT.png", help="write latency and throughput vs batch size")
    p.add_argument("--json", action="store_true", help="rows with every timed iteration, and the environment")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (default: on a terminal)")

    p = sub.add_parser("doctor", help="versions, the target device, which patches apply, known pitfalls")
    p.add_argument("--device", default="auto", type=_device_name,
                   help="target to evaluate (auto | npu | cuda | cpu | sim)")
    p.add_argument("--json", action="store_true", help="JSON instead of text")

    p = sub.add_parser("list", help="patches and recipes with one-line descriptions")
    p.add_argument("--json", action="store_true", help="JSON instead of text")

    p = sub.add_parser("run", help="run an unmodified script (or -m module) with the patches applied first",
                       usage="%(prog)s [--recipe R] [--patches a,b] [--device D] [--log-file F] [--log-dir D] [--report] "
                             "[--] (script.py | -m module) [args ...]")  # fmt: skip
    p.add_argument("--recipe", metavar="R", help="a recipe (see `ascend-patch list`)")
    p.add_argument("--patches", metavar="A,B",
                   help="comma list of patches or recipes; 'default' = the default set (the default)")
    p.add_argument("--device", type=_device_name,
                   help="auto | npu | cuda | cpu | sim, npu:N for one NPU (default: $ASCEND_PATCH_DEVICE, else auto)")
    p.add_argument("--log-file", metavar="F", help="write this process's migration log (JSONL) here at exit")
    p.add_argument("--report", action="store_true", help="print the migration log on stderr at exit")
    p.add_argument("--log-dir", metavar="D", help="every process (torchrun workers too) writes its migration log "
                                                  "here at exit: ascend_patch_<rank>_<pid>.jsonl")
    p.add_argument("-m", dest="module", action="store_true", help="run a module, as python -m does")
    p.add_argument("script", nargs=argparse.REMAINDER, metavar="script.py args",
                   help="the script (with -m: the module) and its arguments, passed on verbatim")
    return parser


def _scan(args: argparse.Namespace) -> int:
    from .scan import scan

    try:
        result = scan(args.path)
    except FileNotFoundError as exc:
        raise InputError(str(exc)) from None
    text = result.to_json() if args.json else result.to_csv() if args.csv else result.to_text()
    print(text, end="" if args.csv else "\n")  # CSV ends with its own newline
    return result.exit_code


def _verify(args: argparse.Namespace) -> int:
    from .verify import verify

    result = verify(
        args.target, image=args.image, device=args.device, dtype=args.dtype, without=args.without,
        threshold=args.threshold, batch_size=args.batch_size, seed=args.seed, **_subject(args),
    )  # fmt: skip
    print(result.to_json() if args.json else result.to_markdown() if args.markdown else result.to_text())
    return EXIT_OK if result.passed else EXIT_FAIL


def _bench(args: argparse.Namespace) -> int:
    from .bench import bench

    result = bench(
        args.target, batch_sizes=args.batch_sizes, warmup=args.warmup, iters=args.iters, device=args.device,
        dtype=args.dtype, progress=False if args.no_progress or args.json else None, plot=args.plot,
        **_subject(args),
    )  # fmt: skip
    print(result.to_json() if args.json else result.to_text())
    if args.plot and not args.json:
        print(f"plot written to {args.plot}")
    return EXIT_OK


def _doctor(args: argparse.Namespace) -> int:
    from .doctor import doctor

    report = doctor(args.device)
    print(report.to_json() if args.json else report.to_text())
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    import ascend_patch

    from ..patches import DEFAULT_PATCHES

    patches, recipes = ascend_patch.list_patches(), ascend_patch.list_recipes()
    if args.json:
        print(json.dumps({"patches": patches, "recipes": recipes, "default": list(DEFAULT_PATCHES)}, indent=2))
        return EXIT_OK
    width = max(map(len, [*patches, *recipes]))
    print("patches (apply() with no names: " + ", ".join(DEFAULT_PATCHES) + ")")
    for name, summary in patches.items():
        print(f"  {name:<{width}}  {summary}")
    print("recipes")
    for name, summary in recipes.items():
        print(f"  {name:<{width}}  {summary}")
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    from .launch import run

    return run(
        args.script, module=args.module, recipe=args.recipe, patches=args.patches, device=args.device,
        log_file=args.log_file, log_dir=args.log_dir, show_report=args.report,
    )  # fmt: skip


COMMANDS = {"scan": _scan, "verify": _verify, "bench": _bench, "doctor": _doctor, "list": _list, "run": _run}


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad argument (2, message already printed)
        return int(exc.code or 0)
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LineFormat())  # the one prefix of every ascend_patch log line
    log = logging.getLogger("ascend_patch")
    log.addHandler(handler)
    previous = log.level
    log.setLevel(level)
    # Long phases say when they finish, also off a terminal (-q: not); -v adds the patches' own lines.
    progress = logging.getLogger("ascend_patch.progress")
    progress.setLevel(logging.WARNING if args.quiet else logging.INFO)
    # The user's clone (--repo, a factory's folder) is read, never written: no __pycache__ left there.
    bytecode = sys.dont_write_bytecode
    sys.dont_write_bytecode = bytecode or args.command in ("verify", "bench")
    try:
        return COMMANDS[args.command](args)
    except BrokenPipeError:
        # Output piped into `head`: stop quietly, and keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAIL
    except InputError as exc:
        # Bad input is the user's to fix: one line, no traceback.
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except ModuleNotFoundError as exc:
        # A package the model code needs (omegaconf for a --repo clone, transformers, ...) is missing:
        # a set-up problem, not a FAIL. (`run` reports the script's own errors as Python does.)
        if exc.name is None:
            raise
        top = exc.name.partition(".")[0]
        print(f"{PROG} {args.command}: error: {exc}: pip install {PIP_NAMES.get(top, top)} (or put the folder that "
              "holds it on sys.path, --repo)", file=sys.stderr)
        return EXIT_INPUT
    finally:
        sys.dont_write_bytecode = bytecode
        log.removeHandler(handler)  # main() is also called in-process (tests): leave logging as found
        log.setLevel(previous)
        progress.setLevel(logging.NOTSET)


if __name__ == "__main__":
    sys.exit(main())
