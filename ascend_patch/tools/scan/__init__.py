"""Static scan of a source tree for CUDA-only constructs, and which patch handles each.

Reads Python files with :mod:`ast` (the scanned code is never imported or run) and lists every
construct a CUDA research repo uses that breaks or silently changes meaning on an Ascend NPU:
``torch.cuda.*``, ``.cuda()``, ``"cuda"`` device literals, autocast, flash_attn / xformers imports,
hard imports of CUDA-only packages (triton, apex, pynvml, bitsandbytes, deepspeed), NCCL, FSDP
``device_id``, float64 tensors sent to a device, TF32 / cuDNN switches, ``CUDA_VISIBLE_DEVICES``,
``nvidia-smi``, ``x.device.type == "cuda"``, ``torch.compile``, custom CUDA extensions and ``.cu``
sources. Each finding names the patch that handles it, or "unhandled" with what to do.

Verdicts are read from the patches, shims and recipes themselves (:mod:`.verdicts`); the AST walk
is :mod:`.visitor`. A tree holding a module a recipe patches is named with that recipe.

Only regular files are read (FIFOs, devices and links to them are skipped), each up to
``MAX_FILE_BYTES``. Exit status for CI: 1 when anything is unhandled or a file did not parse.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ...engine.table import table
from . import verdicts
from .visitor import NOTES, UNHANDLED, Finding, Visitor

__all__ = ["MAX_FILE_BYTES", "UNHANDLED", "Finding", "RecipeMatch", "ScanResult", "scan", "scan_source"]

logger = logging.getLogger("ascend_patch")

SKIP_DIRS = {".git", ".hg", ".svn", "__pycache__", ".tox", ".nox", ".venv", "venv", "env", "node_modules",
             "site-packages", "build", "dist", ".mypy_cache", ".pytest_cache", ".eggs"}  # fmt: skip
CUDA_SOURCE_SUFFIXES = (".cu", ".cuh")
MAX_FILE_BYTES = 4 * 1024 * 1024  # larger "source" is generated data, or a link to /dev/zero
CSV_FIELDS = ("file", "line", "construct", "patch", "note")


@dataclass
class RecipeMatch:
    recipe: str
    module: str  # the module the recipe patches
    where: str  # the file that is that module, or that imports it
    summary: str = ""


@dataclass
class ScanResult:
    root: str
    files_scanned: int
    findings: list[Finding] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # files that could not be parsed (exit 1)
    skipped: list[str] = field(default_factory=list)  # not regular files, or too large: not read
    recipes: list[RecipeMatch] = field(default_factory=list)

    @property
    def unhandled(self) -> list[Finding]:
        return [f for f in self.findings if not f.handled]

    @property
    def recipe_names(self) -> list[str]:
        return sorted({m.recipe for m in self.recipes})

    @property
    def exit_code(self) -> int:
        return 1 if self.unhandled or self.errors else 0

    def to_dict(self) -> dict:
        data = asdict(self)
        data["unhandled"] = len(self.unhandled)
        data["by_patch"] = _counts(self.findings)
        data["apply"] = self.apply_call()
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_csv(self) -> str:
        """One row per finding, then one per file not parsed (patch "not parsed") or skipped ("skipped")."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_FIELDS)
        for f in self.findings:
            writer.writerow((f.file, f.line, f.construct, f.patch, f.note))
        for kind, entries in (("not parsed", self.errors), ("skipped", self.skipped)):
            for entry in entries:
                file, _, why = entry.partition(": ")
                writer.writerow((file, 0, "", kind, why))
        return out.getvalue()

    def apply_call(self) -> str:
        """The ``ascend_patch.apply(...)`` call the findings ask for: the recipes named, else the patches."""
        names = self.recipe_names or sorted({f.patch for f in self.findings if f.handled})
        return f"ascend_patch.apply({', '.join(json.dumps(n) for n in names)})"

    def to_text(self) -> str:
        lines = [(f"scanned {self.files_scanned} file(s) under {self.root}: {len(self.findings)} CUDA construct(s), "
                  f"{len(self.unhandled)} unhandled")]
        if self.findings:
            rows = [(f"{f.file}:{f.line}", f.construct, f.patch, f.note) for f in self.findings]
            lines += ["", *table(("location", "construct", "patch", "note"), rows, widest=60), ""]
            lines.append("by patch: " + ", ".join(f"{k} {v}" for k, v in _counts(self.findings).items()))
        for error in self.errors:
            lines.append(f"not parsed: {error}")
        for skipped in self.skipped:
            lines.append(f"skipped: {skipped}")
        for name in self.recipe_names:
            match = next(m for m in self.recipes if m.recipe == name)
            lines.append(f"recipe: this tree is one the {name!r} recipe knows ({match.where}: {match.module}, "
                         f"which it patches) -> ascend_patch.apply({json.dumps(name)}): {match.summary}")
        if self.findings and not self.unhandled and not self.errors:
            lines.append(f"all handled: {self.apply_call()}")
        elif self.recipe_names:
            lines.append(f"start with: {self.apply_call()}")
        return "\n".join(lines)

    __str__ = to_text


