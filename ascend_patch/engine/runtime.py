"""apply / revert / patched: the engine's public verbs.

State is three things, all under the journal's lock: the journal (what was written), the
active activations (which patches are on, with their context and the targets still waiting
for an import), and the report log.
"""

from __future__ import annotations

import atexit
import difflib
import logging
import os
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping, Sequence

from . import calls, hooks
from .device import target_device
from .journal import JOURNAL, Entry
from .patch import Patch, PatchContext, Replace
from .report import MigrationReport, Record
from .slots import AttrSlot, TargetNotFound, resolve, split_target
from .warn import warn_user

logger = logging.getLogger("ascend_patch")


@dataclass
class Activation:
    patch: Patch
    ctx: PatchContext
    waiting: dict[str, list[Replace]] = field(default_factory=dict)
    # Recipe that switched this patch on (reverting the recipe reverts it too).
    owner: str | None = None
    # (original, replacement) of ``copies=True`` targets whose replacement is our own object: a copy of
    # it taken while the patch is active (``from x import *`` run after apply) is undone on revert.
    copied: list[tuple[Any, Any]] = field(default_factory=list)


_active: dict[str, Activation] = {}
# Insertion-ordered; a record seen again only bumps its count, so a call in a loop stays one row.
_log: dict[tuple[str, str, str, str], Record] = {}


# -- report log --------------------------------------------------------------------------------


def record(patch: str, action: str, target: str, detail: str = "") -> None:
    key = (patch, action, target, detail)
    with JOURNAL.lock:
        seen = _log.get(key)
        _log[key] = Record(patch, action, target, detail, seen.count + 1 if seen else 1)
    logger.debug("%s: %s %s %s", patch, action, target, detail)


def record_entry(entry: Entry) -> None:
    if entry.kind == "support":  # bookkeeping a patch needs (e.g. TorchScript's table): one row, counted
        record(entry.patch, "patched", entry.slot.describe().partition("[")[0], entry.note)
    else:
        record(entry.patch, "copy" if entry.kind == "copy" else "patched", entry.slot.describe(), entry.note)


def report(*, clear: bool = False, internal: bool | None = None) -> MigrationReport:
    """The migration log: every call site in user or upstream code that went through a patch.

    Each ``call`` record has its ``where`` (file:line, relative to the working directory the program
    started in), ``change`` (the call as written -> what runs instead) and ``category`` (mapped,
    changed meaning, unsupported). ``internal=True`` also shows the patches' own records (targets
    patched, copies, waiting imports, what found nothing, reverts) and counters; the default is
    True at the ``detail`` log level, else False. ``filter()`` and ``to_jsonl()`` see every record
    in either view. ``clear``: start a new log after this one.
    """
    if internal is None:
        internal = calls.STATE.detail
    with JOURNAL.lock:
        stats = {name: dict(act.patch.stats()) for name, act in _active.items() if act.patch.stats}
        call_records = [
            Record(patch, "call", api, detail, count, where, category, change)
            for patch, api, detail, change, where, category, count in calls.snapshot(clear=clear)
        ]
        result = MigrationReport(list(_log.values()) + call_records, stats, internal=internal)
        if clear:
            _log.clear()
        return result


# -- log files: one per process and rank, written at exit ------------------------------------------

ENV_LOG_DIR = "ASCEND_PATCH_LOG_DIR"
_log_dir: list[Path] = []  # the folder asked for (the last one wins); the exit hook is registered with the first


def log_dir() -> Path | None:
    """The folder the log file is written to at exit, if one was asked for."""
    return _log_dir[-1] if _log_dir else None


def set_log_dir(folder: str | os.PathLike[str]) -> None:
    """Write the report (every record, :meth:`MigrationReport.to_jsonl`) to ``folder`` at interpreter exit,
    as ``ascend_patch_<rank>_<pid>.jsonl``: a torchrun job leaves one file per worker."""
    path = Path(folder).absolute()  # a later chdir must not move it
    if not _log_dir:
        atexit.register(_write_log_at_exit)
    if not _log_dir or _log_dir[-1] != path:
        _log_dir.append(path)


