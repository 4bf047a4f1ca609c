"""``ascend-patch run``: an unmodified script or module, with the patches applied before its imports.

    ascend-patch run [--recipe R] [--patches a,b] [--device D] [--log-file F] [--] script.py args...
    ascend-patch run ... -m package.module args...

The script runs as ``python script.py args`` would run it: ``__name__ == "__main__"``, ``sys.argv``
the script's, ``sys.path[0]`` its folder (the working directory for ``-m``), an uncaught exception
printed as Python prints it (without the launcher's frames) with exit status 1, ``SystemExit`` codes
kept. The names and the device are exported as ``ASCEND_PATCH_APPLY`` / ``ASCEND_PATCH_DEVICE``, so
the script's own Python subprocesses (torchrun workers, spawned DataLoader workers) are patched at
their start-up too, by the .pth hook the package installs (:mod:`ascend_patch._autoapply`).

Nothing of the script runs before its input is checked: a missing script, an unknown name or an
unavailable device is an :class:`InputError` (one line, exit 2).
"""

from __future__ import annotations

import atexit
import builtins
import importlib.util
import os
import runpy
import signal
import sys
import types
import zipfile
from collections.abc import Sequence
from importlib.machinery import SourceFileLoader
from pathlib import Path

from .._autoapply import DEFAULT, ENV_APPLY, ENV_DEVICE, names_from
from ..engine.runtime import ENV_LOG_DIR
from .errors import InputError

EXIT_EXCEPTION = 1  # what Python exits with on an uncaught exception


def resolve_names(recipe: str | None, patches: str | None) -> list[str]:
    """``--recipe`` and ``--patches`` -> names for ``apply`` (none given: the default set)."""
    from ..patches import patch_names
    from ..recipes import recipe_names

    names: list[str] = []
    if recipe is not None:
        if recipe in patch_names():
            raise InputError(f"{recipe!r} is a patch, not a recipe: use --patches {recipe}")
        if recipe not in recipe_names():
            from ..engine.runtime import unknown_name_error

            raise InputError(str(unknown_name_error(recipe, recipe_names(), what="recipe")))
        names.append(recipe)
    if patches is not None:
        try:
            names += [n for n in names_from(patches) if n not in names]
        except ValueError as exc:
            raise InputError(f"--patches {patches!r}: {exc}") from None
    return names or names_from(DEFAULT)


def check_device(device: str | None) -> str:
    """The target device type for ``device`` (None: ``ASCEND_PATCH_DEVICE``, else auto); installs the
    simulated NPU for "sim". An unknown or absent device is an InputError."""
    from ..engine.device import target_device

    asked = device or os.environ.get(ENV_DEVICE) or "auto"
    where = ENV_DEVICE if not device and os.environ.get(ENV_DEVICE) else "--device"
    try:
        return target_device(asked)
    except (ValueError, RuntimeError) as exc:  # DeviceNotAvailable, SimInstallError (a real torch_npu), ...
        raise InputError(f"{where} {asked!r}: {exc}") from None


def _check_target(target: str, module: bool) -> None:
    if module:
        if not target or target.startswith("-"):
            raise InputError("-m needs a module name: ascend-patch run -m package.module [args ...]")
        return  # found once sys.path is the script's (see _find_module)
    path = Path(target)
    if not path.exists():
        raise InputError(f"no such script: {target!r} (give the path of a .py file, or -m package.module)")
    if path.is_dir() and not (path / "__main__.py").exists():
        raise InputError(f"{target!r} is a folder without __main__.py: give the script's path")


def _find_module(name: str) -> importlib.machinery.ModuleSpec:
    """The spec ``python -m name`` runs: the module, or a package's ``__main__``."""
    try:
        spec = importlib.util.find_spec(name)
        package = spec is not None and spec.submodule_search_locations is not None
        if package:
            spec = importlib.util.find_spec(f"{name}.__main__")
    except (ImportError, ValueError):  # a parent package that is not there / a bad name
        spec, package = None, False
    if package and spec is None:
        raise InputError(f"{name!r} is a package and cannot be directly executed (it has no __main__)")
    if spec is None or spec.loader is None:
        raise InputError(f"no module named {name!r} (on sys.path, from {os.getcwd()}): check -m and the folder")
    return spec


