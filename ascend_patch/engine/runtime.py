"""apply / revert / patched: the engine's public verbs.

State is three things, all under the journal's lock: the journal (what was written), the
active activations (which patches are on, with their context and the targets still waiting
for an import), and the report log.
"""

from __future__ import annotations

import atexit
import difflib
import importlib
import logging
import os
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping, Sequence

from . import calls, hooks
from .copies import INDEX, is_plain
from .device import resolve_target
from .journal import JOURNAL, Entry
from .patch import Patch, PatchContext, Replace
from .report import MigrationReport, Record
from .slots import MISSING, AttrSlot, TargetNotFound, resolve, split_target
from .warn import warn_user

logger = logging.getLogger("ascend_patch")


@dataclass
class Activation:
    patch: Patch
    ctx: PatchContext
    waiting: dict[str, list[Replace]] = field(default_factory=dict)
    # Recipe that switched this patch on (reverting the recipe reverts it too).
    owner: str | None = None
    # (original, replacement) of every write whose replacement is the patch's own object (not one other
    # modules held already, as ``torch.npu.Event`` standing in for ``torch.cuda.Event``): a copy of it
    # taken while the patch is on (``from torch import Generator`` run after apply) is undone on revert.
    ours: list[tuple[Any, Any]] = field(default_factory=list)
    # On until revert() (switched on or re-applied by apply()), or while a patched() block holds it.
    pinned: bool = False
    holders: set[object] = field(default_factory=set)
    skipped: bool = False  # not needed on this device or version: nothing patched, reloads included


_active: dict[str, Activation] = {}
# Insertion-ordered; a record seen again only bumps its count, so a call in a loop stays one row.
_log: dict[tuple[str, str, str, str], int] = {}  # (patch, action, target, detail) -> times recorded


# -- report log --------------------------------------------------------------------------------


def record(patch: str, action: str, target: str, detail: str = "") -> None:
    key = (patch, action, target, detail)
    with JOURNAL.lock:
        _log[key] = _log.get(key, 0) + 1
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("%s: %s %s %s", patch, action, target, detail)


# A slot written again (each apply/revert cycle) bumps its row without describing the slot again; the
# value keeps the slot, and so its owner, alive: the id in the key cannot name another object.
_rows: dict[tuple[Any, ...], tuple[Any, tuple[str, str, str, str]]] = {}