def process_rank() -> int:
    """This process's rank: ``RANK`` (torchrun), else ``torch.distributed``'s when initialized, else 0."""
    env = os.environ.get("RANK", "").strip()
    if env.isdigit():
        return int(env)
    dist = sys.modules.get("torch.distributed")
    try:
        if dist is not None and dist.is_available() and dist.is_initialized():
            return int(dist.get_rank())
    except Exception:  # a half torn-down process group at exit
        pass
    return 0


def log_file_path(folder: str | os.PathLike[str] | None = None) -> Path:
    """``<folder>/ascend_patch_<rank>_<pid>.jsonl`` (folder: the one asked for)."""
    where = Path(folder) if folder is not None else log_dir()
    if where is None:
        raise ValueError(f"no log folder: pass one, apply(..., log_dir=...) or set {ENV_LOG_DIR}")
    return where / f"ascend_patch_{process_rank()}_{os.getpid()}.jsonl"


def write_log(folder: str | os.PathLike[str] | None = None) -> Path:
    """Write the report, internal records included, to :func:`log_file_path` now; returns the path."""
    path = log_file_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    return report(internal=True).to_jsonl(path)


def _write_log_at_exit() -> None:
    try:
        path = write_log()
    except Exception as exc:  # never turn a clean exit into a traceback
        logger.warning("could not write the migration log to %s: %r", log_dir(), exc)
    else:
        logger.info("migration log written to %s", path)


# -- names ---------------------------------------------------------------------------------------


def unknown_name_error(name: str, known: Sequence[str], what: str = "patch or recipe") -> ValueError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ValueError(f"unknown {what} {name!r}.{hint} Known: {', '.join(sorted(known))}")


@dataclass(frozen=True)
class Planned:
    """One patch of an apply() call: the recipe that asked for it, and that recipe's option defaults."""

    patch: Patch
    owner: str | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)


def _options_for(patch: Patch, given: dict[str, Any], recipe_defaults: dict[str, Any]) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    for key, spec in patch.options.items():
        value = given.get(key, recipe_defaults.get(key, spec.default))
        if spec.choices is not None and value not in spec.choices:
            raise ValueError(
                f"{key}={value!r} is not valid for patch {patch.name!r}: choose one of "
                f"{', '.join(map(repr, spec.choices))}"
            )
        opts[key] = value
    return opts


def skip_reason(patch: Patch, ctx: PatchContext) -> str | None:
    """Why ``patch`` would not apply in ``ctx``: not needed on the device, or an upstream version
    outside the range it declares. None: it applies."""
    from packaging.specifiers import SpecifierSet

    if patch.skip_reason and (reason := patch.skip_reason(ctx)):
        return reason
    for dist, spec in patch.requires.items():
        try:
            have = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue  # targets in it will wait for an import that may never come; that is fine
        if have not in SpecifierSet(spec, prereleases=True):
            return f"{dist} {have} is installed; this patch supports {dist}{spec}"
    return None


# -- apply ---------------------------------------------------------------------------------------


def apply(
    plan: Sequence[Planned],
    *,
    device: str | None = None,
    log: str | None = None,
    log_dir: str | os.PathLike[str] | None = None,
    **options: Any,
) -> list[str]:
    """Switch on the planned patches, in order; returns the names switched on by this call.

    Targets already imported are patched now, the others when their module is imported. Applying an
    active patch again does nothing. ``log``: "off" | "summary" | "detail" call-site logging
    (default: env ASCEND_PATCH_LOG, else summary). ``log_dir`` (default: env ASCEND_PATCH_LOG_DIR):
    a folder the migration log is written to at exit, one ``ascend_patch_<rank>_<pid>.jsonl`` per
    process. Names are resolved above the engine (:mod:`ascend_patch.api`).
    """
    known_options = {key for item in plan for key in item.patch.options}
    for key in options:
        if key not in known_options:
            raise unknown_name_error(key, sorted(known_options) or ["(none)"], what="option")
    dev = target_device(device)
    # Only once the input is known good: a failing apply leaves no exit hook behind.
    if log is not None or calls.ENV_LOG in os.environ:
        calls.set_level(log)
    if log_dir is not None or os.environ.get(ENV_LOG_DIR):
        set_log_dir(log_dir if log_dir is not None else os.environ[ENV_LOG_DIR])
    switched_on: list[str] = []
    with JOURNAL.lock:
        try:
            for item in plan:
                patch = item.patch
                if patch.name in _active:
                    on = _active[patch.name].ctx.device
                    if on != dev:  # silently keeping the old target would send this caller's work elsewhere
                        raise ValueError(f"patch {patch.name!r} is already active for device {on!r}, not {dev!r}: "
                                         f"revert({patch.name!r}) (or revert()) first to switch devices")
                    _warn_if_options_differ(_active[patch.name], options)
                    continue
                ctx = PatchContext(patch.name, dev, _options_for(patch, options, dict(item.defaults)))
                _active[patch.name] = Activation(patch, ctx, owner=item.owner)
                switched_on.append(patch.name)
                _activate(_active[patch.name])
        except BaseException:
            # All or nothing: a failing patch must not leave half of this call applied.
            revert(switched_on)
            raise
    return switched_on