def _exec_as_main(code: types.CodeType, **attrs: object) -> None:
    """Run ``code`` in a new ``__main__`` module that stays ``sys.modules["__main__"]`` after it returns
    (atexit handlers, threads and pickling still find it), as Python runs a script or ``-m``."""
    main = types.ModuleType("__main__")
    main.__dict__.update(__builtins__=builtins, **attrs)
    sys.modules["__main__"] = main
    exec(code, main.__dict__)  # noqa: S102 - running the user's code is the point


def _run_module(spec: importlib.machinery.ModuleSpec) -> None:
    """``python -m``: ``sys.argv[0]`` and ``__file__`` the module's file, ``__spec__`` its spec."""
    code = spec.loader.get_code(spec.name)  # type: ignore[union-attr]
    if code is None:
        raise InputError(f"no code to run in {spec.name!r}")
    sys.argv[0] = spec.origin or spec.name
    _exec_as_main(code, __file__=spec.origin, __cached__=spec.cached, __loader__=spec.loader, __spec__=spec,
                  __package__=spec.parent)


def _run_source_file(path: str) -> None:
    """Run a .py file as ``python path`` does (CPython's pymain_run_file): with an absolute ``__file__``
    (safe after ``os.chdir``) and tracebacks naming it; ``sys.argv[0]`` stays as given. runpy.run_path
    would put the absolute path in argv[0] or leave ``__file__`` relative, and restores the launcher's
    ``__main__`` afterwards."""
    filename = os.path.abspath(path)
    with open(filename, "rb") as source:  # bytes: compile() honours a coding cookie
        code = compile(source.read(), filename, "exec", dont_inherit=True)
    _exec_as_main(code, __file__=filename, __cached__=None, __loader__=SourceFileLoader("__main__", filename))


def _restore(env: dict[str, str | None], path: list[str], argv: list[str]) -> None:
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    sys.path[:] = path
    sys.argv = argv  # run() rebinds it: the caller's own list back


def _write_report_at_exit(path: Path) -> None:
    def write() -> None:
        import ascend_patch

        try:
            ascend_patch.report().to_jsonl(path)
        except OSError as exc:
            print(f"ascend-patch run: could not write the migration log to {str(path)!r}: {exc}", file=sys.stderr)

    atexit.register(write)  # registered before the script runs: runs after the script's own handlers


def _print_report() -> None:
    import ascend_patch

    sys.stdout.flush()  # the script's output first
    print(ascend_patch.report(), file=sys.stderr)


def _user_traceback(tb: types.TracebackType | None) -> types.TracebackType | None:
    """The traceback without the launcher's and runpy's frames, as ``python script.py`` shows it."""
    ours = {__name__, "runpy"}
    while tb is not None and tb.tb_frame.f_globals.get("__name__") in ours:
        tb = tb.tb_next
    return tb