def _written(entry: Entry) -> None:
    """A patch wrote ``entry``: one row of the report."""
    key = (type(entry.slot), entry.slot.key(), entry.patch, entry.kind, entry.note)
    row = _rows.get(key)
    if row is None:
        target = entry.slot.describe()
        if entry.kind == "support":  # bookkeeping a patch needs (e.g. TorchScript's table): one row, counted
            target = target.partition("[")[0]
        row = _rows[key] = (entry.slot, (entry.patch, "copy" if entry.kind == "copy" else "patched", target, entry.note))
    record(*row[1])


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
        records = [Record(*key, count) for key, count in _log.items()]
        result = MigrationReport(records + call_records, stats, internal=internal)
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
    holder: object | None = None,
    **options: Any,
) -> list[str]:
    """Switch on the planned patches, in order; returns the names switched on by this call.

    ``holder``: a ``patched()`` block holding the patches (see :func:`release`); without one the
    patches stay on until :func:`revert`.

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
    dev, index = resolve_target(device)
    # Only once the input is known good: a failing apply leaves no exit hook behind.
    if log is not None or calls.ENV_LOG in os.environ:
        calls.set_level(log)
    if log_dir is not None or os.environ.get(ENV_LOG_DIR):
        set_log_dir(log_dir if log_dir is not None else os.environ[ENV_LOG_DIR])
    _wait_for_imports_in_progress(plan)
    switched_on: list[str] = []
    with JOURNAL.lock:
        INDEX.refresh()
        try:
            for item in plan:
                patch = item.patch
                if patch.name in _active:
                    on = _active[patch.name].ctx
                    if (on.device, on.device_index) != (dev, index):  # keeping the old target would send
                        # this caller's work elsewhere
                        raise ValueError(f"patch {patch.name!r} is already active for device "
                                         f"{_spelled(on.device, on.device_index)!r}, not {_spelled(dev, index)!r}: "
                                         f"revert({patch.name!r}) (or revert()) first to switch devices")
                    _warn_if_options_differ(_active[patch.name], options)
                    continue
                ctx = _context(patch, dev, index, _options_for(patch, options, dict(item.defaults)))
                _active[patch.name] = Activation(patch, ctx, owner=item.owner)
                switched_on.append(patch.name)
                _activate(_active[patch.name])
        except BaseException:
            # All or nothing: a failing patch must not leave half of this call applied.
            revert(switched_on)
            raise
        for item in plan:
            act = _active[item.patch.name]
            if holder is None:
                act.pinned = True
                if item.owner is None:
                    act.owner = None  # named by apply() itself: reverting the recipe no longer takes it
            else:
                act.holders.add(holder)
        hooks.watch_reloads(bool(_active))
    return switched_on


def _being_imported(module: ModuleType | None) -> bool:
    return bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


def _wait_for_imports_in_progress(plan: Sequence[Planned]) -> None:
    """A target module another thread is still executing is in sys.modules without its targets yet.
    Importing it waits, on the import system's own module lock, until that thread's import is done
    (not under the journal lock: that import may fire our hooks). An import by this very thread
    returns at once; its targets are reported by ``_apply_replaces``."""
    for name in {split_target(rep.target)[0] for item in plan for rep in item.patch.replaces}:
        if _being_imported(sys.modules.get(name)):
            try:
                importlib.import_module(name)
            except Exception:  # that import failed in its thread; the target waits for the next one
                pass


# (id(patch), device, index, options) -> (patch, its context). A re-apply with the same device and options
# reuses the context and with it the replacements built the first time (``PatchContext.built``): an
# apply/revert cycle then costs the writes, not the builds, and a wrapper keeps its identity.
_contexts: dict[tuple[Any, ...], tuple[Patch, PatchContext]] = {}


def _spelled(device: str, index: int | None) -> str:
    return device if index is None else f"{device}:{index}"


def _context(patch: Patch, device: str, index: int | None, options: dict[str, Any]) -> PatchContext:
    key = (id(patch), device, index, tuple(sorted(options.items())))
    try:
        patch_and_ctx = _contexts.get(key)
    except TypeError:  # an unhashable option value: a fresh context each time
        return PatchContext(patch.name, device, options, index)
    if patch_and_ctx is None:
        patch_and_ctx = _contexts[key] = (patch, PatchContext(patch.name, device, options, index))
    ctx = patch_and_ctx[1]
    ctx.active = True
    return ctx


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
        act.skipped = True
        record(patch.name, "skipped", "-", reason)
        logger.info("%s skipped: %s", patch.name, reason)
        return
    since = JOURNAL.seq
    if patch.setup:
        patch.setup(ctx)
    if not _patch_targets(act, patch.replaces, since=since) and not act.waiting:
        record(patch.name, "nothing", "-", "found nothing to patch (see the records above for each target)")


def _patch_targets(act: Activation, replaces: Sequence[Replace], *, body_ran: bool = False,
                   since: int | None = None) -> list[Entry]:
    """Patch ``replaces`` and remember which of the replacements written since ``since`` (default: now)
    are the patch's own objects; returns those entries."""
    since = JOURNAL.seq if since is None else since
    decided = _apply_replaces(act, replaces, body_ran=body_ran)
    return _remember_own_objects(act, since, decided)


def _apply_replaces(act: Activation, replaces: Sequence[Replace], *, body_ran: bool = False) -> set[int]:
    """Patch each target; returns the ids of the entries written for targets, whose replacement is
    already in ``act.ours`` when it is the patch's own. ``body_ran``: called from an import or reload
    hook, after the module body (while the import system still marks the module as initializing)."""
    copied: list[tuple[Any, Any]] = []
    decided: set[int] = set()
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
            if not body_ran and _being_imported(sys.modules[module_name]):  # apply() ran inside its import
                record(act.patch.name, "skipped", rep.target, f"{module_name} was still being imported (apply() "
                       "ran during its import): call apply() before importing it")
                logger.warning("%s: %s not patched: %s was still being imported (apply() ran during its import); "
                               "call apply() before importing it", act.patch.name, rep.target, module_name)
                continue
            record(act.patch.name, "nothing", rep.target, str(exc) + (" (optional)" if rep.optional else ""))
            if not rep.optional:
                logger.warning("%s: %s; this upstream version is not covered", act.patch.name, exc)
            continue
        original = slot.read()
        built = act.ctx.built.get((rep.target, id(original)))
        if built is not None and built[0] is original:
            _, replacement, side_writes, own = built
            for entry in side_writes:  # what the build journaled besides the target (a TorchScript table row)
                act.ctx.replace(entry.slot, entry.replacement, kind=entry.kind, note=entry.note)
        else:
            since = JOURNAL.seq
            try:
                replacement = rep.build(original, act.ctx)
            except (TypeError, AttributeError) as exc:  # a target of a kind the build cannot wrap (``seed = 42``)
                # One such target is a row with its reason; the patch's other targets still apply. Any other
                # error is a bug of the patch: the whole apply() fails and is undone (all or nothing).
                record(act.patch.name, "skipped", rep.target, f"cannot patch a {type(original).__name__}: "
                                                              f"{type(exc).__name__}: {exc}")
                logger.warning("%s: %s not patched (a %s: %s)", act.patch.name, rep.target,
                               type(original).__name__, exc)
                continue
            side_writes = [e for e in JOURNAL.written_since(since) if e.patch == act.patch.name and e.kind != "target"]
            # The patch's own object when nothing held it before it was written (a new wrapper, not
            # torch_npu's Event): decided once, while nothing of ours can have copied it yet.
            own = not is_plain(replacement) and not INDEX.holders([replacement])
            act.ctx.built[(rep.target, id(original))] = (original, replacement, side_writes, own)
        decided.add(id(act.ctx.replace(slot, replacement)))
        if own:
            act.ours.append((original, replacement))
        if rep.copies:
            copied.append((original, replacement))
    if copied:
        _replace_copies(act, copied)
    return decided