def _warn_if_options_differ(act: Activation, options: dict[str, Any]) -> None:
    differing = {k: v for k, v in options.items() if k in act.ctx.options and act.ctx.options[k] != v}
    if differing:
        warn_user(
            f"patch {act.patch.name!r} is already active with {act.ctx.options}; "
            f"{differing} ignored: revert({act.patch.name!r}) first to change them"
        )


def _activate(act: Activation) -> None:
    patch, ctx = act.patch, act.ctx
    reason = skip_reason(patch, ctx)
    if reason:
        record(patch.name, "skipped", "-", reason)
        logger.info("%s skipped: %s", patch.name, reason)
        return
    before = len(JOURNAL.entries([patch.name]))
    if patch.setup:
        patch.setup(ctx)
    _apply_replaces(act, patch.replaces)
    if len(JOURNAL.entries([patch.name])) == before and not act.waiting:
        record(patch.name, "nothing", "-", "found nothing to patch (see the records above for each target)")


def _apply_replaces(act: Activation, replaces: Sequence[Replace]) -> None:
    copied: list[tuple[Any, Any]] = []
    for rep in replaces:
        module_name, _ = split_target(rep.target)
        if module_name not in sys.modules:
            act.waiting.setdefault(module_name, []).append(rep)
            record(act.patch.name, "waiting", rep.target, f"patched when {module_name} is imported")
            hooks.when_imported(module_name)
            continue
        # Imported now: the target's outcome below replaces its "waiting" row.
        _log.pop((act.patch.name, "waiting", rep.target, f"patched when {module_name} is imported"), None)
        try:
            slot = resolve(rep.target)
        except TargetNotFound as exc:
            record(act.patch.name, "nothing", rep.target, str(exc) + (" (optional)" if rep.optional else ""))
            if not rep.optional:
                logger.warning("%s: %s; this upstream version is not covered", act.patch.name, exc)
            continue
        original = slot.read()
        try:
            replacement = rep.build(original, act.ctx)
        except (TypeError, AttributeError) as exc:  # a target of a kind the build cannot wrap (``seed = 42``)
            # One such target is a row with its reason; the patch's other targets still apply. Any other
            # error is a bug of the patch: the whole apply() fails and is undone (all or nothing).
            record(act.patch.name, "skipped", rep.target, f"cannot patch a {type(original).__name__}: "
                                                          f"{type(exc).__name__}: {exc}")
            logger.warning("%s: %s not patched (a %s: %s)", act.patch.name, rep.target, type(original).__name__, exc)
            continue
        act.ctx.replace(slot, replacement)
        if rep.copies:
            copied.append((original, replacement))
    if copied:
        _replace_copies(act, copied)


def _globals_holding(objects: list[Any]) -> list[tuple[ModuleType, str, Any]]:
    """(module, name, object) for every module global that is one of ``objects`` (by identity)."""
    by_id = {id(obj): obj for obj in objects}
    found = []
    for mod_name, module in list(sys.modules.items()):
        # Our own modules hold replacements, and torch._C holds the definitions, not copies.
        if not isinstance(module, ModuleType) or mod_name.split(".")[0] == "ascend_patch" or mod_name.startswith(
            "torch._C"
        ):
            continue
        try:
            found += [(module, key, v) for key, v in vars(module).items() if id(v) in by_id and by_id[id(v)] is v]
        except RuntimeError:  # dict changed size: a lazy module filled itself in meanwhile
            continue
    return found