def _exit_code(exc: SystemExit) -> int:
    """Python's own handling of an uncaught SystemExit."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return EXIT_EXCEPTION


def split_command_line(command_line: Sequence[str], module: bool = False) -> tuple[str, list[str], bool]:
    """``[--] [-m] target args...`` -> (target, args, module); the args are kept verbatim, ``--`` included."""
    rest = list(command_line)
    if rest[:1] == ["--"]:
        rest = rest[1:]
    if not module and rest[:1] == ["-m"]:
        module, rest = True, rest[1:]
    if not rest:
        what = "module" if module else "script"
        raise InputError(f"no {what} to run: ascend-patch run [options] script.py [args ...] (or -m package.module)")
    return rest[0], rest[1:], module


def run(
    command_line: Sequence[str],
    *,
    module: bool = False,
    recipe: str | None = None,
    patches: str | None = None,
    device: str | None = None,
    log_file: str | None = None,
    log_dir: str | None = None,
    show_report: bool = False,
) -> int:
    """Run ``command_line`` (``script.py args...``; with ``module=True`` ``package.module args...``)
    as ``__main__`` under the patches; returns the exit status Python would have had."""
    import ascend_patch

    target, args, module = split_command_line(command_line, module)
    _check_target(target, module)
    names = resolve_names(recipe, patches)
    log_path = None
    if log_file:
        log_path = Path(log_file).resolve()
        if not log_path.parent.is_dir():
            raise InputError(f"--log-file {log_file!r}: folder {str(log_path.parent)!r} does not exist")
        if log_path.is_dir():
            raise InputError(f"--log-file {log_file!r} is a folder: give a file path (or use --log-dir)")
        if not os.access(log_path if log_path.exists() else log_path.parent, os.W_OK):
            # Found now, not at exit after the whole script ran.
            raise InputError(f"--log-file {log_file!r} cannot be written: choose a writable file path")
    if log_dir is not None and Path(log_dir).exists() and not Path(log_dir).is_dir():
        raise InputError(f"--log-dir {log_dir!r} is a file, not a folder")
    check_device(device)

    # What a module that is not there restores (-m is looked up once the patches are on).
    found = {k: os.environ.get(k) for k in (ENV_APPLY, ENV_DEVICE, ENV_LOG_DIR)}, list(sys.path), sys.argv
    # The script's Python subprocesses (torchrun workers, ...) apply the same at their start-up.
    os.environ[ENV_APPLY] = ",".join(names)
    if device:
        os.environ[ENV_DEVICE] = device
    if log_dir is not None:  # each of them writes its own ascend_patch_<rank>_<pid>.jsonl there
        os.environ[ENV_LOG_DIR] = str(Path(log_dir).absolute())

    # sys.path[0] as Python sets it: the script's folder (symlinks resolved), the working directory for -m.
    archive = not module and (os.path.isdir(target) or zipfile.is_zipfile(target))  # runs its __main__.py
    if module:
        first = os.getcwd()
    elif archive:
        first = os.path.abspath(target)
    else:
        first = os.path.dirname(os.path.realpath(target))
    sys.path[:1] = [first]
    if ascend_patch.active():  # applied at start-up by ASCEND_PATCH_APPLY: the command line decides
        ascend_patch.revert()
    ascend_patch.apply(*names, device=device)
    sys.argv = [target, *args]
    if module:
        sys.argv[0] = "-m"  # as Python shows it while it looks the module up
        try:
            spec = _find_module(target)  # after apply: finding a.b imports package a
        except InputError:
            # Nothing of the module ran: leave the process as found, unpatched (run() is also called in-process).
            ascend_patch.revert()
            _restore(*found)
            raise
    if log_path is not None:
        _write_report_at_exit(log_path)
    if show_report:  # registered before the script runs: printed after the script's own exit handlers
        atexit.register(_print_report)

    try:
        if module:
            _run_module(spec)
        elif archive or target.endswith(".pyc"):
            runpy.run_path(target, run_name="__main__")
        else:
            _run_source_file(target)
    except SystemExit as exc:
        return _exit_code(exc)
    except BaseException as exc:  # noqa: BLE001 - printed as Python prints an uncaught exception
        # The default hook prints the exception's own traceback: drop the launcher frames from it.
        exc.__traceback__ = _user_traceback(exc.__traceback__)
        sys.excepthook(type(exc), exc, exc.__traceback__)
        if isinstance(exc, KeyboardInterrupt) and hasattr(signal, "SIGINT"):
            # Python exits through SIGINT after printing it, so a shell sees the interrupt.
            sys.stdout.flush()
            sys.stderr.flush()
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
            return 128 + signal.SIGINT  # not reached where the signal kills the process
        return EXIT_EXCEPTION
    return 0