def _counts(findings: list[Finding]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for f in findings:
        counts[f.patch] = counts.get(f.patch, 0) + 1
    return dict(sorted(counts.items()))


def _files(root: Path) -> Iterator[Path]:
    if not root.is_dir():
        yield root
        return
    for dirpath, dirnames, filenames in os.walk(root):
        # Sorted, so the output is stable; hidden and environment folders are not the repo's code.
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            if name.endswith((".py", *CUDA_SOURCE_SUFFIXES)):
                yield Path(dirpath) / name


def _unreadable(file: Path) -> str | None:
    """Why ``file`` is not read (not a regular file, too large), or None. Follows links: a ``x.py``
    linking to /dev/zero or a FIFO would never end, or block."""
    try:
        info = os.stat(file)
    except OSError as exc:
        return f"not readable ({exc.strerror})"
    if not stat.S_ISREG(info.st_mode):
        kind = ("a FIFO" if stat.S_ISFIFO(info.st_mode) else "a device" if stat.S_ISCHR(info.st_mode)
                or stat.S_ISBLK(info.st_mode) else "a socket" if stat.S_ISSOCK(info.st_mode) else "not a file")
        return f"{kind}, not a regular file"
    if info.st_size > MAX_FILE_BYTES:
        return f"{info.st_size} bytes, over the {MAX_FILE_BYTES}-byte limit for a source file"
    return None


def _read(file: Path) -> str:
    with open(file, "rb") as fh:  # bounded: the size may have grown since the stat
        data = fh.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"over the {MAX_FILE_BYTES}-byte limit for a source file")
    return data.decode("utf-8", errors="replace")


def _module_name(shown: str) -> str:
    parts = Path(shown).with_suffix("").parts
    if parts and parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _recipe_matches(shown: str, imported: set[str]) -> list[RecipeMatch]:
    """The recipes whose patched module is this file (``mingtok/modeling_mingtok.py`` at any depth) or
    is imported by it."""
    module = _module_name(shown)
    found = []
    for target, (recipe, summary) in verdicts.recipe_modules().items():
        if module == target or module.endswith("." + target) or target in imported:
            found.append(RecipeMatch(recipe, target, shown, summary))
    return found


def _parse(source: str, file: str) -> Visitor:
    visitor = Visitor(file)
    visitor.visit(ast.parse(source, filename=file))
    visitor.findings.sort(key=lambda f: f.line)
    return visitor


def scan_source(source: str, file: str = "<string>") -> list[Finding]:
    """Findings for one module's source text, in line order."""
    return _parse(source, file).findings


def scan(path: str | os.PathLike[str]) -> ScanResult:
    """Scan a file or a folder (recursively). Raises FileNotFoundError if ``path`` does not exist."""
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"{str(root)!r} does not exist")
    result = ScanResult(root=str(root), files_scanned=0)
    for file in _files(root):
        shown = str(file.relative_to(root)) if root.is_dir() else str(file)
        why = _unreadable(file)
        if why is not None:
            result.skipped.append(f"{shown}: {why}")
            logger.warning("scan: %s skipped (%s)", shown, why)
            continue
        result.files_scanned += 1
        if file.suffix in CUDA_SOURCE_SUFFIXES:
            result.findings.append(Finding(shown, 1, f"CUDA source {file.suffix}", UNHANDLED, NOTES["cu"]))
            continue
        try:
            visitor = _parse(_read(file), shown)
        except (SyntaxError, ValueError, OSError) as exc:  # Python 2 files, null bytes, ...
            result.errors.append(f"{shown}: {exc.__class__.__name__}: {exc}")
            logger.warning("scan: %s not parsed (%s)", shown, exc)
            continue
        result.findings.extend(visitor.findings)
        result.recipes.extend(_recipe_matches(shown if root.is_dir() else file.name, visitor.imported))
    return result