def _remember_own_objects(act: Activation, since: int, decided: set[int]) -> list[Entry]:
    """Add to ``act.ours`` the replacements written after ``since`` that are the patch's own objects: not
    plain values, and held by no module global but their slot (``torch.npu.Event`` standing in for
    ``torch.cuda.Event`` is torch_npu's: a module holding it later is not a copy to undo). The
    ``decided`` entries (targets, judged when built) are skipped. A shim module put in sys.modules
    brings its functions: what is later imported from it maps to the original module's attribute of
    that name. Returns the entries written."""
    entries = [e for e in JOURNAL.written_since(since) if e.patch == act.patch.name]
    # (original, replacement, the slot's place or None)
    pairs: list[tuple[Any, Any, tuple[Any, str] | None]] = []
    for e in entries:
        rep = e.replacement
        if e.kind == "copy" or rep is MISSING or is_plain(rep) or id(e) in decided:
            continue
        if isinstance(e.slot, AttrSlot):
            pairs.append((e.original, rep, (e.slot.owner, e.slot.name)))
        elif getattr(e.slot, "mapping", None) is sys.modules:
            pairs.append((e.original, rep, None))
            if isinstance(rep, ModuleType):
                act.ours += _shim_functions(e.original, rep)
    held: dict[int, list[tuple[Any, str]]] = {}
    for module, key, obj in INDEX.holders([rep for _, rep, _ in pairs]):  # one look for the whole batch
        held.setdefault(id(obj), []).append((module, key))
    for original, rep, place in pairs:
        if all(place is not None and holder[0] is place[0] and holder[1] == place[1]
               for holder in held.get(id(rep), ())):
            act.ours.append((original, rep))
    return entries


# (id(original module), id(shim module)) -> (both, their (original, shim function) pairs): the same
# shim module is put in sys.modules at every apply, and its functions are judged once.
_shim_pairs: dict[tuple[int, int], tuple[Any, Any, list[tuple[Any, Any]]]] = {}


def _shim_functions(original: Any, shim: ModuleType) -> list[tuple[Any, Any]]:
    """(the original module's attribute or MISSING, the shim's function) for each function of ours in
    ``shim`` that no module global held before (a module importing the shim package directly is not a copy)."""
    key = (id(original), id(shim))
    known = _shim_pairs.get(key)
    if known is None:
        ours = [(getattr(original, name, MISSING), value) for name, value in vars(shim).items()
                if str(getattr(value, "__module__", "")).startswith("ascend_patch.") and not isinstance(value, ModuleType)]
        held = {id(obj) for _, _, obj in INDEX.holders([value for _, value in ours])}
        known = _shim_pairs[key] = (original, shim, [pair for pair in ours if id(pair[1]) not in held])
    return known[2]


def _replace_copies(act: Activation, pairs: list[tuple[Any, Any]]) -> None:
    """Replace ``from x import f`` copies of patched originals held as module globals."""
    replacement_of = {id(original): replacement for original, replacement in pairs}
    for module, key, found in INDEX.holders([original for original, _ in pairs]):
        slot = AttrSlot(module, key)
        if not JOURNAL.owns(slot):
            act.ctx.replace(slot, replacement_of[id(found)], kind="copy", note="copy taken before apply")