def _replace_copies(act: Activation, pairs: list[tuple[Any, Any]]) -> None:
    """Replace ``from x import f`` copies of patched originals held as module globals.

    The same pass tells which replacements are objects other modules already hold (``torch.npu.Event``
    standing in for ``torch.cuda.Event``): a later copy of those is not ours to undo on revert.
    """
    replacement_of = {id(original): replacement for original, replacement in pairs}
    shared: set[int] = set()
    for module, key, found in _globals_holding([obj for pair in pairs for obj in pair]):
        slot = AttrSlot(module, key)
        if JOURNAL.owns(slot):
            continue
        if id(found) in replacement_of:
            act.ctx.replace(slot, replacement_of[id(found)], kind="copy", note="copy taken before apply")
        else:
            shared.add(id(found))
    act.copied += [(original, replacement) for original, replacement in pairs if id(replacement) not in shared]


def _restore_copies_taken_while_active(reverted: list[Activation]) -> None:
    """Copies of a replacement made after apply (a star import, a late ``from x import f``) are not in
    the journal; put them back to the original so revert leaves no wrapper behind."""
    undo = {id(rep): (act.patch.name, original, rep) for act in reverted for original, rep in act.copied}
    if not undo:
        return
    for module, key, replacement in _globals_holding([rep for _, _, rep in undo.values()]):
        if JOURNAL.owns(AttrSlot(module, key)):
            continue  # journaled by a patch still active: not ours to touch
        name, original, _ = undo[id(replacement)]
        setattr(module, key, original)
        record(name, "reverted", f"{module.__name__}.{key}", "copy taken while patched: original restored")


def _on_import(module: ModuleType) -> None:
    for act in list(_active.values()):
        replaces = act.waiting.pop(module.__name__, None)
        if replaces:
            _apply_replaces(act, replaces)


hooks.set_handler(_on_import)


# -- revert --------------------------------------------------------------------------------------


def revert(names: Sequence[str] | None = None) -> list[str]:
    """Undo active patches (all when ``names`` is None), newest first, restoring the original objects.

    A name that owns other activations (a recipe) reverts them too; names not active are ignored.
    """
    with JOURNAL.lock:
        if names is not None:
            wanted = set(names)
            wanted.update(n for n, act in _active.items() if act.owner in wanted)
        else:
            wanted = set(_active)
        targets = [n for n in _active if n in wanted]
        reverted = [_active.pop(name) for name in targets]
        for act in reverted:
            act.ctx.active = False
            act.waiting.clear()
        left = JOURNAL.undo(targets)
        _restore_copies_taken_while_active(reverted)
        _forget_dynamo_tables()
        for name in reversed(targets):
            kept = [e for e in left if e.patch == name]
            record(name, "reverted", "-", f"{len(kept)} slot(s) left in place" if kept else "")
            for entry in kept:
                record(name, "left", entry.slot.describe(), "replaced again after apply; not restored")
        return list(reversed(targets))


def _forget_dynamo_tables() -> None:
    """Drop dynamo's tables of torch functions, built once by resolving names such as "torch.zeros_like".

    Built while a patch was active they name its wrappers, which dynamo then calls as torch functions;
    after revert those are gone, and the next activation's wrappers would be traced into and their call
    to the original builtin, missing from the table, refused ("function marked as skipped").
    """
    trace_rules = sys.modules.get("torch._dynamo.trace_rules")
    if trace_rules is not None:
        trace_rules.get_torch_obj_rule_map.cache_clear()
        trace_rules.get_tensor_method.cache_clear()


def active() -> list[str]:
    with JOURNAL.lock:
        return list(_active)


def is_active(name: str) -> bool:
    return name in _active


def context_of(name: str) -> PatchContext | None:
    act = _active.get(name)
    return act.ctx if act else None
