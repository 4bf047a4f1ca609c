"""Compatibility corpus: public CUDA-written repositories, each run on the simulated NPU against the CPU.

For each entry of ``repos.toml``: bring the source at its pinned commit into ``--cache`` (from a local bare
mirror with ``--mirror-root``, else ``git clone`` from GitHub), then run its driver (``drivers/<driver>.py``) in
two fresh interpreters:

1. reference: never imports ascend_patch; small model, fixed seed, CPU fp32 (or the dtype of the repository's
   own path); saves weights, inputs and outputs in a work folder;
2. patched: ``ascend_patch.apply(device="sim")`` first, then the repository's own CUDA-written path on the
   saved weights and inputs; relative L2 error against the reference, pass at <= 1e-4 in fp32.

``--baseline`` runs step 2 without ascend_patch (how the corpus fares unpatched). The result is a
measurement, not a test: the exit code is 0 whatever passed.

    python benchmarks/corpus/run.py --mirror-root /work/.mirror
    python benchmarks/corpus/run.py --only nanogpt,edm --json corpus.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULT_TAG = "CORPUS_RESULT "  # the line each driver process prints (drivers/common.py)
log = logging.getLogger("corpus")


@dataclass(frozen=True)
class Entry:
    """One ``[[repo]]`` table of repos.toml."""

    name: str
    github: str  # owner/name
    commit: str  # the full 40-hex commit the driver was written against
    driver: str  # module under drivers/
    constructs: tuple[str, ...] = ()
    deps: tuple[str, ...] = ()  # pip requirements beyond torch/numpy (documentation: nothing installs them)
    why: str = ""
    tol: float | None = None  # overrides the driver's threshold


def load_entries(path: Path) -> list[Entry]:
    with open(path, "rb") as f:
        data = tomllib.load(f)
    names = {f.name for f in fields(Entry)}
    entries = []
    for raw in data["repo"]:
        unknown = set(raw) - names
        if unknown:
            raise ValueError(f"{raw.get('name', '?')}: unknown key(s) {sorted(unknown)} in {path}")
        entry = Entry(**{**raw, "constructs": tuple(raw.get("constructs", ())), "deps": tuple(raw.get("deps", ()))})
        if len(entry.commit) != 40 or any(c not in "0123456789abcdef" for c in entry.commit):
            raise ValueError(f"{entry.name}: commit must be 40 lowercase hex digits, got {entry.commit!r}")
        entries.append(entry)
    if len({e.name for e in entries}) != len(entries):
        raise ValueError(f"duplicate names in {path}")
    return entries


# ---------------------------------------------------------------------------------------------- sources


def _git(*args: str, cwd: Path | None = None, stdin: bytes | None = None) -> bytes:
    return subprocess.run(["git", *args], cwd=cwd, input=stdin, capture_output=True, check=True).stdout


def _mirror_for(root: Path, github: str) -> Path | None:
    owner, name = github.split("/")
    for candidate in (root / f"{owner}+{name}" / "repo", root / f"{owner}+{name}", root / owner / f"{name}.git",
                      root / f"{name}.git"):
        if (candidate / "HEAD").is_file() and (candidate / "objects").is_dir():
            return candidate
    return None


def _extract(git_dir: Path, commit: str, dest: Path) -> int:
    """Write the tree of ``commit`` into ``dest`` blob by blob; returns how many blobs the mirror lacks.

    Not ``git archive``: mirrors may omit large files (images, weights), and archive stops at the first one.
    """
    listing = _git(f"--git-dir={git_dir}", "ls-tree", "-r", "-z", commit)
    entries = []
    for rec in listing.split(b"\0"):
        if rec:
            meta, path = rec.split(b"\t", 1)
            mode, kind, sha = meta.split()
            if kind == b"blob":
                entries.append((mode, sha, path.decode()))
    missing = 0
    with subprocess.Popen(["git", f"--git-dir={git_dir}", "cat-file", "--batch"], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE) as cat:
        assert cat.stdin is not None and cat.stdout is not None
        for mode, sha, path in entries:
            cat.stdin.write(sha + b"\n")
            cat.stdin.flush()
            header = cat.stdout.readline().split()
            if header[-1] == b"missing":
                missing += 1
                continue
            data = cat.stdout.read(int(header[2]))
            cat.stdout.read(1)  # the newline after each object
            target = dest / path
            target.parent.mkdir(parents=True, exist_ok=True)
            if mode == b"120000":
                target.symlink_to(data.decode())
            else:
                target.write_bytes(data)
                if mode == b"100755":
                    target.chmod(0o755)
        cat.stdin.close()
    return missing


def fetch_source(entry: Entry, cache: Path, mirror_root: Path | None) -> Path:
    """The checkout of ``entry`` at its commit, under ``cache`` (reused once complete)."""
    dest = cache / f"{entry.name}-{entry.commit[:12]}"
    done = dest / ".corpus-complete"
    if done.exists():
        return dest
    if dest.exists():
        shutil.rmtree(dest)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=cache))
    mirror = _mirror_for(mirror_root, entry.github) if mirror_root else None
    if mirror is not None:
        missing = _extract(mirror, entry.commit, tmp)
        log.info("%s: %s@%s from %s (%d blob(s) absent from the mirror)", entry.name, entry.github,
                 entry.commit[:12], mirror, missing)
    else:
        url = f"https://github.com/{entry.github}.git"
        log.info("%s: fetching %s@%s", entry.name, url, entry.commit[:12])
        _git("init", "-q", cwd=tmp)
        _git("fetch", "-q", "--depth", "1", url, entry.commit, cwd=tmp)
        _git("checkout", "-q", "FETCH_HEAD", cwd=tmp)
        shutil.rmtree(tmp / ".git")
    tmp.rename(dest)
    done.write_text(f"{entry.github} {entry.commit}\n")
    return dest


# ------------------------------------------------------------------------------------------------ running


def _child_env(ascend_patch_dir: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASCEND_PATCH_")}  # no sim via the environment
    first = [str(ascend_patch_dir)] if ascend_patch_dir else []  # before the installed (editable) package
    env["PYTHONPATH"] = os.pathsep.join([*first, str(HERE), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):  # drivers set these themselves
        env.pop(key, None)
    return env


def run_driver(entry: Entry, src: Path, work: Path, mode: str, timeout: float, verbose: bool,
               ascend_patch_dir: Path | None = None) -> dict[str, Any]:
    """One driver process; its result line as a dict (or a failure record when it printed none)."""
    cmd = [sys.executable, "-m", "drivers", "--name", entry.name, "--driver", entry.driver, "--mode", mode,
           "--src", str(src), "--work", str(work), "--constructs", json.dumps(list(entry.constructs))]
    if entry.tol is not None:
        cmd += ["--tol", str(entry.tol)]
    if verbose:
        cmd.append("-v")
    log_path = work / f"{mode}.log"
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=work, env=_child_env(ascend_patch_dir), capture_output=True, text=True,
                              timeout=timeout)
        out, err, rc = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        rc = None
    log_path.write_text(f"$ {' '.join(cmd)}\n--- stdout\n{out}\n--- stderr\n{err}")
    for line in reversed(out.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    cause = f"timeout after {timeout:.0f} s" if rc is None else f"process exited {rc} without a result line"
    tail = [ln for ln in err.splitlines() if ln.strip()][-1:] or [""]
    return {"repo": entry.name, "mode": mode, "ok": False, "rel_err": None, "constructs": list(entry.constructs),
            "cause": f"{cause}: {tail[0][:200]}", "where": None,
            "seconds": round(time.perf_counter() - started, 1)}


def run_entry(entry: Entry, args: argparse.Namespace) -> dict[str, Any]:
    try:
        src = fetch_source(entry, args.cache, args.mirror_root)
    except (subprocess.CalledProcessError, OSError) as exc:
        detail = exc.stderr.decode(errors="replace").strip() if isinstance(exc, subprocess.CalledProcessError) else ""
        return {"repo": entry.name, "ok": False, "rel_err": None, "constructs": list(entry.constructs),
                "cause": f"source: {exc} {detail}"[:300], "where": None}
    work = Path(tempfile.mkdtemp(prefix=f"{entry.name}-", dir=args.work_root))
    ref = run_driver(entry, src, work, "reference", args.timeout, args.verbose)
    if not ref.get("ok"):
        result = {**ref, "ok": False, "cause": f"reference: {ref.get('cause')}"}
    else:
        mode = "baseline" if args.baseline else "patched"
        result = run_driver(entry, src, work, mode, args.timeout, args.verbose, args.ascend_patch)
        result["reference_seconds"] = ref.get("seconds")
    result.update(github=entry.github, commit=entry.commit, work=str(work))
    if not args.keep_work:
        shutil.rmtree(work, ignore_errors=True)
        result.pop("work")
    return result


def ascend_patch_snapshot(rev: str) -> Path:
    """``git archive REV ascend_patch`` of the checkout this corpus lives in, into a temporary folder.

    Measures a committed revision whatever uncommitted edits the working tree holds.
    """
    root = Path(_git("rev-parse", "--show-toplevel", cwd=HERE).decode().strip())
    dest = Path(tempfile.mkdtemp(prefix="ascend-patch-"))
    archive = _git("archive", rev, "ascend_patch", cwd=root)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def describe_ascend_patch(path: Path | None, rev: str | None) -> str:
    """Which ascend_patch the patched processes import: a revision, a folder, or the installed package."""
    if rev:
        full = _git("rev-parse", rev, cwd=HERE).decode().strip()
        return f"ascend_patch at {rev} ({full[:12]})"
    if path:
        return f"ascend_patch from {path}"
    root = Path(_git("rev-parse", "--show-toplevel", cwd=HERE).decode().strip())
    head = _git("rev-parse", "HEAD", cwd=root).decode().strip()[:12]
    dirty = bool(_git("status", "--porcelain", "--", "ascend_patch", cwd=root).strip())
    return f"installed ascend_patch (working tree at {head}{', with uncommitted changes' if dirty else ''})"


def table(results: Sequence[dict[str, Any]], baseline: bool) -> str:
    rows = [("repo", "ok", "rel_err", "s", "cause")]
    for r in results:
        err = r.get("rel_err")
        rows.append((r["repo"], "PASS" if r.get("ok") else "FAIL", "-" if err is None else f"{err:.2e}",
                     f"{(r.get('seconds') or 0) + (r.get('reference_seconds') or 0):.0f}",
                     (r.get("cause") or "") + (f"  [{r['where']}]" if r.get("where") else "")))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4] for row in rows]
    passed = sum(1 for r in results if r.get("ok"))
    what = "unpatched (baseline)" if baseline else "patched"
    lines.append(f"\n{passed} of {len(results)} repositories match the CPU reference {what} on the simulated NPU")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repos", type=Path, default=HERE / "repos.toml", help="the corpus list")
    p.add_argument("--cache", type=Path, default=Path("~/.cache/ascend-patch/corpus").expanduser(),
                   help="where checkouts are kept (default: %(default)s)")
    p.add_argument("--mirror-root", type=Path, help="local bare mirrors (<root>/<owner>+<name>/repo) instead of GitHub")
    p.add_argument("--only", action="append", default=[], help="entry name(s), comma-separated; repeatable")
    p.add_argument("--baseline", action="store_true", help="the second process does not import ascend_patch")
    p.add_argument("--json", type=Path, help="write the results as JSON here")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--ascend-patch", type=Path, help="a folder holding the ascend_patch package to measure")
    which.add_argument("--ascend-patch-rev", metavar="REV",
                       help="measure ascend_patch as committed at REV (e.g. HEAD) instead of the working tree")
    p.add_argument("--timeout", type=float, default=600, help="seconds per driver process (default: %(default)s)")
    p.add_argument("--work-root", type=Path, default=None, help="parent of the per-entry work folders (default: tmp)")
    p.add_argument("--keep-work", action="store_true", help="keep work folders (weights, outputs, logs)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    entries = load_entries(args.repos)
    only = {n for group in args.only for n in group.split(",") if n}
    unknown = only - {e.name for e in entries}
    if unknown:
        parser().error(f"unknown --only name(s): {', '.join(sorted(unknown))}")
    args.cache.mkdir(parents=True, exist_ok=True)
    if args.work_root:
        args.work_root.mkdir(parents=True, exist_ok=True)
    if args.ascend_patch_rev:
        args.ascend_patch = ascend_patch_snapshot(args.ascend_patch_rev)
    measured = "unpatched" if args.baseline else describe_ascend_patch(args.ascend_patch, args.ascend_patch_rev)
    log.info("measuring: %s", measured)
    results = []
    for entry in entries:
        if only and entry.name not in only:
            continue
        result = run_entry(entry, args)
        log.info("%-22s %s %s", entry.name, "PASS" if result.get("ok") else "FAIL", result.get("cause") or "")
        results.append(result)
    print(table(results, args.baseline))
    print(f"measured: {measured}")
    if args.json:
        args.json.write_text(json.dumps({"measured": measured, "results": results}, indent=2) + "\n")
    if args.ascend_patch_rev:
        shutil.rmtree(args.ascend_patch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