def _restore_copies_taken_while_active(reverted: list[Activation]) -> None:
    """Copies of a replacement made while a patch was on (a late ``from x import f``, a module imported
    under the attention shims) are not in the journal: put the original back, or say where it could not."""
    undo: dict[int, tuple[str, Any, Any]] = {}  # id(replacement) -> (patch, original, replacement)
    for act in reverted:
        for original, rep in act.ours:
            undo.setdefault(id(rep), (act.patch.name, original, rep))
    if not undo:
        return
    INDEX.refresh()
    left = []
    for module, key, rep in INDEX.holders([rep for _, _, rep in undo.values()]):
        if JOURNAL.owns(AttrSlot(module, key)):
            continue  # journaled by a patch still active: not ours to touch
        name, original, _ = undo[id(rep)]
        where = f"{module.__name__}.{key}"
        if original is MISSING:
            left.append(where)
            record(name, "left", where, "imported while patched and nothing to restore: re-import the module")
        else:
            setattr(module, key, original)
            record(name, "reverted", where, "copy taken while patched: original restored")
    if new := [where for where in left if where not in _warned_left]:  # each place once per process
        _warned_left.update(new)
        logger.warning("after revert %s still hold what they imported while patched (there was nothing before "
                       "to restore): re-import those modules, or import them before apply()", ", ".join(new))


_warned_left: set[str] = set()


def _on_import(module: ModuleType) -> None:
    for act in list(_active.values()):
        replaces = act.waiting.pop(module.__name__, None)
        if replaces:
            _patch_targets(act, replaces, body_ran=True)


def _on_reload(module: ModuleType) -> None:
    """``importlib.reload`` ran the body again: its names hold new, unpatched objects. The journal entries
    on the module itself are superseded (their slots hold the new objects, nothing of ours to restore);
    entries on its old classes stay (those classes still exist); the targets are patched again."""
    INDEX.forget(module.__name__)  # the body may have taken new copies of our replacements
    for act in list(_active.values()):
        if act.skipped:
            continue
        superseded = [e for e in JOURNAL.entries([act.patch.name])
                      if isinstance(e.slot, AttrSlot) and e.slot.owner is module and e.slot.read_own() is not e.replacement]
        JOURNAL.forget(superseded)
        # A target whose slot still holds our replacement (a class the module imported from elsewhere)
        # was not rebound: patching it again would wrap the wrapper.
        replaces = [r for r in act.patch.replaces
                    if split_target(r.target)[0] == module.__name__ and not _still_patched(r.target)]
        if replaces:
            record(act.patch.name, "reloaded", module.__name__, "importlib.reload: targets patched again")
            _patch_targets(act, replaces, body_ran=True)


def _still_patched(target: str) -> bool:
    try:
        return JOURNAL.owns(resolve(target))
    except TargetNotFound:
        return False


hooks.set_handler(_on_import, _on_reload)
JOURNAL.on_write = _written


# -- revert --------------------------------------------------------------------------------------


def revert(names: Sequence[str] | None = None, *, with_owned: bool = True) -> list[str]:
    """Undo active patches (all when ``names`` is None), newest first, restoring the original objects.

    A name that owns other activations (a recipe) reverts them too (unless ``with_owned`` is False);
    names not active are ignored.
    """
    with JOURNAL.lock:
        if names is not None:
            wanted = set(names)
            if with_owned:
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
        hooks.watch_reloads(bool(_active))
        _forget_dynamo_tables()
        for act in reverted:
            if any(e.patch == act.patch.name for e in left):
                # A wrapper left in place passes through (ctx.active is False): a later apply must not
                # reuse this context, which would switch the left-behind wrapper back on.
                for key in [k for k, (_, ctx) in _contexts.items() if ctx is act.ctx]:
                    del _contexts[key]
        for name in reversed(targets):
            kept = [e for e in left if e.patch == name]
            record(name, "reverted", "-", f"{len(kept)} slot(s) left in place" if kept else "")
            for entry in kept:
                record(name, "left", entry.slot.describe(), "replaced again after apply; not restored")
        return list(reversed(targets))


def release(holder: object, names: Sequence[str]) -> list[str]:
    """A ``patched()`` block ends: drop its hold on ``names``; revert the patches no block holds any
    more and that apply() did not switch on. Returns the names reverted."""
    with JOURNAL.lock:
        done = []
        for name in names:
            act = _active.get(name)
            if act is None or holder not in act.holders:
                continue  # reverted meanwhile (an explicit revert() wins over a block)
            act.holders.discard(holder)
            if not act.holders and not act.pinned:
                done.append(name)
        # Exactly these: a recipe's member that apply() pinned or another block holds stays on.
        return revert(done, with_owned=False) if done else []


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
